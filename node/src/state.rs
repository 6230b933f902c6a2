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
    /// Referral IDs that changed, for watchers here and in other replicas.
    pub changes: crate::signals::ChangeFeed,
    /// Wakes the notice sender.
    pub outbox: crate::signals::OutboxSignal,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub limits: Arc<crate::limits::Limits>,
    /// This process, among replicas of one node (delivery leases name it).
    pub instance_id: String,
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

    /// Wakes the sender for a notice just queued for `org`.
    pub fn queued_for(&self, org: &OrgId) {
        self.outbox.queued_for(org);
    }

    /// Tells watchers that a referral changed (no content, just the ID).
    pub fn referral_changed(&self, referral_id: &str) {
        self.changes.changed(referral_id);
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
