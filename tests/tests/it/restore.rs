//! The backup and restore runbook (docs/operations.md), exercised: a node
//! restored from a backup taken before a purge purges again at start (its
//! peer still holds the referral as withdrawn), destroys the data key again,
//! and `audit verify` says plainly that its chain is behind what its peers
//! witnessed, and why.

use exitnet_proto::pb;
use exitnet_tests::fixtures::{
    NARRATIVE, clients, created_referral, peer_with, recorded_consent, start,
};
use exitnet_tests::{Backend, NodeProcess, bearer, wait_until};
use std::path::Path;
use std::time::Duration;

/// Copies a stopped node's data directory (files only: the admin socket is
/// gone once it stopped).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            copy_dir(&entry.path(), &target);
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn db_name(url: &str) -> String {
    url.rsplit('/').next().unwrap().to_owned()
}

async fn pg_admin(sql: String) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&exitnet_tests::db::pg_admin_url())
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .unwrap();
}

/// The runbook's backup: the node stopped, its data directory copied and
/// (PostgreSQL) its database copied.
async fn back_up(node: &mut NodeProcess, to: &Path) {
    node.stop().await.unwrap();
    copy_dir(&node.data_dir(), to);
    if node.spec.backend == Backend::Postgres {
        let name = db_name(&node.database_url());
        pg_admin(format!("CREATE DATABASE {name}_backup TEMPLATE {name}")).await;
    }
    node.restart().await.unwrap();
}

/// The runbook's restore: stopped, data directory and database replaced by
/// the backup, started again.
async fn restore(node: &mut NodeProcess, from: &Path) {
    node.stop().await.unwrap();
    let data = node.data_dir();
    std::fs::remove_dir_all(&data).unwrap();
    copy_dir(from, &data);
    if node.spec.backend == Backend::Postgres {
        let name = db_name(&node.database_url());
        pg_admin(format!("DROP DATABASE {name} WITH (FORCE)")).await;
        pg_admin(format!("CREATE DATABASE {name} TEMPLATE {name}_backup")).await;
        pg_admin(format!("DROP DATABASE {name}_backup")).await;
    }
    node.restart().await.unwrap();
}

/// `SELECT COUNT(*) AS n …` with one text parameter, on the node's database.
async fn count(node: &NodeProcess, q: &str, param: &str) -> i64 {
    let url = node.database_url();
    if node.spec.backend == Backend::Postgres {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        let row = sqlx::query(sqlx::AssertSqlSafe(q.to_owned()))
            .bind(param)
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        sqlx::Row::get(&row, "n")
    } else {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let row = sqlx::query(sqlx::AssertSqlSafe(q.to_owned()))
            .bind(param)
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        sqlx::Row::get(&row, "n")
    }
}

async fn data_key_held(node: &NodeProcess, key_id: &str) -> bool {
    count(
        node,
        "SELECT COUNT(*) AS n FROM data_keys WHERE key_id = $1",
        key_id,
    )
    .await
        > 0
}

async fn inbound_referral(node: &NodeProcess, token: &str, id: &str) -> pb::Referral {
    let (_, mut r) = clients(node).await;
    r.get_referral(bearer(
        token,
        pb::GetReferralRequest {
            referral_id: id.into(),
        },
    ))
    .await
    .unwrap()
    .into_inner()
    .referral
    .unwrap()
}

async fn a_restore_never_brings_purged_data_back(backend: Backend) {
    let a = start("ngo-a", backend).await;
    let mut b = start("prison-b", backend).await;
    peer_with(&a, &b).await;
    let alice = a.dev_token("case_manager", "alice").await.unwrap();
    let bob = b.dev_token("case_manager", "bob").await.unwrap();
    let (_, mut ar) = clients(&a).await;
    let consent = recorded_consent(&a, &alice, "c-restore", "client-1").await;
    let id = created_referral(&a, &alice, "r-restore", &consent, "prison-b").await;
    exitnet_tests::fixtures::wait_state(&ar, &alice, &id, pb::ReferralState::Received).await;
    let held = inbound_referral(&b, &bob, &id).await;
    assert_eq!(
        held.summary.as_ref().map(|s| s.needs_narrative.as_str()),
        Some(NARRATIVE)
    );
    let key_id = format!("referral:{id}");
    assert!(data_key_held(&b, &key_id).await);

    // Last night's backup of B.
    let backup = tempfile::tempdir().unwrap();
    back_up(&mut b, &backup.path().join("data")).await;

    // Today: A withdraws; B purges and A holds B's purge receipt.
    ar.withdraw_referral(bearer(
        &alice,
        pb::WithdrawReferralRequest {
            referral_id: id.clone(),
        },
    ))
    .await
    .unwrap();
    wait_until("B's purge receipt at A", Duration::from_secs(60), || {
        let (ar, alice, id) = (ar.clone(), alice.clone(), id.clone());
        async move {
            let mut ar = ar;
            let got = ar
                .get_referral(bearer(&alice, pb::GetReferralRequest { referral_id: id }))
                .await
                .ok()?
                .into_inner()
                .referral?;
            (got.purge_status == pb::PurgeStatus::Done as i32).then_some(())
        }
    })
    .await
    .unwrap();
    assert!(inbound_referral(&b, &bob, &id).await.summary.is_none());
    assert!(!data_key_held(&b, &key_id).await);
    // The purge receipt A holds says, in B's signed words, that B purged.
    let mut admin_a = a.admin().await.unwrap();
    let mut verified = Vec::new();
    for receipt in admin_a.receipts(&id).await.unwrap() {
        verified.push(admin_a.verify_receipt(receipt).await.unwrap());
    }
    assert!(verified.iter().all(|v| v.valid), "{verified:?}");
    assert!(
        verified
            .iter()
            .any(|v| v.receiver_org == "prison-b" && v.purge_outcome == "purged"),
        "{verified:?}"
    );
    // B's chain as it is now is witnessed by A.
    let seq = b
        .admin()
        .await
        .unwrap()
        .create_checkpoint()
        .await
        .unwrap()
        .seq;
    wait_until("A to witness B's checkpoint", Duration::from_secs(60), || {
        let a = &a;
        async move {
            let q = format!(
                "SELECT COUNT(*) AS n FROM witnessed_checkpoints WHERE org_id = $1 AND seq = {seq}"
            );
            (count(a, &q, "prison-b").await == 1).then_some(())
        }
    })
    .await
    .unwrap();

    // B is restored from the backup: the summary and its key are back in
    // the files, and the sender will never send that withdrawal again.
    restore(&mut b, &backup.path().join("data")).await;
    let bob = b.dev_token("case_manager", "bob").await.unwrap();
    let again = wait_until(
        "the restored node to purge again",
        Duration::from_secs(60),
        || {
            let (b, bob, id) = (&b, &bob, &id);
            async move {
                let got = inbound_referral(b, bob, id).await;
                (got.purge_status == pb::PurgeStatus::Done as i32).then_some(got)
            }
        },
    )
    .await
    .unwrap();
    assert!(again.summary.is_none(), "the purged summary came back");
    assert_eq!(again.state, pb::ReferralState::Withdrawn as i32);
    assert!(
        !data_key_held(&b, &key_id).await,
        "the destroyed data key came back"
    );
    let reapplied = b
        .audit_records_of("referral.purge.reapplied")
        .await
        .unwrap();
    assert!(reapplied.iter().any(|r| r.object_id == id), "{reapplied:?}");

    // The audit trail says why it is behind what A witnessed.
    let report = b.admin().await.unwrap().verify_audit(false).await.unwrap();
    assert!(!report.ok, "verify passed after a restore: {report:?}");
    assert!(
        report
            .failures
            .iter()
            .any(|f| f.reason.contains("restored from a backup") && f.reason.contains("ngo-a")),
        "{report:?}"
    );
}

#[tokio::test]
async fn a_restore_never_brings_purged_data_back_on_sqlite() {
    a_restore_never_brings_purged_data_back(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_restore_never_brings_purged_data_back_on_postgres() {
    a_restore_never_brings_purged_data_back(Backend::Postgres).await;
}
