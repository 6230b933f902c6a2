//! What every part of a running node shares.

use crate::config::Config;
use crate::domain::{OrgId, OrgProfile};
use crate::identity::Identity;
use crate::store::Store;
use crate::tls::CurrentKey;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

pub struct NodeState {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub identity: RwLock<Identity>,
    /// The certificate the federation listener presents.
    pub current_key: Arc<CurrentKey>,
    pub org_id: OrgId,
    pub profile: RwLock<OrgProfile>,
    /// Where the federation listener is bound (port 0 resolved).
    pub federation_bound: std::net::SocketAddr,
    /// Verifies bearer tokens on the client API.
    pub auth: crate::auth::Authenticator,
    /// Wraps the data keys of case content.
    pub master_key: crate::crypto::MasterKey,
    /// Key for pairwise pseudonyms (kept in the database's node_meta).
    pub pseudonym_key: Vec<u8>,
    /// Referral IDs that changed, for `WatchReferrals`.
    pub referral_events: tokio::sync::broadcast::Sender<String>,
    /// Wakes the notice sender when something was queued.
    pub outbox_wake: tokio::sync::Notify,
    /// Peers something was queued for since the sender last looked (see
    /// `queued_for`); a wake without any makes the sender look everywhere.
    pub outbox_queued: std::sync::Mutex<std::collections::HashSet<OrgId>>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub limits: Arc<crate::limits::Limits>,
    /// This process, among replicas of one node (delivery leases name it).
    pub instance_id: String,
    /// Other processes may share the database (PostgreSQL): the referrals
    /// that changed go to them (see `publish_changes`), so that their
    /// watchers see them too.
    pub changes_out: Option<tokio::sync::mpsc::UnboundedSender<String>>,
    /// Stores received offers together.
    pub intake: crate::store::intake::Intake,
    /// The sender's connections to peers, kept between delivery rounds.
    pub peer_channels: crate::transport::client::Channels,
    /// Batch roots of peers' receipts already verified.
    pub verified_roots: crate::batch_sign::VerifiedRoots,
    /// Where the node reads the time.
    pub clock: Arc<dyn crate::clock::Clock>,
}

impl std::fmt::Debug for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeState")
            .field("org_id", &self.org_id)
            .finish()
    }
}

impl NodeState {
    pub fn identity(&self) -> anyhow::Result<RwLockReadGuard<'_, Identity>> {
        self.identity
            .read()
            .map_err(|_| anyhow::anyhow!("identity lock poisoned"))
    }

    pub fn fingerprint(&self) -> anyhow::Result<String> {
        Ok(self.identity()?.current().fingerprint().to_owned())
    }

    pub fn profile(&self) -> OrgProfile {
        match self.profile.read() {
            Ok(p) => p.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The federation endpoint peers are told to use.
    pub fn advertised_endpoint(&self) -> String {
        if let Some(a) = &self.config.federation.advertise {
            return a.clone();
        }
        let addr = self.federation_bound;
        if addr.ip().is_unspecified() {
            format!("127.0.0.1:{}", addr.port())
        } else {
            addr.to_string()
        }
    }

    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.config.federation.call_timeout_ms)
    }

    /// Wakes the sender for a notice just queued for `org`. Cheaper than a
    /// bare wake: while a delivery task for `org` runs, the sender need not
    /// look for due notices (the task's next round takes it).
    pub fn queued_for(&self, org: &OrgId) {
        if let Ok(mut q) = self.outbox_queued.lock() {
            q.insert(org.clone());
        }
        self.outbox_wake.notify_one();
    }

    /// Tells watchers that a referral changed (no content, just the ID).
    pub fn referral_changed(&self, referral_id: &str) {
        let _ = self.referral_events.send(referral_id.to_owned());
        if let Some(out) = &self.changes_out {
            let _ = out.send(referral_id.to_owned());
        }
    }

    /// Tells the other replicas which referrals changed, gathered: one
    /// notification per gathering, not one per referral (on PostgreSQL each
    /// notification's commit takes one lock for the whole database, and 64
    /// referrals received at once queued on it for seconds).
    pub fn publish_changes(
        store: Arc<dyn Store>,
        instance_id: String,
    ) -> tokio::sync::mpsc::UnboundedSender<String> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            while rx.recv_many(&mut ids, 1024).await > 0 {
                for payload in change_payloads(&instance_id, &ids) {
                    if let Err(e) = store.publish_change(&payload).await {
                        tracing::warn!(error = %e, "telling other replicas of a change failed");
                    }
                }
                ids.clear();
            }
        });
        tx
    }

    /// Passes changes other replicas published to this process's watchers.
    pub async fn follow_other_replicas(self: &std::sync::Arc<Self>) -> anyhow::Result<()> {
        let Some(mut rx) = self.store.subscribe_changes().await? else {
            return Ok(());
        };
        let state = self.clone();
        tokio::spawn(async move {
            while let Some(payload) = rx.recv().await {
                if let Some((from, ids)) = payload.split_once(':')
                    && from != state.instance_id
                {
                    for id in ids.split(',') {
                        let _ = state.referral_events.send(id.to_owned());
                    }
                }
            }
        });
        Ok(())
    }

    /// Milliseconds since the Unix epoch, by the node's clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}

impl crate::batch_sign::ReceiptKeys for NodeState {
    fn sign_receipts(
        &self,
        fingerprint: &str,
        payloads: &[&[u8]],
    ) -> crate::error::Result<Vec<crate::batch_sign::Signed>> {
        let identity = self.identity().map_err(crate::error::Error::Internal)?;
        let key = identity.key(fingerprint).ok_or_else(|| {
            crate::error::Error::Internal(anyhow::anyhow!("the signing key is gone"))
        })?;
        crate::batch_sign::sign_all(key, crate::batch_sign::RECEIPTS, payloads)
            .map_err(crate::error::Error::Internal)
    }
}

/// Largest notification payload: PostgreSQL's limit is 8,000 bytes.
const MAX_CHANGE_PAYLOAD: usize = 7_900;

/// `instance:id,id,…`, as few as fit under the limit.
fn change_payloads(instance_id: &str, ids: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for id in ids {
        if !cur.is_empty() && cur.len() + 1 + id.len() > MAX_CHANGE_PAYLOAD {
            out.push(std::mem::take(&mut cur));
        }
        if cur.is_empty() {
            cur = format!("{instance_id}:{id}");
        } else {
            cur.push(',');
            cur.push_str(id);
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_go_out_gathered_and_under_the_limit() {
        let ids: Vec<String> = (0..1000)
            .map(|i| format!("0190b3c4-5d6e-7f80-9a1b-{i:012}"))
            .collect();
        let payloads = change_payloads("instance-1", &ids);
        assert!(
            payloads.len() > 1 && payloads.len() < 10,
            "{}",
            payloads.len()
        );
        let mut back = Vec::new();
        for p in &payloads {
            assert!(p.len() <= MAX_CHANGE_PAYLOAD);
            let (from, list) = p.split_once(':').unwrap();
            assert_eq!(from, "instance-1");
            back.extend(list.split(',').map(str::to_owned));
        }
        assert_eq!(back, ids);
        assert_eq!(
            change_payloads("i", &["a".to_owned()]),
            vec!["i:a".to_owned()]
        );
        assert!(change_payloads("i", &[]).is_empty());
    }
}
