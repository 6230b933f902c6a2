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

/// One page of the trail for `ListAuditRecords` (client API and admin socket).
pub async fn list(
    state: &crate::state::NodeState,
    req: &exitnet_proto::pb::ListAuditRecordsRequest,
) -> crate::error::Result<exitnet_proto::pb::ListAuditRecordsResponse> {
    use crate::error::FieldError;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let size = match req.page_size {
        0 => 100,
        n if n <= 1000 => i64::from(n),
        _ => return Err(FieldError::new("page_size", "at most 1000").into()),
    };
    let after = if req.page_token.is_empty() {
        0
    } else {
        let bad = || FieldError::new("page_token", "not a token from a previous response");
        let raw = URL_SAFE_NO_PAD.decode(&req.page_token).map_err(|_| bad())?;
        String::from_utf8(raw)
            .ok()
            .and_then(|s| s.strip_prefix("a:").and_then(|n| n.parse::<i64>().ok()))
            .filter(|n| *n >= 0)
            .ok_or_else(bad)?
    };
    let text = |field: &str, v: &str| -> crate::error::Result<Option<String>> {
        if v.len() > 200 || v.chars().any(char::is_control) {
            return Err(FieldError::new(field, "at most 200 printable characters").into());
        }
        Ok(Some(v.to_owned()).filter(|s| !s.is_empty()))
    };
    let filter = AuditFilter {
        since_ms: req
            .since
            .as_ref()
            .map(|t| crate::domain::time::checked_timestamp("since", t))
            .transpose()?,
        until_ms: req
            .until
            .as_ref()
            .map(|t| crate::domain::time::checked_timestamp("until", t))
            .transpose()?,
        actor: text("actor", &req.actor)?,
        action: text("action", &req.action)?,
        object_id: text("object_id", &req.object_id)?,
    };
    if let (Some(s), Some(u)) = (filter.since_ms, filter.until_ms)
        && u < s
    {
        return Err(FieldError::new("until", "must not be before since").into());
    }
    let mut rows = state.store.list_audit(&filter, after, size + 1).await?;
    let next_page_token = if rows.len() as i64 > size {
        rows.truncate(size as usize);
        rows.last()
            .map(|r| URL_SAFE_NO_PAD.encode(format!("a:{}", r.seq)))
            .unwrap_or_default()
    } else {
        String::new()
    };
    Ok(exitnet_proto::pb::ListAuditRecordsResponse {
        records: rows.iter().map(to_pb).collect(),
        next_page_token,
    })
}

/// Checks an exported receipt against the issuer's pinned keys (or ours).
pub async fn verify_receipt(
    state: &crate::state::NodeState,
    r: &exitnet_proto::pb::ExportedReceipt,
) -> crate::error::Result<exitnet_proto::pb::VerifyReceiptResponse> {
    use exitnet_proto::pb;
    use prost::Message;
    let mut out = pb::VerifyReceiptResponse::default();
    let Ok(receipt) = pb::Receipt::decode(r.payload.as_slice()) else {
        out.reason = "the payload is not a receipt".into();
        return Ok(out);
    };
    out.kind = pb::ReceiptKind::try_from(receipt.kind)
        .map(|k| k.as_str_name().to_owned())
        .unwrap_or_default();
    out.message_id = receipt.message_id.clone();
    out.referral_id = receipt.referral_id.clone();
    out.sender_org = receipt.sender_org.clone();
    out.receiver_org = receipt.receiver_org.clone();
    out.at = receipt.at;
    out.key_fingerprint = receipt.key_fingerprint.clone();
    out.purge_outcome = match receipt.purge_outcome() {
        pb::PurgeOutcome::Purged => "purged",
        pb::PurgeOutcome::NothingHeld => "nothing_held",
        pb::PurgeOutcome::Unspecified => "",
    }
    .into();
    if receipt.receiver_org != r.issued_by {
        out.reason = format!(
            "issued_by {} but the receipt names {} as its issuer",
            r.issued_by, receipt.receiver_org
        );
        return Ok(out);
    }
    let at = receipt
        .at
        .as_ref()
        .map(crate::domain::time::from_timestamp)
        .unwrap_or(0);
    let keys: Vec<Vec<u8>> = if r.issued_by == state.org_id.as_str() {
        own_keys::own_key(state, &receipt.key_fingerprint)
            .await?
            .into_iter()
            .collect()
    } else {
        let Ok(org) = crate::domain::OrgId::parse("issued_by", &r.issued_by) else {
            out.reason = "issued_by is not an organisation ID".into();
            return Ok(out);
        };
        // Keys valid when the receipt was signed (a retired key still counts).
        state
            .store
            .peer_keys(&org, at.min(state.now_ms()))
            .await?
            .into_iter()
            .filter(|k| k.fingerprint == receipt.key_fingerprint)
            .map(|k| k.spki_der)
            .collect()
    };
    if keys.is_empty() {
        out.reason = format!(
            "no key {} is pinned for {}",
            receipt.key_fingerprint, r.issued_by
        );
        return Ok(out);
    }
    if let Some(proof) = &r.batch
        && let Err(why) = crate::batch_sign::root_of(&r.payload, proof)
    {
        out.reason = format!("the batch proof does not hold: {why}");
        return Ok(out);
    }
    let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    // Receipts kept from before signatures carried their context still verify.
    if !crate::batch_sign::verify_stored(
        crate::batch_sign::RECEIPTS,
        &keys,
        &r.payload,
        &r.signature,
        r.batch.as_ref(),
    ) {
        out.reason = if r.batch.is_some() {
            "the batch signature does not verify with the issuer's key".into()
        } else {
            "the signature does not verify with the issuer's key".into()
        };
        return Ok(out);
    }
    out.valid = true;
    Ok(out)
}

/// Converts a stored record for the API.
pub fn to_pb(r: &AuditRecord) -> exitnet_proto::pb::AuditRecord {
    let e = &r.entry;
    exitnet_proto::pb::AuditRecord {
        seq: r.seq as u64,
        at: Some(crate::domain::time::to_timestamp(e.at_ms)),
        actor_kind: e.actor_kind.clone(),
        actor: e.actor.clone(),
        role: e.role.clone(),
        on_behalf_of: e.on_behalf_of.clone(),
        action: e.action.clone(),
        object_type: e.object_type.clone(),
        object_id: e.object_id.clone(),
        consent_id: e.consent_id.clone(),
        peer_org: e.peer_org.clone(),
        result: e.result.clone(),
        prev_hash: r.prev_hash.clone(),
        hash: r.hash.clone(),
    }
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
