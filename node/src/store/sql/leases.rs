//! Leases: which replica runs a singleton task.
//!
//! `LeaseStore` for either backend: compiled once for SQLite and once for
//! PostgreSQL (see `store::sql`).

use super::S;
use crate::error::Result;

#[async_trait::async_trait]
impl crate::store::LeaseStore for S {
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool> {
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
}
