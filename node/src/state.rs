//! What every part of a running node shares.

use crate::config::Config;
use crate::domain::{OrgId, OrgProfile};
use crate::identity::{Identity, IdentityCell};
use crate::store::Store;
use crate::tls::CurrentKey;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

pub struct NodeState {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub identity: Arc<IdentityCell>,
    /// The certificate the federation listener presents.
    pub current_key: Arc<CurrentKey>,
    pub org_id: OrgId,
    pub profile: Arc<RwLock<OrgProfile>>,
    /// Where the federation listener is bound (port 0 resolved).
    pub federation_bound: std::net::SocketAddr,
    /// Verifies bearer tokens on the client API.
    pub auth: Arc<crate::auth::Authenticator>,
    /// Wraps the data keys of case content.
    pub master_key: Arc<crate::crypto::MasterKey>,
    /// Referral IDs that changed, for watchers here and in other replicas.
    pub changes: Arc<crate::signals::ChangeFeed>,
    /// Wakes the notice sender.
    pub outbox: Arc<crate::signals::OutboxSignal>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub limits: Arc<crate::limits::Limits>,
    /// This process, among replicas of one node (delivery leases name it).
    pub instance_id: String,
    /// Stores received offers together.
    pub intake: crate::store::intake::Intake,
    /// The sender's connections to peers, kept between delivery rounds.
    pub peer_channels: crate::transport::client::Channels,
    /// Where the node reads the time.
    pub clock: Arc<dyn crate::clock::Clock>,
    // The services, for the rooms not yet given the ones they need as
    // values of their own (issue 18): peering, delivery, the witness, the
    // master key generations, the admin and federation adapters.
    pub audit: crate::audit::Audit,
    pub protocol: crate::protocol::Protocol,
    pub referrals: crate::referrals::Referrals,
    pub refusals: crate::security::Refusals,
    pub quotas: crate::security::Quotas,
    pub witness: crate::witness::Witness,
    pub master_keys: crate::keys::MasterKeys,
    pub subject_access: crate::subject_access::SubjectAccess,
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
        self.identity.read()
    }

    pub fn fingerprint(&self) -> anyhow::Result<String> {
        self.identity.fingerprint()
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
