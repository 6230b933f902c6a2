//! The audit trail: one record for every exchange with a peer and every read
//! or change of personal data, written in the transaction of the action it
//! records, chained by SHA-256 (each record's hash covers the previous one's),
//! with signed checkpoints of the chain's head that active peers witness.
//! Records hold identifiers, roles and results — never case content.
//! docs/audit.md says what this proves and what it does not.

use crate::auth::{Principal, Role};
use crate::clock::Clock;
use crate::store::AuditStore;
use std::sync::Arc;

pub use crate::domain::audit::{AuditEntry, AuditFilter, AuditRecord, GENESIS, record_hash};

impl AuditEntry {
    /// A signed-in caller of the client API (staff or an agency system).
    pub fn caller(
        at_ms: i64,
        p: &Principal,
        action: &str,
        object_type: &str,
        object_id: &str,
    ) -> Self {
        let kind = if p.role == Role::System {
            "system"
        } else {
            "staff"
        };
        let mut e = Self::new(at_ms, kind, &p.subject, action, object_type, object_id);
        e.role = p.role.as_str().into();
        e.on_behalf_of = p.on_behalf_of.clone().unwrap_or_default();
        e
    }
}

/// The audit trail as the services write and read it.
#[derive(Clone)]
pub struct Audit {
    store: Arc<dyn AuditStore>,
    clock: Arc<dyn Clock>,
}

impl Audit {
    pub fn new(store: Arc<dyn AuditStore>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    /// A record of `p`'s action, stamped now.
    pub fn caller(&self, p: &Principal, action: &str, object_type: &str, id: &str) -> AuditEntry {
        AuditEntry::caller(self.clock.now_ms(), p, action, object_type, id)
    }

    /// Appends records outside any other write (reads, refusals, admin actions).
    pub async fn record(&self, entries: &[AuditEntry]) {
        if entries.is_empty() {
            return;
        }
        if let Err(e) = self.store.append_audit(entries).await {
            // The action already happened; say loudly that its record is missing.
            tracing::error!(error = %e, action = %entries[0].action, "writing an audit record failed");
        }
    }

    /// Records an attempt the caller had no right to make, and passes the
    /// result on unchanged.
    pub async fn guard<T>(
        &self,
        entry: impl FnOnce() -> AuditEntry,
        r: crate::error::Result<T>,
    ) -> crate::error::Result<T> {
        if let Err(crate::error::Error::PermissionDenied(_)) = &r {
            self.record(&[entry().result("denied")]).await;
        }
        r
    }

    /// One page of the trail for `ListAuditRecords` (client API and admin socket).
    pub async fn list(&self, q: &AuditQuery) -> crate::error::Result<AuditPage> {
        let mut records = self
            .store
            .list_audit(&q.filter, q.after_seq, q.size + 1)
            .await?;
        let next_after_seq = if records.len() as i64 > q.size {
            records.truncate(q.size as usize);
            records.last().map(|r| r.seq)
        } else {
            None
        };
        Ok(AuditPage {
            records,
            next_after_seq,
        })
    }
}

pub use crate::domain::audit::{AuditPage, AuditQuery};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_covered() {
        let base = AuditEntry {
            at_ms: 1,
            actor_kind: "staff".into(),
            actor: "alice".into(),
            action: "referral.read".into(),
            object_id: "r1".into(),
            result: "ok".into(),
            ..AuditEntry::default()
        };
        let h = record_hash(1, &GENESIS, &base);
        assert_eq!(h, record_hash(1, &GENESIS, &base.clone()));
        assert_ne!(h, record_hash(2, &GENESIS, &base));
        assert_ne!(h, record_hash(1, &[1; 32], &base));
        let mut moved = base.clone();
        // Moving a character between fields changes the hash.
        moved.actor = "alic".into();
        moved.role = "e".into();
        assert_ne!(h, record_hash(1, &GENESIS, &moved));
        let mut later = base;
        later.at_ms = 2;
        assert_ne!(h, record_hash(1, &GENESIS, &later));
    }
}
