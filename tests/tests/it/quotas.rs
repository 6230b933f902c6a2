//! Quotas per approved peer: what one peer can make us store is bounded
//! (pending intake, checkpoints, only a checkpoint above the last one
//! witnessed is kept). A peer flooding offers or checkpoints is refused with
//! RESOURCE_EXHAUSTED naming the quota, recorded as one aggregated security
//! event, while another peer keeps being served. Both backends (the counts
//! are SQL).

use exitnet_node::identity::{NodeKey, context};
use exitnet_proto::pb;
use exitnet_tests::fixtures::{clients, inbound_ids, peer_with, send_raw};
use exitnet_tests::{Backend, NodeProcess, NodeSpec, bearer};
use prost::Message;
use std::time::Duration;
use tonic::Code;

const INTAKE: usize = 5;
const CHECKPOINTS: usize = 3;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub(crate) fn key_of(n: &NodeProcess, fp: &str) -> NodeKey {
    NodeKey::read(&n.data_dir().join("identity"), fp).unwrap()
}

/// A valid offer from `sender` to prison-b, as a flooding peer would build it.
pub(crate) fn offer(sender: &str) -> pb::FederationMessage {
    exitnet_tests::peer::offer(sender, "prison-b")
}

fn referral_id(m: &pb::FederationMessage) -> String {
    match &m.body {
        Some(pb::federation_message::Body::Offer(o)) => o.referral_id.clone(),
        _ => unreachable!(),
    }
}

/// A checkpoint of `org` at `seq`, signed with `key`, sent to `to`.
async fn checkpoint(
    to: &NodeProcess,
    key: &NodeKey,
    org: &str,
    seq: u64,
    head: u8,
) -> Result<pb::NotifyResponse, tonic::Status> {
    let payload = pb::AuditCheckpoint {
        org_id: org.into(),
        seq,
        head_sha256: vec![head; 32],
        at: Some(exitnet_proto::Timestamp {
            seconds: now(),
            nanos: 0,
        }),
        key_fingerprint: key.fingerprint().into(),
    }
    .encode_to_vec();
    let signature = key.sign_in(context::CHECKPOINT, &payload).unwrap();
    let mut client = exitnet_node::transport::client::connect(
        &to.federation_addr,
        Some(key),
        vec![to.fingerprint().await.unwrap()],
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    client
        .notify(pb::NotifyRequest {
            notice_id: uuid::Uuid::now_v7().to_string(),
            notice: Some(pb::notify_request::Notice::Checkpoint(
                pb::SignedCheckpoint { payload, signature },
            )),
        })
        .await
        .map(|r| r.into_inner())
}

async fn quota_events(n: &NodeProcess) -> Vec<pb::SecurityEvent> {
    let events = n.security_events().await.unwrap();
    events
        .into_iter()
        .filter(|e| e.reason == "peer_quota_exceeded")
        .collect()
}

async fn a_flooding_peer_is_stopped_at_its_quota(backend: Backend) {
    let quotas = format!(
        "[limits]\npeer_max_pending_intake = {INTAKE}\npeer_checkpoints_per_day = {CHECKPOINTS}\n"
    );
    let b = NodeProcess::start(NodeSpec::new("prison-b", backend).with_toml(&quotas))
        .await
        .unwrap();
    // A signs its own checkpoints rarely, so the flood below is what counts.
    let rare = "[audit]\ncheckpoint_every_records = 1000000\ncheckpoint_interval_secs = 86400\n";
    let a = NodeProcess::start(NodeSpec::new("ngo-a", backend).with_toml(rare))
        .await
        .unwrap();
    let c = NodeProcess::start(NodeSpec::new("health-c", backend).with_toml(rare))
        .await
        .unwrap();
    peer_with(&b, &a).await;
    peer_with(&b, &c).await;
    let a_key = key_of(&a, &a.fingerprint().await.unwrap());
    let c_key = key_of(&c, &c.fingerprint().await.unwrap());
    let bob = b.dev_token("case_manager", "bob").await.unwrap();

    // A floods offers: the first INTAKE are stored, then every one is
    // refused naming the quota, and costs one aggregated row, not one each.
    let mut stored = Vec::new();
    let mut refused = 0;
    for _ in 0..(INTAKE + 20) {
        let msg = offer("ngo-a");
        match send_raw(&b, &a_key, &msg).await {
            Ok(_) => stored.push(referral_id(&msg)),
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                assert!(
                    e.message().contains("limits.peer_max_pending_intake (5)"),
                    "{}",
                    e.message()
                );
                refused += 1;
            }
        }
    }
    assert_eq!(stored.len(), INTAKE, "stopped at the quota");
    assert_eq!(refused, 20);
    assert_eq!(inbound_ids(&b, &bob).await.len(), INTAKE);
    // One aggregated row per minute (two if the minute turned meanwhile),
    // counting all 20 once the repeats counted in memory are written (every
    // second).
    let counted = |events: &Vec<pb::SecurityEvent>| -> u64 { events.iter().map(|e| e.count).sum() };
    let all_counted = exitnet_tests::wait_until(
        "all 20 refusals counted",
        std::time::Duration::from_secs(10),
        || async {
            let events = quota_events(&b).await;
            (counted(&events) >= 20).then_some(())
        },
    )
    .await;
    let events = quota_events(&b).await;
    assert!(all_counted.is_ok(), "{events:?}");
    assert!(events.len() <= 2, "aggregated: {events:?}");
    assert_eq!(counted(&events), 20, "{events:?}");
    // C is served meanwhile.
    send_raw(&b, &c_key, &offer("health-c")).await.unwrap();
    // Once B accepts one of A's, there is room for one more.
    let (_, mut br) = clients(&b).await;
    br.accept_referral(bearer(
        &bob,
        pb::AcceptReferralRequest {
            referral_id: stored[0].clone(),
        },
    ))
    .await
    .unwrap();
    send_raw(&b, &a_key, &offer("ngo-a")).await.unwrap();
    let e = send_raw(&b, &a_key, &offer("ngo-a")).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);

    // A floods checkpoints far above anything it signed: CHECKPOINTS a day
    // at most (its own real ones count too), each later one refused naming
    // the quota.
    let base = 1_000_000;
    let mut witnessed = 0;
    let mut over = None;
    for i in 0..(CHECKPOINTS as u64 + 5) {
        match checkpoint(&b, &a_key, "ngo-a", base + i, 1).await {
            Ok(r) => {
                assert!(r.witness.is_some());
                witnessed += 1;
            }
            Err(e) => {
                over = Some(e);
                break;
            }
        }
    }
    let e = over.expect("a checkpoint flood is stopped");
    assert!((1..=CHECKPOINTS).contains(&witnessed), "{witnessed}");
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(
        e.message().contains("limits.peer_checkpoints_per_day (3)"),
        "{}",
        e.message()
    );
    // The last one witnessed again is a repeat: answered, nothing stored.
    let last = base + witnessed as u64 - 1;
    assert!(checkpoint(&b, &a_key, "ngo-a", last, 1).await.is_ok());
    // Below the last one witnessed: not kept, whatever it says; one that
    // contradicts a checkpoint held for its position is a fork all the same.
    let e = checkpoint(&b, &a_key, "ngo-a", base - 1, 9)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message().contains("below the last checkpoint witnessed"),
        "{}",
        e.message()
    );
    let e = checkpoint(&b, &a_key, "ngo-a", base, 9).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message()
            .contains("differs from the checkpoint witnessed earlier"),
        "{}",
        e.message()
    );
    // C's checkpoints are still witnessed.
    let w = checkpoint(&b, &c_key, "health-c", base, 1).await.unwrap();
    assert!(w.witness.is_some());
    // Refusals stay aggregated (one row per minute and key; a minute may
    // have turned meanwhile).
    assert!(quota_events(&b).await.len() <= 3);
}

#[tokio::test]
async fn a_flooding_peer_is_stopped_at_its_quota_on_sqlite() {
    a_flooding_peer_is_stopped_at_its_quota(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_flooding_peer_is_stopped_at_its_quota_on_postgres() {
    a_flooding_peer_is_stopped_at_its_quota(Backend::Postgres).await;
}
