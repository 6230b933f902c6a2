//! Several replicas of one node on one PostgreSQL database: they serve the
//! same organisation, share the work of delivery through per-peer leases
//! without sending anything twice, and one can be killed at any moment with
//! nothing lost.

use exitnet_proto::pb;
use exitnet_tests::fixtures::{clients, consent_request, inbound_ids, peer_with, referral_request};
use exitnet_tests::{Backend, NodeProcess, NodeSpec, bearer, wait_until};
use std::collections::HashSet;
use std::time::Duration;

const METRICS: &str = "[metrics]\nlisten = \"127.0.0.1:0\"\n";

/// Creates `n` referrals, spread over the replicas' client APIs, `tag`ged.
async fn burst(
    replicas: &[&NodeProcess],
    token: &str,
    consent: &str,
    tag: &str,
    n: usize,
) -> Vec<String> {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let node = replicas[i % replicas.len()];
        let (_, mut r) = clients(node).await;
        let (token, consent, tag) = (token.to_owned(), consent.to_owned(), tag.to_owned());
        tasks.spawn(async move {
            let req = referral_request(
                &format!("{tag}-{i}"),
                &consent,
                "prison-b",
                pb::NeedArea::FunctionalReintegration,
                pb::Service::Housing,
            );
            r.create_referral(bearer(&token, req))
                .await
                .unwrap()
                .into_inner()
                .referral
                .unwrap()
                .referral_id
        });
    }
    let mut ids = Vec::new();
    while let Some(id) = tasks.join_next().await {
        ids.push(id.unwrap());
    }
    ids
}

async fn wait_all_arrived(b: &NodeProcess, bob: &str, want: &HashSet<String>) {
    wait_until(
        "every referral to arrive at B",
        Duration::from_secs(90),
        || async {
            let got = inbound_ids(b, bob).await;
            (got.len() >= want.len()).then_some(())
        },
    )
    .await
    .unwrap();
    let got = inbound_ids(b, bob).await;
    let unique: HashSet<String> = got.iter().cloned().collect();
    assert_eq!(got.len(), unique.len(), "a referral arrived twice");
    assert_eq!(&unique, want, "B holds exactly what was sent");
}

#[tokio::test]
async fn replicas_share_delivery_and_survive_a_kill() {
    let mut a1 = NodeProcess::start(NodeSpec::new("ngo-a", Backend::Postgres))
        .await
        .unwrap();
    let mut b = NodeProcess::start(NodeSpec::new("prison-b", Backend::Sqlite).with_toml(METRICS))
        .await
        .unwrap();
    peer_with(&a1, &b).await;
    let mut a2 = a1.replica().await.unwrap();
    assert_ne!(a1.instance_id, a2.instance_id);
    assert_eq!(
        a1.fingerprint().await.unwrap(),
        a2.fingerprint().await.unwrap()
    );

    let alice = a1.dev_token("case_manager", "alice").await.unwrap();
    let bob = b.dev_token("case_manager", "bob").await.unwrap();
    let (mut ac, _) = clients(&a2).await;
    // A consent recorded through one replica is there for the other.
    let consent = ac
        .record_consent(bearer(&alice, consent_request("c-1", "client-1")))
        .await
        .unwrap()
        .into_inner()
        .consent
        .unwrap()
        .consent_id;

    // Both replicas take requests and deliver; nothing is sent twice.
    let mut want: HashSet<String> = burst(&[&a1, &a2], &alice, &consent, "p1", 60)
        .await
        .into_iter()
        .collect();
    wait_all_arrived(&b, &bob, &want).await;
    let repeats = r#"exitnet_received_total{peer="ngo-a",kind="offer",outcome="repeat"}"#;
    let new = r#"exitnet_received_total{peer="ngo-a",kind="offer",outcome="new"}"#;
    assert_eq!(b.metric(new).await.unwrap(), 60.0);
    assert_eq!(
        b.metric(repeats).await.unwrap(),
        0.0,
        "a replica sent a message twice"
    );

    // A backlog while B is down, then the replica delivering it is killed
    // mid-way: the other takes over when the lease expires; all arrive once.
    b.stop().await.unwrap();
    want.extend(burst(&[&a1, &a2], &alice, &consent, "p2", 400).await);
    b.restart().await.unwrap();
    let url = a1.database_url();
    let holder = wait_until(
        "a replica to hold B's delivery lease",
        Duration::from_secs(30),
        || {
            let url = url.clone();
            let (b, bob) = (&b, &bob);
            async move {
                let pool = sqlx::PgPool::connect(&url).await.ok()?;
                let row = sqlx::query("SELECT holder FROM leases WHERE name = 'outbox:prison-b'")
                    .fetch_optional(&pool)
                    .await
                    .ok()??;
                pool.close().await;
                // Kill it once delivery is under way (the 60 sent before
                // and at least one batch of the backlog arrived).
                (inbound_ids(b, bob).await.len() > 60)
                    .then(|| sqlx::Row::get::<String, _>(&row, "holder"))
            }
        },
    )
    .await
    .unwrap();
    let (victim, survivor) = if holder == a1.instance_id {
        (&mut a1, &a2)
    } else {
        assert_eq!(holder, a2.instance_id);
        (&mut a2, &a1)
    };
    victim.kill().await.unwrap();
    let at_kill = inbound_ids(&b, &bob).await.len();
    eprintln!(
        "killed the lease holder with {at_kill} of {} delivered",
        want.len()
    );
    wait_all_arrived(&b, &bob, &want).await;
    // At most what the killed replica had not yet recorded as delivered went
    // out again: the batch in flight and the one whose receipts were being
    // stored (two batches of at most `MAX_BATCH` each).
    let bound = 2 * exitnet_node::transport::MAX_BATCH;
    let repeated = b.metric(repeats).await.unwrap();
    eprintln!("{repeated} messages went out again after the kill (at most {bound})");
    assert!(
        repeated <= bound as f64,
        "{repeated} messages went out again; at most {bound} may"
    );

    // B's metrics: states, peers, calls, sign-in failures; nothing personal.
    let (_, mut br) = clients(&b).await;
    let _ = br
        .list_referrals(bearer("not-a-token", pb::ListReferralsRequest::default()))
        .await
        .unwrap_err();
    let text = b.metrics().await.unwrap();
    for series in [
        "exitnet_referrals{direction=\"inbound\",state=\"received\"} 460",
        "exitnet_peer_active{peer=\"ngo-a\"} 1",
        "exitnet_outbox_depth{peer=\"ngo-a\"} ",
        "exitnet_calls_total{surface=\"federation\",method=\"/exitnet.v1.FederationService/NotifyBatch\",code=\"0\"}",
        "exitnet_sign_in_failures_total{reason=",
        "exitnet_audit_records ",
        "exitnet_delivery_latency_seconds_bucket",
    ] {
        assert!(text.contains(series), "no {series} in:\n{text}");
    }
    for personal in ["client-1", "alice", "bob", &consent] {
        assert!(!text.contains(personal), "{personal} in the metrics");
    }
    // The survivor still serves, and the audit trail both wrote verifies.
    let report = survivor
        .admin()
        .await
        .unwrap()
        .verify_audit(true)
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
}

/// A watch on one replica sees the changes made through another: a referral
/// created through replica 1, and the peer's answer arriving at replica 1.
#[tokio::test]
async fn a_watch_on_one_replica_sees_changes_made_through_another() {
    let a1 = NodeProcess::start(NodeSpec::new("ngo-a", Backend::Postgres))
        .await
        .unwrap();
    let b = NodeProcess::start(NodeSpec::new("prison-b", Backend::Sqlite))
        .await
        .unwrap();
    peer_with(&a1, &b).await;
    let a2 = a1.replica().await.unwrap();
    let alice = a1.dev_token("case_manager", "alice").await.unwrap();
    let bob = b.dev_token("case_manager", "bob").await.unwrap();
    let (mut ac1, mut ar1) = clients(&a1).await;
    let (_, mut ar2) = clients(&a2).await;
    let (_, mut br) = clients(&b).await;
    let mut watch = ar2
        .watch_referrals(bearer(&alice, pb::WatchReferralsRequest {}))
        .await
        .unwrap()
        .into_inner();
    let consent = ac1
        .record_consent(bearer(&alice, consent_request("c-w", "client-w")))
        .await
        .unwrap()
        .into_inner()
        .consent
        .unwrap()
        .consent_id;
    let id = ar1
        .create_referral(bearer(
            &alice,
            referral_request(
                "w-1",
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
    // B accepts; its status message comes to replica 1 (B's peer endpoint).
    wait_until("the referral at B", Duration::from_secs(30), || async {
        inbound_ids(&b, &bob).await.contains(&id).then_some(())
    })
    .await
    .unwrap();
    br.accept_referral(bearer(
        &bob,
        pb::AcceptReferralRequest {
            referral_id: id.clone(),
        },
    ))
    .await
    .unwrap();
    let mut seen = Vec::new();
    while !seen.contains(&(pb::ReferralState::Accepted as i32)) {
        let msg = tokio::time::timeout(Duration::from_secs(30), watch.message())
            .await
            .expect("replica 2's watcher told of every change")
            .unwrap()
            .unwrap();
        let got = msg.referral.unwrap();
        assert_eq!(got.referral_id, id);
        seen.push(got.state);
    }
    assert_eq!(seen.first(), Some(&(pb::ReferralState::Requested as i32)));
}
