//! The audit trail: one record for every exchange with a peer and every read
//! or change of personal data, written in the transaction of the action it
//! records, chained by SHA-256 (each record's hash covers the previous one's),
//! with signed checkpoints of the chain's head that active peers witness.
//! Records hold identifiers, roles and results — never case content.
//! docs/audit.md says what this proves and what it does not.

pub mod own_keys;

use crate::auth::{Principal, Role};

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

/// Appends records outside any other write (reads, refusals, admin actions).
pub async fn record(state: &crate::state::NodeState, entries: &[AuditEntry]) {
    if entries.is_empty() {
        return;
    }
    if let Err(e) = state.store.append_audit(entries).await {
        // The action already happened; say loudly that its record is missing.
        tracing::error!(error = %e, action = %entries[0].action, "writing an audit record failed");
    }
}

/// Records an attempt the caller had no right to make, and passes the
/// result on unchanged.
pub async fn guard<T>(
    state: &crate::state::NodeState,
    entry: impl FnOnce() -> AuditEntry,
    r: crate::error::Result<T>,
) -> crate::error::Result<T> {
    if let Err(crate::error::Error::PermissionDenied(_)) = &r {
        record(state, &[entry().result("denied")]).await;
    }
    r
}

pub use crate::domain::audit::{AuditPage, AuditQuery};

/// One page of the trail for `ListAuditRecords` (client API and admin socket).
pub async fn list(
    state: &crate::state::NodeState,
    q: &AuditQuery,
) -> crate::error::Result<AuditPage> {
    let mut records = state
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
