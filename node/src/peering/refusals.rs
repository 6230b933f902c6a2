//! Refused calls on record: who, when, why, never the payload; repeats
//! counted in memory and flushed each second.

use super::*;

/// Records a refused call: who, when, why; never the payload. Repeats of a
/// kind already written this minute are only counted in memory and added
/// by `flush_refusals` (`limits::RefusalCounts`).
pub async fn record_refusal(state: &NodeState, event: SecurityEvent) {
    if !state.limits.refusals.first_or_count(&event) {
        return;
    }
    match state.store.record_security_event(&event, 1).await {
        // The first of its kind this minute is logged; the rest are counted
        // in its row (a flood must not fill the disk through the log either).
        Ok(1) => tracing::warn!(
            surface = %event.surface,
            reason = %event.reason,
            key = event.key_fingerprint.as_deref().map(|f| &f[..f.len().min(16)]).unwrap_or("-"),
            peer = event.org_id.as_deref().unwrap_or("-"),
            remote = event.remote_host().as_deref().unwrap_or("-"),
            method = event.method.as_deref().unwrap_or("-"),
            "call refused (more like it this minute are counted, not logged)"
        ),
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "could not record a security event"),
    }
}

/// How often repeated refusals counted in memory are written.
pub const REFUSAL_FLUSH: std::time::Duration = std::time::Duration::from_secs(1);

/// Adds the refusals counted since the last flush to their rows.
pub async fn flush_refusals(state: &NodeState) {
    for (event, n) in state.limits.refusals.take() {
        if let Err(e) = state.store.record_security_event(&event, n).await {
            tracing::error!(error = %e, "could not record security events");
        }
    }
}

/// Flushes counted refusals every `REFUSAL_FLUSH`, and once more at stop.
pub async fn run_refusal_flush(
    state: std::sync::Arc<NodeState>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(REFUSAL_FLUSH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => flush_refusals(&state).await,
            _ = stop.changed() => break,
        }
    }
    flush_refusals(&state).await;
}
