//! The sender: delivers queued notices and messages to each peer in the order
//! they were queued, with exponential backoff and jitter per peer. Each peer
//! has a delivery task of its own, so a peer that is down, slow or silent
//! delays nobody else. A notice is marked delivered in its own transaction
//! after the peer acknowledged it; a crash in between means it is sent
//! again, and the peer answers the repeat as before.

use crate::domain::OrgId;
use crate::protocol::messages::sign_for_sending;
use crate::state::NodeState;
use crate::store::Notice;
use exitnet_proto::pb;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Notices one delivery task takes at a time.
const BATCH: i64 = 500;
/// Longest the sender sleeps without looking for due notices.
const IDLE_POLL: Duration = Duration::from_secs(1);

type Running = Arc<Mutex<HashSet<OrgId>>>;

pub async fn run(state: Arc<NodeState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let running: Running = Arc::default();
    loop {
        if *stop.borrow() {
            break;
        }
        if let Err(e) = deliver_due(&state, &running).await {
            tracing::warn!(error = format!("{e:#}"), "notice delivery round failed");
        }
        loop {
            tokio::select! {
                _ = state.outbox_wake.notified() => {}
                _ = tokio::time::sleep(IDLE_POLL) => break,
                _ = stop.changed() => break,
            }
            // Woken for notices queued for peers whose delivery task is
            // running: that task's next round takes them (a task that ends
            // wakes this loop, bare), so there is nothing to look for.
            let queued: Vec<OrgId> = state
                .outbox_queued
                .lock()
                .map(|mut q| q.drain().collect())
                .unwrap_or_default();
            let all_running = !queued.is_empty()
                && running
                    .lock()
                    .map(|r| queued.iter().all(|o| r.contains(o)))
                    .unwrap_or(false);
            if !all_running {
                break;
            }
        }
    }
}

/// Starts a delivery task for every peer with a due notice and none running.
async fn deliver_due(state: &Arc<NodeState>, running: &Running) -> anyhow::Result<()> {
    for org in state.store.peers_with_due_notices(state.now_ms()).await? {
        let fresh = running
            .lock()
            .map(|mut r| r.insert(org.clone()))
            .unwrap_or(false);
        if !fresh {
            continue;
        }
        let (state, running) = (state.clone(), running.clone());
        tokio::spawn(async move {
            // Replicas of one node on one database: one delivery task per
            // peer across all of them, so nothing is sent twice and the order
            // per peer holds. The lease is renewed as the task goes on; if
            // this process dies, it expires and another replica takes over.
            let lease = format!("outbox:{org}");
            match take_lease(&state, &lease).await {
                Ok(true) => {
                    if let Err(e) = deliver_to_peer(&state, &org, &lease).await {
                        tracing::warn!(peer = %org, error = format!("{e:#}"), "delivering to a peer failed");
                    }
                    // Kept, not released: this replica stays the peer's sender
                    // while it lives (a write saved per round); another takes
                    // over when it expires.
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(peer = %org, error = %e, "taking a delivery lease failed"),
            }
            if let Ok(mut r) = running.lock() {
                r.remove(&org);
            }
            state.outbox_wake.notify_one();
        });
    }
    Ok(())
}

/// How long a lease lasts: two call timeouts (at least 5 s), so a live holder
/// that renews before each call never loses it, and a dead one's passes on soon.
fn lease_ttl(state: &NodeState) -> i64 {
    (state.config.federation.call_timeout_ms as i64)
        .saturating_mul(2)
        .max(5_000)
}

/// Takes or renews this process's lease.
async fn take_lease(state: &NodeState, name: &str) -> crate::error::Result<bool> {
    let now = state.now_ms();
    state
        .store
        .acquire_lease(name, &state.instance_id, now, now + lease_ttl(state))
        .await
}

/// A lease held by a delivery task. Renewing is a database write, so it is
/// renewed only once a quarter of its time has passed: at least 1.5 call
/// timeouts remain before each call, more than the call can take.
struct HeldLease<'a> {
    name: &'a str,
    renewed_at: i64,
}

impl HeldLease<'_> {
    async fn keep(&mut self, state: &NodeState) -> crate::error::Result<bool> {
        let now = state.now_ms();
        if now - self.renewed_at < lease_ttl(state) / 4 {
            return Ok(true);
        }
        let kept = take_lease(state, self.name).await?;
        self.renewed_at = now;
        Ok(kept)
    }
}

fn is_offer(req: &pb::NotifyRequest) -> bool {
    match &req.notice {
        Some(pb::notify_request::Notice::Message(m)) => {
            use prost::Message;
            matches!(
                pb::FederationMessage::decode(m.payload.as_slice()).map(|f| f.body),
                Ok(Some(pb::federation_message::Body::Offer(_)))
            )
        }
        _ => false,
    }
}

async fn deliver_to_peer(state: &NodeState, org: &OrgId, lease: &str) -> anyhow::Result<()> {
    let Some(peer) = state.store.peer_for_exchange(org).await? else {
        state.peer_channels.forget(org.as_str());
        for n in state.store.undelivered_notices_for(org, BATCH).await? {
            state
                .store
                .notice_dropped(n.id, state.now_ms(), "peer no longer recorded")
                .await?;
        }
        return Ok(());
    };
    // Offers that waited too long fail as undeliverable, whether or not the
    // peer can be reached now. Withdrawals and status changes never expire.
    let max_age_ms = (state.config.federation.max_delivery_age_secs as i64).saturating_mul(1000);
    let mut queue: Vec<(Notice, pb::NotifyRequest)> = Vec::new();
    for n in state.store.undelivered_notices_for(org, BATCH).await? {
        let req = crate::protocol::messages::open_notice(state, &n.notice_id, &n.payload)?;
        if is_offer(&req) && state.now_ms() - n.created_at_ms > max_age_ms {
            state
                .store
                .notice_dropped(n.id, state.now_ms(), "undeliverable")
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
        queue.push((n, req));
    }
    let now = state.now_ms();
    if !queue.iter().any(|(n, _)| n.next_attempt_at_ms <= now) {
        return Ok(());
    }
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
        let wanted = queue.iter().find_map(|(n, _)| n.present_key.clone());
        let key = wanted
            .and_then(|fp| identity.key(&fp))
            .unwrap_or_else(|| identity.current());
        key.clone_key()?
    };
    let mut client = match state
        .peer_channels
        .connect(
            org.as_str(),
            &peer.endpoint,
            Some(&ours),
            pinned,
            state.call_timeout(),
        )
        .await
    {
        Ok(c) => {
            state.metrics.reachable(org.as_str(), true);
            c
        }
        Err(e) => {
            state.metrics.reachable(org.as_str(), false);
            state.metrics.delivered(org.as_str(), "unreachable");
            for (n, _) in queue.iter().filter(|(n, _)| n.next_attempt_at_ms <= now) {
                retry_later(state, n.id, n.attempts, "peer unreachable").await?;
            }
            return Err(e);
        }
    };
    let exchange_allowed = peer.exchange_allowed();
    // Referral messages keep their order within a referral: once one waits,
    // every later one waits too. Messages of different referrals go out
    // together (up to `MAX_BATCH`, as many as a peer accepts, in one call).
    // Peering notices (states, profiles, keys) are independent of them and may
    // go ahead, so a suspension is told even while messages wait.
    let mut flow = Flow::default();
    let mut queue = queue.into_iter().peekable();
    // Receipts of the last batch, being stored while the next one is sent.
    let mut storing: Option<Storing<'_>> = None;
    // Just taken (by the caller).
    let mut held = HeldLease {
        name: lease,
        renewed_at: state.now_ms(),
    };
    while let Some((n, req)) = queue.next() {
        // Still ours? (A replica that stalled past its lease stops here.)
        if !held.keep(state).await? {
            anyhow::bail!("the delivery lease passed to another replica");
        }
        let is_message = matches!(req.notice, Some(pb::notify_request::Notice::Message(_)));
        let passes =
            is_message && !exchange_allowed && crate::protocol::messages::is_withdrawal(&req);
        if !flow
            .ready(state, &n, is_message, exchange_allowed, passes, &req)
            .await?
        {
            continue;
        }
        if !is_message {
            flow.apply_all(finish(storing.take()).await?);
            let result = client.notify(req.clone()).await.map(|r| r.into_inner());
            let handled = flow
                .handle(state, org, &peer, &n, &req, false, result)
                .await?;
            flow.apply(handled, false);
            continue;
        }
        // Gather the following messages of other referrals into one batch.
        let mut bytes = notice_bytes(&req);
        let mut batch = vec![(n, req)];
        let mut referrals: HashSet<String> = batch
            .iter()
            .filter_map(|(_, r)| message_referral(r))
            .collect();
        while batch.len() < crate::transport::MAX_BATCH {
            let Some((next, next_req)) = queue.peek() else {
                break;
            };
            let next_is_message = matches!(
                next_req.notice,
                Some(pb::notify_request::Notice::Message(_))
            );
            let rid = message_referral(next_req);
            let next_bytes = notice_bytes(next_req);
            if !next_is_message
                || next.next_attempt_at_ms > state.now_ms()
                // Outside an active peering only withdrawals go.
                || (!exchange_allowed && !crate::protocol::messages::is_withdrawal(next_req))
                || rid.as_ref().is_some_and(|r| flow.held.contains(r))
                || rid.as_ref().is_some_and(|r| referrals.contains(r))
                || bytes + next_bytes > BATCH_BYTES
            {
                break;
            }
            bytes += next_bytes;
            if let Some(r) = rid {
                referrals.insert(r);
            }
            if let Some(item) = queue.next() {
                batch.push(item);
            }
        }
        // The previous batch's receipts are still being stored: a message
        // of one of its referrals waits for that (order within a referral),
        // others go out meanwhile.
        if storing
            .as_ref()
            .is_some_and(|(pending, _)| !pending.is_disjoint(&referrals))
        {
            flow.apply_all(finish(storing.take()).await?);
        }
        let (results, stored) = tokio::join!(
            call_all(&state.peer_channels, org.as_str(), &client, &ours, &batch),
            finish(storing.take())
        );
        flow.apply_all(stored?);
        // Refusals and failures are handled at once (they decide whether
        // later messages wait); receipts are checked and stored together
        // (multi-row statements in one transaction) while the next batch
        // is on its way.
        let mut answered = Vec::new();
        let mut failed = Vec::new();
        for ((n, req), result) in batch.into_iter().zip(results) {
            match result {
                Ok(resp) => answered.push((n, req, resp)),
                Err(status) => failed.push((n, req, status)),
            }
        }
        let handled = futures_util::future::join_all(failed.iter().map(|(n, req, status)| {
            flow.handle(state, org, &peer, n, req, true, Err(status.clone()))
        }))
        .await;
        for h in handled {
            flow.apply(h?, true);
        }
        if !answered.is_empty() {
            let ids: HashSet<String> = answered
                .iter()
                .filter_map(|(_, req, _)| message_referral(req))
                .collect();
            storing = Some((ids, Box::pin(accept_deliveries(state, org, answered))));
        }
    }
    flow.apply_all(finish(storing.take()).await?);
    // "Last seen" to the second: not a write per round.
    let now = state.now_ms();
    if flow.seen && now - peer.last_seen_at_ms.unwrap_or(0) >= 1000 {
        state.store.touch_peer(org, now).await?;
    } else if !flow.seen && (flow.messages_wait || flow.notices_wait) {
        // Nothing got through: the next round connects afresh.
        state.peer_channels.forget(org.as_str());
    }
    Ok(())
}

/// Receipts being stored: the referrals they are about, and the work.
type Storing<'a> = (
    HashSet<String>,
    std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<Vec<Handled>>> + Send + 'a>>,
);

/// Waits for receipts being stored; their outcomes.
async fn finish(storing: Option<Storing<'_>>) -> anyhow::Result<Vec<Handled>> {
    match storing {
        Some((_, work)) => work.await,
        None => Ok(Vec::new()),
    }
}

type Client = pb::federation_service_client::FederationServiceClient<tonic::transport::Channel>;

/// Sends a batch of messages at once: in one `NotifyBatch` call, or, to a
/// peer that does not know it, in one `Notify` call each (multiplexed on one
/// connection). The answers in the batch's order.
async fn call_all(
    channels: &crate::transport::client::Channels,
    org: &str,
    client: &Client,
    key: &crate::identity::NodeKey,
    batch: &[(Notice, pb::NotifyRequest)],
) -> Vec<Result<pb::NotifyResponse, tonic::Status>> {
    let queued = || batch.iter().map(|(_, r)| r);
    let signing_failed = |e: anyhow::Error| {
        tracing::error!(error = %e, "signing messages failed");
        let status = tonic::Status::internal("signing failed");
        batch.iter().map(|_| Err(status.clone())).collect()
    };
    if batch.len() > 1 && channels.batches(org) {
        let notices = match sign_for_sending(key, queued(), true) {
            Ok(n) => n,
            Err(e) => return signing_failed(e),
        };
        match client
            .clone()
            .notify_batch(pb::NotifyBatchRequest { notices })
            .await
        {
            Ok(resp) => return batch_outcomes(resp.into_inner(), batch.len()),
            Err(status) if status.code() == tonic::Code::Unimplemented => {
                channels.no_batches(org);
            }
            // Larger than the peer accepts in one message (or its rate
            // refused it): each message goes on its own, as it would alone.
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {}
            // The call failed as a whole: so did each message in it.
            Err(status) => return batch.iter().map(|_| Err(status.clone())).collect(),
        }
    }
    match sign_for_sending(key, queued(), false) {
        Ok(notices) => call_each(client, notices).await,
        Err(e) => signing_failed(e),
    }
}

/// A peer's answer to a batch, one result per message sent. Answers missing
/// (or too many) mean nothing was proven: those messages are tried again.
fn batch_outcomes(
    resp: pb::NotifyBatchResponse,
    sent: usize,
) -> Vec<Result<pb::NotifyResponse, tonic::Status>> {
    if resp.outcomes.len() != sent {
        let status = tonic::Status::unavailable(format!(
            "the peer answered {sent} messages with {} outcomes",
            resp.outcomes.len()
        ));
        return (0..sent).map(|_| Err(status.clone())).collect();
    }
    resp.outcomes
        .into_iter()
        .map(|o| match o.outcome {
            Some(pb::notify_outcome::Outcome::Response(r)) => Ok(r),
            Some(pb::notify_outcome::Outcome::Refusal(r)) => {
                // A refusal is never OK: an unknown or OK code counts as
                // UNKNOWN, which is tried again.
                let code = match tonic::Code::from(r.code) {
                    tonic::Code::Ok => tonic::Code::Unknown,
                    c => c,
                };
                Err(tonic::Status::new(code, r.message))
            }
            None => Err(tonic::Status::unavailable("the peer left an outcome empty")),
        })
        .collect()
}

/// One `Notify` call per message, all at once on one connection.
async fn call_each(
    client: &Client,
    batch: Vec<pb::NotifyRequest>,
) -> Vec<Result<pb::NotifyResponse, tonic::Status>> {
    let mut calls = tokio::task::JoinSet::new();
    let n = batch.len();
    for (i, req) in batch.into_iter().enumerate() {
        let mut client = client.clone();
        calls.spawn(async move { (i, client.notify(req).await.map(|r| r.into_inner())) });
    }
    let mut results: Vec<Option<Result<pb::NotifyResponse, tonic::Status>>> =
        (0..n).map(|_| None).collect();
    while let Some(done) = calls.join_next().await {
        if let Ok((i, r)) = done
            && let Some(slot) = results.get_mut(i)
        {
            *slot = Some(r);
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(tonic::Status::unavailable("call task failed"))))
        .collect()
}

/// Most bytes of messages in one `NotifyBatch`: well below the smallest
/// message size a peer accepts (a message larger than this goes alone).
const BATCH_BYTES: usize = crate::transport::MAX_MESSAGE_BYTES / 4;

fn notice_bytes(req: &pb::NotifyRequest) -> usize {
    use prost::Message;
    req.encoded_len()
}

/// The referral a message is about.
fn message_referral(req: &pb::NotifyRequest) -> Option<String> {
    use prost::Message;
    let Some(pb::notify_request::Notice::Message(m)) = &req.notice else {
        return None;
    };
    match pb::FederationMessage::decode(m.payload.as_slice())
        .ok()?
        .body?
    {
        pb::federation_message::Body::Offer(o) => Some(o.referral_id),
        pb::federation_message::Body::Status(s) => Some(s.referral_id),
        pb::federation_message::Body::Withdrawal(w) => Some(w.referral_id),
    }
}

/// Whether messages and notices still flow in this round.
#[derive(Default)]
struct Flow {
    messages_wait: bool,
    notices_wait: bool,
    /// The peer answered in this round.
    seen: bool,
    /// Referrals with a message held back because the peering is not
    /// active: a later withdrawal of theirs waits too (order within a
    /// referral), the others' withdrawals go.
    held: HashSet<String>,
}

/// What one call's outcome means for the rest of the round.
struct Handled {
    /// Later messages (or notices) wait for a later round.
    wait: bool,
    /// The peer answered.
    seen: bool,
}

impl Flow {
    /// Takes in the outcomes of stored receipts (referral messages).
    fn apply_all(&mut self, handled: Vec<Handled>) {
        for h in handled {
            self.apply(h, true);
        }
    }

    fn apply(&mut self, h: Handled, is_message: bool) {
        self.seen |= h.seen;
        if h.wait {
            self.wait(is_message);
        }
    }

    fn wait(&mut self, is_message: bool) {
        if is_message {
            self.messages_wait = true;
        } else {
            self.notices_wait = true;
        }
    }

    /// Whether `n` may be sent now; records why not. `withdrawal_passes`: a
    /// withdrawal, which goes even while the peering is not active.
    async fn ready(
        &mut self,
        state: &NodeState,
        n: &Notice,
        is_message: bool,
        exchange_allowed: bool,
        withdrawal_passes: bool,
        req: &pb::NotifyRequest,
    ) -> anyhow::Result<bool> {
        if (is_message && self.messages_wait) || (!is_message && self.notices_wait) {
            return Ok(false);
        }
        if is_message && !exchange_allowed {
            // Suspended (by either side), revoked or not yet active: referral
            // messages wait, in order per referral, until the peering is
            // active again; withdrawals go now, unless a message of their
            // referral waits before them.
            let rid = message_referral(req);
            let behind = rid.as_ref().is_some_and(|r| self.held.contains(r));
            if n.next_attempt_at_ms > state.now_ms() {
                self.held.extend(rid);
                return Ok(false);
            }
            if withdrawal_passes && !behind {
                return Ok(true);
            }
            self.held.extend(rid);
            let next = state.now_ms() + state.config.federation.retry_max_ms as i64;
            state
                .store
                .notice_failed(n.id, next, "peering not active")
                .await?;
            return Ok(false);
        }
        if n.next_attempt_at_ms > state.now_ms() {
            self.wait(is_message);
            return Ok(false);
        }
        Ok(true)
    }

    /// Records the outcome of one call.
    #[allow(clippy::too_many_arguments)]
    async fn handle(
        &self,
        state: &NodeState,
        org: &OrgId,
        peer: &crate::domain::Peer,
        n: &Notice,
        req: &pb::NotifyRequest,
        is_message: bool,
        result: Result<pb::NotifyResponse, tonic::Status>,
    ) -> anyhow::Result<Handled> {
        match result {
            Ok(resp) if is_message => {
                let mut handled =
                    accept_deliveries(state, org, vec![(n.clone(), req.clone(), resp)]).await?;
                Ok(handled.pop().unwrap_or(Handled {
                    wait: false,
                    seen: true,
                }))
            }
            Ok(resp) => {
                let now = state.now_ms();
                state.metrics.delivered(org.as_str(), "delivered");
                if let Some(pb::notify_request::Notice::Checkpoint(cp)) = &req.notice {
                    match crate::witness::checkpoint::on_witnessed(
                        state,
                        org,
                        cp,
                        resp.witness.as_ref(),
                    )
                    .await
                    {
                        Ok(()) => state.store.notice_delivered(n.id, now).await?,
                        Err(e) => {
                            retry_later(state, n.id, n.attempts, "invalid witness").await?;
                            tracing::warn!(peer = %org, error = %e, "witness refused; will retry");
                            return Ok(Handled {
                                wait: true,
                                seen: true,
                            });
                        }
                    }
                } else {
                    state.store.notice_delivered(n.id, now).await?;
                }
                Ok(Handled {
                    wait: false,
                    seen: true,
                })
            }
            Err(status) if is_message && refused_for_good(&status) => {
                state.metrics.delivered(org.as_str(), "refused");
                // The receiver checked the message and refused it: retrying
                // cannot help. An offer fails with the receiver's reason.
                state
                    .store
                    .notice_dropped(n.id, state.now_ms(), status.code().description())
                    .await?;
                crate::referrals::on_refused(
                    state,
                    req,
                    pb::FailureReason::RefusedByReceiver,
                    status.message(),
                )
                .await?;
                tracing::info!(peer = %org, code = ?status.code(), "the peer refused a message");
                Ok(Handled {
                    wait: false,
                    seen: true,
                })
            }
            Err(status) => {
                let final_refusal = matches!(
                    status.code(),
                    tonic::Code::PermissionDenied | tonic::Code::Unauthenticated
                ) && peer.state.is_final();
                // A checkpoint the peer will not keep (over its quota, or not
                // above what it witnessed) is not retried: a later one covers
                // more, and peering notices behind it must not wait.
                let checkpoint_refused =
                    matches!(req.notice, Some(pb::notify_request::Notice::Checkpoint(_)))
                        && matches!(
                            status.code(),
                            tonic::Code::ResourceExhausted | tonic::Code::FailedPrecondition
                        );
                if checkpoint_refused {
                    state.metrics.delivered(org.as_str(), "refused");
                    state
                        .store
                        .notice_dropped(n.id, state.now_ms(), status.code().description())
                        .await?;
                    tracing::info!(peer = %org, code = ?status.code(), "the peer refused a checkpoint; a later one will be sent");
                    return Ok(Handled {
                        wait: false,
                        seen: true,
                    });
                }
                state.metrics.delivered(org.as_str(), "retry");
                if final_refusal && !is_message {
                    // The peering is over on our side and they refuse us: stop trying.
                    state
                        .store
                        .notice_dropped(n.id, state.now_ms(), status.code().description())
                        .await?;
                    return Ok(Handled {
                        wait: false,
                        seen: false,
                    });
                }
                retry_later(state, n.id, n.attempts, status.code().description()).await?;
                tracing::debug!(peer = %org, code = ?status.code(), "notice refused; will retry");
                Ok(Handled {
                    wait: true,
                    seen: false,
                })
            }
        }
    }
}

/// The peer answered these messages: their receipts are checked and stored
/// together. An invalid receipt is not proof of delivery: its message is
/// tried again later. One outcome per message, in order.
async fn accept_deliveries(
    state: &NodeState,
    org: &OrgId,
    answered: Vec<(Notice, pb::NotifyRequest, pb::NotifyResponse)>,
) -> anyhow::Result<Vec<Handled>> {
    if answered.is_empty() {
        return Ok(Vec::new());
    }
    let keys = state.store.peer_keys(org, state.now_ms()).await?;
    let now = state.now_ms();
    let mut handled = Vec::with_capacity(answered.len());
    let mut items = Vec::with_capacity(answered.len());
    let mut attempts = Vec::with_capacity(answered.len());
    for (n, req, resp) in &answered {
        state.metrics.delivered(org.as_str(), "delivered");
        let waited = (now - n.created_at_ms).max(0) as f64 / 1000.0;
        state.metrics.delivery_latency.observe(waited);
        match crate::referrals::delivery_receipt(state, org, &keys, n.id, req, resp) {
            Ok(Some(item)) => {
                items.push(item);
                attempts.push((handled.len(), n.attempts));
            }
            Ok(None) => state.store.notice_delivered(n.id, now).await?,
            Err(e) => {
                retry_later(state, n.id, n.attempts, "invalid receipt").await?;
                tracing::warn!(peer = %org, error = %e, "receipt refused; will retry");
                handled.push(Handled {
                    wait: true,
                    seen: true,
                });
                continue;
            }
        }
        handled.push(Handled {
            wait: false,
            seen: true,
        });
    }
    if let Err(e) = crate::referrals::on_delivered(state, &items).await {
        // One receipt that cannot be stored must not hold up the others.
        tracing::warn!(peer = %org, error = %e, "storing receipts together failed; storing them one by one");
        for (item, (at, tries)) in items.iter().zip(attempts) {
            if let Err(e) = crate::referrals::on_delivered(state, std::slice::from_ref(item)).await
            {
                retry_later(state, item.notice_row, tries, "receipt not stored").await?;
                tracing::warn!(peer = %org, error = %e, "a receipt could not be stored; will retry");
                if let Some(h) = handled.get_mut(at) {
                    h.wait = true;
                }
            }
        }
    }
    Ok(handled)
}

/// Records a failed attempt; the notice is due again after a backoff.
async fn retry_later(
    state: &NodeState,
    notice_row: i64,
    attempts: i64,
    why: &str,
) -> anyhow::Result<()> {
    let next = state.now_ms() + backoff_ms(state, attempts);
    state.store.notice_failed(notice_row, next, why).await?;
    Ok(())
}

/// A refusal of the message itself, not of the connection or the peering.
fn refused_for_good(status: &tonic::Status) -> bool {
    use tonic::Code::*;
    match status.code() {
        InvalidArgument | FailedPrecondition | NotFound | AlreadyExists | OutOfRange => true,
        // About the peering (e.g. suspended), which may resume.
        PermissionDenied => !crate::error::refused_by_peering(status),
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
    // Without randomness the wait is simply not jittered.
    let b = crate::crypto::random_bytes::<8>().unwrap_or_default();
    let jitter = (u64::from_le_bytes(b) % (exp as u64 / 2 + 1)) as i64;
    exp / 2 + jitter
}

#[cfg(test)]
mod tests {
    use super::*;
    use exitnet_proto::pb::federation_service_server::{
        FederationService, FederationServiceServer,
    };
    use tonic::{Request, Response, Status};

    /// A peer of an older version, without `NotifyBatch`: it answers each
    /// `Notify` carrying a message signed alone by `spki` (it reads no batch
    /// proofs) with a receipt whose payload is the notice's ID.
    struct Older {
        spki: Vec<u8>,
    }

    #[tonic::async_trait]
    impl FederationService for Older {
        async fn join(
            &self,
            _: Request<pb::JoinRequest>,
        ) -> Result<Response<pb::JoinResponse>, Status> {
            Err(Status::unimplemented("join"))
        }

        async fn notify(
            &self,
            r: Request<pb::NotifyRequest>,
        ) -> Result<Response<pb::NotifyResponse>, Status> {
            let r = r.into_inner();
            let Some(pb::notify_request::Notice::Message(m)) = &r.notice else {
                return Err(Status::invalid_argument("notice"));
            };
            if m.batch.is_some()
                || !crate::identity::verify_in(
                    crate::identity::context::MESSAGE,
                    &self.spki,
                    &m.payload,
                    &m.signature,
                )
            {
                return Err(Status::permission_denied("signature"));
            }
            Ok(Response::new(pb::NotifyResponse {
                receipt: Some(pb::SignedReceipt {
                    payload: r.notice_id.into_bytes(),
                    signature: vec![],
                    batch: None,
                }),
                witness: None,
            }))
        }

        async fn notify_batch(
            &self,
            _: Request<pb::NotifyBatchRequest>,
        ) -> Result<Response<pb::NotifyBatchResponse>, Status> {
            Err(Status::unimplemented(
                "exitnet.v1.FederationService/NotifyBatch",
            ))
        }

        async fn list_witnessed_checkpoints(
            &self,
            _: Request<pb::ListWitnessedCheckpointsRequest>,
        ) -> Result<Response<pb::ListWitnessedCheckpointsResponse>, Status> {
            Err(Status::unimplemented("list"))
        }

        async fn list_withdrawn(
            &self,
            _: Request<pb::ListWithdrawnRequest>,
        ) -> Result<Response<pb::ListWithdrawnResponse>, Status> {
            Err(Status::unimplemented("list"))
        }
    }

    fn queued(i: i64) -> (Notice, pb::NotifyRequest) {
        let id = format!("notice-{i}");
        let n = Notice {
            id: i,
            notice_id: id.clone(),
            org_id: OrgId::parse("org", "older-peer").unwrap(),
            payload: vec![],
            present_key: None,
            attempts: 0,
            next_attempt_at_ms: 0,
            created_at_ms: 0,
        };
        let req = pb::NotifyRequest {
            notice_id: id,
            notice: Some(pb::notify_request::Notice::Message(pb::SignedMessage {
                payload: vec![1, 2, 3],
                signature: Vec::new(),
                batch: None,
            })),
        };
        (n, req)
    }

    #[tokio::test]
    async fn a_peer_without_batches_gets_one_call_per_message() {
        let key = crate::identity::NodeKey::generate("sender").unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(FederationServiceServer::new(Older {
                    spki: key.spki_der().to_vec(),
                }))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let client = Client::new(channel);
        let channels = crate::transport::client::Channels::default();
        let batch: Vec<_> = (0..3).map(queued).collect();
        assert!(channels.batches("older-peer"));
        let results = call_all(&channels, "older-peer", &client, &key, &batch).await;
        let answered: Vec<Vec<u8>> = results
            .into_iter()
            .map(|r| r.unwrap().receipt.unwrap().payload)
            .collect();
        assert_eq!(
            answered,
            vec![
                b"notice-0".to_vec(),
                b"notice-1".to_vec(),
                b"notice-2".to_vec()
            ]
        );
        // Remembered: the next round does not ask again.
        assert!(!channels.batches("older-peer"));
        assert!(channels.batches("another-peer"));
    }

    #[test]
    fn a_batch_answer_proves_only_what_it_answers() {
        let receipt = |p: &[u8]| pb::NotifyOutcome {
            outcome: Some(pb::notify_outcome::Outcome::Response(pb::NotifyResponse {
                receipt: Some(pb::SignedReceipt {
                    payload: p.to_vec(),
                    signature: vec![],
                    batch: None,
                }),
                witness: None,
            })),
        };
        let refusal = |code: i32| pb::NotifyOutcome {
            outcome: Some(pb::notify_outcome::Outcome::Refusal(pb::NotifyRefusal {
                code,
                message: "offer.terms.recipients: not a recipient".into(),
            })),
        };
        // One outcome per message, in order; a refusal keeps its code.
        let r = batch_outcomes(
            pb::NotifyBatchResponse {
                outcomes: vec![
                    receipt(b"a"),
                    refusal(tonic::Code::PermissionDenied as i32),
                    refusal(0),
                    refusal(999),
                    pb::NotifyOutcome { outcome: None },
                ],
            },
            5,
        );
        assert_eq!(
            r[0].as_ref().unwrap().receipt.as_ref().unwrap().payload,
            b"a"
        );
        let codes: Vec<tonic::Code> = r[1..]
            .iter()
            .map(|x| x.as_ref().unwrap_err().code())
            .collect();
        assert_eq!(
            codes,
            vec![
                tonic::Code::PermissionDenied,
                // "Refused with OK" and codes we do not know are tried again.
                tonic::Code::Unknown,
                tonic::Code::Unknown,
                tonic::Code::Unavailable
            ]
        );
        assert!(refused_for_good(r[1].as_ref().unwrap_err()));
        assert!(!refused_for_good(r[2].as_ref().unwrap_err()));
        // Too few (or too many) answers: nothing is proven, all are retried.
        let r = batch_outcomes(
            pb::NotifyBatchResponse {
                outcomes: vec![receipt(b"a")],
            },
            2,
        );
        assert!(
            r.iter()
                .all(|x| x.as_ref().unwrap_err().code() == tonic::Code::Unavailable)
        );
    }
}
