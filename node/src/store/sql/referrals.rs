//! Referrals and their history, from creation to purge.
//!
//! `ReferralStore` for either backend: compiled once for SQLite and once for
//! PostgreSQL (see `store::sql`).

use super::S;
use super::rows::{row_to_referral, stored_detail};
use super::shared::*;
use crate::domain::OrgId;
use crate::domain::referral::EventDetail;
use crate::error::Result;
use crate::store::NewNotice;
use crate::store::sql::{REFERRAL_BY_REQUEST, REFERRAL_COLUMNS};
use sqlx::Row;

#[async_trait::async_trait]
impl crate::store::ReferralStore for S {
    async fn create_referral(
        &self,
        i: &crate::store::NewCreate,
    ) -> Result<crate::store::ReferralRecord> {
        let (r, request_key, request_digest) = (
            &i.record,
            i.request_key.as_str(),
            i.request_digest.as_slice(),
        );
        let mut tx = self.begin_write().await?;
        // Inserted first (the usual case); a repeated request finds its
        // (owner, request_key) taken and gets the referral it made.
        if insert_referral(&mut tx, r, Some(request_key), Some(request_digest)).await? == 0 {
            let Some(row) = sqlx::query(REFERRAL_BY_REQUEST)
                .bind(&r.owner)
                .bind(request_key)
                .fetch_optional(&mut *tx)
                .await?
            else {
                return Err(crate::error::Error::AlreadyExists(
                    "referral_id: already used".into(),
                ));
            };
            let digest: Option<Vec<u8>> = row.try_get("request_digest")?;
            if digest.as_deref() != Some(request_digest) {
                return Err(crate::error::Error::AlreadyExists(
                    "request_id was used before for a different referral".into(),
                ));
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

    async fn create_referrals(
        &self,
        items: &[crate::store::NewCreate],
    ) -> Result<Vec<Result<crate::store::ReferralRecord>>> {
        async fn one(s: &S, i: &crate::store::NewCreate) -> Result<crate::store::ReferralRecord> {
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
            .map(|i| {
                (
                    &i.record,
                    Some(i.request_key.as_str()),
                    Some(i.request_digest.as_slice()),
                )
            })
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
        let events: Vec<_> = items
            .iter()
            .map(|i| (i.record.referral_id.as_str(), &i.event))
            .collect();
        insert_events(&mut tx, &events).await?;
        let notices: Vec<NewNotice> = items.iter().map(|i| i.notice.clone()).collect();
        insert_notices(&mut tx, &notices).await?;
        let records: Vec<crate::domain::audit::AuditEntry> =
            items.iter().flat_map(|i| i.audit.iter().cloned()).collect();
        append_audit_tx(&mut tx, &records).await?;
        tx.commit().await?;
        Ok(items.iter().map(|i| Ok(i.record.clone())).collect())
    }

    async fn get_referral(
        &self,
        referral_id: &str,
    ) -> Result<Option<crate::store::ReferralRecord>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {REFERRAL_COLUMNS} FROM referrals WHERE referral_id = $1"
        ));
        let row = sqlx::query(sql)
            .bind(referral_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(row_to_referral).transpose()
    }

    async fn referral_history(
        &self,
        referral_id: &str,
    ) -> Result<Vec<crate::store::ReferralEvent>> {
        let rows = sqlx::query("SELECT state, at, by_org, actor, detail, content FROM referral_events WHERE referral_id = $1 ORDER BY seq")
            .bind(referral_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let state: String = r.try_get("state")?;
                Ok(crate::store::ReferralEvent {
                    state: crate::domain::ReferralState::parse(&state).ok_or_else(|| {
                        anyhow::anyhow!("stored event of {referral_id}: unknown state {state:?}")
                    })?,
                    at_ms: r.try_get("at")?,
                    by_org: r.try_get("by_org")?,
                    actor: r.try_get("actor")?,
                    detail: stored_detail(referral_id, &r.try_get::<Vec<u8>, _>("detail")?)?,
                    content: r.try_get("content")?,
                })
            })
            .collect()
    }

    async fn list_referrals(
        &self,
        scope: &crate::store::ListScope,
        filter: &crate::store::ReferralFilter,
        cursor: Option<&crate::store::Cursor>,
        limit: i64,
    ) -> Result<Vec<crate::store::ReferralRecord>> {
        let (owner, team) = match scope {
            crate::store::ListScope::All => (None, None),
            crate::store::ListScope::Owner { subject, team } => {
                (Some(subject.as_str()), team.as_deref())
            }
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
            .bind(
                filter
                    .outbound
                    .map(|o| if o { "outbound" } else { "inbound" }),
            )
            .bind(&filter.state)
            .bind(&filter.peer_org)
            .bind(cursor.map(|c| c.0))
            .bind(cursor.map(|c| c.1.as_str()))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(row_to_referral).collect()
    }

    async fn referrals_under_consent(
        &self,
        consent_id: &str,
    ) -> Result<Vec<crate::store::ReferralRecord>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {REFERRAL_COLUMNS} FROM referrals WHERE consent_id = $1 AND direction = 'outbound' ORDER BY created_at"
        ));
        let rows = sqlx::query(sql)
            .bind(consent_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(row_to_referral).collect()
    }

    async fn change_referral(
        &self,
        referral_id: &str,
        change: &crate::store::ReferralChange,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let ok = apply_referral_change(&mut tx, referral_id, change).await?;
        if ok {
            append_audit_tx(&mut tx, &change.audit).await?;
            tx.commit().await?;
        }
        Ok(ok)
    }

    async fn inbound_to_purge(
        &self,
        now_ms: i64,
        closed_before_ms: i64,
        limit: i64,
    ) -> Result<Vec<crate::store::ReferralRecord>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {REFERRAL_COLUMNS} FROM referrals
             WHERE direction = 'inbound' AND purge_status = 'none'
               AND (expires_at <= $1 OR (state IN ('declined', 'failed') AND updated_at <= $2))
             ORDER BY updated_at LIMIT $3"
        ));
        let rows = sqlx::query(sql)
            .bind(now_ms)
            .bind(closed_before_ms)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(row_to_referral).collect()
    }

    async fn referrals_without_expiry(
        &self,
        limit: i64,
    ) -> Result<Vec<crate::store::ReferralRecord>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {REFERRAL_COLUMNS} FROM referrals WHERE expires_at IS NULL AND purge_status = 'none' LIMIT $1"
        ));
        let rows = sqlx::query(sql).bind(limit).fetch_all(&self.pool).await?;
        rows.iter().map(row_to_referral).collect()
    }

    async fn withdrawn_with_summary(
        &self,
        limit: i64,
    ) -> Result<Vec<crate::store::ReferralRecord>> {
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

    async fn unsealed_history(
        &self,
        after: Option<&(String, i64)>,
        limit: i64,
    ) -> Result<Vec<(String, i64, i64, EventDetail)>> {
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
            .map(|r| {
                let id: String = r.try_get("referral_id")?;
                let detail = stored_detail(&id, &r.try_get::<Vec<u8>, _>("detail")?)?;
                Ok((id, r.try_get("seq")?, r.try_get("at")?, detail))
            })
            .collect()
    }

    async fn rewrite_history(
        &self,
        items: &[(String, i64, EventDetail, Option<Vec<u8>>)],
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for (id, seq, detail, content) in items {
            // Only history not yet split (another replica may have
            // split it since it was read).
            sqlx::query("UPDATE referral_events SET detail = $1, content = $2 WHERE referral_id = $3 AND seq = $4 AND content IS NULL")
                .bind(crate::wire::change::detail_to_stored(detail))
                .bind(content)
                .bind(id)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn referrals_with_expired_consent(
        &self,
        now_ms: i64,
    ) -> Result<Vec<crate::store::ReferralRecord>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM referrals r JOIN consents c ON c.consent_id = r.consent_id
             WHERE r.direction = 'outbound' AND r.purge_status = 'none'
               AND c.withdrawn_at IS NULL AND c.valid_until <= $1
             ORDER BY r.created_at LIMIT 1000",
            REFERRAL_COLUMNS
                .split(", ")
                .map(|c| format!("r.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let rows = sqlx::query(sql).bind(now_ms).fetch_all(&self.pool).await?;
        rows.iter().map(row_to_referral).collect()
    }

    async fn closed_referrals_before(
        &self,
        peer: &OrgId,
        before_ms: i64,
    ) -> Result<Vec<crate::store::ReferralRecord>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {REFERRAL_COLUMNS} FROM referrals
             WHERE direction = 'outbound' AND peer_org = $1 AND purge_status = 'none'
               AND state IN ('declined', 'completed', 'failed') AND updated_at <= $2
             ORDER BY updated_at LIMIT 1000"
        ));
        let rows = sqlx::query(sql)
            .bind(peer.as_str())
            .bind(before_ms)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(row_to_referral).collect()
    }

    async fn referral_by_request(
        &self,
        owner: &str,
        request_key: &str,
    ) -> Result<Option<(crate::store::ReferralRecord, Vec<u8>)>> {
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

    async fn referrals_by_pseudonym(
        &self,
        pseudonym: &str,
    ) -> Result<Vec<crate::store::ReferralRecord>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {REFERRAL_COLUMNS} FROM referrals WHERE pseudonym = $1 AND direction = 'inbound' ORDER BY created_at"
        ));
        let rows = sqlx::query(sql)
            .bind(pseudonym)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(row_to_referral).collect()
    }

    async fn referral_counts(&self) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query(
            "SELECT direction, state, COUNT(*) AS n FROM referrals GROUP BY direction, state",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("direction")?,
                    r.try_get("state")?,
                    r.try_get("n")?,
                ))
            })
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
            .map(|r| {
                Ok((
                    r.try_get("peer_org")?,
                    r.try_get("n")?,
                    r.try_get("oldest")?,
                ))
            })
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

    async fn abandon_purges(
        &self,
        org: &OrgId,
        notice_rows: &[i64],
        audit: &[crate::domain::audit::AuditEntry],
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
}
