//! The parts a running node is built from (its configuration, store, keys,
//! clock, signals, limits), as the composition root holds them. Only `app`
//! sees this: each service and adapter is given the parts it uses.

use crate::config::Config;
use crate::domain::{OrgId, OrgProfile};
use crate::identity::IdentityCell;
use crate::store::Store;
use crate::tls::CurrentKey;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

pub struct Node {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub identity: Arc<IdentityCell>,
    /// The certificate the federation listener presents.
    pub current_key: Arc<CurrentKey>,
    pub org_id: OrgId,
    pub profile: Arc<RwLock<OrgProfile>>,
    /// Where the federation listener is bound (port 0 resolved).
    pub federation_bound: SocketAddr,
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
    pub peer_channels: Arc<crate::transport::client::Channels>,
    /// Where the node reads the time.
    pub clock: Arc<dyn crate::clock::Clock>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("org_id", &self.org_id)
            .finish()
    }
}

impl Node {
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
        advertised_endpoint(&self.config, self.federation_bound)
    }

    /// Milliseconds since the Unix epoch, by the node's clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}

/// The federation endpoint peers are told to use: the configured one, or
/// where the listener is bound.
pub(super) fn advertised_endpoint(config: &Config, bound: SocketAddr) -> String {
    if let Some(a) = &config.federation.advertise {
        return a.clone();
    }
    if bound.ip().is_unspecified() {
        format!("127.0.0.1:{}", bound.port())
    } else {
        bound.to_string()
    }
}
