//! The federation protocol's messages, below the services that send and
//! receive them: building a notice for a peer, signing what goes out (one
//! signature per batch, `batch_sign`), opening and verifying what comes in,
//! the receipts both ways, and the signed invitation codes (`invitation`).
//! Knows keys, peers' pinned keys and the wire format; decides nothing about
//! referrals.

pub mod batch_sign;
pub mod checkpoint;
pub mod incoming;
pub mod invitation;
pub mod messages;
pub mod own_keys;
pub mod peer_client;
pub mod receipts;
pub mod rotation;

use crate::clock::Clock;
use crate::crypto::MasterKey;
use crate::domain::OrgId;
use crate::identity::{Identity, IdentityCell};
use crate::protocol::batch_sign::VerifiedRoots;
use crate::store::Store;
use std::sync::{Arc, RwLockReadGuard};
use std::time::Duration;

/// The protocol as this node speaks it: its keys (the identity that signs,
/// the master key that seals notices while they wait), the peers' pinned
/// keys (in the store), the batch roots already verified, and the time.
#[derive(Clone)]
pub struct Protocol {
    pub org_id: OrgId,
    identity: Arc<IdentityCell>,
    master_key: Arc<MasterKey>,
    verified_roots: Arc<VerifiedRoots>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    call_timeout: Duration,
}

impl Protocol {
    pub fn new(
        org_id: OrgId,
        identity: Arc<IdentityCell>,
        master_key: Arc<MasterKey>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        call_timeout: Duration,
    ) -> Self {
        Self {
            org_id,
            identity,
            master_key,
            verified_roots: Arc::default(),
            store,
            clock,
            call_timeout,
        }
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    fn identity(&self) -> anyhow::Result<RwLockReadGuard<'_, Identity>> {
        self.identity.read()
    }

    fn fingerprint(&self) -> anyhow::Result<String> {
        self.identity.fingerprint()
    }
}
