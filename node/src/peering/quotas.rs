//! Quotas on what an approved peer can make us store (pending intake,
//! witnessed checkpoints): each refusal recorded like every other and
//! answered with RESOURCE_EXHAUSTED naming its setting.

use crate::domain::OrgId;
use crate::error::Error;
use crate::state::NodeState;
use crate::store::SecurityEvent;

/// Records a refusal over a quota (aggregated per minute like every
/// refusal) and the error naming the quota.
async fn over_quota(
    state: &NodeState,
    org: &OrgId,
    setting: &str,
    quota: u64,
    what: &str,
) -> Error {
    super::record_refusal(
        state,
        SecurityEvent {
            at_ms: state.now_ms(),
            surface: "federation".into(),
            reason: "peer_quota_exceeded".into(),
            key_fingerprint: None,
            org_id: Some(org.to_string()),
            remote_addr: None,
            method: Some("Notify".into()),
        },
    )
    .await;
    state.metrics.received(org.as_str(), what, "over_quota");
    Error::ResourceExhausted(format!(
        "quota {setting} ({quota}) reached for this peer: {what} refused; send again later"
    ))
}

/// Room for one more referral received from `org` and not yet accepted
/// (`limits.peer_max_pending_intake`), or RESOURCE_EXHAUSTED naming the
/// quota. Offers in flight when the count is taken may pass it by at most
/// the peer's calls in flight.
pub async fn intake(state: &NodeState, org: &OrgId) -> Result<(), Error> {
    let quota = i64::from(state.config.limits.peer_max_pending_intake);
    if state.limits.intake_estimate(org.as_str(), quota) == Some(true) {
        return Ok(());
    }
    let n = state.store.pending_intake(org).await?;
    if n >= quota {
        state.limits.intake_counted(org.as_str(), n);
        return Err(over_quota(
            state,
            org,
            "limits.peer_max_pending_intake",
            quota as u64,
            "offer",
        )
        .await);
    }
    state.limits.intake_counted(org.as_str(), n + 1);
    Ok(())
}

/// Room for one more checkpoint of `org` witnessed in 24 hours
/// (`limits.peer_checkpoints_per_day`), given how many were.
pub async fn checkpoints(
    state: &NodeState,
    org: &OrgId,
    witnessed_in_a_day: i64,
) -> Result<(), Error> {
    let quota = state.config.limits.peer_checkpoints_per_day;
    if witnessed_in_a_day < i64::from(quota) {
        return Ok(());
    }
    Err(over_quota(
        state,
        org,
        "limits.peer_checkpoints_per_day",
        u64::from(quota),
        "checkpoint",
    )
    .await)
}
