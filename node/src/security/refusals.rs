//! Refused calls on record: who, when, why, never the payload; repeats
//! counted in memory and flushed each second.

use crate::limits::Limits;
use crate::store::{SecurityEvent, SecurityEventStore};
use std::sync::Arc;

/// The record of refused calls.
#[derive(Clone)]
pub struct Refusals {
    limits: Arc<Limits>,
    store: Arc<dyn SecurityEventStore>,
}

/// How often repeated refusals counted in memory are written.
const REFUSAL_FLUSH: std::time::Duration = std::time::Duration::from_secs(1);

impl Refusals {
    pub fn new(limits: Arc<Limits>, store: Arc<dyn SecurityEventStore>) -> Self {
        Self { limits, store }
    }

    /// Records a refused call: who, when, why; never the payload. Repeats of a
    /// kind already written this minute are only counted in memory and added
    /// by `flush` (`limits::RefusalCounts`).
    pub async fn record(&self, event: SecurityEvent) {
        if !self.limits.refusals.first_or_count(&event) {
            return;
        }
        match self.store.record_security_event(&event, 1).await {
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

    /// Adds the refusals counted since the last flush to their rows.
    pub async fn flush(&self) {
        for (event, n) in self.limits.refusals.take() {
            if let Err(e) = self.store.record_security_event(&event, n).await {
                tracing::error!(error = %e, "could not record security events");
            }
        }
    }

    /// Flushes counted refusals every `REFUSAL_FLUSH`, and once more at stop.
    pub async fn run_flush(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(REFUSAL_FLUSH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.flush().await,
                _ = stop.changed() => break,
            }
        }
        self.flush().await;
    }
}
