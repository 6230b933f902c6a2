//! The sender: delivers queued notices and messages to each peer in the order
//! they were queued, with exponential backoff and jitter per peer. Each peer
//! has a delivery task of its own, so a peer that is down, slow or silent
//! delays nobody else. A notice is marked delivered in its own transaction
//! after the peer acknowledged it; a crash in between means it is sent
//! again, and the peer answers the repeat as before.

use crate::clock::Clock;
use crate::config::Config;
use crate::domain::{FailureReason, OrgId, Peer};
use crate::error::Result;
use crate::identity::{Identity, IdentityCell, NodeKey};
use crate::metrics::Metrics;
use crate::protocol::Protocol;
use crate::protocol::messages::{Acknowledgement, sign_for_sending};
use crate::signals::OutboxSignal;
use crate::store::Store;
use crate::store::{AcceptedReceipt, Notice, NoticeKind, Route};
use crate::transport::client::Channels;
use exitnet_proto::pb;
use futures_util::future::BoxFuture;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod calls;
mod flow;

use calls::*;
use flow::*;

/// Notices one delivery task takes at a time.
const BATCH: i64 = 500;
/// Longest the sender sleeps without looking for due notices.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// The sender: what it needs to deliver notices to peers, and nothing above.
#[derive(Clone)]
pub struct Delivery {
    config: Arc<Config>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// Our key, presented on connections to peers.
    identity: Arc<IdentityCell>,
    /// This process, among replicas of one node (delivery leases name it).
    instance_id: String,
    metrics: Arc<Metrics>,
    /// Wakes the sender.
    outbox: Arc<OutboxSignal>,
    /// Connections to peers, kept between rounds.
    peer_channels: Arc<Channels>,
    protocol: Protocol,
}

/// What the sender is built from.
pub struct DeliveryParts {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub identity: Arc<IdentityCell>,
    pub instance_id: String,
    pub metrics: Arc<Metrics>,
    pub outbox: Arc<OutboxSignal>,
    pub peer_channels: Arc<Channels>,
    pub protocol: Protocol,
}

impl Delivery {
    pub fn new(p: DeliveryParts) -> Self {
        Self {
            config: p.config,
            store: p.store,
            clock: p.clock,
            identity: p.identity,
            instance_id: p.instance_id,
            metrics: p.metrics,
            outbox: p.outbox,
            peer_channels: p.peer_channels,
            protocol: p.protocol,
        }
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    fn identity(&self) -> anyhow::Result<std::sync::RwLockReadGuard<'_, Identity>> {
        self.identity.read()
    }

    fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.config.federation.call_timeout_ms)
    }
}

type Running = Arc<Mutex<HashSet<OrgId>>>;

/// Where delivery hands what peers answered, so that it names none of the
/// services above it: receipts and refusals of referral messages, and the
/// witnesses of our audit checkpoints. The composition root wires them
/// (`answers.rs`).
pub trait Answers: Send + Sync {
    /// A peer's checked receipt for a message we sent, with what it implies.
    fn receipt(&self, org: &OrgId, notice_row: i64, ack: Acknowledgement) -> AcceptedReceipt;
    fn delivered<'a>(&'a self, items: &'a [AcceptedReceipt]) -> BoxFuture<'a, Result<()>>;
    /// A message the peer refused for good, or that was not delivered in time.
    fn refused<'a>(
        &'a self,
        route: Option<&'a Route>,
        reason: FailureReason,
        text: &'a str,
    ) -> BoxFuture<'a, Result<()>>;
    /// The peer's witness of one of our audit checkpoints.
    fn witnessed<'a>(
        &'a self,
        peer: &'a OrgId,
        sent: &'a crate::domain::audit::SignedCheckpoint,
        witness: Option<&'a crate::domain::audit::SignedWitness>,
    ) -> BoxFuture<'a, Result<()>>;
}

pub async fn run(
    delivery: Delivery,
    answers: Arc<dyn Answers>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let running: Running = Arc::default();
    loop {
        if *stop.borrow() {
            break;
        }
        if let Err(e) = deliver_due(&delivery, &answers, &running).await {
            tracing::warn!(error = format!("{e:#}"), "notice delivery round failed");
        }
        loop {
            tokio::select! {
                _ = delivery.outbox.woken() => {}
                _ = tokio::time::sleep(IDLE_POLL) => break,
                _ = stop.changed() => break,
            }
            // Woken for notices queued for peers whose delivery task is
            // running: that task's next round takes them (a task that ends
            // wakes this loop, bare), so there is nothing to look for.
            let queued: Vec<OrgId> = delivery.outbox.take_queued();
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
async fn deliver_due(
    delivery: &Delivery,
    answers: &Arc<dyn Answers>,
    running: &Running,
) -> anyhow::Result<()> {
    for org in delivery
        .store
        .peers_with_due_notices(delivery.now_ms())
        .await?
    {
        let fresh = running
            .lock()
            .map(|mut r| r.insert(org.clone()))
            .unwrap_or(false);
        if !fresh {
            continue;
        }
        let (delivery, answers, running) = (delivery.clone(), answers.clone(), running.clone());
        tokio::spawn(async move {
            // Replicas of one node on one database: one delivery task per
            // peer across all of them, so nothing is sent twice and the order
            // per peer holds. The lease is renewed as the task goes on; if
            // this process dies, it expires and another replica takes over.
            let lease = format!("outbox:{org}");
            match take_lease(&delivery, &lease).await {
                Ok(true) => {
                    if let Err(e) = deliver_to_peer(&delivery, answers.as_ref(), &org, &lease).await
                    {
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
            delivery.outbox.wake();
        });
    }
    Ok(())
}

/// How long a lease lasts: two call timeouts (at least 5 s), so a live holder
/// that renews before each call never loses it, and a dead one's passes on soon.
fn lease_ttl(delivery: &Delivery) -> i64 {
    (delivery.config.federation.call_timeout_ms as i64)
        .saturating_mul(2)
        .max(5_000)
}

/// Takes or renews this process's lease.
async fn take_lease(delivery: &Delivery, name: &str) -> crate::error::Result<bool> {
    let now = delivery.now_ms();
    delivery
        .store
        .acquire_lease(name, &delivery.instance_id, now, now + lease_ttl(delivery))
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
    async fn keep(&mut self, delivery: &Delivery) -> crate::error::Result<bool> {
        let now = delivery.now_ms();
        if now - self.renewed_at < lease_ttl(delivery) / 4 {
            return Ok(true);
        }
        let kept = take_lease(delivery, self.name).await?;
        self.renewed_at = now;
        Ok(kept)
    }
}

/// A notice's kind (its route is filled in when it is opened).
fn kind(n: &Notice) -> NoticeKind {
    n.route.as_ref().map_or(NoticeKind::Peering, |r| r.kind)
}

/// The referral a message belongs to.
pub(super) fn referral(n: &Notice) -> Option<&String> {
    n.route.as_ref().and_then(|r| r.referral_id.as_ref())
}

async fn deliver_to_peer(
    delivery: &Delivery,
    answers: &dyn Answers,
    org: &OrgId,
    lease: &str,
) -> anyhow::Result<()> {
    let Some(peer) = delivery.store.peer_for_exchange(org).await? else {
        return drop_all(delivery, org).await;
    };
    let queue = due_queue(delivery, answers, org).await?;
    let now = delivery.now_ms();
    if !queue.iter().any(|(n, _)| n.next_attempt_at_ms <= now) {
        return Ok(());
    }
    let ours = key_to_present(delivery, &queue)?;
    let client = connect(delivery, &peer, &ours, &queue).await?;
    let mut round = Round {
        delivery,
        answers,
        peer: &peer,
        client: &client,
        ours: &ours,
        flow: Flow::default(),
        storing: None,
    };
    round.send(queue, lease).await?;
    let flow = round.flow;
    // "Last seen" to the second: not a write per round.
    let now = delivery.now_ms();
    if flow.seen && now - peer.last_seen_at_ms.unwrap_or(0) >= 1000 {
        delivery.store.touch_peer(org, now).await?;
    } else if !flow.seen && (flow.messages_wait || flow.notices_wait) {
        // Nothing got through: the next round connects afresh.
        delivery.peer_channels.forget(org.as_str());
    }
    Ok(())
}

/// The peer is no longer recorded: what was queued for it is dropped.
async fn drop_all(delivery: &Delivery, org: &OrgId) -> anyhow::Result<()> {
    delivery.peer_channels.forget(org.as_str());
    for n in delivery.store.undelivered_notices_for(org, BATCH).await? {
        delivery
            .store
            .notice_dropped(n.id, delivery.now_ms(), "peer no longer recorded")
            .await?;
    }
    Ok(())
}

type Queued = (Notice, pb::NotifyRequest);

/// The notices waiting for `org`, opened, in order. Offers that waited too
/// long fail as undeliverable, whether or not the peer can be reached now;
/// withdrawals and status changes never expire.
async fn due_queue(
    delivery: &Delivery,
    answers: &dyn Answers,
    org: &OrgId,
) -> anyhow::Result<Vec<Queued>> {
    let max_age_ms = (delivery.config.federation.max_delivery_age_secs as i64).saturating_mul(1000);
    let mut queue = Vec::new();
    for mut n in delivery.store.undelivered_notices_for(org, BATCH).await? {
        let req = delivery.protocol.open_notice(&n.notice_id, &n.payload)?;
        // Queued before routes were kept beside notices: read from the notice.
        n.route
            .get_or_insert_with(|| crate::protocol::messages::route_of(&req));
        if kind(&n) == NoticeKind::Offer && delivery.now_ms() - n.created_at_ms > max_age_ms {
            delivery
                .store
                .notice_dropped(n.id, delivery.now_ms(), "undeliverable")
                .await?;
            answers
                .refused(
                    n.route.as_ref(),
                    FailureReason::Undeliverable,
                    "not delivered in time",
                )
                .await?;
            continue;
        }
        queue.push((n, req));
    }
    Ok(queue)
}

/// The key the calls present. Until a key rotation has reached this peer,
/// it knows only our old key: everything queued before and with the
/// announcement is sent with it.
fn key_to_present(delivery: &Delivery, queue: &[Queued]) -> anyhow::Result<NodeKey> {
    let identity = delivery.identity()?;
    let wanted = queue.iter().find_map(|(n, _)| n.present_key.clone());
    let key = wanted
        .and_then(|fp| identity.key(&fp))
        .unwrap_or_else(|| identity.current());
    key.clone_key()
}

/// A connection to `peer` presenting `ours`; when it cannot be had, every
/// due notice is retried later.
async fn connect(
    delivery: &Delivery,
    peer: &Peer,
    ours: &NodeKey,
    queue: &[Queued],
) -> anyhow::Result<Client> {
    let org = &peer.org_id;
    let now = delivery.now_ms();
    let pinned: Vec<String> = delivery
        .store
        .peer_keys(org, now)
        .await?
        .into_iter()
        .map(|k| k.fingerprint)
        .collect();
    let connected = delivery
        .peer_channels
        .connect(
            org.as_str(),
            &peer.endpoint,
            Some(ours),
            pinned,
            delivery.call_timeout(),
        )
        .await;
    match connected {
        Ok(c) => {
            delivery.metrics.reachable(org.as_str(), true);
            Ok(c)
        }
        Err(e) => {
            delivery.metrics.reachable(org.as_str(), false);
            delivery.metrics.delivered(org.as_str(), "unreachable");
            for (n, _) in queue.iter().filter(|(n, _)| n.next_attempt_at_ms <= now) {
                retry_later(delivery, n.id, n.attempts, "peer unreachable").await?;
            }
            Err(e)
        }
    }
}

/// One delivery round to one peer over one connection.
struct Round<'a> {
    delivery: &'a Delivery,
    answers: &'a dyn Answers,
    peer: &'a Peer,
    client: &'a Client,
    ours: &'a NodeKey,
    flow: Flow,
    /// Receipts of the last batch, being stored while the next one is sent.
    storing: Option<Storing<'a>>,
}

impl<'a> Round<'a> {
    /// Sends `queue` in order. Referral messages keep their order within a
    /// referral: once one waits, every later one waits too. Messages of
    /// different referrals go out together (up to `MAX_BATCH`, as many as a
    /// peer accepts, in one call). Peering notices (states, profiles, keys)
    /// are independent of them and may go ahead, so a suspension is told
    /// even while messages wait.
    async fn send(&mut self, queue: Vec<Queued>, lease: &str) -> anyhow::Result<()> {
        let exchange_allowed = self.peer.exchange_allowed();
        let mut queue = queue.into_iter().peekable();
        // Just taken (by the caller).
        let mut held = HeldLease {
            name: lease,
            renewed_at: self.delivery.now_ms(),
        };
        while let Some((n, req)) = queue.next() {
            // Still ours? (A replica that stalled past its lease stops here.)
            if !held.keep(self.delivery).await? {
                anyhow::bail!("the delivery lease passed to another replica");
            }
            let is_message = kind(&n).is_message();
            let passes = is_message && !exchange_allowed && kind(&n) == NoticeKind::Withdrawal;
            if !self
                .flow
                .ready(self.delivery, &n, is_message, exchange_allowed, passes)
                .await?
            {
                continue;
            }
            if is_message {
                let (batch, referrals) = self.gather(n, req, &mut queue, exchange_allowed);
                self.send_batch(batch, referrals).await?;
            } else {
                self.send_notice(n, req).await?;
            }
        }
        let stored = finish(self.storing.take()).await?;
        self.flow.apply_all(stored);
        Ok(())
    }

    /// A peering notice, on its own.
    async fn send_notice(&mut self, n: Notice, req: pb::NotifyRequest) -> anyhow::Result<()> {
        let stored = finish(self.storing.take()).await?;
        self.flow.apply_all(stored);
        let result = self
            .client
            .clone()
            .notify(req.clone())
            .await
            .map(|r| r.into_inner());
        let handled = self
            .flow
            .handle(
                self.delivery,
                self.answers,
                &self.peer.org_id,
                self.peer,
                &n,
                &req,
                false,
                result,
            )
            .await?;
        self.flow.apply(handled, false);
        Ok(())
    }

    /// `n` and the following messages of other referrals, as one batch,
    /// with the referrals it is about.
    fn gather(
        &self,
        n: Notice,
        req: pb::NotifyRequest,
        queue: &mut std::iter::Peekable<std::vec::IntoIter<Queued>>,
        exchange_allowed: bool,
    ) -> (Vec<Queued>, HashSet<String>) {
        let mut bytes = notice_bytes(&req);
        let mut referrals: HashSet<String> = referral(&n).cloned().into_iter().collect();
        let mut batch = vec![(n, req)];
        while batch.len() < crate::transport::MAX_BATCH {
            let Some((next, next_req)) = queue.peek() else {
                break;
            };
            let rid = referral(next).cloned();
            let next_bytes = notice_bytes(next_req);
            if !kind(next).is_message()
                || next.next_attempt_at_ms > self.delivery.now_ms()
                // Outside an active peering only withdrawals go.
                || (!exchange_allowed && kind(next) != NoticeKind::Withdrawal)
                || rid.as_ref().is_some_and(|r| self.flow.held.contains(r))
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
        (batch, referrals)
    }

    /// Sends a batch while the last one's receipts are stored. Refusals and
    /// failures are handled at once (they decide whether later messages
    /// wait); receipts are checked and stored together (multi-row
    /// statements in one transaction) while the next batch is on its way.
    async fn send_batch(
        &mut self,
        batch: Vec<Queued>,
        referrals: HashSet<String>,
    ) -> anyhow::Result<()> {
        let (delivery, answers, peer) = (self.delivery, self.answers, self.peer);
        let org = &peer.org_id;
        // The previous batch's receipts are still being stored: a message
        // of one of its referrals waits for that (order within a referral),
        // others go out meanwhile.
        if self
            .storing
            .as_ref()
            .is_some_and(|(pending, _)| !pending.is_disjoint(&referrals))
        {
            let stored = finish(self.storing.take()).await?;
            self.flow.apply_all(stored);
        }
        let (results, stored) = tokio::join!(
            call_all(
                &delivery.peer_channels,
                org.as_str(),
                self.client,
                self.ours,
                &batch
            ),
            finish(self.storing.take())
        );
        self.flow.apply_all(stored?);
        let mut answered = Vec::new();
        let mut failed = Vec::new();
        for ((n, req), result) in batch.into_iter().zip(results) {
            match result {
                Ok(resp) => answered.push((n, req, resp)),
                Err(status) => failed.push((n, req, status)),
            }
        }
        let flow = &self.flow;
        let handled = futures_util::future::join_all(failed.iter().map(|(n, req, status)| {
            flow.handle(
                delivery,
                answers,
                org,
                peer,
                n,
                req,
                true,
                Err(status.clone()),
            )
        }))
        .await;
        for h in handled {
            self.flow.apply(h?, true);
        }
        if !answered.is_empty() {
            let ids: HashSet<String> = answered
                .iter()
                .filter_map(|(n, _, _)| referral(n).cloned())
                .collect();
            self.storing = Some((
                ids,
                Box::pin(accept_deliveries(delivery, answers, org, answered)),
            ));
        }
        Ok(())
    }
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

#[cfg(test)]
mod tests;
