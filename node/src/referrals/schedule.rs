//! Purges that fall due: consents expired or withdrawn, checked by the
//! node's scheduler.

use super::*;

impl Referrals {
    /// Sends a withdrawal for each referral (the consent expired, or the
    /// retention period passed). Each is conditional, so several replicas
    /// running this at once queue each withdrawal once.
    pub async fn purge_referrals(
        &self,
        referrals: &[ReferralRecord],
        cause: crate::domain::WithdrawalCause,
    ) -> Result<u32> {
        let mut n = 0;
        let by = AuditEntry::node(self.now_ms(), self.org_id.as_str(), "", "", "");
        for r in referrals {
            if let Some(c) = self.withdrawal(r, cause, &by)?
                && self.store.change_referral(&r.referral_id, &c).await?
            {
                self.referral_changed(&r.referral_id);
                n += 1;
            }
        }
        if n > 0 {
            self.outbox.wake();
        }
        Ok(n)
    }

    /// One round of the scheduler: expired consents and retention periods.
    pub async fn scheduled_purges(&self) -> Result<u32> {
        let now = self.now_ms();
        let expired = self.store.referrals_with_expired_consent(now).await?;
        let mut n = self
            .purge_referrals(&expired, crate::domain::WithdrawalCause::ConsentExpired)
            .await?;
        for peer in self.store.list_peers().await? {
            let (policy, _) = crate::policy::for_peer(self.store.as_ref(), &peer.org_id).await?;
            if policy.retention_days == 0 {
                continue;
            }
            let before = now - i64::from(policy.retention_days) * 86_400_000;
            let closed = self
                .store
                .closed_referrals_before(&peer.org_id, before)
                .await?;
            n += self
                .purge_referrals(&closed, crate::domain::WithdrawalCause::Retention)
                .await?;
        }
        // A recipient purges by itself what it may no longer hold.
        n += self.purge_inbound().await?;
        self.forget_consents().await?;
        if n > 0 {
            tracing::info!(withdrawals = n, "scheduled purges queued");
        }
        Ok(n)
    }
}

/// Runs `scheduled_purges` every `interval` until stopped, and prunes
/// refused calls beyond `limits.security_events_kept_days` and
/// `limits.security_events_max_rows`.
pub async fn run_scheduler(
    referrals: Referrals,
    interval: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            break;
        }
        if let Err(e) = referrals.scheduled_purges().await {
            tracing::warn!(error = %e, "scheduled purges failed");
        }
        // Refusals are kept for a while and in bounded number.
        let limits = &referrals.config.limits;
        let before = referrals.now_ms() - i64::from(limits.security_events_kept_days) * 86_400_000;
        let rows = i64::try_from(limits.security_events_max_rows).unwrap_or(i64::MAX);
        if let Err(e) = referrals.store.prune_security_events(before, rows).await {
            tracing::warn!(error = %e, "pruning security events failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => {}
        }
    }
}
