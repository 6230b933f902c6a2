//! Statements other aggregates run inside their own transactions: notices,
//! referral rows and events, audit entries, peers and receipts written
//! together with the change that causes them.

use super::rows::{join, row_to_receipt};
use super::{Db, Tx};
use crate::domain::{NeedArea, Service};
use crate::domain::{OrgId, PeerState};
use crate::error::Result;
use crate::store::sql::{INSERT_REFERRAL, RECEIPT_BY_KEY, encode_profile};
use crate::store::{NewNotice, NewPeer, Notice, PeerKey, PeerUpdate};
use sqlx::Row;

pub(super) async fn insert_notices(tx: &mut Tx, notices: &[NewNotice]) -> Result<()> {
    for chunk in notices.chunks(256) {
        let mut insert = sqlx::QueryBuilder::<Db>::new(
            "INSERT INTO peer_notices (notice_id, org_id, payload, present_key, created_at, attempts, next_attempt_at,
                                       kind, referral_id) ",
        );
        insert.push_values(chunk, |mut b, n| {
            b.push_bind(&n.notice_id)
                .push_bind(n.org_id.as_str())
                .push_bind(&n.payload)
                .push_bind(&n.present_key)
                .push_bind(n.now_ms)
                .push_bind(0i64)
                .push_bind(n.now_ms)
                .push_bind(n.route.kind.as_str())
                .push_bind(&n.route.referral_id);
        });
        insert.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// A referral row to insert, with the owner's request key and the digest of
/// the request (for an idempotent retry), when it came from a client.
pub(super) type ReferralRow<'a> = (
    &'a crate::store::ReferralRecord,
    Option<&'a str>,
    Option<&'a [u8]>,
);

/// New referrals, by one multi-row statement; how many were stored
/// (an ID, or an owner's request key, already taken is skipped).
pub(super) async fn insert_referrals(tx: &mut Tx, rows: &[ReferralRow<'_>]) -> Result<usize> {
    let mut referrals = sqlx::QueryBuilder::<Db>::new(format!("{INSERT_REFERRAL} "));
    referrals.push_values(rows, |mut b, (r, request_key, digest)| {
        b.push_bind(&r.referral_id)
            .push_bind(if r.outbound { "outbound" } else { "inbound" })
            .push_bind(r.peer_org.as_str())
            .push_bind(&r.owner)
            .push_bind(&r.team)
            .push_bind(*request_key)
            .push_bind(*digest)
            .push_bind(&r.consent_id)
            .push_bind(&r.pseudonym)
            .push_bind(join(&r.need_areas, NeedArea::as_str))
            .push_bind(join(&r.services, Service::as_str))
            .push_bind(r.urgency.as_str())
            .push_bind(&r.summary)
            .push_bind(&r.terms)
            .push_bind(r.state.as_str())
            .push_bind(r.purge_status.as_str())
            .push_bind(r.purged_at_ms)
            .push_bind(r.created_at_ms)
            .push_bind(r.updated_at_ms)
            .push_bind(&r.key_id)
            .push_bind(r.expires_at_ms);
    });
    referrals.push(" ON CONFLICT DO NOTHING RETURNING referral_id");
    Ok(referrals.build().fetch_all(&mut **tx).await?.len())
}

/// Events of referrals (each referral once), by one multi-row
/// statement; each takes its referral's next sequence number.
pub(super) async fn insert_events(
    tx: &mut Tx,
    rows: &[(&str, &crate::store::ReferralEvent)],
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut insert = sqlx::QueryBuilder::<Db>::new(
        "INSERT INTO referral_events (referral_id, seq, state, at, by_org, detail, actor, content) ",
    );
    let details: Vec<Vec<u8>> = rows
        .iter()
        .map(|(_, e)| crate::wire::change::detail_to_stored(&e.detail))
        .collect();
    insert.push_values(rows.iter().zip(details), |mut b, ((id, e), detail)| {
        b.push_bind(*id)
            .push("(SELECT COALESCE(MAX(seq), 0) + 1 FROM referral_events WHERE referral_id = ")
            .push_bind_unseparated(*id)
            .push_unseparated(")")
            .push_bind(e.state.as_str())
            .push_bind(e.at_ms)
            .push_bind(&e.by_org)
            .push_bind(detail)
            .push_bind(&e.actor)
            .push_bind(&e.content);
    });
    insert.build().execute(&mut **tx).await?;
    Ok(())
}

/// Appends audit records to the chain inside `tx`. Called last before
/// the commit: the head row's lock (PostgreSQL) is then held only for
/// the commit, and never while waiting for another lock.
pub(super) async fn append_audit_tx(
    tx: &mut Tx,
    entries: &[crate::domain::audit::AuditEntry],
) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let n = entries.len() as i64;
    let head =
        sqlx::query("UPDATE audit_head SET seq = seq + $1 WHERE id = 1 RETURNING seq, head_hash")
            .bind(n)
            .fetch_one(&mut **tx)
            .await?;
    let last: i64 = head.try_get("seq")?;
    let mut prev: Vec<u8> = head.try_get("head_hash")?;
    // Chained in order, inserted by multi-row statements (a batch of
    // records costs a round trip per 256, not one each).
    let mut rows = Vec::with_capacity(entries.len());
    for (seq, e) in (last - n + 1..).zip(entries) {
        let hash = crate::domain::audit::record_hash(seq, &prev, e);
        rows.push((seq, e, std::mem::replace(&mut prev, hash.clone()), hash));
    }
    for chunk in rows.chunks(256) {
        let mut insert = sqlx::QueryBuilder::<Db>::new(
            "INSERT INTO audit_log (seq, at, actor_kind, actor, role, on_behalf_of, action, object_type, object_id,
                                    consent_id, peer_org, result, prev_hash, hash) ",
        );
        insert.push_values(chunk, |mut b, (seq, e, prev_hash, hash)| {
            b.push_bind(*seq)
                .push_bind(e.at_ms)
                .push_bind(&e.actor_kind)
                .push_bind(&e.actor)
                .push_bind(&e.role)
                .push_bind(&e.on_behalf_of)
                .push_bind(&e.action)
                .push_bind(&e.object_type)
                .push_bind(&e.object_id)
                .push_bind(&e.consent_id)
                .push_bind(&e.peer_org)
                .push_bind(&e.result)
                .push_bind(prev_hash)
                .push_bind(hash);
        });
        insert.build().execute(&mut **tx).await?;
    }
    sqlx::query("UPDATE audit_head SET head_hash = $1 WHERE id = 1")
        .bind(&prev)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub(super) async fn insert_peer_rows(tx: &mut Tx, peer: &NewPeer) -> Result<()> {
    let org = peer.profile.org_id.as_str();
    // An earlier peering of the same organisation that ended (on
    // either side) gives way: its record is taken over in place, its
    // keys replaced. Referral messages still queued for the peer
    // (sealed payloads) stay queued and go out once the new peering
    // is active; the ended peering's own notices (states, profile,
    // keys, checkpoints) are dropped, so they cannot end the new one.
    let replaced = sqlx::query(
        "UPDATE peers SET profile = $2, state = $3, awaiting = $4, remote_state = $5, endpoint = $6,
                created_at = $7, updated_at = $7, last_seen_at = NULL
         WHERE org_id = $1 AND (state IN ('revoked', 'rejected') OR remote_state IN ('revoked', 'rejected'))",
    )
    .bind(org)
    .bind(encode_profile(&peer.profile))
    .bind(peer.state.as_str())
    .bind(peer.awaiting.as_str())
    .bind(peer.remote_state.map(PeerState::as_str))
    .bind(&peer.endpoint)
    .bind(peer.now_ms)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if replaced == 1 {
        sqlx::query("DELETE FROM peer_keys WHERE org_id = $1")
            .bind(org)
            .execute(&mut **tx)
            .await?;
        sqlx::query(
            "UPDATE peer_notices SET dropped_at = $2, last_error = 'superseded by a new peering'
             WHERE org_id = $1 AND delivered_at IS NULL AND dropped_at IS NULL
               AND substr(payload, 1, $3) <> $4",
        )
        .bind(org)
        .bind(peer.now_ms)
        .bind(crate::crypto::SEALED_PREFIX.len() as i32)
        .bind(crate::crypto::SEALED_PREFIX)
        .execute(&mut **tx)
        .await?;
    } else {
        sqlx::query(
            "INSERT INTO peers (org_id, profile, state, awaiting, remote_state, endpoint, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        )
        .bind(org)
        .bind(encode_profile(&peer.profile))
        .bind(peer.state.as_str())
        .bind(peer.awaiting.as_str())
        .bind(peer.remote_state.map(PeerState::as_str))
        .bind(&peer.endpoint)
        .bind(peer.now_ms)
        .execute(&mut **tx)
        .await?;
    }
    insert_key(tx, org, &peer.key).await
}

pub(super) async fn insert_key(tx: &mut Tx, org: &str, key: &PeerKey) -> Result<()> {
    sqlx::query(
        "INSERT INTO peer_keys (fingerprint, org_id, spki, added_at, valid_until)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (fingerprint) DO NOTHING",
    )
    .bind(&key.fingerprint)
    .bind(org)
    .bind(&key.spki_der)
    .bind(key.added_at_ms)
    .bind(key.valid_until_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The live (non-final) peer that has pinned this key, if any.
pub(super) async fn live_owner_of_key(tx: &mut Tx, fingerprint: &str) -> Result<Option<String>> {
    let row = sqlx::query(
        "SELECT p.org_id FROM peer_keys k JOIN peers p ON p.org_id = k.org_id
         WHERE k.fingerprint = $1 AND p.state NOT IN ('revoked', 'rejected')
           AND (p.remote_state IS NULL OR p.remote_state NOT IN ('revoked', 'rejected'))",
    )
    .bind(fingerprint)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.map(|r| r.try_get("org_id")).transpose()?)
}

pub(super) async fn live_peer_exists(tx: &mut Tx, org: &str) -> Result<bool> {
    let row = sqlx::query(
        "SELECT 1 AS one FROM peers WHERE org_id = $1 AND state NOT IN ('revoked', 'rejected')
           AND (remote_state IS NULL OR remote_state NOT IN ('revoked', 'rejected'))",
    )
    .bind(org)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.is_some())
}

pub(super) async fn apply_update(tx: &mut Tx, org: &OrgId, u: &PeerUpdate) -> Result<bool> {
    // The expected state is part of the UPDATE's condition, so two
    // concurrent decisions cannot both apply (the row lock serialises
    // them on PostgreSQL; BEGIN IMMEDIATE does on SQLite).
    let updated = sqlx::query(
        "UPDATE peers SET state = COALESCE($1, state), awaiting = COALESCE($2, awaiting),
                remote_state = COALESCE($3, remote_state), profile = COALESCE($4, profile),
                updated_at = $5
         WHERE org_id = $6 AND state = COALESCE($7, state)",
    )
    .bind(u.state.map(PeerState::as_str))
    .bind(u.awaiting.map(|a| a.as_str()))
    .bind(u.remote_state.map(PeerState::as_str))
    .bind(u.profile.as_ref().map(encode_profile))
    .bind(u.now_ms)
    .bind(org.as_str())
    .bind(u.expected_state.map(PeerState::as_str))
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if updated == 0 {
        return Ok(false);
    }
    // Checked after the UPDATE above, which holds the peer's row.
    if let Some(expected) = &u.expected_newest_key {
        let newest: Option<String> = sqlx::query_scalar(
            "SELECT fingerprint FROM peer_keys WHERE org_id = $1
             ORDER BY added_at DESC, fingerprint LIMIT 1",
        )
        .bind(org.as_str())
        .fetch_optional(&mut **tx)
        .await?;
        if newest.as_deref() != Some(expected.as_str()) {
            return Ok(false);
        }
    }
    if let Some(key) = &u.add_key {
        if let Some(at) = u.retire_other_keys_at_ms {
            sqlx::query(
                "UPDATE peer_keys SET valid_until = $1
                 WHERE org_id = $2 AND fingerprint <> $3 AND (valid_until IS NULL OR valid_until > $1)",
            )
            .bind(at)
            .bind(org.as_str())
            .bind(&key.fingerprint)
            .execute(&mut **tx)
            .await?;
        }
        insert_key(tx, org.as_str(), key).await?;
    }
    insert_notices(tx, &u.notices).await?;
    Ok(true)
}

pub(super) async fn insert_referral(
    tx: &mut Tx,
    r: &crate::store::ReferralRecord,
    request_key: Option<&str>,
    digest: Option<&[u8]>,
) -> Result<u64> {
    Ok(insert_referrals(tx, &[(r, request_key, digest)]).await? as u64)
}

pub(super) async fn insert_event(
    tx: &mut Tx,
    referral_id: &str,
    e: &crate::store::ReferralEvent,
) -> Result<()> {
    insert_events(tx, &[(referral_id, e)]).await
}

/// The keys new referrals were sealed under are there when they are
/// stored: one released since it was read (its client's last other
/// referral purged) is put back; one replaced by another meanwhile
/// means the summary cannot be opened, and the request is retried.
pub(super) async fn keep_subject_keys(
    tx: &mut Tx,
    items: &[crate::store::NewCreate],
) -> Result<()> {
    let mut keys: Vec<(&str, &[u8], i64)> = items
        .iter()
        .map(|i| {
            (
                i.record.key_id.as_str(),
                i.wrapped_key.as_slice(),
                i.record.created_at_ms,
            )
        })
        .collect();
    keys.sort();
    keys.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
    let mut insert =
        sqlx::QueryBuilder::<Db>::new("INSERT INTO data_keys (key_id, wrapped, created_at) ");
    insert.push_values(&keys, |mut b, k| {
        b.push_bind(k.0).push_bind(k.1).push_bind(k.2);
    });
    insert.push(" ON CONFLICT (key_id) DO NOTHING");
    insert.build().execute(&mut **tx).await?;
    let mut held =
        sqlx::QueryBuilder::<Db>::new("SELECT key_id, wrapped FROM data_keys WHERE key_id IN (");
    let mut ids = held.separated(", ");
    for k in &keys {
        ids.push_bind(k.0);
    }
    held.push(")");
    let held: std::collections::HashMap<String, Vec<u8>> = held
        .build()
        .fetch_all(&mut **tx)
        .await?
        .iter()
        .map(|r| Ok((r.try_get("key_id")?, r.try_get("wrapped")?)))
        .collect::<Result<_>>()?;
    if keys
        .iter()
        .any(|k| held.get(k.0).map(Vec::as_slice) != Some(k.1))
    {
        return Err(crate::error::Error::Unavailable(
            "the client's data key changed while the referral was made: send the request again"
                .into(),
        ));
    }
    Ok(())
}

pub(super) async fn apply_referral_change(
    tx: &mut Tx,
    id: &str,
    c: &crate::store::ReferralChange,
) -> Result<bool> {
    let row = sqlx::query("SELECT state, key_id FROM referrals WHERE referral_id = $1")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    let Some(row) = row else { return Ok(false) };
    let current: String = row.try_get("state")?;
    let key_id: String = row.try_get("key_id")?;
    if !c.expected_states.is_empty() && !c.expected_states.iter().any(|s| s.as_str() == current) {
        return Ok(false);
    }
    let (set_team, team) = match &c.team {
        Some(t) => (1i64, t.clone()),
        None => (0i64, None),
    };
    let updated = sqlx::query(
        "UPDATE referrals SET state = COALESCE($1, state), owner = COALESCE($2, owner),
                team = CASE WHEN $3 = 1 THEN $4 ELSE team END,
                purge_status = COALESCE($5, purge_status), purged_at = COALESCE($6, purged_at),
                summary = CASE WHEN $7 = 1 THEN NULL ELSE summary END,
                updated_at = $8, terms = COALESCE($12, terms)
         WHERE referral_id = $9 AND state = $10 AND purge_status = COALESCE($11, purge_status)",
    )
    .bind(c.state.map(|s| s.as_str()))
    .bind(&c.owner)
    .bind(set_team)
    .bind(team)
    .bind(c.purge_status.map(|s| s.as_str()))
    .bind(c.purged_at_ms)
    .bind(i64::from(c.purge_summary))
    .bind(c.now_ms)
    .bind(id)
    .bind(&current)
    .bind(c.expected_purge_status.map(|s| s.as_str()))
    .bind(&c.purge_terms)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if updated == 0 {
        return Ok(false);
    }
    if c.purge_summary {
        // The history keeps its codes; its content goes.
        sqlx::query("UPDATE referral_events SET content = NULL WHERE referral_id = $1 AND content IS NOT NULL")
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    if let Some(e) = &c.event {
        insert_event(tx, id, e).await?;
    }
    if let Some(k) = &c.destroy_key {
        sqlx::query("DELETE FROM data_keys WHERE key_id = $1")
            .bind(k)
            .execute(&mut **tx)
            .await?;
    }
    if c.purge_summary && key_id.starts_with(crate::store::SHARED_KEY_PREFIX) {
        // A sender's key is its client's, shared by the client's
        // referrals: destroyed with the last one whose content is
        // kept, so a backup of what was purged cannot be opened with
        // a key that lives on (a later referral gets a new key).
        sqlx::query(
            "DELETE FROM data_keys WHERE key_id = $1
               AND NOT EXISTS (SELECT 1 FROM referrals WHERE key_id = $1 AND purge_status = 'none')",
        )
        .bind(&key_id)
        .execute(&mut **tx)
        .await?;
    }
    insert_notices(tx, &c.notices).await?;
    Ok(true)
}

/// A change of state (with its event) and nothing else.
pub(super) fn is_transition(c: &crate::store::ReferralChange) -> bool {
    !c.expected_states.is_empty()
        && c.state.is_some()
        && c.event.is_some()
        && c.owner.is_none()
        && c.team.is_none()
        && c.purge_status.is_none()
        && c.purged_at_ms.is_none()
        && !c.purge_summary
        && c.purge_terms.is_none()
        && c.expected_purge_status.is_none()
        && c.destroy_key.is_none()
        && c.notices.is_empty()
}

pub(super) fn same_transition(
    a: &crate::store::ReferralChange,
    b: &crate::store::ReferralChange,
) -> bool {
    is_transition(b) && a.expected_states == b.expected_states && a.state == b.state
}

/// Applies one transition (`same_transition` for all) to several
/// referrals, each at most once: one UPDATE, one multi-row INSERT of
/// their events. The referrals it applied to.
pub(super) async fn apply_transitions(
    tx: &mut Tx,
    items: &[(&str, &crate::store::ReferralChange)],
) -> Result<std::collections::HashSet<String>> {
    let Some((_, first)) = items.first() else {
        return Ok(std::collections::HashSet::new());
    };
    let now = items
        .iter()
        .map(|(_, c)| c.now_ms)
        .max()
        .unwrap_or(first.now_ms);
    let mut update = sqlx::QueryBuilder::<Db>::new("UPDATE referrals SET state = ");
    update
        .push_bind(first.state.map(|s| s.as_str()))
        .push(", updated_at = ")
        .push_bind(now)
        .push(" WHERE state IN (");
    let mut states = update.separated(", ");
    for s in &first.expected_states {
        states.push_bind(s.as_str());
    }
    update.push(") AND referral_id IN (");
    let mut ids = update.separated(", ");
    for (id, _) in items {
        ids.push_bind(*id);
    }
    update.push(") RETURNING referral_id");
    let applied: std::collections::HashSet<String> = update
        .build()
        .fetch_all(&mut **tx)
        .await?
        .iter()
        .map(|r| r.try_get("referral_id"))
        .collect::<std::result::Result<_, _>>()?;
    let events: Vec<_> = items
        .iter()
        .filter(|(id, _)| applied.contains(*id))
        .filter_map(|(id, c)| c.event.as_ref().map(|e| (*id, e)))
        .collect();
    insert_events(tx, &events).await?;
    Ok(applied)
}

pub(super) async fn insert_receipt(tx: &mut Tx, r: &crate::store::ReceiptRecord) -> Result<u64> {
    Ok(sqlx::query(
        "INSERT INTO receipts (message_id, issued_by, referral_id, kind, payload, signature, at, counterpart, batch)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
    )
    .bind(&r.message_id)
    .bind(&r.issued_by)
    .bind(&r.referral_id)
    .bind(&r.kind)
    .bind(&r.payload)
    .bind(&r.signature)
    .bind(r.at_ms)
    .bind(&r.counterpart)
    .bind(&r.batch)
    .execute(&mut **tx)
    .await?
    .rows_affected())
}

/// The receipt held for the message `r` acknowledges.
pub(super) async fn stored_receipt(
    tx: &mut Tx,
    r: &crate::store::ReceiptRecord,
) -> Result<crate::store::ReceiptRecord> {
    let row = sqlx::query(RECEIPT_BY_KEY)
        .bind(&r.message_id)
        .bind(&r.issued_by)
        .bind(&r.counterpart)
        .fetch_one(&mut **tx)
        .await?;
    row_to_receipt(&row)
}

/// Inserts receipts with one statement; the keys of those that were
/// not held yet (message, issuer, counterpart).
pub(super) async fn insert_receipts<'a>(
    tx: &mut Tx,
    receipts: impl Iterator<Item = &'a crate::store::ReceiptRecord>,
) -> Result<std::collections::HashSet<(String, String, String)>> {
    let mut insert = sqlx::QueryBuilder::<Db>::new(
        "INSERT INTO receipts (message_id, issued_by, referral_id, kind, payload, signature, at, counterpart, batch) ",
    );
    insert.push_values(receipts, |mut b, r| {
        b.push_bind(&r.message_id)
            .push_bind(&r.issued_by)
            .push_bind(&r.referral_id)
            .push_bind(&r.kind)
            .push_bind(&r.payload)
            .push_bind(&r.signature)
            .push_bind(r.at_ms)
            .push_bind(&r.counterpart)
            .push_bind(&r.batch);
    });
    insert.push(" ON CONFLICT DO NOTHING RETURNING message_id, issued_by, counterpart");
    let mut fresh = std::collections::HashSet::new();
    for row in insert.build().fetch_all(&mut **tx).await? {
        fresh.insert((
            row.try_get("message_id")?,
            row.try_get("issued_by")?,
            row.try_get("counterpart")?,
        ));
    }
    Ok(fresh)
}

pub(super) fn row_to_notice(r: &<Db as sqlx::Database>::Row) -> Result<Notice> {
    let org: String = r.try_get("org_id")?;
    Ok(Notice {
        id: r.try_get("id")?,
        notice_id: r.try_get("notice_id")?,
        org_id: OrgId::parse("org_id", &org).map_err(|e| anyhow::anyhow!("stored notice: {e}"))?,
        payload: r.try_get("payload")?,
        present_key: r.try_get("present_key")?,
        attempts: r.try_get("attempts")?,
        next_attempt_at_ms: r.try_get("next_attempt_at")?,
        created_at_ms: r.try_get("created_at")?,
        route: match r.try_get::<Option<String>, _>("kind")? {
            None => None,
            Some(kind) => Some(crate::store::Route {
                kind: crate::store::NoticeKind::parse(&kind)
                    .ok_or_else(|| anyhow::anyhow!("stored notice: unknown kind {kind:?}"))?,
                referral_id: r.try_get("referral_id")?,
            }),
        },
    })
}
