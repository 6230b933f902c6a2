//! Notices waiting for a peer, until delivered or dropped.
//!
//! `OutboxStore` for either backend: compiled once for SQLite and once for
//! PostgreSQL (see `store::sql`).

use super::S;
use super::shared::*;
use crate::domain::OrgId;
use crate::error::Result;
use crate::store::{NewNotice, Notice};
use sqlx::Row;

#[async_trait::async_trait]
impl crate::store::OutboxStore for S {
    async fn enqueue_notices_with_meta(
        &self,
        notices: &[NewNotice],
        key: &str,
        value: &str,
    ) -> Result<()> {
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
            "SELECT id, notice_id, org_id, payload, present_key, attempts, next_attempt_at, created_at, kind, referral_id
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
                Ok(OrgId::parse("org_id", &org)
                    .map_err(|e| anyhow::anyhow!("stored notice: {e}"))?)
            })
            .collect()
    }

    async fn undelivered_notices_for(&self, org: &OrgId, limit: i64) -> Result<Vec<Notice>> {
        let rows = sqlx::query(
            "SELECT id, notice_id, org_id, payload, present_key, attempts, next_attempt_at, created_at, kind, referral_id
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

    async fn sealed_notices(
        &self,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<(i64, String, Vec<u8>)>> {
        let rows = sqlx::query(
            "SELECT id, notice_id, payload FROM peer_notices
             WHERE id > $1 AND delivered_at IS NULL AND dropped_at IS NULL AND substr(payload, 1, $2) = $3
             ORDER BY id LIMIT $4",
        )
        .bind(after_id)
        .bind(crate::crypto::SEALED_PREFIX.len() as i32)
        .bind(crate::crypto::SEALED_PREFIX)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("id")?,
                    r.try_get("notice_id")?,
                    r.try_get("payload")?,
                ))
            })
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
}
