//! The audit trail witnessed by peers: checkpoints of our chain's head sent
//! to every active peer and countersigned (`checkpoint`), theirs kept and
//! countersigned by us, and the verification of our chain against what the
//! peers witnessed (`verify`). Above the audit trail and peering, which it
//! uses; the delivery of checkpoints is `delivery`'s.

pub mod checkpoint;
pub mod verify;

use crate::audit::Audit;
use crate::clock::Clock;
use crate::config::Config;
use crate::domain::OrgId;
use crate::protocol::Protocol;
use crate::security::{Quotas, Refusals};
use crate::signals::OutboxSignal;
use crate::store::Store;
use std::sync::Arc;

/// The witness service: our checkpoints made and sent, peers' checkpoints
/// countersigned, our chain verified against what peers witnessed. The
/// signing and checking is the protocol's (`protocol::checkpoint`).
#[derive(Clone)]
pub struct Witness {
    org_id: OrgId,
    config: Arc<Config>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// Wakes the notice sender when checkpoints are queued.
    outbox: Arc<OutboxSignal>,
    audit: Audit,
    protocol: Protocol,
    quotas: Quotas,
    refusals: Refusals,
}

/// What the witness service is built from.
pub struct WitnessParts {
    pub org_id: OrgId,
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub outbox: Arc<OutboxSignal>,
    pub audit: Audit,
    pub protocol: Protocol,
    pub quotas: Quotas,
    pub refusals: Refusals,
}

impl Witness {
    pub fn new(p: WitnessParts) -> Self {
        Self {
            org_id: p.org_id,
            config: p.config,
            store: p.store,
            clock: p.clock,
            outbox: p.outbox,
            audit: p.audit,
            protocol: p.protocol,
            quotas: p.quotas,
            refusals: p.refusals,
        }
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}
