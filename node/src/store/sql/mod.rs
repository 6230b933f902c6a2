//! The SQL that SQLite and PostgreSQL share, written once. Both schemas use
//! the same table and column names and portable types (BIGINT milliseconds,
//! TEXT, bytes), so the statements run unchanged on both; `$n` placeholders
//! work in both dialects.
//!
//! This module holds the statements' text. The files beside it are not its
//! children: each backend module names its store `S`, its database `Db` and
//! its write transaction `Tx`, then includes `backend.rs` with `#[path]`, which
//! declares a module per aggregate (`peers.rs`, `outbox.rs`, `referrals.rs`,
//! …), `rows.rs` (rows read back as records) and `shared.rs` (statements
//! several aggregates run in their own transactions). So one source compiles
//! once per backend and stays plain Rust that rustfmt and clippy read (a
//! macro body, as it was, they skip).

/// The start of an insert of a referral row: every column, in the order
/// both inserts bind them.
pub(super) const INSERT_REFERRAL: &str = "INSERT INTO referrals (referral_id, direction, peer_org, owner, team,
    request_key, request_digest, consent_id, pseudonym, need_areas, services, urgency, summary, terms, state,
    purge_status, purged_at, created_at, updated_at, key_id, expires_at)";

/// Columns of a peer as `row_to_peer` reads them.
pub(super) const PEER_SELECT: &str = "
SELECT p.org_id, p.profile, p.state, p.awaiting, p.remote_state, p.endpoint,
       p.created_at, p.updated_at, p.last_seen_at,
       (SELECT k.fingerprint FROM peer_keys k WHERE k.org_id = p.org_id
         ORDER BY k.added_at DESC, k.fingerprint LIMIT 1) AS key_fingerprint,
       (SELECT COUNT(*) FROM peer_notices n WHERE n.org_id = p.org_id
         AND n.delivered_at IS NULL AND n.dropped_at IS NULL) AS pending_notices
FROM peers p";

/// A peer as calls need it: without the count of its pending notices (which
/// grows with a backlog, and only administrators and metrics read).
pub(super) fn peer_select_uncounted() -> String {
    PEER_SELECT.replacen(
        "(SELECT COUNT(*) FROM peer_notices n WHERE n.org_id = p.org_id
         AND n.delivered_at IS NULL AND n.dropped_at IS NULL)",
        "CAST(0 AS BIGINT)",
        1,
    )
}

pub(super) const CONSENT_COLUMNS: &str = "consent_id, owner, team, subject_ref, terms, collection_method, witness, recorded_by, recorded_at, withdrawn_at";

pub(super) const REFERRAL_COLUMNS: &str = "referral_id, direction, peer_org, owner, team, consent_id, pseudonym, need_areas, services, urgency, key_id, summary, terms, state, purge_status, purged_at, created_at, updated_at, expires_at";

/// One receipt by its key: the message, who issued it, the other party.
pub(super) const RECEIPT_BY_KEY: &str =
    "SELECT message_id, issued_by, counterpart, referral_id, kind, payload, signature, batch, at
     FROM receipts WHERE message_id = $1 AND issued_by = $2 AND counterpart = $3";
/// The referral an owner created under a request key, with the request's digest.
pub(super) const REFERRAL_BY_REQUEST: &str = "SELECT referral_id, direction, peer_org, owner, team, consent_id, pseudonym, need_areas, services, urgency, key_id, summary, terms, state, purge_status, purged_at, created_at, updated_at, expires_at, request_digest
     FROM referrals WHERE owner = $1 AND request_key = $2";
pub(super) const AUDIT_COLUMNS: &str = "seq, at, actor_kind, actor, role, on_behalf_of, action, object_type, object_id, consent_id, peer_org, result, prev_hash, hash";

pub(super) fn encode_profile(p: &crate::domain::OrgProfile) -> Vec<u8> {
    p.encoded()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request look-up reads the same columns `row_to_referral` expects.
    #[test]
    fn the_request_lookup_selects_the_referral_columns() {
        assert!(
            REFERRAL_BY_REQUEST.contains(&format!("SELECT {REFERRAL_COLUMNS}, request_digest"))
        );
    }
}
