//! SQLite backend: the embedded default. WAL, foreign keys on, a busy timeout,
//! and write transactions begun IMMEDIATE so that read-then-write cannot fail
//! on a stale snapshot; SQLite serialises writers, and they queue on the
//! write lock within the busy timeout.

use anyhow::Context;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::str::FromStr;
use std::time::Duration;

/// Creates the database file readable by the owner only; SQLite gives its
/// -wal and -shm files the same mode.
fn create_private_file(path: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if path.as_os_str().is_empty() || path.to_string_lossy().starts_with(':') || path.exists() {
        return Ok(());
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    Ok(())
}

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: sqlx::SqlitePool,
    /// SQLite has one writer. Write transactions queue here, fairly and
    /// without sleeping, instead of in SQLite's busy handler.
    writer: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl SqliteStore {
    const BACKEND: &'static str = "sqlite";

    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let opts = SqliteConnectOptions::from_str(url)
            .context("database_url")?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            // Deleted content (a purged summary) is overwritten, not left in free pages.
            .pragma("secure_delete", "ON");
        create_private_file(opts.get_filename())?;
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(opts)
            .await
            .context("opening the SQLite database")?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .context("migrating the SQLite database")?;
        Ok(Self {
            pool,
            writer: std::sync::Arc::default(),
        })
    }

    async fn after_purge_impl(&self) -> crate::error::Result<()> {
        // secure_delete zeroes the freed content; the log still holds older
        // page images until it is checkpointed and truncated.
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn begin_write(
        &self,
    ) -> crate::error::Result<(
        tokio::sync::OwnedMutexGuard<()>,
        sqlx::Transaction<'static, sqlx::Sqlite>,
    )> {
        let turn = self.writer.clone().lock_owned().await;
        Ok((turn, self.pool.begin_with("BEGIN IMMEDIATE").await?))
    }
}

super::sql::impl_store!(SqliteStore, sqlx::Sqlite);
