//! Taking over a peering, as an attacker would try it with real nodes: a
//! man in the middle who rewrites the invitation and grinds keys to make
//! the administrators' verification codes match, and a thief of an old key
//! who announces a key rotation of his own.

use exitnet_node::domain::time::now_ms;
use exitnet_node::identity::{NodeKey, context};
use exitnet_node::peering::{VERIFICATION_WORDS, verification_code, verification_word_list};
use exitnet_node::wire::time::to_timestamp;
use exitnet_proto::pb;
use exitnet_tests::{Backend, NodeProcess, NodeSpec, wait_until};
use prost::Message;
use std::time::Duration;

async fn start(org: &str, backend: Backend, extra: &str) -> NodeProcess {
    NodeProcess::start(NodeSpec::new(org, backend).with_toml(extra))
        .await
        .unwrap()
}

async fn invite(node: &NodeProcess) -> String {
    node.invite().await.unwrap()
}

/// B joins A's invitation and A approves: the peering is active.
async fn peered(a: &NodeProcess, b: &NodeProcess) {
    join(b, &invite(a).await).await;
    a.peer_action(&b.spec.org_id, pb::PeerAction::Approve)
        .await
        .unwrap();
    a.wait_peer_state(&b.spec.org_id, "active", Some("active"))
        .await
        .unwrap();
}

async fn join(node: &NodeProcess, code: &str) {
    node.join(code).await.unwrap();
}

async fn code_for(node: &NodeProcess, org: &str) -> String {
    node.peer(org).await.unwrap().unwrap()["verification_code"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn assert_full_code(code: &str) {
    let words: Vec<&str> = code.split(' ').collect();
    assert_eq!(words.len(), VERIFICATION_WORDS, "{code}");
    assert!(
        words.iter().all(|w| verification_word_list().contains(w)),
        "{code}"
    );
}

/// Words in the same place in both codes.
fn same_words(a: &str, b: &str) -> usize {
    a.split(' ')
        .zip(b.split(' '))
        .filter(|(x, y)| x == y)
        .count()
}

/// Mallory intercepts A's invitation to B. To B he hands an invitation of
/// his own node, which claims A's organisation ID (his address, his key);
/// with A's original he joins A himself as B, with a key ground so that A's
/// code comes as close as he can get to the one B's administrator reads.
async fn rewritten_invitation(backend: Backend) {
    let a = start("ngo-a", backend, "").await;
    let b = start("prison-b", backend, "").await;
    let mallory = start("ngo-a", backend, "").await;
    let original = invite(&a).await;
    let rewritten = invite(&mallory).await;
    let inv = exitnet_node::protocol::invitation::decode(&rewritten).unwrap();
    assert_eq!(inv.org_id.as_str(), "ngo-a");
    assert_ne!(inv.key_fingerprint, a.fingerprint().await.unwrap());

    join(&b, &rewritten).await;
    let b_code = code_for(&b, "ngo-a").await;
    assert_full_code(&b_code);

    // Grinding, bounded: the candidate key whose code shares most words
    // with B's. A 30-bit code falls to about 2^29 tries of this; 132 bits
    // leave him matching a word or two by chance.
    let a_fp = a.fingerprint().await.unwrap();
    let target = (a_fp.clone(), b_code.clone());
    let (best, best_same) = tokio::task::spawn_blocking(move || {
        let (a_fp, b_code) = target;
        let mut best: Option<(NodeKey, usize)> = None;
        for _ in 0..100 {
            let k = NodeKey::generate("prison-b").unwrap();
            let same = same_words(&verification_code(&a_fp, k.fingerprint()), &b_code);
            if best.as_ref().is_none_or(|(_, s)| same > *s) {
                best = Some((k, same));
            }
        }
        best.unwrap()
    })
    .await
    .unwrap();
    assert!(best_same < 4, "{best_same} words matched by chance");

    // Mallory joins A as prison-b with the best key.
    let pinned = vec![a.fingerprint().await.unwrap()];
    let original_inv = exitnet_node::protocol::invitation::decode(&original).unwrap();
    let mut client = exitnet_node::transport::client::connect(
        &a.federation_addr,
        Some(&best),
        pinned,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    client
        .join(pb::JoinRequest {
            invitation_id: original_inv.invitation_id,
            secret: original_inv.secret,
            profile: Some(pb::OrgProfile {
                org_id: "prison-b".into(),
                name: "Org prison-b".into(),
                ..Default::default()
            }),
            endpoint: mallory.federation_addr.clone(),
            protocol_version: exitnet_proto::PROTOCOL_VERSION,
        })
        .await
        .unwrap();

    // Both administrators see a pending peering, each with a full code; read
    // aloud, they differ, so neither approves.
    let a_code = code_for(&a, "prison-b").await;
    let b_code = code_for(&b, "ngo-a").await;
    assert_full_code(&a_code);
    assert_ne!(a_code, b_code);
    assert!(same_words(&a_code, &b_code) < 4);
    // What each would have seen without Mallory is a third code.
    let honest = verification_code(&a_fp, &b.fingerprint().await.unwrap());
    assert_ne!(honest, a_code);
    assert_ne!(honest, b_code);
}

#[tokio::test]
async fn rewritten_invitation_on_sqlite() {
    rewritten_invitation(Backend::Sqlite).await;
}

#[tokio::test]
async fn rewritten_invitation_on_postgres() {
    rewritten_invitation(Backend::Postgres).await;
}

/// A key rotation notice for `to` from `org`, signed as given, sent over a
/// connection presenting `caller`.
#[allow(clippy::too_many_arguments)]
async fn announce(
    to: &NodeProcess,
    org: &str,
    caller: &NodeKey,
    old: &NodeKey,
    new_spki: &[u8],
    new_signer: Option<&NodeKey>,
    old_valid_until_ms: i64,
) -> Result<(), tonic::Status> {
    let ts = to_timestamp;
    let now = now_ms();
    let payload = pb::KeyRotation {
        org_id: org.into(),
        recipient_org_id: "ngo-a".into(),
        new_public_key: new_spki.to_vec(),
        old_public_key: old.spki_der().to_vec(),
        issued_at: Some(ts(now)),
        old_key_valid_until: Some(ts(old_valid_until_ms)),
    }
    .encode_to_vec();
    let signed = pb::SignedKeyRotation {
        signature: old.sign_in(context::KEY_ROTATION, &payload).unwrap(),
        new_key_signature: new_signer
            .map(|k| k.sign_in(context::KEY_ROTATION_NEW_KEY, &payload).unwrap())
            .unwrap_or_default(),
        payload,
    };
    let pinned = vec![to.fingerprint().await.unwrap()];
    let mut client = exitnet_node::transport::client::connect(
        &to.federation_addr,
        Some(caller),
        pinned,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    client
        .notify(pb::NotifyRequest {
            notice_id: uuid::Uuid::new_v4().to_string(),
            notice: Some(pb::notify_request::Notice::KeyRotation(signed)),
        })
        .await
        .map(|_| ())
}

/// A federation call to `to` presenting `key`.
async fn call_with(to: &NodeProcess, key: &NodeKey) -> Result<(), tonic::Status> {
    let pinned = vec![to.fingerprint().await.unwrap()];
    let mut client = exitnet_node::transport::client::connect(
        &to.federation_addr,
        Some(key),
        pinned,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    client
        .notify(pb::NotifyRequest {
            notice_id: uuid::Uuid::new_v4().to_string(),
            notice: Some(pb::notify_request::Notice::State(
                pb::PeerState::Active as i32,
            )),
        })
        .await
        .map(|_| ())
}

fn refused_naming(r: Result<(), tonic::Status>, field: &str) {
    let e = r.expect_err("the rotation must be refused");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains(field), "{e:?}");
}

/// B's old key is stolen. Before B rotates, the thief cannot announce a key
/// he does not hold (someone else's), nor one without a proof; after B
/// rotated, the old key (still accepted during its overlap) can neither
/// replace B's new key nor retire it.
async fn stolen_old_key(backend: Backend) {
    let a = start("ngo-a", backend, "").await;
    let b = start(
        "prison-b",
        backend,
        "[federation]\nkey_overlap_secs = 3600\n",
    )
    .await;
    peered(&a, &b).await;
    let old_fp = b.fingerprint().await.unwrap();
    let old = NodeKey::read(&b.data_dir().join("identity"), &old_fp).unwrap();
    let thief = NodeKey::generate("prison-b").unwrap();
    let far = 4_000_000_000_000;

    // No proof of possession: refused, whether the key is someone else's
    // (A's own, here) or the proof is made by another key.
    let a_key = NodeKey::read(
        &a.data_dir().join("identity"),
        &a.fingerprint().await.unwrap(),
    )
    .unwrap();
    refused_naming(
        announce(&a, "prison-b", &old, &old, a_key.spki_der(), None, far).await,
        "new_key_signature",
    );
    refused_naming(
        announce(
            &a,
            "prison-b",
            &old,
            &old,
            a_key.spki_der(),
            Some(&thief),
            far,
        )
        .await,
        "new_key_signature",
    );
    // Signed without the rotation's context (a signature over the bare
    // payload, as before): refused.
    {
        let payload = pb::KeyRotation {
            org_id: "prison-b".into(),
            recipient_org_id: "ngo-a".into(),
            new_public_key: thief.spki_der().to_vec(),
            old_public_key: old.spki_der().to_vec(),
            issued_at: None,
            old_key_valid_until: Some(to_timestamp(far)),
        }
        .encode_to_vec();
        let signed = pb::SignedKeyRotation {
            signature: old.sign(&payload).unwrap(),
            new_key_signature: thief.sign(&payload).unwrap(),
            payload,
        };
        let mut client = exitnet_node::transport::client::connect(
            &a.federation_addr,
            Some(&old),
            vec![a.fingerprint().await.unwrap()],
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        let r = client
            .notify(pb::NotifyRequest {
                notice_id: uuid::Uuid::new_v4().to_string(),
                notice: Some(pb::notify_request::Notice::KeyRotation(signed)),
            })
            .await
            .map(|_| ());
        refused_naming(r, "signature");
    }
    assert_eq!(
        a.peer("prison-b").await.unwrap().unwrap()["key_fingerprint"],
        old_fp.as_str()
    );

    // B rotates; A pins the new key (announced by the old key, proven by the new).
    let rotated = b.admin().await.unwrap().rotate_identity().await.unwrap();
    let new_fp = rotated.new_fingerprint;
    wait_until("A to pin B's new key", Duration::from_secs(20), || async {
        let p = a.peer("prison-b").await.ok()??;
        (p["key_fingerprint"] == new_fp.as_str()).then_some(())
    })
    .await
    .unwrap();
    // The old key is still accepted for calls during the overlap...
    call_with(&a, &old).await.unwrap();
    // ...but cannot announce a key of the thief's, though properly proven,
    // nor end the new key's validity now.
    let now = now_ms();
    refused_naming(
        announce(
            &a,
            "prison-b",
            &old,
            &old,
            thief.spki_der(),
            Some(&thief),
            now,
        )
        .await,
        "newest key",
    );
    let p = a.peer("prison-b").await.unwrap().unwrap();
    assert_eq!(p["key_fingerprint"], new_fp.as_str());
    let e = call_with(&a, &thief).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    let new = NodeKey::read(&b.data_dir().join("identity"), &new_fp).unwrap();
    call_with(&a, &new).await.unwrap();
    // B keeps working with A: a suspend and resume reach it.
    a.peer_action("prison-b", pb::PeerAction::Suspend)
        .await
        .unwrap();
    b.wait_peer_state("ngo-a", "active", Some("suspended"))
        .await
        .unwrap();
    let events = a.security_events().await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.reason == "key_rotation_refused" && e.org_id == "prison-b"),
        "the refused rotations are recorded: {events:?}"
    );
}

#[tokio::test]
async fn stolen_old_key_on_sqlite() {
    stolen_old_key(Backend::Sqlite).await;
}

#[tokio::test]
async fn stolen_old_key_on_postgres() {
    stolen_old_key(Backend::Postgres).await;
}

/// Rotations from B's key, each to a key of its own, sent at once (as the
/// owner's and a thief's would race): exactly one is applied, and every
/// other sender is told its rotation was refused, never "ok".
async fn racing_rotations(backend: Backend) {
    let a = start("ngo-a", backend, "").await;
    let b = start("prison-b", backend, "").await;
    peered(&a, &b).await;
    let old = NodeKey::read(
        &b.data_dir().join("identity"),
        &b.fingerprint().await.unwrap(),
    )
    .unwrap();
    let news: Vec<NodeKey> = (0..8)
        .map(|_| NodeKey::generate("prison-b").unwrap())
        .collect();
    let far = now_ms() + 3_600_000;
    let results = futures_util::future::join_all(
        news.iter()
            .map(|new| announce(&a, "prison-b", &old, &old, new.spki_der(), Some(new), far)),
    )
    .await;
    let won: Vec<usize> = (0..results.len()).filter(|i| results[*i].is_ok()).collect();
    assert_eq!(won.len(), 1, "exactly one rotation applies: {results:?}");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(
            matches!(
                r.code(),
                tonic::Code::FailedPrecondition | tonic::Code::InvalidArgument
            ),
            "{r:?}"
        );
    }
    let pinned = a.peer("prison-b").await.unwrap().unwrap()["key_fingerprint"].clone();
    assert_eq!(pinned, news[won[0]].fingerprint());
}

#[tokio::test]
async fn racing_rotations_on_sqlite() {
    racing_rotations(Backend::Sqlite).await;
}

#[tokio::test]
async fn racing_rotations_on_postgres() {
    racing_rotations(Backend::Postgres).await;
}

/// A connection from B to A, authenticated with `key`, that has spoken
/// HTTP/2 and stays open: the task ends when A closes it.
async fn open_connection(
    a: &NodeProcess,
    key: &NodeKey,
) -> tokio::task::JoinHandle<std::io::Result<usize>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cfg =
        exitnet_node::tls::peer_client_config(Some(key), vec![a.fingerprint().await.unwrap()])
            .unwrap();
    let tcp = tokio::net::TcpStream::connect(&a.federation_addr)
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("peer.exitnet.invalid").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(name, tcp)
        .await
        .unwrap();
    // The HTTP/2 preface and an empty SETTINGS frame; A answers with its own.
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = tls.read(&mut buf).await.unwrap();
    assert!(n > 0, "A answered the preface");
    tokio::spawn(async move {
        let mut total = n;
        loop {
            match tls.read(&mut buf).await? {
                0 => return Ok(total),
                k => total += k,
            }
        }
    })
}

/// After `peer revoke`, a connection the revoked peer holds open to us ends
/// at once (without the fix it would live until the keep-alive gives up,
/// 50 s, or forever for a client that answers pings). Another peer's stays.
async fn revoke_closes_connections(backend: Backend) {
    let a = start("ngo-a", backend, "").await;
    let b = start("prison-b", backend, "").await;
    let c = start("health-c", backend, "").await;
    for n in [&b, &c] {
        join(n, &invite(&a).await).await;
    }
    for org in ["prison-b", "health-c"] {
        a.peer_action(org, pb::PeerAction::Approve).await.unwrap();
        a.wait_peer_state(org, "active", Some("active"))
            .await
            .unwrap();
    }
    let key_of =
        |n: &NodeProcess, fp: String| NodeKey::read(&n.data_dir().join("identity"), &fp).unwrap();
    let b_key = key_of(&b, b.fingerprint().await.unwrap());
    let c_key = key_of(&c, c.fingerprint().await.unwrap());
    let from_b = open_connection(&a, &b_key).await;
    let from_c = open_connection(&a, &c_key).await;
    assert!(!from_b.is_finished() && !from_c.is_finished());

    let revoked_at = std::time::Instant::now();
    a.peer_action("prison-b", pb::PeerAction::Revoke)
        .await
        .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), from_b)
        .await
        .expect("B's connection must end at once after the revoke")
        .unwrap();
    // An error (reset) or an orderly end: either way, it is closed.
    let _ = ended;
    assert!(revoked_at.elapsed() < Duration::from_secs(10));
    assert!(!from_c.is_finished(), "C's connection stays open");
    // And B's key is refused on a new one.
    let e = call_with(&a, &b_key).await.unwrap_err();
    assert_ne!(e.code(), tonic::Code::Ok);
    call_with(&a, &c_key).await.unwrap();
    from_c.abort();
}

#[tokio::test]
async fn revoke_closes_connections_on_sqlite() {
    revoke_closes_connections(Backend::Sqlite).await;
}

#[tokio::test]
async fn revoke_closes_connections_on_postgres() {
    revoke_closes_connections(Backend::Postgres).await;
}
