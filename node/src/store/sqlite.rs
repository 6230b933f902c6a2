//! SQLite backend: the embedded default. WAL, `synchronous=FULL`, foreign
//! keys on. Reads use a pool of connections; every write goes through one
//! writer connection with group commit (`group_commit.rs`): transactions are
//! begun IMMEDIATE, so read-then-write cannot fail on a stale snapshot, and
//! writers that queue up share one durable commit.

use anyhow::Context;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::str::FromStr;
use std::time::Duration;

use super::group_commit::{GroupCommit, WriteTx};
use super::wal::WalCheckpoints;

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
    /// SQLite has one writer. Every write goes through here: writers queue
    /// fairly and without sleeping (not in SQLite's busy handler), and those
    /// that queue up share one commit.
    writer: GroupCommit,
    /// Peers by key and settings: this process is the database's only user.
    cache: std::sync::Arc<super::cache::ReadCache>,
    /// Debounced, checked WAL checkpoints after purges (`wal.rs`).
    wal: WalCheckpoints,
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
            .pragma("secure_delete", "ON")
            // Savepoints' sub-journals (group commit) in memory, not in temporary files.
            .pragma("temp_store", "MEMORY");
        create_private_file(opts.get_filename())?;
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            // An in-process connection cannot have been hung up on: no ping
            // (a round trip to its thread) before every read.
            .test_before_acquire(false)
            .connect_with(opts.clone())
            .await
            .context("opening the SQLite database")?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .context("migrating the SQLite database")?;
        // The writer touches every table and index: a larger page cache
        // (16 MiB at most, filled only as pages are used) saves it re-reads.
        let writer = GroupCommit::connect(&opts.clone().pragma("cache_size", "-16384"))
            .await
            .context("opening the SQLite database for writing")?;
        Ok(Self {
            wal: WalCheckpoints::start(pool.clone()),
            pool,
            writer,
            cache: std::sync::Arc::new(super::cache::ReadCache::enabled()),
        })
    }

    async fn after_purge_impl(&self) -> crate::error::Result<()> {
        // secure_delete zeroes the freed content; the log still holds older
        // page images until it is checkpointed and truncated: within
        // `wal::DEBOUNCE` (one checkpoint for a burst of purges), retried
        // while busy.
        self.wal.after_purge();
        Ok(())
    }

    fn wal_checkpoints_impl(&self) -> Vec<(&'static str, u64)> {
        self.wal.stats().snapshot()
    }

    async fn compact_data_keys_impl(&self) -> crate::error::Result<bool> {
        // secure_delete zeroes a deleted key's bytes in the database file;
        // the write-ahead log is truncated after purges (`after_purge_impl`).
        Ok(false)
    }

    async fn publish_change_impl(&self, _payload: &str) -> crate::error::Result<()> {
        Ok(())
    }

    async fn subscribe_changes_impl(
        &self,
    ) -> crate::error::Result<Option<tokio::sync::mpsc::Receiver<String>>> {
        Ok(None)
    }

    async fn begin_write(&self) -> crate::error::Result<WriteTx> {
        self.writer.begin().await
    }

    async fn close_impl(&self) {
        // Closing the last connection checkpoints the log anyway.
        self.wal.stop();
        self.writer.close().await;
        self.pool.close().await;
    }
}

// The SQL both backends share, compiled here for this one (see `store::sql`).
type S = SqliteStore;
type Db = sqlx::Sqlite;
type Tx = WriteTx;
// Included by both backends, each with its own `S`, `Db` and `Tx`.
#[allow(clippy::duplicate_mod)]
#[path = "sql/backend.rs"]
mod sql;
