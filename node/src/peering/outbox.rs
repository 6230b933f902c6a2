//! The notice sender: delivers queued notices to each peer in the order they
//! were queued, with exponential backoff and jitter per peer, peers in
//! parallel, so one unreachable peer delays nobody else. A notice is marked
//! delivered in its own transaction after the peer acknowledged it; a crash
//! in between means it is sent again, and the peer ignores the repeat.

use crate::domain::OrgId;
use crate::domain::time::now_ms;
use crate::state::NodeState;
use crate::store::Notice;
use exitnet_proto::pb;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const BATCH: i64 = 1000;
/// Longest the sender sleeps without looking for due notices.
const IDLE_POLL: Duration = Duration::from_secs(1);

pub async fn run(state: Arc<NodeState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            break;
        }
        if let Err(e) = deliver_due(&state).await {
            tracing::warn!(error = format!("{e:#}"), "notice delivery round failed");
        }
        tokio::select! {
            _ = state.outbox_wake.notified() => {}
            _ = tokio::time::sleep(IDLE_POLL) => {}
            _ = stop.changed() => {}
        }
    }
}

/// One round: for every peer with a due notice, send its queue in order.
pub async fn deliver_due(state: &Arc<NodeState>) -> anyhow::Result<()> {
    let notices = state.store.undelivered_notices(BATCH).await?;
    let mut by_peer: BTreeMap<OrgId, Vec<Notice>> = BTreeMap::new();
    for n in notices {
        by_peer.entry(n.org_id.clone()).or_default().push(n);
    }
    let now = now_ms();
    let mut tasks = tokio::task::JoinSet::new();
    for (org, queue) in by_peer {
        if queue.first().is_some_and(|n| n.next_attempt_at_ms > now) {
            continue;
        }
        let state = state.clone();
        tasks.spawn(async move {
            if let Err(e) = deliver_to_peer(&state, &org, queue).await {
                tracing::warn!(peer = %org, error = format!("{e:#}"), "delivering notices failed");
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

async fn deliver_to_peer(state: &NodeState, org: &OrgId, queue: Vec<Notice>) -> anyhow::Result<()> {
    let Some(peer) = state.store.get_peer(org).await? else {
        for n in &queue {
            state
                .store
                .notice_dropped(n.id, now_ms(), "peer no longer recorded")
                .await?;
        }
        return Ok(());
    };
    let now = now_ms();
    let pinned: Vec<String> = state
        .store
        .peer_keys(org, now)
        .await?
        .into_iter()
        .map(|k| k.fingerprint)
        .collect();
    // Until a key rotation has reached this peer, it knows only our old key:
    // everything queued before and with the announcement is sent with it.
    let ours = {
        let identity = state.identity()?;
        let wanted = queue.iter().find_map(|n| n.present_key.clone());
        let key = wanted
            .and_then(|fp| identity.key(&fp))
            .unwrap_or_else(|| identity.current());
        key.clone_key()?
    };
    let first = queue.first().map(|n| n.attempts).unwrap_or(0);
    let mut client = match crate::federation::client::connect(
        &peer.endpoint,
        Some(&ours),
        pinned,
        state.call_timeout(),
    )
    .await
    {
        Ok(c) => c,
        Err(e) => {
            if let Some(n) = queue.first() {
                let next = now + backoff_ms(state, first);
                state
                    .store
                    .notice_failed(n.id, next, "peer unreachable")
                    .await?;
            }
            return Err(e);
        }
    };
    let max_age_ms = (state.config.federation.max_delivery_age_secs as i64).saturating_mul(1000);
    for n in queue {
        let req = crate::referrals::messages::open_notice(state, &n.notice_id, &n.payload)?;
        let is_message = matches!(req.notice, Some(pb::notify_request::Notice::Message(_)));
        if is_message && now_ms() - n.created_at_ms > max_age_ms {
            // Undeliverable for too long: the sender learns it failed.
            state
                .store
                .notice_dropped(n.id, now_ms(), "undeliverable")
                .await?;
            crate::referrals::on_refused(
                state,
                &req,
                pb::FailureReason::Undeliverable,
                "not delivered in time",
            )
            .await?;
            continue;
        }
        match client.notify(req.clone()).await {
            Ok(resp) => {
                let now = now_ms();
                if is_message {
                    if let Err(e) =
                        crate::referrals::on_delivered(state, org, n.id, &req, resp.get_ref()).await
                    {
                        // An invalid receipt is not proof of delivery: try again later.
                        let next = now_ms() + backoff_ms(state, n.attempts);
                        state
                            .store
                            .notice_failed(n.id, next, "invalid receipt")
                            .await?;
                        tracing::warn!(peer = %org, error = %e, "receipt refused; will retry");
                        break;
                    }
                } else {
                    state.store.notice_delivered(n.id, now).await?;
                }
                state.store.touch_peer(org, now).await?;
            }
            Err(status) if is_message && refused_for_good(&status) => {
                // The receiver checked the message and refused it: retrying
                // cannot help. The referral fails with the receiver's reason.
                state
                    .store
                    .notice_dropped(n.id, now_ms(), status.code().description())
                    .await?;
                crate::referrals::on_refused(
                    state,
                    &req,
                    pb::FailureReason::RefusedByReceiver,
                    status.message(),
                )
                .await?;
                tracing::info!(peer = %org, code = ?status.code(), "the peer refused a message");
            }
            Err(status) => {
                let final_refusal = matches!(
                    status.code(),
                    tonic::Code::PermissionDenied | tonic::Code::Unauthenticated
                ) && peer.state.is_final();
                if final_refusal {
                    // The peering is over on our side and they refuse us: stop trying.
                    state
                        .store
                        .notice_dropped(n.id, now_ms(), status.code().description())
                        .await?;
                    continue;
                }
                let next = now_ms() + backoff_ms(state, n.attempts);
                state
                    .store
                    .notice_failed(n.id, next, status.code().description())
                    .await?;
                tracing::debug!(peer = %org, code = ?status.code(), "notice refused; will retry");
                break;
            }
        }
    }
    Ok(())
}

/// A refusal of the message itself, not of the connection or the peering.
fn refused_for_good(status: &tonic::Status) -> bool {
    use tonic::Code::*;
    match status.code() {
        InvalidArgument | FailedPrecondition | NotFound | AlreadyExists | OutOfRange => true,
        // "refused: peer_…" is about the peering (e.g. suspended), which may resume.
        PermissionDenied => !status.message().starts_with("refused: peer_"),
        _ => false,
    }
}

/// Exponential backoff with full jitter, capped.
fn backoff_ms(state: &NodeState, attempts: i64) -> i64 {
    let initial = state.config.federation.retry_initial_ms as i64;
    let cap = state.config.federation.retry_max_ms as i64;
    let exp = initial
        .saturating_mul(1i64 << attempts.clamp(0, 30))
        .min(cap);
    let mut b = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    let jitter = (u64::from_le_bytes(b) % (exp as u64 / 2 + 1)) as i64;
    exp / 2 + jitter
}
