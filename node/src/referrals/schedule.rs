//! Purges that fall due: consents expired or withdrawn, checked by the
//! node's scheduler.

use super::*;

/// Sends a withdrawal for each referral (the consent expired, or the
/// retention period passed). Each is conditional, so several replicas
/// running this at once queue each withdrawal once.
pub async fn purge_referrals(
    state: &NodeState,
    referrals: &[ReferralRecord],
    cause: crate::domain::WithdrawalCause,
) -> Result<u32> {
    let mut n = 0;
    let by = AuditEntry::node(state.now_ms(), state.org_id.as_str(), "", "", "");
    for r in referrals {
        if let Some(c) = withdrawal(state, r, cause, &by)?
            && state.store.change_referral(&r.referral_id, &c).await?
        {
            state.referral_changed(&r.referral_id);
            n += 1;
        }
    }
    if n > 0 {
        state.outbox.wake();
    }
    Ok(n)
}

/// One round of the scheduler: expired consents and retention periods.
pub async fn scheduled_purges(state: &NodeState) -> Result<u32> {
    let now = state.now_ms();
    let expired = state.store.referrals_with_expired_consent(now).await?;
    let mut n = purge_referrals(
        state,
        &expired,
        crate::domain::WithdrawalCause::ConsentExpired,
    )
    .await?;
    for peer in state.store.list_peers().await? {
        let (policy, _) = crate::policy::for_peer(state.store.as_ref(), &peer.org_id).await?;
        if policy.retention_days == 0 {
            continue;
        }
        let before = now - i64::from(policy.retention_days) * 86_400_000;
        let closed = state
            .store
            .closed_referrals_before(&peer.org_id, before)
            .await?;
        n += purge_referrals(state, &closed, crate::domain::WithdrawalCause::Retention).await?;
    }
    // A recipient purges by itself what it may no longer hold.
    n += content::purge_inbound(state).await?;
    content::forget_consents(state).await?;
    if n > 0 {
        tracing::info!(withdrawals = n, "scheduled purges queued");
    }
    Ok(n)
}

/// Runs `scheduled_purges` every `interval` until stopped, and prunes
/// refused calls beyond `limits.security_events_kept_days` and
/// `limits.security_events_max_rows`.
pub async fn run_scheduler(
    state: std::sync::Arc<NodeState>,
    interval: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            break;
        }
        if let Err(e) = scheduled_purges(&state).await {
            tracing::warn!(error = %e, "scheduled purges failed");
        }
        // Refusals are kept for a while and in bounded number.
        let limits = &state.config.limits;
        let before = state.now_ms() - i64::from(limits.security_events_kept_days) * 86_400_000;
        let rows = i64::try_from(limits.security_events_max_rows).unwrap_or(i64::MAX);
        if let Err(e) = state.store.prune_security_events(before, rows).await {
            tracing::warn!(error = %e, "pruning security events failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => {}
        }
    }
}
