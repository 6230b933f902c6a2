//! PostgreSQL backend: for larger organisations and for several replicas of
//! one node. Migrations run under sqlx's advisory lock, so replicas that
//! start together migrate once.

use anyhow::Context;
use sqlx::postgres::PgPoolOptions;
use std::time::Duration;

/// The channel replicas tell each other of changes on (`LISTEN`/`NOTIFY`).
const CHANGES: &str = "exitnet_changes";

#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: sqlx::PgPool,
    /// Set on close: the change listener gives its connection back.
    closing: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
    /// Off: other replicas change the same rows.
    cache: std::sync::Arc<super::cache::ReadCache>,
}

impl PostgresStore {
    const BACKEND: &'static str = "postgres";

    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            // A ping before every use would double the round trips of a
            // read; a connection idle for a while is checked, since the
            // server (or something between) may have closed it.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > Duration::from_secs(10) {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await
            .context("connecting to PostgreSQL")?;
        // sqlx takes pg_advisory_lock around the migration run (Migrator::locking
        // is on by default), so concurrent replicas wait rather than race.
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .context("migrating the PostgreSQL database")?;
        Ok(Self {
            pool,
            closing: std::sync::Arc::new(tokio::sync::watch::channel(false).0),
            cache: std::sync::Arc::new(super::cache::ReadCache::disabled()),
        })
    }

    async fn after_purge_impl(&self) -> crate::error::Result<()> {
        // PostgreSQL reclaims dead tuples with (auto)vacuum; see docs/operations.md.
        Ok(())
    }

    fn wal_checkpoints_impl(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }

    async fn begin_write(
        &self,
    ) -> crate::error::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        // PostgreSQL takes concurrent writers (row locks and conditional
        // updates order them) and groups their commits itself.
        Ok(self.pool.begin().await?)
    }

    /// Deleted data keys stay in the table's pages as dead rows until a
    /// vacuum; a plain VACUUM frees the space but can leave the bytes in
    /// place (seen on PostgreSQL 15 for the last row of a page), so the
    /// table is rewritten (`VACUUM FULL`: a new file, the old one deleted).
    /// The table is small (about 100 bytes a subject); the exclusive lock
    /// is held briefly and waited for at most 200 ms (a waiting VACUUM FULL
    /// would queue every other use of the table behind it): when the table
    /// is busy it is tried again at the next round.
    async fn compact_data_keys_impl(&self) -> crate::error::Result<bool> {
        use sqlx::Row;
        let dead: i64 = sqlx::query(
            "SELECT COALESCE((SELECT n_dead_tup FROM pg_stat_user_tables
                              WHERE relid = 'data_keys'::regclass), 0) AS dead",
        )
        .fetch_one(&self.pool)
        .await?
        .try_get("dead")?;
        if dead == 0 {
            return Ok(false);
        }
        // VACUUM cannot run inside a transaction: one connection, plain statements.
        let mut conn = self.pool.acquire().await?;
        sqlx::raw_sql("SET lock_timeout = '200ms'")
            .execute(&mut *conn)
            .await?;
        let done = sqlx::raw_sql("VACUUM FULL data_keys")
            .execute(&mut *conn)
            .await;
        sqlx::raw_sql("RESET lock_timeout")
            .execute(&mut *conn)
            .await?;
        match done {
            Ok(_) => Ok(true),
            // lock_not_available: busy now, next round.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn publish_change_impl(&self, payload: &str) -> crate::error::Result<()> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANGES)
            .bind(payload)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn subscribe_changes_impl(
        &self,
    ) -> crate::error::Result<Option<tokio::sync::mpsc::Receiver<String>>> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
        listener.listen(CHANGES).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let mut closing = self.closing.subscribe();
        tokio::spawn(async move {
            loop {
                // `recv` reconnects after a lost connection (and re-listens);
                // what was published meanwhile is missed.
                // Closing first: once the pool closes, `recv` fails at once,
                // and a stop must not wait out a retry's pause (a random
                // pick between the two cost whole seconds per stop).
                let next = tokio::select! {
                    biased;
                    _ = closing.wait_for(|c| *c) => return,
                    n = listener.recv() => n,
                };
                match next {
                    Ok(n) => {
                        if tx.send(n.payload().to_owned()).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "listening for other replicas' changes");
                        tokio::select! {
                            biased;
                            _ = closing.wait_for(|c| *c) => return,
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                }
            }
        });
        Ok(Some(rx))
    }

    async fn close_impl(&self) {
        // The listener holds a pooled connection, which closing waits for.
        self.closing.send_replace(true);
        self.pool.close().await;
    }
}

// The SQL both backends share, compiled here for this one (see `store::sql`).
type S = PostgresStore;
type Db = sqlx::Postgres;
type Tx = sqlx::Transaction<'static, sqlx::Postgres>;
// Included by both backends, each with its own `S`, `Db` and `Tx`.
#[allow(clippy::duplicate_mod)]
#[path = "sql/backend.rs"]
mod sql;
