//! Quotas on what an approved peer can make us store (pending intake,
//! witnessed checkpoints): each refusal recorded like every other and
//! answered with RESOURCE_EXHAUSTED naming its setting.

use super::Refusals;
use crate::clock::Clock;
use crate::config::LimitsConfig;
use crate::domain::OrgId;
use crate::error::Error;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::store::{ReferralStore, SecurityEvent};
use std::sync::Arc;

/// The quotas of `[limits]` on what a peer can make us store.
#[derive(Clone)]
pub struct Quotas {
    peer_max_pending_intake: u32,
    peer_checkpoints_per_day: u32,
    limits: Arc<Limits>,
    store: Arc<dyn ReferralStore>,
    refusals: Refusals,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
}

impl Quotas {
    pub fn new(
        config: &LimitsConfig,
        limits: Arc<Limits>,
        store: Arc<dyn ReferralStore>,
        refusals: Refusals,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            peer_max_pending_intake: config.peer_max_pending_intake,
            peer_checkpoints_per_day: config.peer_checkpoints_per_day,
            limits,
            store,
            refusals,
            metrics,
            clock,
        }
    }

    /// Records a refusal over a quota (aggregated per minute like every
    /// refusal) and the error naming the quota.
    async fn over_quota(&self, org: &OrgId, setting: &str, quota: u64, what: &str) -> Error {
        self.refusals
            .record(SecurityEvent {
                at_ms: self.clock.now_ms(),
                surface: "federation".into(),
                reason: "peer_quota_exceeded".into(),
                key_fingerprint: None,
                org_id: Some(org.to_string()),
                remote_addr: None,
                method: Some("Notify".into()),
            })
            .await;
        self.metrics.received(org.as_str(), what, "over_quota");
        Error::ResourceExhausted(format!(
            "quota {setting} ({quota}) reached for this peer: {what} refused; send again later"
        ))
    }

    /// Room for one more referral received from `org` and not yet accepted
    /// (`limits.peer_max_pending_intake`), or RESOURCE_EXHAUSTED naming the
    /// quota. Offers in flight when the count is taken may pass it by at most
    /// the peer's calls in flight.
    pub async fn intake(&self, org: &OrgId) -> Result<(), Error> {
        let quota = i64::from(self.peer_max_pending_intake);
        if self.limits.intake_estimate(org.as_str(), quota) == Some(true) {
            return Ok(());
        }
        let n = self.store.pending_intake(org).await?;
        if n >= quota {
            self.limits.intake_counted(org.as_str(), n);
            return Err(self
                .over_quota(org, "limits.peer_max_pending_intake", quota as u64, "offer")
                .await);
        }
        self.limits.intake_counted(org.as_str(), n + 1);
        Ok(())
    }

    /// Room for one more checkpoint of `org` witnessed in 24 hours
    /// (`limits.peer_checkpoints_per_day`), given how many were.
    pub async fn checkpoints(&self, org: &OrgId, witnessed_in_a_day: i64) -> Result<(), Error> {
        let quota = self.peer_checkpoints_per_day;
        if witnessed_in_a_day < i64::from(quota) {
            return Ok(());
        }
        Err(self
            .over_quota(
                org,
                "limits.peer_checkpoints_per_day",
                u64::from(quota),
                "checkpoint",
            )
            .await)
    }
}
