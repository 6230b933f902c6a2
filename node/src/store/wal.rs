//! SQLite: the write-ahead log is checkpointed and truncated soon after every
//! purge, so no older page image of purged content lingers in the `-wal`
//! file. Purges come in bursts (a consent withdrawn from many referrals, a
//! peer's batch of withdrawals), so checkpoints are debounced: the first
//! purge of a burst starts a short wait, and one checkpoint then covers every
//! purge committed before it. A purge committed after a checkpoint began is
//! covered by the next one: none is ever skipped. A checkpoint that SQLite
//! answers busy (a reader still uses the log) is retried until it completes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// How long after the first purge of a burst its checkpoint runs.
pub const DEBOUNCE: Duration = Duration::from_millis(200);
/// How long after a busy (or failed) checkpoint it is tried again.
pub const RETRY: Duration = Duration::from_millis(250);

/// Checkpoints by outcome, for the metrics.
#[derive(Debug, Default)]
pub struct WalStats {
    /// Completed: the log was checkpointed and truncated.
    pub done: AtomicU64,
    /// SQLite answered busy: tried again.
    pub busy: AtomicU64,
    /// The statement failed: tried again.
    pub failed: AtomicU64,
}

impl WalStats {
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("done", self.done.load(Ordering::Relaxed)),
            ("busy", self.busy.load(Ordering::Relaxed)),
            ("failed", self.failed.load(Ordering::Relaxed)),
        ]
    }
}

#[derive(Debug, Default)]
struct Shared {
    /// Purges asked for; a checkpoint covers those counted before it began.
    requested: AtomicU64,
    wake: Notify,
    stop: Notify,
    stats: WalStats,
}

/// The handle the store keeps; the checkpointing task ends on `stop`.
#[derive(Debug, Clone)]
pub struct WalCheckpoints {
    shared: Arc<Shared>,
}

impl WalCheckpoints {
    /// Starts the task that checkpoints `pool`'s database.
    pub fn start(pool: sqlx::SqlitePool) -> Self {
        Self::start_with(pool, DEBOUNCE, RETRY)
    }

    fn start_with(pool: sqlx::SqlitePool, debounce: Duration, retry: Duration) -> Self {
        let shared = Arc::new(Shared::default());
        tokio::spawn(run(pool, shared.clone(), debounce, retry));
        Self { shared }
    }

    /// A purge was committed: its checkpoint follows within `DEBOUNCE` (plus
    /// retries while the log is busy). Returns at once.
    pub fn after_purge(&self) {
        self.shared.requested.fetch_add(1, Ordering::SeqCst);
        self.shared.wake.notify_one();
    }

    pub fn stats(&self) -> &WalStats {
        &self.shared.stats
    }

    pub fn stop(&self) {
        self.shared.stop.notify_one();
    }
}

async fn run(pool: sqlx::SqlitePool, s: Arc<Shared>, debounce: Duration, retry: Duration) {
    let mut covered = 0;
    loop {
        if s.requested.load(Ordering::SeqCst) == covered {
            tokio::select! {
                _ = s.wake.notified() => continue,
                _ = s.stop.notified() => return,
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(debounce) => {}
            _ = s.stop.notified() => return,
        }
        // Every purge counted by now has committed: this checkpoint covers it.
        let target = s.requested.load(Ordering::SeqCst);
        loop {
            match checkpoint(&pool).await {
                Ok(Checkpoint::Done) => {
                    s.stats.done.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Ok(Checkpoint::Busy { log, checkpointed }) => {
                    s.stats.busy.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        log,
                        checkpointed,
                        "WAL checkpoint after a purge was busy (a reader holds the log); retrying"
                    );
                }
                Err(e) => {
                    s.stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "WAL checkpoint after a purge failed; retrying");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(retry) => {}
                _ = s.stop.notified() => return,
            }
        }
        covered = target;
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Checkpoint {
    Done,
    Busy { log: i64, checkpointed: i64 },
}

/// One `wal_checkpoint(TRUNCATE)`, its result read: SQLite answers a row
/// (busy, frames in the log, frames checkpointed); busy = 1 means it could
/// not finish, and the log may still hold older pages.
async fn checkpoint(pool: &sqlx::SqlitePool) -> anyhow::Result<Checkpoint> {
    let (busy, log, checkpointed): (i64, i64, i64) =
        sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(pool)
            .await?;
    Ok(if busy == 0 {
        Checkpoint::Done
    } else {
        Checkpoint::Busy { log, checkpointed }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
    use sqlx::{Connection, Executor};
    use std::str::FromStr;

    async fn db(dir: &std::path::Path) -> (sqlx::SqlitePool, std::path::PathBuf) {
        let path = dir.join("t.db");
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .unwrap()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // A busy checkpoint answers at once instead of waiting.
            .busy_timeout(Duration::from_millis(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .unwrap();
        pool.execute("CREATE TABLE t (x BLOB)").await.unwrap();
        (pool, dir.join("t.db-wal"))
    }

    async fn write(pool: &sqlx::SqlitePool) {
        sqlx::query("INSERT INTO t VALUES (zeroblob(4096))")
            .execute(pool)
            .await
            .unwrap();
    }

    fn wal_len(p: &std::path::Path) -> u64 {
        std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
    }

    async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        // Up to 10 s: the machine may be busy building.
        for _ in 0..1000 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test]
    async fn a_burst_of_purges_is_one_checkpoint_and_none_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let (pool, wal) = db(dir.path()).await;
        let w = WalCheckpoints::start_with(
            pool.clone(),
            Duration::from_millis(500),
            Duration::from_millis(20),
        );
        let burst = std::time::Instant::now();
        for _ in 0..50 {
            write(&pool).await;
            w.after_purge();
        }
        assert!(wal_len(&wal) > 0);
        // (A burst slower than the debounce would rightly take two.)
        assert!(burst.elapsed() < Duration::from_millis(500), "a burst");
        wait_for("the checkpoint", || {
            w.stats().done.load(Ordering::SeqCst) == 1
        })
        .await;
        assert_eq!(wal_len(&wal), 0, "truncated");
        // Fifty purges, one checkpoint.
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(w.stats().done.load(Ordering::SeqCst), 1);
        // A later purge gets a checkpoint of its own.
        write(&pool).await;
        w.after_purge();
        wait_for("the second checkpoint", || {
            w.stats().done.load(Ordering::SeqCst) == 2
        })
        .await;
        assert_eq!(wal_len(&wal), 0);
        w.stop();
    }

    #[tokio::test]
    async fn a_busy_checkpoint_is_retried_until_it_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let (pool, wal) = db(dir.path()).await;
        write(&pool).await;
        // A reader holds a snapshot: a TRUNCATE checkpoint cannot finish.
        let mut reader = pool.acquire().await.unwrap();
        let mut tx = reader.begin().await.unwrap();
        sqlx::query("SELECT count(*) FROM t")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        write(&pool).await;
        let w = WalCheckpoints::start_with(
            pool.clone(),
            Duration::from_millis(10),
            Duration::from_millis(20),
        );
        w.after_purge();
        wait_for("a busy answer", || {
            w.stats().busy.load(Ordering::SeqCst) >= 2
        })
        .await;
        assert_eq!(w.stats().done.load(Ordering::SeqCst), 0);
        assert!(wal_len(&wal) > 0, "not truncated while the reader holds it");
        tx.rollback().await.unwrap();
        drop(reader);
        wait_for("the retried checkpoint", || {
            w.stats().done.load(Ordering::SeqCst) == 1
        })
        .await;
        assert_eq!(wal_len(&wal), 0);
        w.stop();
    }
}
