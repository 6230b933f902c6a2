//! Group commit for SQLite. SQLite has one writer and, with
//! `synchronous=FULL`, every commit waits for an fsync. Writers that queue up
//! behind each other therefore share one transaction: each runs inside a
//! savepoint of its own when it joins another's (so a writer that fails undoes only its own work), and
//! the transaction is committed when nobody else is waiting for it (or it holds
//! `MAX_MEMBERS` writers). A writer's `commit()` returns only after that commit
//! is durable, with its result; a lone writer commits at once, so nothing waits
//! for a timer.
//!
//! The writes happen on one dedicated connection outside the pool, so the
//! pool's readers never see a connection left inside a transaction.

use crate::error::{Error, Result};
use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::{Mutex, OwnedMutexGuard, oneshot};

/// Most writers one transaction takes before it is committed anyway.
const MAX_MEMBERS: usize = 256;

type Outcome = std::result::Result<(), Arc<str>>;

/// How a writer's work is undone.
#[derive(Clone, Copy)]
enum Undo {
    /// It joined others' transaction: back to its savepoint.
    Savepoint,
    /// It began the transaction and nobody joined (it held the turn
    /// throughout): the whole transaction, with no savepoint needed.
    Transaction,
}

struct Open {
    conn: SqliteConnection,
    in_tx: bool,
    /// A writer ended without committing: its work is undone before
    /// anything else happens on the connection.
    failed: Option<Undo>,
    /// Writers whose work is in the open transaction, awaiting its commit.
    members: Vec<oneshot::Sender<Outcome>>,
}

struct Shared {
    open: Arc<Mutex<Open>>,
    /// Writers waiting for their turn: while there are any, the open
    /// transaction is left for them to join (and, at last, to commit).
    queued: AtomicUsize,
}

#[derive(Clone)]
pub struct GroupCommit {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

impl GroupCommit {
    pub async fn connect(opts: &SqliteConnectOptions) -> Result<Self> {
        let conn = SqliteConnection::connect_with(opts).await?;
        Ok(Self {
            shared: Arc::new(Shared {
                open: Arc::new(Mutex::new(Open {
                    conn,
                    in_tx: false,
                    failed: None,
                    members: Vec::new(),
                })),
                queued: AtomicUsize::new(0),
            }),
        })
    }

    /// Starts a write: waits for the turn, joins (or begins) the open
    /// transaction and opens this writer's savepoint.
    pub async fn begin(&self) -> Result<WriteTx> {
        let waiting = Queued::new(&self.shared);
        let guard = self.shared.open.clone().lock_owned().await;
        waiting.done();
        // A statement handed to SQLite runs to its end even if our caller
        // goes away; so does the rest of this, on a task of its own, so that
        // what the connection is in (a transaction, a savepoint) stays known.
        // A caller gone meanwhile drops the finished WriteTx: rolled back.
        tokio::spawn(start(guard, self.shared.clone()))
            .await
            .map_err(|e| Error::Internal(anyhow::anyhow!("starting a write: {e}")))?
    }

    /// Closes the connection after committing what is open.
    pub async fn close(&self) {
        let mut guard = self.shared.open.lock().await;
        settle_failed(&mut guard).await;
        if guard.in_tx {
            commit(&mut guard).await;
        }
    }
}

/// Joins (or begins) the open transaction and opens the writer's savepoint.
async fn start(mut guard: OwnedMutexGuard<Open>, shared: Arc<Shared>) -> Result<WriteTx> {
    let started = async {
        settle_failed(&mut guard).await;
        if guard.in_tx {
            sqlx::raw_sql("SAVEPOINT w")
                .execute(&mut guard.conn)
                .await?;
            Ok::<_, Error>(Undo::Savepoint)
        } else {
            sqlx::raw_sql("BEGIN IMMEDIATE")
                .execute(&mut guard.conn)
                .await?;
            guard.in_tx = true;
            Ok(Undo::Transaction)
        }
    }
    .await;
    match started {
        Ok(undo) => Ok(WriteTx {
            guard,
            shared,
            undo,
            ended: false,
        }),
        Err(e) => {
            // Nothing of this writer is in the transaction; the others'
            // work is committed (or left to the next writer).
            settle(&mut guard, &shared).await;
            Err(e)
        }
    }
}

/// Counts a writer as waiting; if it gives up (its future is dropped), the
/// open transaction may be left with nobody to commit it, so a task settles it.
struct Queued {
    shared: Arc<Shared>,
    armed: bool,
}

impl Queued {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.queued.fetch_add(1, Ordering::SeqCst);
        Self {
            shared: shared.clone(),
            armed: true,
        }
    }

    fn done(mut self) {
        self.armed = false;
        self.shared.queued.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        if self.armed {
            self.shared.queued.fetch_sub(1, Ordering::SeqCst);
            spawn_settle(&self.shared);
        }
    }
}

fn spawn_settle(shared: &Arc<Shared>) {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        let shared = shared.clone();
        rt.spawn(async move {
            let mut guard = shared.open.clone().lock_owned().await;
            settle(&mut guard, &shared).await;
        });
    }
}

/// Undoes the work of a writer that ended without committing.
async fn settle_failed(open: &mut Open) {
    match open.failed.take() {
        None => {}
        Some(Undo::Transaction) => abort(open, "rolled back").await,
        Some(Undo::Savepoint) => {
            let undone = sqlx::raw_sql("ROLLBACK TO w; RELEASE w")
                .execute(&mut open.conn)
                .await;
            if let Err(e) = undone {
                // The transaction cannot be trusted any more: none of it is kept.
                abort(open, &format!("rolling back a writer: {e}")).await;
            }
        }
    }
}

/// Commits the open transaction unless other writers are waiting to join it.
async fn settle(open: &mut Open, shared: &Shared) {
    settle_failed(open).await;
    if open.in_tx
        && (shared.queued.load(Ordering::SeqCst) == 0 || open.members.len() >= MAX_MEMBERS)
    {
        commit(open).await;
    }
}

async fn commit(open: &mut Open) {
    match sqlx::raw_sql("COMMIT").execute(&mut open.conn).await {
        Ok(_) => {
            open.in_tx = false;
            for m in open.members.drain(..) {
                let _ = m.send(Ok(()));
            }
        }
        Err(e) => abort(open, &format!("commit: {e}")).await,
    }
}

async fn abort(open: &mut Open, why: &str) {
    if open.in_tx {
        let _ = sqlx::raw_sql("ROLLBACK").execute(&mut open.conn).await;
    }
    open.in_tx = false;
    let why: Arc<str> = Arc::from(why);
    for m in open.members.drain(..) {
        let _ = m.send(Err(why.clone()));
    }
}

/// One writer's part of the open transaction. Dropped without `commit()`,
/// its work is rolled back (and only its own).
pub struct WriteTx {
    guard: OwnedMutexGuard<Open>,
    shared: Arc<Shared>,
    undo: Undo,
    ended: bool,
}

impl WriteTx {
    /// Keeps this writer's work; returns once it is durable.
    pub async fn commit(self) -> Result<()> {
        // On a task of its own, like `begin`: a caller that goes away must
        // not leave a RELEASE or COMMIT half-recorded.
        let rx = tokio::spawn(self.finish())
            .await
            .map_err(|e| Error::Internal(anyhow::anyhow!("committing a write: {e}")))??;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(Error::Internal(anyhow::anyhow!("database: {why}"))),
            Err(_) => Err(Error::Internal(anyhow::anyhow!(
                "database: the transaction was abandoned"
            ))),
        }
    }

    /// Ends this writer's part; the receiver hears when it is durable.
    async fn finish(mut self) -> Result<oneshot::Receiver<Outcome>> {
        self.ended = true;
        if let Undo::Savepoint = self.undo {
            let released = sqlx::raw_sql("RELEASE w")
                .execute(&mut self.guard.conn)
                .await;
            if let Err(e) = released {
                self.guard.failed = Some(self.undo);
                settle(&mut self.guard, &self.shared).await;
                return Err(e.into());
            }
        }
        let (tx, rx) = oneshot::channel();
        self.guard.members.push(tx);
        settle(&mut self.guard, &self.shared).await;
        // Our turn ends here; the commit may be another writer's to make.
        drop(self);
        Ok(rx)
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        if !self.ended {
            self.guard.failed = Some(self.undo);
            spawn_settle(&self.shared);
        }
    }
}

impl std::ops::Deref for WriteTx {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.guard.conn
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.guard.conn
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    async fn open(dir: &std::path::Path) -> (GroupCommit, sqlx::SqlitePool) {
        let url = format!("sqlite://{}", dir.join("g.db").display());
        let opts = SqliteConnectOptions::from_str(&url)
            .unwrap()
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
        let pool = sqlx::SqlitePool::connect_with(opts.clone()).await.unwrap();
        sqlx::raw_sql("CREATE TABLE t (n INTEGER PRIMARY KEY)")
            .execute(&pool)
            .await
            .unwrap();
        (GroupCommit::connect(&opts).await.unwrap(), pool)
    }

    async fn count(pool: &sqlx::SqlitePool) -> Vec<i64> {
        sqlx::query_scalar("SELECT n FROM t ORDER BY n")
            .fetch_all(pool)
            .await
            .unwrap()
    }

    /// Writers that queue up share commits; one that fails (or gives up)
    /// takes only its own work with it, and every commit that returned is kept.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_and_abandoned_writers_undo_only_their_own_work() {
        let dir = tempfile::tempdir().unwrap();
        let (g, pool) = open(dir.path()).await;
        let mut set = tokio::task::JoinSet::new();
        for n in 0..120i64 {
            let g = g.clone();
            set.spawn(async move {
                let mut tx = g.begin().await?;
                sqlx::query("INSERT INTO t (n) VALUES ($1)")
                    .bind(n)
                    .execute(&mut *tx)
                    .await?;
                match n % 4 {
                    // Fails after writing: dropped without commit.
                    1 => Err(Error::FailedPrecondition("no".into())),
                    // A statement that fails inside the transaction (duplicate key).
                    2 => {
                        sqlx::query("INSERT INTO t (n) VALUES ($1)")
                            .bind(n)
                            .execute(&mut *tx)
                            .await?;
                        tx.commit().await.map(|()| n)
                    }
                    _ => tx.commit().await.map(|()| n),
                }
            });
        }
        // One writer gives up (its caller went away) while it holds its turn.
        let abandoned = tokio::time::timeout(std::time::Duration::from_millis(20), async {
            let mut tx = g.begin().await.unwrap();
            sqlx::query("INSERT INTO t (n) VALUES (1000)")
                .execute(&mut *tx)
                .await
                .unwrap();
            std::future::pending::<()>().await;
        });
        assert!(abandoned.await.is_err());
        let mut committed = Vec::new();
        while let Some(r) = set.join_next().await {
            if let Ok(n) = r.unwrap() {
                committed.push(n);
            }
        }
        committed.sort();
        let expected: Vec<i64> = (0..120).filter(|n| n % 4 == 0 || n % 4 == 3).collect();
        assert_eq!(committed, expected);
        // A later writer goes through once the abandoned one is undone.
        let mut tx = g.begin().await.unwrap();
        sqlx::query("INSERT INTO t (n) VALUES (2000)")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let mut want = expected.clone();
        want.push(2000);
        assert_eq!(count(&pool).await, want);
    }

    /// Callers that go away at any point (starting, writing, committing)
    /// leave the writer usable: everything that reported success is kept.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn callers_that_go_away_leave_the_writer_usable() {
        let dir = tempfile::tempdir().unwrap();
        let (g, pool) = open(dir.path()).await;
        let mut set = tokio::task::JoinSet::new();
        for n in 0..200i64 {
            let g = g.clone();
            set.spawn(async move {
                // Half wait as long as it takes; half give up after 0–20 ms.
                let limit = std::time::Duration::from_micros(if n % 2 == 0 {
                    10_000_000
                } else {
                    (n as u64 * 997) % 20_000
                });
                let write = async {
                    let mut tx = g.begin().await?;
                    sqlx::query("INSERT INTO t (n) VALUES ($1)")
                        .bind(n)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await
                };
                matches!(tokio::time::timeout(limit, write).await, Ok(Ok(()))).then_some(n)
            });
        }
        let mut reported = Vec::new();
        while let Some(r) = set.join_next().await {
            reported.extend(r.unwrap());
        }
        let mut tx = g.begin().await.unwrap();
        sqlx::query("INSERT INTO t (n) VALUES (5000)")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let held = count(&pool).await;
        assert!(held.contains(&5000));
        for n in &reported {
            assert!(held.contains(n), "{n} reported committed but not held");
        }
        assert!(held.iter().all(|n| *n < 200 || *n == 5000));
        reported.sort();
        let patient: Vec<i64> = (0..200).step_by(2).collect();
        assert!(patient.iter().all(|n| reported.contains(n)));
    }
}
