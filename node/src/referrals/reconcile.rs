//! Purges that a restore from backup would undo are applied again. A
//! database restored from a backup taken before a withdrawal holds the
//! referral's content (and data key) again, and the sender, holding the
//! purge receipt, will never send that withdrawal again. So at every start
//! the node asks each peer which of the referrals it holds unpurged with
//! that peer the peer holds as withdrawn (`ListWithdrawn`), and purges
//! those again. The same question answered the other way tells a restored
//! sender which of its referrals its recipients purged.

use super::Referrals;
use crate::audit::AuditEntry;
use crate::domain::referral as rules;
use crate::domain::referral::EventDetail;
use crate::domain::{OrgId, Peer, ReferralState};
use crate::error::{FieldError, Result};
use crate::protocol::peer_client::PeerClient;
use crate::store::{ReferralChange, ReferralEvent};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// Referral IDs in one `ListWithdrawn` call, at most.
pub const MAX_IDS: usize = 1000;
/// Peers asked at once at start.
const CONCURRENT_PEERS: usize = 8;

/// Checks a `ListWithdrawn` request: 1 to `MAX_IDS` referral IDs.
pub fn checked_ids(ids: Vec<String>) -> Result<Vec<String>> {
    if ids.is_empty() || ids.len() > MAX_IDS {
        return Err(FieldError::new("referral_ids", format!("1 to {MAX_IDS} IDs")).into());
    }
    for (i, id) in ids.iter().enumerate() {
        super::id_check(&format!("referral_ids[{i}]"), id)?;
    }
    Ok(ids)
}

/// Asks every peer that may exchange with us, a few at a time, each until it
/// answers once (with backoff) or the node stops.
pub async fn run_at_start(referrals: Referrals, stop: tokio::sync::watch::Receiver<bool>) {
    let peers = match referrals.store.list_peers().await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "listing peers to reconcile purges failed");
            return;
        }
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_PEERS));
    let mut tasks = tokio::task::JoinSet::new();
    for peer in peers.into_iter().filter(Peer::exchange_allowed) {
        let (referrals, slots, mut stop) = (referrals.clone(), slots.clone(), stop.clone());
        tasks.spawn(async move {
            let mut wait = Duration::from_millis(referrals.config.federation.retry_initial_ms.max(1));
            let most = Duration::from_millis(referrals.config.federation.retry_max_ms.max(1));
            loop {
                let outcome = match slots.acquire().await {
                    Ok(_slot) => referrals.with_peer(&peer).await,
                    Err(_) => return,
                };
                match outcome {
                    Ok(0) => return,
                    Ok(n) => {
                        tracing::warn!(
                            peer = %peer.org_id,
                            referrals = n,
                            "purged again what the peer withdrew after this database's backup was taken"
                        );
                        return;
                    }
                    Err(e) => {
                        tracing::info!(peer = %peer.org_id, error = format!("{e:#}"), "reconciling purges with a peer failed; trying again");
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => return,
                }
                wait = (wait * 2).min(most);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

impl Referrals {
    /// Asks one peer; purges what it names. How many were purged again.
    pub(crate) async fn with_peer(&self, peer: &Peer) -> anyhow::Result<usize> {
        let ids = self.store.unpurged_referral_ids(&peer.org_id).await?;
        if ids.is_empty() {
            return Ok(0);
        }
        let mut client = PeerClient::connect(&self.protocol, peer).await?;
        let mut purged = 0;
        for chunk in ids.chunks(MAX_IDS) {
            // A peer of an older release cannot say; nothing to do.
            let Some(named) = client.list_withdrawn(chunk.to_vec()).await? else {
                return Ok(purged);
            };
            // Only what was asked counts: a peer cannot name other referrals.
            let asked: HashSet<&str> = chunk.iter().map(String::as_str).collect();
            for id in named.iter().filter(|id| asked.contains(id.as_str())) {
                if self.purge_again(&peer.org_id, id).await? {
                    purged += 1;
                }
            }
        }
        if purged > 0 {
            self.store.after_purge().await?;
        }
        Ok(purged)
    }

    /// Applies a withdrawal the peer holds and this database lost: at a
    /// recipient the content and data key go (as on a withdrawal); at the
    /// sender the referral is withdrawn and its purge done (the recipient's
    /// receipt was lost with the rest). Recorded in the audit trail.
    pub(crate) async fn purge_again(&self, peer: &OrgId, id: &str) -> Result<bool> {
        let Some(r) = self.store.get_referral(id).await? else {
            return Ok(false);
        };
        if r.peer_org != *peer || r.purge_status != crate::domain::PurgeStatus::None {
            return Ok(false);
        }
        let current = r.state;
        let now = self.now_ms();
        let moves = if r.outbound {
            rules::sender_may_withdraw(current)
        } else {
            !rules::is_closed(current)
        };
        let change = ReferralChange {
            expected_states: vec![current],
            expected_purge_status: Some(crate::domain::PurgeStatus::None),
            state: moves.then_some(ReferralState::Withdrawn),
            event: moves.then(|| {
                ReferralEvent::new(
                    ReferralState::Withdrawn,
                    peer.as_str(),
                    now,
                    EventDetail::default(),
                )
            }),
            purge_status: Some(crate::domain::PurgeStatus::Done),
            purged_at_ms: Some(now),
            purge_summary: true,
            purge_terms: Some(crate::wire::consent::purged_terms(&r.terms)?),
            destroy_key: (!r.outbound).then(|| r.key_id.clone()),
            audit: vec![AuditEntry::peer(
                self.now_ms(),
                peer.as_str(),
                if r.outbound {
                    "referral.withdraw.reapplied"
                } else {
                    "referral.purge.reapplied"
                },
                "referral",
                id,
            )],
            now_ms: now,
            ..Default::default()
        };
        let changed = self.store.change_referral(id, &change).await?;
        if changed {
            self.referral_changed(id);
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_bounded_and_ids_checked() {
        assert!(checked_ids(vec![]).is_err());
        assert!(checked_ids(vec!["a".into(); MAX_IDS]).is_ok());
        assert!(checked_ids(vec!["a".into(); MAX_IDS + 1]).is_err());
        let e = checked_ids(vec!["ok".into(), "not ok!".into()]).unwrap_err();
        assert!(e.to_string().contains("referral_ids[1]"), "{e}");
    }
}
