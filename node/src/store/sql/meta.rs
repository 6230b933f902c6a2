//! The node's own settings, its backend's housekeeping and the change feed replicas share.
//!
//! `MetaStore` for either backend: compiled once for SQLite and once for
//! PostgreSQL (see `store::sql`).

use super::S;
use crate::error::Result;
use sqlx::Row;

#[async_trait::async_trait]
impl crate::store::MetaStore for S {
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
        sqlx::query(
            "INSERT INTO node_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
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

    async fn after_purge(&self) -> Result<()> {
        self.after_purge_impl().await
    }

    fn wal_checkpoints(&self) -> Vec<(&'static str, u64)> {
        self.wal_checkpoints_impl()
    }

    async fn publish_change(&self, payload: &str) -> Result<()> {
        self.publish_change_impl(payload).await
    }

    async fn subscribe_changes(&self) -> Result<Option<tokio::sync::mpsc::Receiver<String>>> {
        self.subscribe_changes_impl().await
    }
}
