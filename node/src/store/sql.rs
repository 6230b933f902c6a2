//! The SQL that SQLite and PostgreSQL share, written once and instantiated for
//! each backend by `impl_store!`. Both schemas use the same table and column
//! names and portable types (BIGINT milliseconds, TEXT, bytes), so these
//! statements run unchanged on both; `$n` placeholders work in both dialects.

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

pub(super) fn row_to_peer<R>(row: &R) -> crate::error::Result<crate::domain::Peer>
where
    R: sqlx::Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Vec<u8>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<i64>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    use crate::domain::{Awaiting, OrgId, OrgProfile, Peer, PeerState};
    use anyhow::anyhow;
    use prost::Message;
    let org_id: String = row.try_get("org_id")?;
    let profile: Vec<u8> = row.try_get("profile")?;
    let profile = exitnet_proto::pb::OrgProfile::decode(profile.as_slice())
        .map_err(|e| anyhow!("stored profile of {org_id}: {e}"))?;
    let profile =
        OrgProfile::from_pb(profile).map_err(|e| anyhow!("stored profile of {org_id}: {e}"))?;
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

pub(super) fn row_to_consent<R>(row: &R) -> crate::error::Result<crate::domain::consent::Consent>
where
    R: sqlx::Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Vec<u8>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<i64>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    use crate::domain::CollectionMethod;
    use crate::domain::consent::{Consent, ConsentTerms};
    use anyhow::anyhow;
    use prost::Message;
    let id: String = row.try_get("consent_id")?;
    let terms: Vec<u8> = row.try_get("terms")?;
    let terms = exitnet_proto::pb::ConsentTerms::decode(terms.as_slice())
        .map_err(|e| anyhow!("stored consent {id}: {e}"))?;
    let terms =
        ConsentTerms::from_stored(terms).map_err(|e| anyhow!("stored consent {id}: {e}"))?;
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

pub(super) const CONSENT_COLUMNS: &str = "consent_id, owner, team, subject_ref, terms, collection_method, witness, recorded_by, recorded_at, withdrawn_at";

pub(super) const REFERRAL_COLUMNS: &str = "referral_id, direction, peer_org, owner, team, consent_id, pseudonym, need_areas, services, urgency, key_id, summary, terms, state, purge_status, purged_at, created_at, updated_at, expires_at";

pub(super) fn row_to_referral<R>(row: &R) -> crate::error::Result<crate::store::ReferralRecord>
where
    R: sqlx::Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Vec<u8>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<Vec<u8>>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<i64>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let peer: String = row.try_get("peer_org")?;
    let direction: String = row.try_get("direction")?;
    Ok(crate::store::ReferralRecord {
        referral_id: row.try_get("referral_id")?,
        outbound: direction == "outbound",
        peer_org: crate::domain::OrgId::parse("peer_org", &peer)
            .map_err(|e| anyhow::anyhow!("stored referral: {e}"))?,
        owner: row.try_get("owner")?,
        team: row.try_get("team")?,
        consent_id: row.try_get("consent_id")?,
        pseudonym: row.try_get("pseudonym")?,
        need_areas: row.try_get("need_areas")?,
        services: row.try_get("services")?,
        urgency: row.try_get("urgency")?,
        key_id: row.try_get("key_id")?,
        summary: row.try_get("summary")?,
        terms: row.try_get("terms")?,
        state: row.try_get("state")?,
        purge_status: row.try_get("purge_status")?,
        purged_at_ms: row.try_get("purged_at")?,
        created_at_ms: row.try_get("created_at")?,
        updated_at_ms: row.try_get("updated_at")?,
        expires_at_ms: row.try_get("expires_at")?,
    })
}

pub(super) fn row_to_receipt<R>(row: &R) -> crate::error::Result<crate::store::ReceiptRecord>
where
    R: sqlx::Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Vec<u8>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
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

/// One receipt by its key: the message, who issued it, the other party.
pub(super) const RECEIPT_BY_KEY: &str =
    "SELECT message_id, issued_by, counterpart, referral_id, kind, payload, signature, batch, at
     FROM receipts WHERE message_id = $1 AND issued_by = $2 AND counterpart = $3";
/// The referral an owner created under a request key, with the request's digest.
pub(super) const REFERRAL_BY_REQUEST: &str = "SELECT referral_id, direction, peer_org, owner, team, consent_id, pseudonym, need_areas, services, urgency, key_id, summary, terms, state, purge_status, purged_at, created_at, updated_at, expires_at, request_digest
     FROM referrals WHERE owner = $1 AND request_key = $2";
pub(super) const AUDIT_COLUMNS: &str = "seq, at, actor_kind, actor, role, on_behalf_of, action, object_type, object_id, consent_id, peer_org, result, prev_hash, hash";

pub(super) fn row_to_audit<R>(row: &R) -> crate::error::Result<crate::domain::audit::AuditRecord>
where
    R: sqlx::Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Vec<u8>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
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

pub(super) fn row_to_checkpoint<R>(row: &R) -> crate::error::Result<crate::store::CheckpointRecord>
where
    R: sqlx::Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    Vec<u8>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(crate::store::CheckpointRecord {
        seq: row.try_get("seq")?,
        head_hash: row.try_get("head_hash")?,
        at_ms: row.try_get("at")?,
        payload: row.try_get("payload")?,
        signature: row.try_get("signature")?,
    })
}

pub(super) fn encode_profile(p: &crate::domain::OrgProfile) -> Vec<u8> {
    use prost::Message;
    p.to_pb().encode_to_vec()
}

/// Implements `Store` for a backend type with a `pool` field and an inherent
/// `begin_write()` that starts a transaction able to write.
macro_rules! impl_store {
    ($store:ty, $db:ty, $tx:ty) => {
        use $crate::domain::{OrgId, Peer, PeerState};
        use $crate::error::Result;
        use $crate::domain::consent::Consent;
        use $crate::store::sql::{
            AUDIT_COLUMNS, CONSENT_COLUMNS, INSERT_REFERRAL, PEER_SELECT, RECEIPT_BY_KEY, REFERRAL_BY_REQUEST, REFERRAL_COLUMNS, encode_profile, peer_select_uncounted, row_to_audit, row_to_checkpoint,
            row_to_consent, row_to_peer, row_to_receipt, row_to_referral,
        };
        use $crate::store::{
            JoinRefusal, NewInvitation, NewNotice, NewPeer, Notice, PeerKey, PeerUpdate,
            SecurityEvent, Store,
        };
        use sqlx::Row;

        type Tx = $tx;
        type Db = $db;

        async fn insert_notices(tx: &mut Tx, notices: &[NewNotice]) -> Result<()> {
            for chunk in notices.chunks(256) {
                let mut insert = sqlx::QueryBuilder::<Db>::new(
                    "INSERT INTO peer_notices (notice_id, org_id, payload, present_key, created_at, attempts, next_attempt_at) ",
                );
                insert.push_values(chunk, |mut b, n| {
                    b.push_bind(&n.notice_id)
                        .push_bind(n.org_id.as_str())
                        .push_bind(&n.payload)
                        .push_bind(&n.present_key)
                        .push_bind(n.now_ms)
                        .push_bind(0i64)
                        .push_bind(n.now_ms);
                });
                insert.build().execute(&mut **tx).await?;
            }
            Ok(())
        }

        /// New referrals, by one multi-row statement; how many were stored
        /// (an ID, or an owner's request key, already taken is skipped).
        async fn insert_referrals(
            tx: &mut Tx,
            rows: &[(&$crate::store::ReferralRecord, Option<&str>, Option<&[u8]>)],
        ) -> Result<usize> {
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
                    .push_bind(&r.need_areas)
                    .push_bind(&r.services)
                    .push_bind(&r.urgency)
                    .push_bind(&r.summary)
                    .push_bind(&r.terms)
                    .push_bind(&r.state)
                    .push_bind(&r.purge_status)
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
        async fn insert_events(
            tx: &mut Tx,
            rows: &[(&str, &$crate::store::ReferralEvent)],
        ) -> Result<()> {
            if rows.is_empty() {
                return Ok(());
            }
            let mut insert = sqlx::QueryBuilder::<Db>::new(
                "INSERT INTO referral_events (referral_id, seq, state, at, by_org, detail, actor, content) ",
            );
            insert.push_values(rows, |mut b, (id, e)| {
                b.push_bind(*id)
                    .push("(SELECT COALESCE(MAX(seq), 0) + 1 FROM referral_events WHERE referral_id = ")
                    .push_bind_unseparated(*id)
                    .push_unseparated(")")
                    .push_bind(&e.state)
                    .push_bind(e.at_ms)
                    .push_bind(&e.by_org)
                    .push_bind(&e.detail)
                    .push_bind(&e.actor)
                    .push_bind(&e.content);
            });
            insert.build().execute(&mut **tx).await?;
            Ok(())
        }

        /// Appends audit records to the chain inside `tx`. Called last before
        /// the commit: the head row's lock (PostgreSQL) is then held only for
        /// the commit, and never while waiting for another lock.
        async fn append_audit_tx(tx: &mut Tx, entries: &[$crate::domain::audit::AuditEntry]) -> Result<()> {
            if entries.is_empty() {
                return Ok(());
            }
            let n = entries.len() as i64;
            let head = sqlx::query("UPDATE audit_head SET seq = seq + $1 WHERE id = 1 RETURNING seq, head_hash")
                .bind(n)
                .fetch_one(&mut **tx)
                .await?;
            let last: i64 = head.try_get("seq")?;
            let mut prev: Vec<u8> = head.try_get("head_hash")?;
            let mut seq = last - n + 1;
            // Chained in order, inserted by multi-row statements (a batch of
            // records costs a round trip per 256, not one each).
            let mut rows = Vec::with_capacity(entries.len());
            for e in entries {
                let hash = $crate::domain::audit::record_hash(seq, &prev, e);
                rows.push((seq, e, std::mem::replace(&mut prev, hash.clone()), hash));
                seq += 1;
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

        async fn insert_peer_rows(tx: &mut Tx, peer: &NewPeer) -> Result<()> {
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
                .bind($crate::crypto::SEALED_PREFIX.len() as i32)
                .bind($crate::crypto::SEALED_PREFIX)
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

        async fn insert_key(tx: &mut Tx, org: &str, key: &PeerKey) -> Result<()> {
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
        async fn live_owner_of_key(tx: &mut Tx, fingerprint: &str) -> Result<Option<String>> {
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

        async fn live_peer_exists(tx: &mut Tx, org: &str) -> Result<bool> {
            let row = sqlx::query(
                "SELECT 1 AS one FROM peers WHERE org_id = $1 AND state NOT IN ('revoked', 'rejected')
                   AND (remote_state IS NULL OR remote_state NOT IN ('revoked', 'rejected'))",
            )
            .bind(org)
            .fetch_optional(&mut **tx)
            .await?;
            Ok(row.is_some())
        }

        async fn apply_update(tx: &mut Tx, org: &OrgId, u: &PeerUpdate) -> Result<bool> {
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

        async fn insert_referral(tx: &mut Tx, r: &$crate::store::ReferralRecord, request_key: Option<&str>, digest: Option<&[u8]>) -> Result<u64> {
            Ok(insert_referrals(tx, &[(r, request_key, digest)]).await? as u64)
        }

        async fn insert_event(tx: &mut Tx, referral_id: &str, e: &$crate::store::ReferralEvent) -> Result<()> {
            insert_events(tx, &[(referral_id, e)]).await
        }

        /// The keys new referrals were sealed under are there when they are
        /// stored: one released since it was read (its client's last other
        /// referral purged) is put back; one replaced by another meanwhile
        /// means the summary cannot be opened, and the request is retried.
        async fn keep_subject_keys(tx: &mut Tx, items: &[$crate::store::NewCreate]) -> Result<()> {
            let mut keys: Vec<(&str, &[u8], i64)> = items
                .iter()
                .map(|i| (i.record.key_id.as_str(), i.wrapped_key.as_slice(), i.record.created_at_ms))
                .collect();
            keys.sort();
            keys.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
            let mut insert = sqlx::QueryBuilder::<$db>::new("INSERT INTO data_keys (key_id, wrapped, created_at) ");
            insert.push_values(&keys, |mut b, k| {
                b.push_bind(k.0).push_bind(k.1).push_bind(k.2);
            });
            insert.push(" ON CONFLICT (key_id) DO NOTHING");
            insert.build().execute(&mut **tx).await?;
            let mut held = sqlx::QueryBuilder::<$db>::new("SELECT key_id, wrapped FROM data_keys WHERE key_id IN (");
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
            if keys.iter().any(|k| held.get(k.0).map(Vec::as_slice) != Some(k.1)) {
                return Err($crate::error::Error::Unavailable(
                    "the client's data key changed while the referral was made: send the request again".into(),
                ));
            }
            Ok(())
        }

        async fn apply_referral_change(tx: &mut Tx, id: &str, c: &$crate::store::ReferralChange) -> Result<bool> {
            let row = sqlx::query("SELECT state, key_id FROM referrals WHERE referral_id = $1")
                .bind(id)
                .fetch_optional(&mut **tx)
                .await?;
            let Some(row) = row else { return Ok(false) };
            let current: String = row.try_get("state")?;
            let key_id: String = row.try_get("key_id")?;
            if !c.expected_states.is_empty() && !c.expected_states.contains(&current) {
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
            .bind(&c.state)
            .bind(&c.owner)
            .bind(set_team)
            .bind(team)
            .bind(&c.purge_status)
            .bind(c.purged_at_ms)
            .bind(i64::from(c.purge_summary))
            .bind(c.now_ms)
            .bind(id)
            .bind(&current)
            .bind(&c.expected_purge_status)
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
                sqlx::query("DELETE FROM data_keys WHERE key_id = $1").bind(k).execute(&mut **tx).await?;
            }
            if c.purge_summary && key_id.starts_with($crate::store::SHARED_KEY_PREFIX) {
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
        fn is_transition(c: &$crate::store::ReferralChange) -> bool {
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

        fn same_transition(a: &$crate::store::ReferralChange, b: &$crate::store::ReferralChange) -> bool {
            is_transition(b) && a.expected_states == b.expected_states && a.state == b.state
        }

        /// Applies one transition (`same_transition` for all) to several
        /// referrals, each at most once: one UPDATE, one multi-row INSERT of
        /// their events. The referrals it applied to.
        async fn apply_transitions(
            tx: &mut Tx,
            items: &[(&str, &$crate::store::ReferralChange)],
        ) -> Result<std::collections::HashSet<String>> {
            let Some((_, first)) = items.first() else {
                return Ok(std::collections::HashSet::new());
            };
            let now = items.iter().map(|(_, c)| c.now_ms).max().unwrap_or(first.now_ms);
            let mut update = sqlx::QueryBuilder::<Db>::new("UPDATE referrals SET state = ");
            update.push_bind(&first.state).push(", updated_at = ").push_bind(now).push(" WHERE state IN (");
            let mut states = update.separated(", ");
            for s in &first.expected_states {
                states.push_bind(s);
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

        async fn insert_receipt(tx: &mut Tx, r: &$crate::store::ReceiptRecord) -> Result<u64> {
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
        async fn stored_receipt(tx: &mut Tx, r: &$crate::store::ReceiptRecord) -> Result<$crate::store::ReceiptRecord> {
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
        async fn insert_receipts<'a>(
            tx: &mut Tx,
            receipts: impl Iterator<Item = &'a $crate::store::ReceiptRecord>,
        ) -> Result<std::collections::HashSet<(String, String, String)>> {
            let mut insert = sqlx::QueryBuilder::<$db>::new(
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
                fresh.insert((row.try_get("message_id")?, row.try_get("issued_by")?, row.try_get("counterpart")?));
            }
            Ok(fresh)
        }

        fn row_to_notice(r: &<$db as sqlx::Database>::Row) -> Result<Notice> {
            let org: String = r.try_get("org_id")?;
            Ok(Notice {
                id: r.try_get("id")?,
                notice_id: r.try_get("notice_id")?,
                org_id: OrgId::parse("org_id", &org)
                    .map_err(|e| anyhow::anyhow!("stored notice: {e}"))?,
                payload: r.try_get("payload")?,
                present_key: r.try_get("present_key")?,
                attempts: r.try_get("attempts")?,
                next_attempt_at_ms: r.try_get("next_attempt_at")?,
                created_at_ms: r.try_get("created_at")?,
            })
        }

        #[async_trait::async_trait]
        impl Store for $store {
            fn backend(&self) -> &'static str {
                Self::BACKEND
            }

            async fn close(&self) {
                self.close_impl().await;
            }

            async fn meta_get(&self, key: &str) -> Result<Option<String>> {
                if let Some(hit) = self.cache.meta(key) {
                    return Ok(hit);
                }
                let ticket = self.cache.ticket();
                let row = sqlx::query("SELECT value FROM node_meta WHERE key = $1")
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await?;
                let value: Option<String> = row.map(|r| r.try_get("value")).transpose()?;
                if let Some(ticket) = ticket {
                    self.cache.put_meta(ticket, key, value.clone());
                }
                Ok(value)
            }

            async fn meta_init(&self, key: &str, value: &str) -> Result<String> {
                let _invalidate = self.cache.invalidate_on_drop();
                let mut tx = self.begin_write().await?;
                sqlx::query("INSERT INTO node_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
                    .bind(key)
                    .bind(value)
                    .execute(&mut *tx)
                    .await?;
                let kept: String = sqlx::query("SELECT value FROM node_meta WHERE key = $1")
                    .bind(key)
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get("value")?;
                tx.commit().await?;
                Ok(kept)
            }

            async fn meta_set(&self, key: &str, value: &str) -> Result<()> {
                let _invalidate = self.cache.invalidate_on_drop();
                let mut tx = self.begin_write().await?;
                sqlx::query(
                    "INSERT INTO node_meta (key, value) VALUES ($1, $2)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )
                .bind(key)
                .bind(value)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn create_invitation(&self, inv: &NewInvitation) -> Result<()> {
                let mut tx = self.begin_write().await?;
                sqlx::query(
                    "INSERT INTO invitations (id, secret_hash, expires_at, note, created_at)
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&inv.id)
                .bind(&inv.secret_hash)
                .bind(inv.expires_at_ms)
                .bind(&inv.note)
                .bind(inv.created_at_ms)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn accept_join(
                &self,
                invitation_id: &str,
                secret_hash: &[u8],
                peer: &NewPeer,
            ) -> Result<std::result::Result<(), JoinRefusal>> {
                use subtle::ConstantTimeEq;
                let _invalidate = self.cache.invalidate_on_drop();
                let mut tx = self.begin_write().await?;
                let row = sqlx::query("SELECT secret_hash, expires_at, used_at FROM invitations WHERE id = $1")
                    .bind(invitation_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(row) = row else {
                    return Ok(Err(JoinRefusal::UnknownInvitation));
                };
                let stored: Vec<u8> = row.try_get("secret_hash")?;
                if !bool::from(stored.as_slice().ct_eq(secret_hash)) {
                    return Ok(Err(JoinRefusal::WrongSecret));
                }
                let used_at: Option<i64> = row.try_get("used_at")?;
                if used_at.is_some() {
                    return Ok(Err(JoinRefusal::AlreadyUsed));
                }
                let expires_at: i64 = row.try_get("expires_at")?;
                if expires_at <= peer.now_ms {
                    return Ok(Err(JoinRefusal::Expired));
                }
                // The same node joining again (with the same key) while its
                // first join still waits for our approval: it lost its own
                // record (a crash between our answer and its commit), so its
                // new join replaces the pending one.
                sqlx::query(
                    "DELETE FROM peers WHERE org_id = $1 AND state = 'pending' AND awaiting = 'local'
                     AND EXISTS (SELECT 1 FROM peer_keys k WHERE k.org_id = peers.org_id AND k.fingerprint = $2)",
                )
                .bind(peer.profile.org_id.as_str())
                .bind(&peer.key.fingerprint)
                .execute(&mut *tx)
                .await?;
                if live_peer_exists(&mut tx, peer.profile.org_id.as_str()).await? {
                    return Ok(Err(JoinRefusal::OrgAlreadyPeered));
                }
                if live_owner_of_key(&mut tx, &peer.key.fingerprint).await?.is_some() {
                    return Ok(Err(JoinRefusal::KeyAlreadyPinned));
                }
                // Conditional on still being unused: of concurrent joins with
                // one invitation, exactly one marks it.
                let marked = sqlx::query(
                    "UPDATE invitations SET used_at = $1, used_by = $2 WHERE id = $3 AND used_at IS NULL",
                )
                .bind(peer.now_ms)
                .bind(peer.profile.org_id.as_str())
                .bind(invitation_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if marked != 1 {
                    return Ok(Err(JoinRefusal::AlreadyUsed));
                }
                insert_peer_rows(&mut tx, peer).await?;
                tx.commit().await?;
                Ok(Ok(()))
            }

            async fn insert_peer(&self, peer: &NewPeer) -> Result<()> {
                let _invalidate = self.cache.invalidate_on_drop();
                let mut tx = self.begin_write().await?;
                if live_peer_exists(&mut tx, peer.profile.org_id.as_str()).await? {
                    return Err($crate::error::Error::AlreadyExists(format!(
                        "peer {} is already recorded",
                        peer.profile.org_id
                    )));
                }
                if live_owner_of_key(&mut tx, &peer.key.fingerprint).await?.is_some() {
                    return Err($crate::error::Error::AlreadyExists(
                        "that key is already pinned for another peer".into(),
                    ));
                }
                insert_peer_rows(&mut tx, peer).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn get_peer(&self, org: &OrgId) -> Result<Option<Peer>> {
                let sql = sqlx::AssertSqlSafe(format!("{PEER_SELECT} WHERE p.org_id = $1"));
                let row = sqlx::query(sql)
                    .bind(org.as_str())
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(row_to_peer).transpose()
            }

            async fn peer_for_exchange(&self, org: &OrgId) -> Result<Option<Peer>> {
                if let Some(hit) = self.cache.peer(org.as_str()) {
                    return Ok(hit);
                }
                let ticket = self.cache.ticket();
                let sql = sqlx::AssertSqlSafe(format!("{} WHERE p.org_id = $1", peer_select_uncounted()));
                let row = sqlx::query(sql)
                    .bind(org.as_str())
                    .fetch_optional(&self.pool)
                    .await?;
                let peer = row.as_ref().map(row_to_peer).transpose()?;
                if let Some(ticket) = ticket {
                    self.cache.put_peer(ticket, org.as_str(), peer.clone());
                }
                Ok(peer)
            }

            async fn list_peers(&self) -> Result<Vec<Peer>> {
                let sql = sqlx::AssertSqlSafe(format!("{PEER_SELECT} ORDER BY p.org_id"));
                let rows = sqlx::query(sql).fetch_all(&self.pool).await?;
                rows.iter().map(row_to_peer).collect()
            }

            async fn find_peer_by_key(&self, fingerprint: &str, now_ms: i64) -> Result<Option<Peer>> {
                if let Some(hit) = self.cache.peer_by_key(fingerprint, now_ms) {
                    return Ok(hit);
                }
                let ticket = self.cache.ticket();
                let sql = sqlx::AssertSqlSafe(format!(
                    "{} JOIN peer_keys pk ON pk.org_id = p.org_id
                     WHERE pk.fingerprint = $1 AND (pk.valid_until IS NULL OR pk.valid_until > $2)",
                    peer_select_uncounted()
                ).replacen("SELECT ", "SELECT pk.valid_until AS key_valid_until, ", 1));
                let row = sqlx::query(sql)
                    .bind(fingerprint)
                    .bind(now_ms)
                    .fetch_optional(&self.pool)
                    .await?;
                let peer = row.as_ref().map(row_to_peer).transpose()?;
                if let Some(ticket) = ticket {
                    let valid_until_ms = match &row {
                        Some(r) => r.try_get("key_valid_until")?,
                        None => None,
                    };
                    self.cache.put_peer_by_key(
                        ticket,
                        fingerprint,
                        $crate::store::cache::KeyEntry { peer: peer.clone(), valid_until_ms },
                    );
                }
                Ok(peer)
            }

            async fn peer_keys(&self, org: &OrgId, now_ms: i64) -> Result<Vec<PeerKey>> {
                // All of the peer's keys are read (and kept), those valid at
                // `now_ms` returned: a retired key drops out as its time passes.
                let valid = |keys: Vec<PeerKey>| -> Vec<PeerKey> {
                    keys.into_iter()
                        .filter(|k| k.valid_until_ms.is_none_or(|v| v > now_ms))
                        .collect()
                };
                if let Some(all) = self.cache.keys(org.as_str()) {
                    return Ok(valid(all));
                }
                let ticket = self.cache.ticket();
                let rows = sqlx::query(
                    "SELECT fingerprint, spki, added_at, valid_until FROM peer_keys
                     WHERE org_id = $1 ORDER BY added_at DESC, fingerprint",
                )
                .bind(org.as_str())
                .fetch_all(&self.pool)
                .await?;
                let all = rows
                    .iter()
                    .map(|r| {
                        Ok(PeerKey {
                            fingerprint: r.try_get("fingerprint")?,
                            spki_der: r.try_get("spki")?,
                            added_at_ms: r.try_get("added_at")?,
                            valid_until_ms: r.try_get("valid_until")?,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                if let Some(ticket) = ticket {
                    self.cache.put_keys(ticket, org.as_str(), all.clone());
                }
                Ok(valid(all))
            }

            async fn update_peer(&self, org: &OrgId, update: &PeerUpdate) -> Result<bool> {
                let _invalidate = self.cache.invalidate_on_drop();
                let mut tx = self.begin_write().await?;
                let applied = apply_update(&mut tx, org, update).await?;
                if applied {
                    append_audit_tx(&mut tx, &update.audit).await?;
                    tx.commit().await?;
                }
                Ok(applied)
            }

            async fn apply_notice_once(&self, org: &OrgId, notice_id: &str, update: &PeerUpdate) -> Result<bool> {
                let _invalidate = self.cache.invalidate_on_drop();
                let mut tx = self.begin_write().await?;
                let fresh = sqlx::query(
                    "INSERT INTO seen_notices (org_id, notice_id, received_at) VALUES ($1, $2, $3)
                     ON CONFLICT (org_id, notice_id) DO NOTHING",
                )
                .bind(org.as_str())
                .bind(notice_id)
                .bind(update.now_ms)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if !fresh {
                    return Ok(false);
                }
                // A notice that no longer fits the state is remembered as seen and ignored.
                let applied = apply_update(&mut tx, org, update).await?;
                if applied {
                    append_audit_tx(&mut tx, &update.audit).await?;
                }
                tx.commit().await?;
                Ok(applied)
            }

            async fn touch_peer(&self, org: &OrgId, now_ms: i64) -> Result<()> {
                let mut tx = self.begin_write().await?;
                sqlx::query("UPDATE peers SET last_seen_at = $1 WHERE org_id = $2")
                    .bind(now_ms)
                    .bind(org.as_str())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                self.cache.touched(org.as_str(), now_ms);
                Ok(())
            }

            async fn enqueue_notices_with_meta(&self, notices: &[NewNotice], key: &str, value: &str) -> Result<()> {
                let _invalidate = self.cache.invalidate_on_drop();
                let mut tx = self.begin_write().await?;
                insert_notices(&mut tx, notices).await?;
                sqlx::query(
                    "INSERT INTO node_meta (key, value) VALUES ($1, $2)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )
                .bind(key)
                .bind(value)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn enqueue_notices(&self, notices: &[NewNotice]) -> Result<()> {
                let mut tx = self.begin_write().await?;
                insert_notices(&mut tx, notices).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn undelivered_notices(&self, limit: i64) -> Result<Vec<Notice>> {
                let rows = sqlx::query(
                    "SELECT id, notice_id, org_id, payload, present_key, attempts, next_attempt_at, created_at
                     FROM peer_notices WHERE delivered_at IS NULL AND dropped_at IS NULL
                     ORDER BY id LIMIT $1",
                )
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(row_to_notice).collect()
            }

            async fn peers_with_due_notices(&self, now_ms: i64) -> Result<Vec<OrgId>> {
                let rows = sqlx::query(
                    "SELECT DISTINCT org_id FROM peer_notices
                     WHERE delivered_at IS NULL AND dropped_at IS NULL AND next_attempt_at <= $1",
                )
                .bind(now_ms)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|r| {
                        let org: String = r.try_get("org_id")?;
                        Ok(OrgId::parse("org_id", &org).map_err(|e| anyhow::anyhow!("stored notice: {e}"))?)
                    })
                    .collect()
            }

            async fn undelivered_notices_for(&self, org: &OrgId, limit: i64) -> Result<Vec<Notice>> {
                let rows = sqlx::query(
                    "SELECT id, notice_id, org_id, payload, present_key, attempts, next_attempt_at, created_at
                     FROM peer_notices WHERE org_id = $1 AND delivered_at IS NULL AND dropped_at IS NULL
                     ORDER BY id LIMIT $2",
                )
                .bind(org.as_str())
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(row_to_notice).collect()
            }

            async fn notice_delivered(&self, id: i64, now_ms: i64) -> Result<()> {
                let mut tx = self.begin_write().await?;
                // Delivered: the payload is no longer needed (the receipt proves what was sent).
                sqlx::query("UPDATE peer_notices SET delivered_at = $1, last_error = NULL, payload = $3 WHERE id = $2")
                    .bind(now_ms)
                    .bind(id)
                    .bind(Vec::<u8>::new())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn notice_failed(&self, id: i64, next_attempt_at_ms: i64, error: &str) -> Result<()> {
                let mut tx = self.begin_write().await?;
                sqlx::query(
                    "UPDATE peer_notices SET attempts = attempts + 1, next_attempt_at = $1, last_error = $2
                     WHERE id = $3",
                )
                .bind(next_attempt_at_ms)
                .bind(error)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn notice_dropped(&self, id: i64, now_ms: i64, why: &str) -> Result<()> {
                let mut tx = self.begin_write().await?;
                // Given up: the payload (sealed case content) is not kept.
                sqlx::query("UPDATE peer_notices SET dropped_at = $1, last_error = $2, payload = substr(payload, 1, 0) WHERE id = $3")
                    .bind(now_ms)
                    .bind(why)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn insert_consent(&self, c: &Consent, request_key: &str, request_digest: &[u8], audit: &[$crate::domain::audit::AuditEntry]) -> Result<Consent> {
                use prost::Message;
                let mut tx = self.begin_write().await?;
                let inserted = sqlx::query(
                    "INSERT INTO consents (consent_id, owner, team, request_key, subject_ref, terms, collection_method,
                                           witness, recorded_by, recorded_at, valid_until, request_digest)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                     ON CONFLICT (owner, request_key) DO NOTHING",
                )
                .bind(&c.consent_id)
                .bind(&c.owner)
                .bind(&c.team)
                .bind(request_key)
                .bind(&c.subject_ref)
                .bind(c.terms.to_pb().encode_to_vec())
                .bind(c.collection_method.as_str())
                .bind(&c.witness)
                .bind(&c.recorded_by)
                .bind(c.recorded_at_ms)
                .bind(c.terms.valid_until_ms)
                .bind(request_digest)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {CONSENT_COLUMNS}, request_digest FROM consents WHERE owner = $1 AND request_key = $2"
                ));
                let row = sqlx::query(sql).bind(&c.owner).bind(request_key).fetch_one(&mut *tx).await?;
                if inserted == 1 {
                    append_audit_tx(&mut tx, audit).await?;
                }
                tx.commit().await?;
                let stored = row_to_consent(&row)?;
                let stored_digest: Vec<u8> = row.try_get("request_digest")?;
                if inserted == 0 && stored_digest != request_digest {
                    return Err($crate::error::Error::AlreadyExists(
                        "request_id was used before for a different consent".into(),
                    ));
                }
                Ok(stored)
            }

            async fn get_consent(&self, consent_id: &str) -> Result<Option<Consent>> {
                let sql = sqlx::AssertSqlSafe(format!("SELECT {CONSENT_COLUMNS} FROM consents WHERE consent_id = $1"));
                let row = sqlx::query(sql).bind(consent_id).fetch_optional(&self.pool).await?;
                row.as_ref().map(row_to_consent).transpose()
            }

            async fn list_consents(
                &self,
                scope: &$crate::store::ListScope,
                subject_ref: Option<&str>,
                cursor: Option<&$crate::store::Cursor>,
                limit: i64,
            ) -> Result<Vec<Consent>> {
                let (owner, team) = match scope {
                    $crate::store::ListScope::All => (None, None),
                    $crate::store::ListScope::Owner { subject, team } => (Some(subject.as_str()), team.as_deref()),
                };
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {CONSENT_COLUMNS} FROM consents
                     WHERE (CAST($1 AS TEXT) IS NULL OR owner = $1 OR team = $2)
                       AND (CAST($3 AS TEXT) IS NULL OR subject_ref = $3)
                       AND (CAST($4 AS BIGINT) IS NULL OR recorded_at < $4 OR (recorded_at = $4 AND consent_id < $5))
                     ORDER BY recorded_at DESC, consent_id DESC LIMIT $6"
                ));
                let rows = sqlx::query(sql)
                    .bind(owner)
                    .bind(team)
                    .bind(subject_ref)
                    .bind(cursor.map(|c| c.0))
                    .bind(cursor.map(|c| c.1.as_str()))
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(row_to_consent).collect()
            }

            async fn withdraw_consent(&self, consent_id: &str, now_ms: i64) -> Result<bool> {
                let mut tx = self.begin_write().await?;
                let n = sqlx::query("UPDATE consents SET withdrawn_at = $1 WHERE consent_id = $2 AND withdrawn_at IS NULL")
                    .bind(now_ms)
                    .bind(consent_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                Ok(n == 1)
            }

            async fn create_referral(&self, i: &$crate::store::NewCreate) -> Result<$crate::store::ReferralRecord> {
                let (r, request_key, request_digest) = (&i.record, i.request_key.as_str(), i.request_digest.as_slice());
                let mut tx = self.begin_write().await?;
                // Inserted first (the usual case); a repeated request finds its
                // (owner, request_key) taken and gets the referral it made.
                if insert_referral(&mut tx, r, Some(request_key), Some(request_digest)).await? == 0 {
                    let Some(row) = sqlx::query(REFERRAL_BY_REQUEST).bind(&r.owner).bind(request_key).fetch_optional(&mut *tx).await? else {
                        return Err($crate::error::Error::AlreadyExists("referral_id: already used".into()));
                    };
                    let digest: Option<Vec<u8>> = row.try_get("request_digest")?;
                    if digest.as_deref() != Some(request_digest) {
                        return Err($crate::error::Error::AlreadyExists("request_id was used before for a different referral".into()));
                    }
                    return row_to_referral(&row);
                }
                keep_subject_keys(&mut tx, std::slice::from_ref(i)).await?;
                insert_event(&mut tx, &r.referral_id, &i.event).await?;
                insert_notices(&mut tx, std::slice::from_ref(&i.notice)).await?;
                append_audit_tx(&mut tx, &i.audit).await?;
                tx.commit().await?;
                Ok(r.clone())
            }

            async fn create_referrals(&self, items: &[$crate::store::NewCreate]) -> Result<Vec<Result<$crate::store::ReferralRecord>>> {
                async fn one(s: &$store, i: &$crate::store::NewCreate) -> Result<$crate::store::ReferralRecord> {
                    s.create_referral(i).await
                }
                match items {
                    [] => return Ok(Vec::new()),
                    [i] => return Ok(vec![one(self, i).await]),
                    _ => {}
                }
                let mut tx = self.begin_write().await?;
                let rows: Vec<_> = items
                    .iter()
                    .map(|i| (&i.record, Some(i.request_key.as_str()), Some(i.request_digest.as_slice())))
                    .collect();
                if insert_referrals(&mut tx, &rows).await? != items.len() {
                    // A repeated request (or an ID taken): each on its own,
                    // answered as create_referral answers it.
                    drop(tx);
                    let mut each = Vec::with_capacity(items.len());
                    for i in items {
                        each.push(one(self, i).await);
                    }
                    return Ok(each);
                }
                keep_subject_keys(&mut tx, items).await?;
                let events: Vec<_> = items.iter().map(|i| (i.record.referral_id.as_str(), &i.event)).collect();
                insert_events(&mut tx, &events).await?;
                let notices: Vec<NewNotice> = items.iter().map(|i| i.notice.clone()).collect();
                insert_notices(&mut tx, &notices).await?;
                let records: Vec<$crate::domain::audit::AuditEntry> = items.iter().flat_map(|i| i.audit.iter().cloned()).collect();
                append_audit_tx(&mut tx, &records).await?;
                tx.commit().await?;
                Ok(items.iter().map(|i| Ok(i.record.clone())).collect())
            }

            async fn get_referral(&self, referral_id: &str) -> Result<Option<$crate::store::ReferralRecord>> {
                let sql = sqlx::AssertSqlSafe(format!("SELECT {REFERRAL_COLUMNS} FROM referrals WHERE referral_id = $1"));
                let row = sqlx::query(sql).bind(referral_id).fetch_optional(&self.pool).await?;
                row.as_ref().map(row_to_referral).transpose()
            }

            async fn referral_history(&self, referral_id: &str) -> Result<Vec<$crate::store::ReferralEvent>> {
                let rows = sqlx::query("SELECT state, at, by_org, actor, detail, content FROM referral_events WHERE referral_id = $1 ORDER BY seq")
                    .bind(referral_id)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|r| {
                        Ok($crate::store::ReferralEvent {
                            state: r.try_get("state")?,
                            at_ms: r.try_get("at")?,
                            by_org: r.try_get("by_org")?,
                            actor: r.try_get("actor")?,
                            detail: r.try_get("detail")?,
                            content: r.try_get("content")?,
                        })
                    })
                    .collect()
            }

            async fn list_referrals(
                &self,
                scope: &$crate::store::ListScope,
                filter: &$crate::store::ReferralFilter,
                cursor: Option<&$crate::store::Cursor>,
                limit: i64,
            ) -> Result<Vec<$crate::store::ReferralRecord>> {
                let (owner, team) = match scope {
                    $crate::store::ListScope::All => (None, None),
                    $crate::store::ListScope::Owner { subject, team } => (Some(subject.as_str()), team.as_deref()),
                };
                // Unassigned inbound referrals (owner '') are the intake queue every case manager sees.
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {REFERRAL_COLUMNS} FROM referrals
                     WHERE (CAST($1 AS TEXT) IS NULL OR owner = $1 OR team = $2 OR (direction = 'inbound' AND owner = ''))
                       AND (CAST($3 AS TEXT) IS NULL OR direction = $3)
                       AND (CAST($4 AS TEXT) IS NULL OR state = $4)
                       AND (CAST($5 AS TEXT) IS NULL OR peer_org = $5)
                       AND (CAST($6 AS BIGINT) IS NULL OR created_at < $6 OR (created_at = $6 AND referral_id < $7))
                     ORDER BY created_at DESC, referral_id DESC LIMIT $8"
                ));
                let rows = sqlx::query(sql)
                    .bind(owner)
                    .bind(team)
                    .bind(filter.outbound.map(|o| if o { "outbound" } else { "inbound" }))
                    .bind(&filter.state)
                    .bind(&filter.peer_org)
                    .bind(cursor.map(|c| c.0))
                    .bind(cursor.map(|c| c.1.as_str()))
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(row_to_referral).collect()
            }

            async fn referrals_under_consent(&self, consent_id: &str) -> Result<Vec<$crate::store::ReferralRecord>> {
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {REFERRAL_COLUMNS} FROM referrals WHERE consent_id = $1 AND direction = 'outbound' ORDER BY created_at"
                ));
                let rows = sqlx::query(sql).bind(consent_id).fetch_all(&self.pool).await?;
                rows.iter().map(row_to_referral).collect()
            }

            async fn change_referral(&self, referral_id: &str, change: &$crate::store::ReferralChange) -> Result<bool> {
                let mut tx = self.begin_write().await?;
                let ok = apply_referral_change(&mut tx, referral_id, change).await?;
                if ok {
                    append_audit_tx(&mut tx, &change.audit).await?;
                    tx.commit().await?;
                }
                Ok(ok)
            }

            async fn withdraw_consent_with(&self, consent_id: &str, changes: &[(String, $crate::store::ReferralChange)], now_ms: i64, audit: &[$crate::domain::audit::AuditEntry]) -> Result<bool> {
                let mut tx = self.begin_write().await?;
                let n = sqlx::query("UPDATE consents SET withdrawn_at = $1 WHERE consent_id = $2 AND withdrawn_at IS NULL")
                    .bind(now_ms)
                    .bind(consent_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if n != 1 {
                    return Ok(false);
                }
                let mut records = audit.to_vec();
                for (id, c) in changes {
                    if apply_referral_change(&mut tx, id, c).await? {
                        records.extend(c.audit.iter().cloned());
                    }
                }
                append_audit_tx(&mut tx, &records).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn receive_message(
                &self,
                receipt: &$crate::store::ReceiptRecord,
                new_inbound: Option<$crate::store::NewInbound<'_>>,
                change: Option<(&str, &$crate::store::ReferralChange)>,
                audit: &[$crate::domain::audit::AuditEntry],
            ) -> Result<$crate::store::ReceiptRecord> {
                let mut tx = self.begin_write().await?;
                // The receipt first: a concurrent redelivery of the same message
                // (to another replica of this node) waits on its key until this
                // transaction ends, then finds the receipt and applies nothing.
                if insert_receipt(&mut tx, receipt).await? == 0 {
                    // A redelivery: the same receipt, nothing applied twice.
                    return stored_receipt(&mut tx, receipt).await;
                }
                if let Some(new) = new_inbound {
                    let r = new.record;
                    if insert_referral(&mut tx, r, None, None).await? != 1 {
                        // Another message already brought a referral with this ID.
                        return Err($crate::error::Error::AlreadyExists("offer.referral_id: already used".into()));
                    }
                    insert_event(&mut tx, &r.referral_id, new.event).await?;
                    if let Some(wrapped) = new.wrapped_key {
                        let n = sqlx::query("INSERT INTO data_keys (key_id, wrapped, created_at) VALUES ($1, $2, $3) ON CONFLICT (key_id) DO NOTHING")
                            .bind(&r.key_id)
                            .bind(wrapped)
                            .bind(r.created_at_ms)
                            .execute(&mut *tx)
                            .await?
                            .rows_affected();
                        if n != 1 {
                            return Err($crate::error::Error::AlreadyExists("offer.referral_id: already used".into()));
                        }
                    }
                }
                let mut records = audit.to_vec();
                if let Some((id, c)) = change
                    && apply_referral_change(&mut tx, id, c).await?
                {
                    records.extend(c.audit.iter().cloned());
                }
                append_audit_tx(&mut tx, &records).await?;
                tx.commit().await?;
                Ok(receipt.clone())
            }

            async fn receive_offers(&self, items: &[$crate::store::NewOffer]) -> Result<Vec<Result<$crate::store::ReceiptRecord>>> {
                if items.is_empty() {
                    return Ok(Vec::new());
                }
                let mut tx = self.begin_write().await?;
                // The receipts first, as in `receive_message`: a repeat (or a
                // concurrent delivery to another replica) finds its receipt.
                let fresh = insert_receipts(&mut tx, items.iter().map(|i| &i.receipt)).await?;
                let mut out: Vec<Option<Result<$crate::store::ReceiptRecord>>> = items.iter().map(|_| None).collect();
                let mut new = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let r = &item.receipt;
                    if fresh.contains(&(r.message_id.clone(), r.issued_by.clone(), r.counterpart.clone())) {
                        new.push(item);
                        continue;
                    }
                    // A redelivery: the same receipt, nothing applied twice.
                    out[i] = Some(stored_receipt(&mut tx, r).await);
                }
                if !new.is_empty() {
                    let rows: Vec<_> = new.iter().map(|i| (&i.record, None, None)).collect();
                    let stored = insert_referrals(&mut tx, &rows).await?;
                    let with_key: Vec<_> = new.iter().filter(|i| i.wrapped_key.is_some()).collect();
                    let mut keys_stored = 0;
                    if !with_key.is_empty() {
                        let mut keys = sqlx::QueryBuilder::<$db>::new("INSERT INTO data_keys (key_id, wrapped, created_at) ");
                        keys.push_values(&with_key, |mut b, i| {
                            b.push_bind(&i.record.key_id).push_bind(&i.wrapped_key).push_bind(i.record.created_at_ms);
                        });
                        keys.push(" ON CONFLICT (key_id) DO NOTHING RETURNING key_id");
                        keys_stored = keys.build().fetch_all(&mut *tx).await?.len();
                    }
                    if stored != new.len() || keys_stored != with_key.len() {
                        // A referral ID or data key already taken (a peer's
                        // mistake, or a replayed ID): each offer on its own,
                        // so that only the offending ones are refused.
                        drop(tx);
                        let mut each = Vec::with_capacity(items.len());
                        for i in items {
                            let inbound = $crate::store::NewInbound {
                                record: &i.record,
                                event: &i.event,
                                wrapped_key: i.wrapped_key.as_deref(),
                            };
                            each.push(self.receive_message(&i.receipt, Some(inbound), None, &i.audit).await);
                        }
                        return Ok(each);
                    }
                    // New referrals: each one's first event.
                    let events: Vec<_> = new.iter().map(|i| (i.record.referral_id.as_str(), &i.event)).collect();
                    insert_events(&mut tx, &events).await?;
                    let records: Vec<$crate::domain::audit::AuditEntry> = new.iter().flat_map(|i| i.audit.iter().cloned()).collect();
                    append_audit_tx(&mut tx, &records).await?;
                }
                tx.commit().await?;
                Ok(items
                    .iter()
                    .zip(out)
                    .map(|(i, o)| o.unwrap_or_else(|| Ok(i.receipt.clone())))
                    .collect())
            }

            async fn accept_receipts(&self, items: &[$crate::store::AcceptedReceipt], now_ms: i64) -> Result<()> {
                // Multi-row statements: a batch of receipts costs a handful
                // of round trips to the database, not a handful per receipt.
                for chunk in items.chunks(256) {
                    let mut tx = self.begin_write().await?;
                    let fresh = insert_receipts(&mut tx, chunk.iter().map(|i| &i.receipt)).await?;
                    let mut records = Vec::new();
                    // The usual change (an offer's receipt: requested ->
                    // received, with its event) is applied to the whole batch
                    // by two statements; any other one by one.
                    let ids: std::collections::HashSet<&str> =
                        chunk.iter().filter_map(|i| i.change.as_ref().map(|(id, _)| id.as_str())).collect();
                    let distinct = ids.len() == chunk.iter().filter(|i| i.change.is_some()).count();
                    let shape = chunk.iter().find_map(|i| i.change.as_ref().map(|(_, c)| c)).filter(|c| is_transition(c));
                    let mut together = Vec::new();
                    for i in chunk {
                        let r = &i.receipt;
                        if fresh.contains(&(r.message_id.clone(), r.issued_by.clone(), r.counterpart.clone())) {
                            records.extend(i.audit.iter().cloned());
                        }
                        if let Some((id, c)) = &i.change {
                            if distinct && shape.is_some_and(|s| same_transition(s, c)) {
                                together.push((id.as_str(), c));
                            } else if apply_referral_change(&mut tx, id, c).await? {
                                records.extend(c.audit.iter().cloned());
                            }
                        }
                    }
                    let applied = apply_transitions(&mut tx, &together).await?;
                    for (id, c) in &together {
                        if applied.contains(*id) {
                            records.extend(c.audit.iter().cloned());
                        }
                    }
                    let mut mark = sqlx::QueryBuilder::<$db>::new("UPDATE peer_notices SET delivered_at = ");
                    mark.push_bind(now_ms)
                        .push(", last_error = NULL, payload = ")
                        .push_bind(Vec::<u8>::new())
                        .push(" WHERE id IN (");
                    let mut rows = mark.separated(", ");
                    for i in chunk {
                        rows.push_bind(i.notice_row);
                    }
                    rows.push_unseparated(")");
                    mark.build().execute(&mut *tx).await?;
                    append_audit_tx(&mut tx, &records).await?;
                    tx.commit().await?;
                }
                Ok(())
            }

            async fn data_key(&self, key_id: &str, new_wrapped: &[u8], now_ms: i64) -> Result<Vec<u8>> {
                let mut tx = self.begin_write().await?;
                sqlx::query("INSERT INTO data_keys (key_id, wrapped, created_at) VALUES ($1, $2, $3) ON CONFLICT (key_id) DO NOTHING")
                    .bind(key_id)
                    .bind(new_wrapped)
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?;
                let wrapped: Vec<u8> = sqlx::query("SELECT wrapped FROM data_keys WHERE key_id = $1")
                    .bind(key_id)
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get("wrapped")?;
                tx.commit().await?;
                Ok(wrapped)
            }

            async fn inbound_to_purge(&self, now_ms: i64, closed_before_ms: i64, limit: i64) -> Result<Vec<$crate::store::ReferralRecord>> {
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {REFERRAL_COLUMNS} FROM referrals
                     WHERE direction = 'inbound' AND purge_status = 'none'
                       AND (expires_at <= $1 OR (state IN ('declined', 'failed') AND updated_at <= $2))
                     ORDER BY updated_at LIMIT $3"
                ));
                let rows = sqlx::query(sql).bind(now_ms).bind(closed_before_ms).bind(limit).fetch_all(&self.pool).await?;
                rows.iter().map(row_to_referral).collect()
            }

            async fn referrals_without_expiry(&self, limit: i64) -> Result<Vec<$crate::store::ReferralRecord>> {
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {REFERRAL_COLUMNS} FROM referrals WHERE expires_at IS NULL AND purge_status = 'none' LIMIT $1"
                ));
                let rows = sqlx::query(sql).bind(limit).fetch_all(&self.pool).await?;
                rows.iter().map(row_to_referral).collect()
            }

            async fn withdrawn_with_summary(&self, limit: i64) -> Result<Vec<$crate::store::ReferralRecord>> {
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {REFERRAL_COLUMNS} FROM referrals WHERE purge_status <> 'none' AND summary IS NOT NULL LIMIT $1"
                ));
                let rows = sqlx::query(sql).bind(limit).fetch_all(&self.pool).await?;
                rows.iter().map(row_to_referral).collect()
            }

            async fn set_expiry(&self, items: &[(String, i64)]) -> Result<()> {
                let mut tx = self.begin_write().await?;
                for (id, at) in items {
                    sqlx::query("UPDATE referrals SET expires_at = $1 WHERE referral_id = $2")
                        .bind(at)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn unsealed_history(&self, after: Option<&(String, i64)>, limit: i64) -> Result<Vec<(String, i64, i64, Vec<u8>)>> {
                let (id, seq) = after.cloned().unwrap_or_default();
                let rows = sqlx::query(
                    "SELECT referral_id, seq, at, detail FROM referral_events
                     WHERE content IS NULL AND (referral_id > $1 OR (referral_id = $1 AND seq > $2))
                     ORDER BY referral_id, seq LIMIT $3",
                )
                .bind(id)
                .bind(seq)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|r| Ok((r.try_get("referral_id")?, r.try_get("seq")?, r.try_get("at")?, r.try_get("detail")?)))
                    .collect()
            }

            async fn rewrite_history(&self, items: &[(String, i64, Vec<u8>, Option<Vec<u8>>)]) -> Result<()> {
                let mut tx = self.begin_write().await?;
                for (id, seq, detail, content) in items {
                    // Only history not yet split (another replica may have
                    // split it since it was read).
                    sqlx::query("UPDATE referral_events SET detail = $1, content = $2 WHERE referral_id = $3 AND seq = $4 AND content IS NULL")
                        .bind(detail)
                        .bind(content)
                        .bind(id)
                        .bind(seq)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn consents_to_forget(&self, now_ms: i64, limit: i64) -> Result<Vec<Consent>> {
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {CONSENT_COLUMNS} FROM consents
                     WHERE substr(subject_ref, 1, 1) <> $3 AND (withdrawn_at IS NOT NULL OR valid_until <= $1)
                     ORDER BY recorded_at LIMIT $2"
                ));
                let prefix = &$crate::domain::consent::FORGOTTEN_PREFIX[..1];
                let rows = sqlx::query(sql).bind(now_ms).bind(limit).bind(prefix).fetch_all(&self.pool).await?;
                rows.iter().map(row_to_consent).collect()
            }

            async fn forget_consent(&self, consent_id: &str, kept: &str, terms: &[u8], audit: &[$crate::domain::audit::AuditEntry]) -> Result<bool> {
                let mut tx = self.begin_write().await?;
                let n = sqlx::query("UPDATE consents SET subject_ref = $3, terms = $1 WHERE consent_id = $2 AND substr(subject_ref, 1, 1) <> $4")
                    .bind(terms)
                    .bind(consent_id)
                    .bind(kept)
                    .bind(&$crate::domain::consent::FORGOTTEN_PREFIX[..1])
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if n == 1 {
                    append_audit_tx(&mut tx, audit).await?;
                    tx.commit().await?;
                }
                Ok(n == 1)
            }

            async fn referrals_with_expired_consent(&self, now_ms: i64) -> Result<Vec<$crate::store::ReferralRecord>> {
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {} FROM referrals r JOIN consents c ON c.consent_id = r.consent_id
                     WHERE r.direction = 'outbound' AND r.purge_status = 'none'
                       AND c.withdrawn_at IS NULL AND c.valid_until <= $1
                     ORDER BY r.created_at LIMIT 1000",
                    REFERRAL_COLUMNS.split(", ").map(|c| format!("r.{c}")).collect::<Vec<_>>().join(", ")
                ));
                let rows = sqlx::query(sql).bind(now_ms).fetch_all(&self.pool).await?;
                rows.iter().map(row_to_referral).collect()
            }

            async fn closed_referrals_before(&self, peer: &OrgId, before_ms: i64) -> Result<Vec<$crate::store::ReferralRecord>> {
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {REFERRAL_COLUMNS} FROM referrals
                     WHERE direction = 'outbound' AND peer_org = $1 AND purge_status = 'none'
                       AND state IN ('declined', 'completed', 'failed') AND updated_at <= $2
                     ORDER BY updated_at LIMIT 1000"
                ));
                let rows = sqlx::query(sql).bind(peer.as_str()).bind(before_ms).fetch_all(&self.pool).await?;
                rows.iter().map(row_to_referral).collect()
            }

            async fn find_data_key(&self, key_id: &str) -> Result<Option<Vec<u8>>> {
                let row = sqlx::query("SELECT wrapped FROM data_keys WHERE key_id = $1")
                    .bind(key_id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(|r| r.try_get("wrapped")).transpose()?)
            }

            async fn after_purge(&self) -> Result<()> {
                self.after_purge_impl().await
            }

            fn wal_checkpoints(&self) -> Vec<(&'static str, u64)> {
                self.wal_checkpoints_impl()
            }

            async fn wrapped_data_keys(&self, after_key_id: &str, limit: i64) -> Result<Vec<(String, Vec<u8>)>> {
                let rows = sqlx::query("SELECT key_id, wrapped FROM data_keys WHERE key_id > $1 ORDER BY key_id LIMIT $2")
                    .bind(after_key_id)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|r| Ok((r.try_get("key_id")?, r.try_get("wrapped")?)))
                    .collect()
            }

            async fn rewrap_data_key(&self, key_id: &str, old: &[u8], new: &[u8]) -> Result<bool> {
                let mut tx = self.begin_write().await?;
                let n = sqlx::query("UPDATE data_keys SET wrapped = $3 WHERE key_id = $1 AND wrapped = $2")
                    .bind(key_id)
                    .bind(old)
                    .bind(new)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                Ok(n == 1)
            }

            async fn sealed_notices(&self, after_id: i64, limit: i64) -> Result<Vec<(i64, String, Vec<u8>)>> {
                let rows = sqlx::query(
                    "SELECT id, notice_id, payload FROM peer_notices
                     WHERE id > $1 AND delivered_at IS NULL AND dropped_at IS NULL AND substr(payload, 1, $2) = $3
                     ORDER BY id LIMIT $4",
                )
                .bind(after_id)
                .bind($crate::crypto::SEALED_PREFIX.len() as i32)
                .bind($crate::crypto::SEALED_PREFIX)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|r| Ok((r.try_get("id")?, r.try_get("notice_id")?, r.try_get("payload")?)))
                    .collect()
            }

            async fn reseal_notice(&self, id: i64, old: &[u8], new: &[u8]) -> Result<bool> {
                let mut tx = self.begin_write().await?;
                let n = sqlx::query(
                    "UPDATE peer_notices SET payload = $3
                     WHERE id = $1 AND payload = $2 AND delivered_at IS NULL AND dropped_at IS NULL",
                )
                .bind(id)
                .bind(old)
                .bind(new)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await?;
                Ok(n == 1)
            }

            async fn compact_data_keys(&self) -> Result<bool> {
                self.compact_data_keys_impl().await
            }

            async fn publish_change(&self, payload: &str) -> Result<()> {
                self.publish_change_impl(payload).await
            }

            async fn subscribe_changes(&self) -> Result<Option<tokio::sync::mpsc::Receiver<String>>> {
                self.subscribe_changes_impl().await
            }

            async fn unpurged_referral_ids(&self, peer: &OrgId) -> Result<Vec<String>> {
                let rows = sqlx::query(
                    "SELECT referral_id FROM referrals WHERE peer_org = $1 AND purge_status = 'none'",
                )
                .bind(peer.as_str())
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(|r| Ok(r.try_get("referral_id")?)).collect()
            }

            async fn withdrawn_among(&self, peer: &OrgId, ids: &[String]) -> Result<Vec<String>> {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "SELECT referral_id FROM referrals WHERE purge_status <> 'none' AND peer_org = ",
                );
                q.push_bind(peer.as_str()).push(" AND referral_id IN (");
                let mut list = q.separated(", ");
                for id in ids {
                    list.push_bind(id);
                }
                list.push_unseparated(")");
                let rows = q.build().fetch_all(&self.pool).await?;
                rows.iter().map(|r| Ok(r.try_get("referral_id")?)).collect()
            }

            async fn referral_by_request(
                &self,
                owner: &str,
                request_key: &str,
            ) -> Result<Option<($crate::store::ReferralRecord, Vec<u8>)>> {
                let Some(row) = sqlx::query(REFERRAL_BY_REQUEST)
                    .bind(owner)
                    .bind(request_key)
                    .fetch_optional(&self.pool)
                    .await?
                else {
                    return Ok(None);
                };
                let digest: Option<Vec<u8>> = row.try_get("request_digest")?;
                Ok(Some((row_to_referral(&row)?, digest.unwrap_or_default())))
            }

            async fn issued_receipt(
                &self,
                message_id: &str,
                issued_by: &str,
                counterpart: &str,
            ) -> Result<Option<$crate::store::ReceiptRecord>> {
                let row = sqlx::query(RECEIPT_BY_KEY)
                .bind(message_id)
                .bind(issued_by)
                .bind(counterpart)
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map(row_to_receipt).transpose()
            }

            async fn receipts_for(&self, referral_id: &str) -> Result<Vec<$crate::store::ReceiptRecord>> {
                let rows = sqlx::query(
                    "SELECT message_id, issued_by, counterpart, referral_id, kind, payload, signature, batch, at
                     FROM receipts WHERE referral_id = $1 ORDER BY at",
                )
                .bind(referral_id)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(row_to_receipt).collect()
            }

            async fn referrals_by_pseudonym(&self, pseudonym: &str) -> Result<Vec<$crate::store::ReferralRecord>> {
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {REFERRAL_COLUMNS} FROM referrals WHERE pseudonym = $1 AND direction = 'inbound' ORDER BY created_at"
                ));
                let rows = sqlx::query(sql).bind(pseudonym).fetch_all(&self.pool).await?;
                rows.iter().map(row_to_referral).collect()
            }

            async fn referral_counts(&self) -> Result<Vec<(String, String, i64)>> {
                let rows = sqlx::query("SELECT direction, state, COUNT(*) AS n FROM referrals GROUP BY direction, state")
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|r| Ok((r.try_get("direction")?, r.try_get("state")?, r.try_get("n")?)))
                    .collect()
            }

            async fn pending_purges(&self) -> Result<Vec<(String, i64, i64)>> {
                let rows = sqlx::query(
                    "SELECT peer_org, COUNT(*) AS n, MIN(updated_at) AS oldest FROM referrals
                     WHERE direction = 'outbound' AND purge_status = 'pending' GROUP BY peer_org",
                )
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|r| Ok((r.try_get("peer_org")?, r.try_get("n")?, r.try_get("oldest")?)))
                    .collect()
            }

            async fn pending_intake(&self, org: &OrgId) -> Result<i64> {
                let row = sqlx::query(
                    "SELECT COUNT(*) AS n FROM referrals
                     WHERE peer_org = $1 AND state = 'received' AND direction = 'inbound' AND purge_status = 'none'",
                )
                .bind(org.as_str())
                .fetch_one(&self.pool)
                .await?;
                Ok(row.try_get("n")?)
            }

            async fn witnessed_stats(&self, org: &OrgId, since_ms: i64) -> Result<(Option<i64>, i64)> {
                let row = sqlx::query(
                    "SELECT (SELECT MAX(seq) FROM witnessed_checkpoints WHERE org_id = $1) AS last,
                            (SELECT COUNT(*) FROM witnessed_checkpoints WHERE org_id = $1 AND received_at >= $2) AS recent",
                )
                .bind(org.as_str())
                .bind(since_ms)
                .fetch_one(&self.pool)
                .await?;
                Ok((row.try_get("last")?, row.try_get("recent")?))
            }

            async fn abandon_purges(
                &self,
                org: &OrgId,
                notice_rows: &[i64],
                audit: &[$crate::domain::audit::AuditEntry],
                now_ms: i64,
            ) -> Result<(u64, u64)> {
                let mut tx = self.begin_write().await?;
                let mut dropped = 0;
                for id in notice_rows {
                    dropped += sqlx::query(
                        "UPDATE peer_notices SET dropped_at = $1, last_error = 'purge abandoned by an administrator', payload = $4
                         WHERE id = $2 AND org_id = $3 AND delivered_at IS NULL AND dropped_at IS NULL",
                    )
                    .bind(now_ms)
                    .bind(id)
                    .bind(org.as_str())
                    .bind(Vec::<u8>::new())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                }
                let abandoned = sqlx::query(
                    "UPDATE referrals SET purge_status = 'abandoned', updated_at = $2
                     WHERE direction = 'outbound' AND peer_org = $1 AND purge_status = 'pending'",
                )
                .bind(org.as_str())
                .bind(now_ms)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                append_audit_tx(&mut tx, audit).await?;
                tx.commit().await?;
                Ok((abandoned, dropped))
            }

            async fn acquire_lease(&self, name: &str, holder: &str, now_ms: i64, until_ms: i64) -> Result<bool> {
                let mut tx = self.begin_write().await?;
                let n = sqlx::query(
                    "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3)
                     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
                     WHERE leases.holder = excluded.holder OR leases.expires_at < $4",
                )
                .bind(name)
                .bind(holder)
                .bind(until_ms)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await?;
                Ok(n == 1)
            }

            async fn release_leases(&self, holder: &str) -> Result<()> {
                let mut tx = self.begin_write().await?;
                sqlx::query("DELETE FROM leases WHERE holder = $1")
                    .bind(holder)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn append_audit(&self, entries: &[$crate::domain::audit::AuditEntry]) -> Result<()> {
                let mut tx = self.begin_write().await?;
                append_audit_tx(&mut tx, entries).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn audit_head(&self) -> Result<(i64, Vec<u8>)> {
                let row = sqlx::query("SELECT seq, head_hash FROM audit_head WHERE id = 1")
                    .fetch_one(&self.pool)
                    .await?;
                Ok((row.try_get("seq")?, row.try_get("head_hash")?))
            }

            async fn list_audit(&self, f: &$crate::domain::audit::AuditFilter, after_seq: i64, limit: i64) -> Result<Vec<$crate::domain::audit::AuditRecord>> {
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {AUDIT_COLUMNS} FROM audit_log
                     WHERE seq > $1
                       AND (CAST($2 AS BIGINT) IS NULL OR at >= $2)
                       AND (CAST($3 AS BIGINT) IS NULL OR at < $3)
                       AND (CAST($4 AS TEXT) IS NULL OR actor = $4)
                       AND (CAST($5 AS TEXT) IS NULL OR action = $5)
                       AND (CAST($6 AS TEXT) IS NULL OR object_id = $6)
                     ORDER BY seq LIMIT $7"
                ));
                let rows = sqlx::query(sql)
                    .bind(after_seq)
                    .bind(f.since_ms)
                    .bind(f.until_ms)
                    .bind(&f.actor)
                    .bind(&f.action)
                    .bind(&f.object_id)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(row_to_audit).collect()
            }

            async fn audit_for_objects(&self, ids: &[String]) -> Result<Vec<$crate::domain::audit::AuditRecord>> {
                let mut out = std::collections::BTreeMap::new();
                for id in ids.iter().filter(|i| !i.is_empty()) {
                    let sql = sqlx::AssertSqlSafe(format!(
                        "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE object_id = $1 OR consent_id = $1 ORDER BY seq"
                    ));
                    for row in sqlx::query(sql).bind(id).fetch_all(&self.pool).await? {
                        let r = row_to_audit(&row)?;
                        out.insert(r.seq, r);
                    }
                }
                Ok(out.into_values().collect())
            }

            async fn insert_checkpoint(&self, cp: &$crate::store::CheckpointRecord, notices: &[NewNotice]) -> Result<()> {
                let mut tx = self.begin_write().await?;
                let inserted = sqlx::query(
                    "INSERT INTO audit_checkpoints (seq, head_hash, at, payload, signature) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (seq) DO NOTHING",
                )
                .bind(cp.seq)
                .bind(&cp.head_hash)
                .bind(cp.at_ms)
                .bind(&cp.payload)
                .bind(&cp.signature)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                // Another replica signed this position first: its notices went out.
                if inserted == 1 {
                    insert_notices(&mut tx, notices).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn latest_checkpoint(&self) -> Result<Option<$crate::store::CheckpointRecord>> {
                let row = sqlx::query("SELECT seq, head_hash, at, payload, signature FROM audit_checkpoints ORDER BY seq DESC LIMIT 1")
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(row_to_checkpoint).transpose()
            }

            async fn checkpoints(&self) -> Result<Vec<$crate::store::CheckpointRecord>> {
                let rows = sqlx::query("SELECT seq, head_hash, at, payload, signature FROM audit_checkpoints ORDER BY seq")
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(row_to_checkpoint).collect()
            }

            async fn insert_witness(&self, w: &$crate::store::WitnessRecord) -> Result<()> {
                let mut tx = self.begin_write().await?;
                sqlx::query(
                    "INSERT INTO audit_witnesses (seq, witness_org, payload, signature, at) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (seq, witness_org) DO NOTHING",
                )
                .bind(w.seq)
                .bind(&w.witness_org)
                .bind(&w.payload)
                .bind(&w.signature)
                .bind(w.at_ms)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn witnesses(&self) -> Result<Vec<$crate::store::WitnessRecord>> {
                let rows = sqlx::query("SELECT seq, witness_org, payload, signature, at FROM audit_witnesses ORDER BY seq, witness_org")
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|r| {
                        Ok($crate::store::WitnessRecord {
                            seq: r.try_get("seq")?,
                            witness_org: r.try_get("witness_org")?,
                            payload: r.try_get("payload")?,
                            signature: r.try_get("signature")?,
                            at_ms: r.try_get("at")?,
                        })
                    })
                    .collect()
            }

            async fn witness_checkpoint(
                &self,
                org: &OrgId,
                cp: &$crate::store::HeldCheckpoint,
                now_ms: i64,
            ) -> Result<Option<$crate::store::HeldCheckpoint>> {
                let mut tx = self.begin_write().await?;
                let (witness_payload, witness_signature) = match &cp.witness {
                    Some((p, s)) => (Some(p.as_slice()), Some(s.as_slice())),
                    None => (None, None),
                };
                let n = sqlx::query(
                    "INSERT INTO witnessed_checkpoints
                       (org_id, seq, head_hash, payload, signature, received_at, witness_payload, witness_signature)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (org_id, seq) DO NOTHING",
                )
                .bind(org.as_str())
                .bind(cp.seq)
                .bind(&cp.head_hash)
                .bind(&cp.payload)
                .bind(&cp.signature)
                .bind(now_ms)
                .bind(witness_payload)
                .bind(witness_signature)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                let held = if n == 1 {
                    None
                } else {
                    let row = sqlx::query(
                        "SELECT head_hash, payload, signature, witness_payload, witness_signature
                         FROM witnessed_checkpoints WHERE org_id = $1 AND seq = $2",
                    )
                    .bind(org.as_str())
                    .bind(cp.seq)
                    .fetch_one(&mut *tx)
                    .await?;
                    let wp: Option<Vec<u8>> = row.try_get("witness_payload")?;
                    let ws: Option<Vec<u8>> = row.try_get("witness_signature")?;
                    Some($crate::store::HeldCheckpoint {
                        seq: cp.seq,
                        head_hash: row.try_get("head_hash")?,
                        payload: row.try_get("payload")?,
                        signature: row.try_get("signature")?,
                        witness: wp.zip(ws),
                    })
                };
                tx.commit().await?;
                Ok(held)
            }

            async fn witnessed_checkpoints(&self, org: &OrgId, after_seq: i64, limit: i64) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
                let rows = sqlx::query(
                    "SELECT payload, signature FROM witnessed_checkpoints WHERE org_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                )
                .bind(org.as_str())
                .bind(after_seq)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(|r| Ok((r.try_get("payload")?, r.try_get("signature")?))).collect()
            }

            async fn record_security_event(&self, e: &SecurityEvent, n: i64) -> Result<i64> {
                let mut tx = self.begin_write().await?;
                let row = sqlx::query(
                    "INSERT INTO security_events
                       (at, surface, reason, key_fingerprint, org_id, remote_addr, method, count, agg_key)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $9, $8)
                     ON CONFLICT (agg_key) DO UPDATE SET count = security_events.count + $9
                     RETURNING count",
                )
                .bind(e.at_ms)
                .bind(&e.surface)
                .bind(&e.reason)
                .bind(&e.key_fingerprint)
                .bind(&e.org_id)
                .bind(e.remote_host())
                .bind(&e.method)
                .bind(e.aggregation_key())
                .bind(n.max(1))
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(row.try_get("count")?)
            }

            async fn security_events(&self, limit: i64) -> Result<Vec<(SecurityEvent, i64)>> {
                let rows = sqlx::query(
                    "SELECT at, surface, reason, key_fingerprint, org_id, remote_addr, method, count
                     FROM security_events ORDER BY id DESC LIMIT $1",
                )
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok((
                            SecurityEvent {
                                at_ms: r.try_get("at")?,
                                surface: r.try_get("surface")?,
                                reason: r.try_get("reason")?,
                                key_fingerprint: r.try_get("key_fingerprint")?,
                                org_id: r.try_get("org_id")?,
                                remote_addr: r.try_get("remote_addr")?,
                                method: r.try_get("method")?,
                            },
                            r.try_get("count")?,
                        ))
                    })
                    .collect()
            }

            async fn prune_security_events(&self, before_ms: i64, keep: i64) -> Result<u64> {
                let mut tx = self.begin_write().await?;
                let old = sqlx::query("DELETE FROM security_events WHERE at < $1")
                    .bind(before_ms)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                // The `keep` newest stay: everything at or below the id of the
                // one after them goes.
                let beyond = sqlx::query(
                    "DELETE FROM security_events WHERE id <= COALESCE(
                       (SELECT id FROM security_events ORDER BY id DESC LIMIT 1 OFFSET $1), -1)",
                )
                .bind(keep)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await?;
                Ok(old + beyond)
            }
        }
    };
}

pub(super) use impl_store;

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
