//! The hash-chained audit log, its checkpoints and the checkpoints we witness for peers.
//!
//! `AuditStore` for either backend: compiled once for SQLite and once for
//! PostgreSQL (see `store::sql`).

use super::S;
use super::rows::{row_to_audit, row_to_checkpoint};
use super::shared::*;
use crate::domain::OrgId;
use crate::error::Result;
use crate::store::NewNotice;
use crate::store::sql::AUDIT_COLUMNS;
use sqlx::Row;

#[async_trait::async_trait]
impl crate::store::AuditStore for S {
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

    async fn append_audit(&self, entries: &[crate::domain::audit::AuditEntry]) -> Result<()> {
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

    async fn list_audit(
        &self,
        f: &crate::domain::audit::AuditFilter,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<crate::domain::audit::AuditRecord>> {
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

    async fn audit_for_objects(
        &self,
        ids: &[String],
    ) -> Result<Vec<crate::domain::audit::AuditRecord>> {
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

    async fn insert_checkpoint(
        &self,
        cp: &crate::store::CheckpointRecord,
        notices: &[NewNotice],
    ) -> Result<()> {
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

    async fn latest_checkpoint(&self) -> Result<Option<crate::store::CheckpointRecord>> {
        let row = sqlx::query("SELECT seq, head_hash, at, payload, signature FROM audit_checkpoints ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(row_to_checkpoint).transpose()
    }

    async fn checkpoints(&self) -> Result<Vec<crate::store::CheckpointRecord>> {
        let rows = sqlx::query(
            "SELECT seq, head_hash, at, payload, signature FROM audit_checkpoints ORDER BY seq",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row_to_checkpoint).collect()
    }

    async fn insert_witness(&self, w: &crate::store::WitnessRecord) -> Result<()> {
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

    async fn witnesses(&self) -> Result<Vec<crate::store::WitnessRecord>> {
        let rows = sqlx::query("SELECT seq, witness_org, payload, signature, at FROM audit_witnesses ORDER BY seq, witness_org")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(crate::store::WitnessRecord {
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
        cp: &crate::store::HeldCheckpoint,
        now_ms: i64,
    ) -> Result<Option<crate::store::HeldCheckpoint>> {
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
            Some(crate::store::HeldCheckpoint {
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

    async fn witnessed_checkpoints(
        &self,
        org: &OrgId,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let rows = sqlx::query(
            "SELECT payload, signature FROM witnessed_checkpoints WHERE org_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(org.as_str())
        .bind(after_seq)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("payload")?, r.try_get("signature")?)))
            .collect()
    }
}
