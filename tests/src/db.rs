//! Databases for tests: SQLite in a temporary directory, or a PostgreSQL
//! database of its own per test, dropped afterwards. An unreachable
//! PostgreSQL fails the test that needs it: a test that did not run never
//! reports "ok".

use anyhow::Context;
use sqlx::Connection;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The server tests create their databases on.
pub fn pg_admin_url() -> String {
    std::env::var("EXITNET_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A PostgreSQL database created for one test and dropped with it.
#[derive(Debug)]
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    /// A fresh database.
    pub async fn create() -> anyhow::Result<Self> {
        let admin = pg_admin_url();
        let mut conn = sqlx::PgConnection::connect(&admin).await.with_context(|| {
            format!(
                "the PostgreSQL tests need a server at {admin} (set EXITNET_TEST_PG_URL to use another)"
            )
        })?;
        let name = format!("exitnet_t_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await?;
        let base = admin
            .rsplit_once('/')
            .map(|(b, _)| b.to_owned())
            .unwrap_or(admin.clone());
        Ok(Self {
            url: format!("{base}/{name}"),
            name,
        })
    }
}

impl TestDatabase {
    /// Empties the database (drops and creates it again).
    pub async fn reset(&self) -> anyhow::Result<()> {
        let mut conn = sqlx::PgConnection::connect(&pg_admin_url()).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut conn)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE {}",
            self.name
        )))
        .execute(&mut conn)
        .await?;
        Ok(())
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime; a thread of its own may block.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&pg_admin_url()).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                }
            });
        })
        .join();
    }
}
