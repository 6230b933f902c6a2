//! Rows read back as records, for this backend's row type.

use super::Db;
use sqlx::Row;

type DbRow = <Db as sqlx::Database>::Row;

/// Code names stored comma-separated, each one known to this build.
fn names<T>(
    referral_id: &str,
    what: &str,
    stored: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> crate::error::Result<Vec<T>> {
    stored
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            parse(s).ok_or_else(|| {
                anyhow::anyhow!("stored referral {referral_id}: unknown {what} {s:?}").into()
            })
        })
        .collect()
}

/// Code names as they are stored: comma-separated.
pub(super) fn join<T: Copy>(v: &[T], name: impl Fn(T) -> &'static str) -> String {
    v.iter().map(|x| name(*x)).collect::<Vec<_>>().join(",")
}

/// An event's stored detail, read strictly (`wire::change`).
pub(super) fn stored_detail(
    referral_id: &str,
    bytes: &[u8],
) -> crate::error::Result<crate::domain::referral::EventDetail> {
    crate::wire::change::detail_from_stored(bytes)
        .map_err(|e| anyhow::anyhow!("stored event of {referral_id}: {e}").into())
}

pub(super) fn row_to_peer(row: &DbRow) -> crate::error::Result<crate::domain::Peer> {
    use crate::domain::{Awaiting, OrgId, OrgProfile, Peer, PeerState};
    use anyhow::anyhow;
    let org_id: String = row.try_get("org_id")?;
    let profile: Vec<u8> = row.try_get("profile")?;
    let profile = OrgProfile::decode_stored(&profile)
        .map_err(|e| anyhow!("stored profile of {org_id}: {e}"))?;
    let state: String = row.try_get("state")?;
    let awaiting: String = row.try_get("awaiting")?;
    let remote_state: Option<String> = row.try_get("remote_state")?;
    let bad = |what: &str| anyhow!("stored peer {org_id}: bad {what}");
    Ok(Peer {
        org_id: OrgId::parse("org_id", &org_id).map_err(|_| bad("org_id"))?,
        profile,
        state: PeerState::parse(&state).ok_or_else(|| bad("state"))?,
        awaiting: Awaiting::parse(&awaiting).ok_or_else(|| bad("awaiting"))?,
        remote_state: match remote_state {
            Some(s) => Some(PeerState::parse(&s).ok_or_else(|| bad("remote_state"))?),
            None => None,
        },
        endpoint: row.try_get("endpoint")?,
        key_fingerprint: row
            .try_get::<Option<String>, _>("key_fingerprint")?
            .unwrap_or_default(),
        created_at_ms: row.try_get("created_at")?,
        updated_at_ms: row.try_get("updated_at")?,
        last_seen_at_ms: row.try_get("last_seen_at")?,
        pending_notices: row.try_get("pending_notices")?,
    })
}

pub(super) fn row_to_consent(row: &DbRow) -> crate::error::Result<crate::domain::consent::Consent> {
    use crate::domain::CollectionMethod;
    use crate::domain::consent::{Consent, ConsentTerms};
    use anyhow::anyhow;
    let id: String = row.try_get("consent_id")?;
    let terms: Vec<u8> = row.try_get("terms")?;
    let terms =
        ConsentTerms::decode_stored(&terms).map_err(|e| anyhow!("stored consent {id}: {e}"))?;
    let method: String = row.try_get("collection_method")?;
    Ok(Consent {
        subject_ref: row.try_get("subject_ref")?,
        terms,
        collection_method: CollectionMethod::parse(&method)
            .ok_or_else(|| anyhow!("stored consent {id}: bad method"))?,
        witness: row.try_get("witness")?,
        owner: row.try_get("owner")?,
        team: row.try_get("team")?,
        recorded_by: row.try_get("recorded_by")?,
        recorded_at_ms: row.try_get("recorded_at")?,
        withdrawn_at_ms: row.try_get("withdrawn_at")?,
        consent_id: id,
    })
}

pub(super) fn row_to_referral(row: &DbRow) -> crate::error::Result<crate::store::ReferralRecord> {
    use crate::domain::{NeedArea, PurgeStatus, ReferralState, Service, Urgency};
    let id: String = row.try_get("referral_id")?;
    let peer: String = row.try_get("peer_org")?;
    let direction: String = row.try_get("direction")?;
    let state: String = row.try_get("state")?;
    let purge_status: String = row.try_get("purge_status")?;
    // A value this build does not know (a database written by a newer
    // release, or tampered with) is an error, never taken for another.
    let bad = |what: &str, v: &str| anyhow::anyhow!("stored referral {id}: unknown {what} {v:?}");
    Ok(crate::store::ReferralRecord {
        outbound: match direction.as_str() {
            "outbound" => true,
            "inbound" => false,
            other => return Err(bad("direction", other).into()),
        },
        peer_org: crate::domain::OrgId::parse("peer_org", &peer)
            .map_err(|e| anyhow::anyhow!("stored referral: {e}"))?,
        owner: row.try_get("owner")?,
        team: row.try_get("team")?,
        consent_id: row.try_get("consent_id")?,
        pseudonym: row.try_get("pseudonym")?,
        need_areas: names(
            &id,
            "need area",
            &row.try_get::<String, _>("need_areas")?,
            NeedArea::parse,
        )?,
        services: names(
            &id,
            "service",
            &row.try_get::<String, _>("services")?,
            Service::parse,
        )?,
        urgency: {
            let u: String = row.try_get("urgency")?;
            Urgency::parse(&u).ok_or_else(|| bad("urgency", &u))?
        },
        key_id: row.try_get("key_id")?,
        summary: row.try_get("summary")?,
        terms: row.try_get("terms")?,
        state: ReferralState::parse(&state).ok_or_else(|| bad("state", &state))?,
        purge_status: PurgeStatus::parse(&purge_status)
            .ok_or_else(|| bad("purge_status", &purge_status))?,
        purged_at_ms: row.try_get("purged_at")?,
        referral_id: id,
        created_at_ms: row.try_get("created_at")?,
        updated_at_ms: row.try_get("updated_at")?,
        expires_at_ms: row.try_get("expires_at")?,
    })
}

pub(super) fn row_to_receipt(row: &DbRow) -> crate::error::Result<crate::store::ReceiptRecord> {
    Ok(crate::store::ReceiptRecord {
        message_id: row.try_get("message_id")?,
        issued_by: row.try_get("issued_by")?,
        counterpart: row.try_get("counterpart")?,
        referral_id: row.try_get("referral_id")?,
        kind: row.try_get("kind")?,
        payload: row.try_get("payload")?,
        signature: row.try_get("signature")?,
        batch: row.try_get("batch")?,
        at_ms: row.try_get("at")?,
    })
}

pub(super) fn row_to_audit(row: &DbRow) -> crate::error::Result<crate::domain::audit::AuditRecord> {
    Ok(crate::domain::audit::AuditRecord {
        seq: row.try_get("seq")?,
        entry: crate::domain::audit::AuditEntry {
            at_ms: row.try_get("at")?,
            actor_kind: row.try_get("actor_kind")?,
            actor: row.try_get("actor")?,
            role: row.try_get("role")?,
            on_behalf_of: row.try_get("on_behalf_of")?,
            action: row.try_get("action")?,
            object_type: row.try_get("object_type")?,
            object_id: row.try_get("object_id")?,
            consent_id: row.try_get("consent_id")?,
            peer_org: row.try_get("peer_org")?,
            result: row.try_get("result")?,
        },
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

pub(super) fn row_to_checkpoint(
    row: &DbRow,
) -> crate::error::Result<crate::store::CheckpointRecord> {
    Ok(crate::store::CheckpointRecord {
        seq: row.try_get("seq")?,
        head_hash: row.try_get("head_hash")?,
        at_ms: row.try_get("at")?,
        payload: row.try_get("payload")?,
        signature: row.try_get("signature")?,
    })
}
