//! Consents: recorded, withdrawn, forgotten after retention.
//!
//! `ConsentStore` for either backend: compiled once for SQLite and once for
//! PostgreSQL (see `store::sql`).

use super::S;
use super::rows::row_to_consent;
use super::shared::*;
use crate::domain::consent::Consent;
use crate::error::Result;
use crate::store::sql::CONSENT_COLUMNS;
use sqlx::Row;

#[async_trait::async_trait]
impl crate::store::ConsentStore for S {
    async fn insert_consent(
        &self,
        c: &Consent,
        request_key: &str,
        request_digest: &[u8],
        audit: &[crate::domain::audit::AuditEntry],
    ) -> Result<Consent> {
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
        let row = sqlx::query(sql)
            .bind(&c.owner)
            .bind(request_key)
            .fetch_one(&mut *tx)
            .await?;
        if inserted == 1 {
            append_audit_tx(&mut tx, audit).await?;
        }
        tx.commit().await?;
        let stored = row_to_consent(&row)?;
        let stored_digest: Vec<u8> = row.try_get("request_digest")?;
        if inserted == 0 && stored_digest != request_digest {
            return Err(crate::error::Error::AlreadyExists(
                "request_id was used before for a different consent".into(),
            ));
        }
        Ok(stored)
    }

    async fn get_consent(&self, consent_id: &str) -> Result<Option<Consent>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {CONSENT_COLUMNS} FROM consents WHERE consent_id = $1"
        ));
        let row = sqlx::query(sql)
            .bind(consent_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(row_to_consent).transpose()
    }

    async fn list_consents(
        &self,
        scope: &crate::store::ListScope,
        subject_ref: Option<&str>,
        cursor: Option<&crate::store::Cursor>,
        limit: i64,
    ) -> Result<Vec<Consent>> {
        let (owner, team) = match scope {
            crate::store::ListScope::All => (None, None),
            crate::store::ListScope::Owner { subject, team } => {
                (Some(subject.as_str()), team.as_deref())
            }
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
        let n = sqlx::query(
            "UPDATE consents SET withdrawn_at = $1 WHERE consent_id = $2 AND withdrawn_at IS NULL",
        )
        .bind(now_ms)
        .bind(consent_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn withdraw_consent_with(
        &self,
        consent_id: &str,
        changes: &[(String, crate::store::ReferralChange)],
        now_ms: i64,
        audit: &[crate::domain::audit::AuditEntry],
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query(
            "UPDATE consents SET withdrawn_at = $1 WHERE consent_id = $2 AND withdrawn_at IS NULL",
        )
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

    async fn consents_to_forget(&self, now_ms: i64, limit: i64) -> Result<Vec<Consent>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {CONSENT_COLUMNS} FROM consents
             WHERE substr(subject_ref, 1, 1) <> $3 AND (withdrawn_at IS NOT NULL OR valid_until <= $1)
             ORDER BY recorded_at LIMIT $2"
        ));
        let prefix = &crate::domain::consent::FORGOTTEN_PREFIX[..1];
        let rows = sqlx::query(sql)
            .bind(now_ms)
            .bind(limit)
            .bind(prefix)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(row_to_consent).collect()
    }

    async fn forget_consent(
        &self,
        consent_id: &str,
        kept: &str,
        terms: &[u8],
        audit: &[crate::domain::audit::AuditEntry],
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query("UPDATE consents SET subject_ref = $3, terms = $1 WHERE consent_id = $2 AND substr(subject_ref, 1, 1) <> $4")
            .bind(terms)
            .bind(consent_id)
            .bind(kept)
            .bind(&crate::domain::consent::FORGOTTEN_PREFIX[..1])
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 1 {
            append_audit_tx(&mut tx, audit).await?;
            tx.commit().await?;
        }
        Ok(n == 1)
    }
}
