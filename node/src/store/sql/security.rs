//! Refused calls and connections, aggregated per minute.
//!
//! `SecurityEventStore` for either backend: compiled once for SQLite and once for
//! PostgreSQL (see `store::sql`).

use super::S;
use crate::error::Result;
use crate::store::SecurityEvent;
use sqlx::Row;

#[async_trait::async_trait]
impl crate::store::SecurityEventStore for S {
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
