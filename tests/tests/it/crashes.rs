//! SIGKILL at awkward moments beyond the referral path: during the first
//! start (identity, migrations), during peering, during a key rotation and
//! during a purge. Each time the node starts again in a consistent state and
//! the network carries on.

use exitnet_proto::pb;
use exitnet_tests::fixtures::{
    NARRATIVE, allow_narrative, clients, consent_request, created_referral, peer_with,
    recorded_consent, referral_request, start, wait_state,
};
use exitnet_tests::{Backend, NodeProcess, NodeSpec, bearer, wait_until};
use std::time::Duration;

async fn sound(n: &NodeProcess) {
    let mut admin = n.admin().await.unwrap();
    let report = admin.verify_audit(true).await.unwrap();
    assert!(report.ok, "{report:?}");
    admin.identity().await.unwrap();
}

async fn killed_while_starting(backend: Backend) {
    for ms in [0, 3, 10, 25, 60, 150] {
        let mut n = NodeProcess::start_killed_after(
            NodeSpec::new("ngo-a", backend),
            Duration::from_millis(ms),
        )
        .await
        .unwrap();
        n.restart()
            .await
            .unwrap_or_else(|e| panic!("killed after {ms} ms, it did not start again: {e}"));
        sound(&n).await;
        let token = n.dev_token("case_manager", "alice").await.unwrap();
        let (mut c, _) = clients(&n).await;
        c.record_consent(bearer(&token, consent_request("c-1", "client-1")))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn killed_while_starting_on_sqlite() {
    killed_while_starting(Backend::Sqlite).await;
}

#[tokio::test]
async fn killed_while_starting_on_postgres() {
    killed_while_starting(Backend::Postgres).await;
}

/// Sends one referral A→B and waits until B has it; B accepts, A sees it.
async fn exchange_works(a: &NodeProcess, b: &NodeProcess, tag: &str) {
    let alice = a.dev_token("case_manager", "alice").await.unwrap();
    let bob = b.dev_token("case_manager", "bob").await.unwrap();
    let (mut ac, mut ar) = clients(a).await;
    let consent = ac
        .record_consent(bearer(
            &alice,
            consent_request(&format!("c-{tag}"), "client-1"),
        ))
        .await
        .unwrap()
        .into_inner()
        .consent
        .unwrap()
        .consent_id;
    let id = ar
        .create_referral(bearer(
            &alice,
            referral_request(
                &format!("r-{tag}"),
                &consent,
                "prison-b",
                pb::NeedArea::FunctionalReintegration,
                pb::Service::Housing,
            ),
        ))
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap()
        .referral_id;
    wait_state(&ar, &alice, &id, pb::ReferralState::Received).await;
    let (_, mut br) = clients(b).await;
    br.accept_referral(bearer(
        &bob,
        pb::AcceptReferralRequest {
            referral_id: id.clone(),
        },
    ))
    .await
    .unwrap();
    wait_state(&ar, &alice, &id, pb::ReferralState::Accepted).await;
}

#[tokio::test]
async fn killed_during_peering() {
    let mut a = start("ngo-a", Backend::Sqlite).await;
    let mut b = start("prison-b", Backend::Sqlite).await;
    // B dies while joining: at some point between asking A and recording A.
    for ms in [0, 5, 15, 40] {
        let code = a.invite().await.unwrap();
        let mut admin = b.admin().await.unwrap();
        let join = tokio::spawn(async move { admin.join(&code).await });
        tokio::time::sleep(Duration::from_millis(ms)).await;
        b.kill().await.unwrap();
        let _ = join.await;
        b.restart().await.unwrap();
        sound(&b).await;
        if b.peer("ngo-a").await.unwrap().is_some() {
            break;
        }
    }
    // The window between A's answer and B's commit is narrow; make sure the
    // case is covered: B loses its record of A while A holds B as pending.
    if b.peer("ngo-a").await.unwrap().is_some() {
        b.stop().await.unwrap();
        let pool = sqlx::SqlitePool::connect(&b.database_url()).await.unwrap();
        sqlx::query("DELETE FROM peers WHERE org_id = 'ngo-a'")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        b.restart().await.unwrap();
    }
    {
        // B never recorded A (A may have): joining again with a new
        // invitation must work, whatever A holds.
        let code = a.invite().await.unwrap();
        b.join(&code).await.expect("joining again after a crash");
    }
    // A dies right after its approval committed.
    a.peer_action("prison-b", pb::PeerAction::Approve)
        .await
        .unwrap();
    a.kill().await.unwrap();
    a.restart().await.unwrap();
    sound(&a).await;
    a.wait_peer_state("prison-b", "active", Some("active"))
        .await
        .unwrap();
    b.wait_peer_state("ngo-a", "active", Some("active"))
        .await
        .unwrap();
    for (x, y) in [(&a, &b), (&b, &a)] {
        allow_narrative(x, &y.spec.org_id).await;
    }
    exchange_works(&a, &b, "after-peering").await;
}

#[tokio::test]
async fn killed_during_key_rotation() {
    let mut a = start("ngo-a", Backend::Sqlite).await;
    let b = start("prison-b", Backend::Sqlite).await;
    peer_with(&a, &b).await;
    for (i, ms) in [0u64, 2, 8].into_iter().enumerate() {
        let mut admin = a.admin().await.unwrap();
        let rotate = tokio::spawn(async move { admin.rotate_identity().await });
        tokio::time::sleep(Duration::from_millis(ms)).await;
        a.kill().await.unwrap();
        let _ = rotate.await;
        a.restart().await.unwrap();
        sound(&a).await;
        // Whichever key A woke up with, B learns it and the exchange goes on.
        exchange_works(&a, &b, &format!("rotation-{i}")).await;
    }
    eprintln!(
        "rotations recovered at start: {}",
        a.log().matches("interrupted by a crash").count()
    );
    let fp = a.fingerprint().await.unwrap();
    wait_until(
        "B to pin A's current key",
        Duration::from_secs(30),
        || async {
            let p = b.peer("ngo-a").await.ok()??;
            (p["key_fingerprint"].as_str()? == fp).then_some(())
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn killed_during_a_purge() {
    let a = start("ngo-a", Backend::Sqlite).await;
    let mut b = start("prison-b", Backend::Sqlite).await;
    peer_with(&a, &b).await;
    let alice = a.dev_token("case_manager", "alice").await.unwrap();
    let (mut ac, mut ar) = clients(&a).await;
    let consent = ac
        .record_consent(bearer(&alice, consent_request("c-1", "client-1")))
        .await
        .unwrap()
        .into_inner()
        .consent
        .unwrap()
        .consent_id;
    let mut ids = Vec::new();
    for i in 0..10 {
        let id = ar
            .create_referral(bearer(
                &alice,
                referral_request(
                    &format!("r-{i}"),
                    &consent,
                    "prison-b",
                    pb::NeedArea::FunctionalReintegration,
                    pb::Service::Housing,
                ),
            ))
            .await
            .unwrap()
            .into_inner()
            .referral
            .unwrap()
            .referral_id;
        ids.push(id);
    }
    for id in &ids {
        wait_state(&ar, &alice, id, pb::ReferralState::Received).await;
    }
    // The consent is withdrawn: ten purges at B, and B is killed among them.
    ac.withdraw_consent(bearer(
        &alice,
        pb::WithdrawConsentRequest {
            consent_id: consent.clone(),
        },
    ))
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    b.kill().await.unwrap();
    b.restart().await.unwrap();
    sound(&b).await;
    for id in &ids {
        wait_until(
            "the purge receipt to reach A",
            Duration::from_secs(30),
            || {
                let mut ar = ar.clone();
                let alice = alice.clone();
                async move {
                    let r = ar
                        .get_referral(bearer(
                            &alice,
                            pb::GetReferralRequest {
                                referral_id: id.clone(),
                            },
                        ))
                        .await
                        .ok()?
                        .into_inner()
                        .referral?;
                    (r.purge_status == pb::PurgeStatus::Done as i32).then_some(())
                }
            },
        )
        .await
        .unwrap();
    }
    // Nothing of the purged summaries is left at B.
    let bob = b.dev_token("case_manager", "bob").await.unwrap();
    let (_, mut br) = clients(&b).await;
    for id in &ids {
        let r = br
            .get_referral(bearer(
                &bob,
                pb::GetReferralRequest {
                    referral_id: id.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .referral
            .unwrap();
        assert!(r.summary.is_none());
        assert_eq!(r.purge_status, pb::PurgeStatus::Done as i32);
    }
    let raw: Vec<u8> = ["exitnet.db", "exitnet.db-wal"]
        .iter()
        .flat_map(|f| std::fs::read(b.data_dir().join(f)).unwrap_or_default())
        .collect();
    assert!(!raw.windows(11).any(|w| w == &NARRATIVE.as_bytes()[..11]));
}

/// A node killed while delivering takes its own delivery lease back when it
/// starts again: delivery resumes at once, not when the dead process's lease
/// expires (a minute here, from the call timeout), which a replica would wait
/// for.
#[tokio::test]
async fn a_restarted_node_takes_its_own_leases_back() {
    let spec = NodeSpec::new("ngo-a", Backend::Sqlite)
        .with_toml("[federation]\ncall_timeout_ms = 30000\n");
    let mut a = NodeProcess::start(spec).await.unwrap();
    let mut b = start("prison-b", Backend::Sqlite).await;
    peer_with(&a, &b).await;
    let alice = a.dev_token("case_manager", "alice").await.unwrap();
    let bob = b.dev_token("case_manager", "bob").await.unwrap();
    let consent = recorded_consent(&a, &alice, "c-lease", "client-1").await;
    // B is down: A's delivery task for B takes the lease and keeps retrying.
    b.stop().await.unwrap();
    let mut want = std::collections::HashSet::new();
    for i in 0..3 {
        want.insert(
            created_referral(&a, &alice, &format!("lease-{i}"), &consent, "prison-b").await,
        );
    }
    let url = a.database_url();
    let expires_at: i64 = wait_until(
        "A to hold B's delivery lease",
        Duration::from_secs(30),
        || {
            let url = url.clone();
            async move {
                let pool = sqlx::SqlitePool::connect(&url).await.ok()?;
                let row =
                    sqlx::query("SELECT expires_at FROM leases WHERE name = 'outbox:prison-b'")
                        .fetch_optional(&pool)
                        .await
                        .ok()??;
                pool.close().await;
                sqlx::Row::try_get(&row, "expires_at").ok()
            }
        },
    )
    .await
    .unwrap();
    a.kill().await.unwrap();
    b.restart().await.unwrap();
    a.restart().await.unwrap();
    let restarted = std::time::Instant::now();
    wait_until(
        "every referral to reach B",
        Duration::from_secs(120),
        || {
            let (b, bob, want) = (&b, &bob, &want);
            async move {
                let got: std::collections::HashSet<String> =
                    exitnet_tests::fixtures::inbound_ids(b, bob)
                        .await
                        .into_iter()
                        .collect();
                want.is_subset(&got).then_some(())
            }
        },
    )
    .await
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    eprintln!(
        "delivery resumed {:?} after the restart; the dead process's lease had {} ms left",
        restarted.elapsed(),
        expires_at - now
    );
    assert!(
        now < expires_at,
        "delivery waited for the dead process's lease to expire"
    );
}
