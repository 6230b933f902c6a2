//! Wrapped data keys (one per subject, crypto-shredded on purge).
//!
//! `KeyStore` for either backend: compiled once for SQLite and once for
//! PostgreSQL (see `store::sql`).

use super::S;
use crate::error::Result;
use sqlx::Row;

#[async_trait::async_trait]
impl crate::store::KeyStore for S {
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

    async fn find_data_key(&self, key_id: &str) -> Result<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT wrapped FROM data_keys WHERE key_id = $1")
            .bind(key_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("wrapped")).transpose()?)
    }

    async fn wrapped_data_keys(
        &self,
        after_key_id: &str,
        limit: i64,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        let rows = sqlx::query(
            "SELECT key_id, wrapped FROM data_keys WHERE key_id > $1 ORDER BY key_id LIMIT $2",
        )
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

    async fn compact_data_keys(&self) -> Result<bool> {
        self.compact_data_keys_impl().await
    }
}
