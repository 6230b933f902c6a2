//! Several real nodes peered through `exitnetctl`, on SQLite and PostgreSQL.

use exitnet_node::identity::NodeKey;
use exitnet_proto::pb;
use exitnet_tests::{Backend, NodeProcess, NodeSpec, wait_until, with_token};
use std::time::Duration;

async fn start(org: &str, backend: Backend, extra: &str) -> NodeProcess {
    NodeProcess::start(NodeSpec::new(org, backend).with_toml(extra))
        .await
        .unwrap()
}

/// One of a node's keys, read from its identity directory.
async fn node_key(node: &NodeProcess, fingerprint: &str) -> NodeKey {
    NodeKey::read(&node.data_dir().join("identity"), fingerprint).unwrap()
}

async fn invite(node: &NodeProcess, extra: &[&str]) -> String {
    let mut args = vec!["peer", "invite"];
    args.extend_from_slice(extra);
    let v = node.ctl_json(&args).await.unwrap();
    v["code"].as_str().unwrap().to_owned()
}

async fn join(node: &NodeProcess, code: &str) {
    let out = node.ctl(&["peer", "join", code]).await.unwrap();
    assert!(out.success, "join failed: {}", out.stderr);
}

/// A federation call to `target` presenting `key` (or no certificate).
async fn raw_notify(target: &NodeProcess, key: Option<&NodeKey>) -> Result<(), tonic::Status> {
    let pinned = vec![target.fingerprint().await.unwrap()];
    let mut client = exitnet_node::transport::client::connect(
        &target.federation_addr,
        key,
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

async fn raw_join(
    target: &NodeProcess,
    key: &NodeKey,
    code: &str,
    org: &str,
) -> Result<(), tonic::Status> {
    let inv = exitnet_node::protocol::invitation::decode(code).unwrap();
    let pinned = vec![inv.key_fingerprint.clone()];
    let mut client = exitnet_node::transport::client::connect(
        &target.federation_addr,
        Some(key),
        pinned,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    client
        .join(pb::JoinRequest {
            invitation_id: inv.invitation_id,
            secret: inv.secret,
            profile: Some(pb::OrgProfile {
                org_id: org.into(),
                name: "Probe".into(),
                ..Default::default()
            }),
            endpoint: "127.0.0.1:9".into(),
            protocol_version: 1,
        })
        .await
        .map(|_| ())
}

async fn security_reasons(node: &NodeProcess) -> Vec<String> {
    let v = node
        .ctl_json(&["security", "events", "--limit", "100"])
        .await
        .unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap().to_owned())
        .collect()
}

async fn three_nodes_peer_through_exitnetctl(backend: Backend) {
    let a = start(
        "ngo-a",
        backend,
        "[org]\nsector = \"ngo\"\nneed_areas = [\"cognitive\"]\n",
    )
    .await;
    let b = start(
        "prison-b",
        backend,
        "[org]\nsector = \"prison_probation\"\nservices = [\"housing\"]\n",
    )
    .await;
    let c = start(
        "health-c",
        backend,
        "[org]\nsector = \"mental_health\"\nservices = [\"trauma_ptsd\"]\n",
    )
    .await;

    let code_b = invite(&a, &["--note", "for the prison service"]).await;
    let code_c = invite(&a, &[]).await;
    join(&b, &code_b).await;
    join(&c, &code_c).await;

    // Pending on both sides, with the same verification code.
    let a_b = a.peer("prison-b").await.unwrap().unwrap();
    let b_a = b.peer("ngo-a").await.unwrap().unwrap();
    assert_eq!(
        (a_b["state"].as_str(), a_b["awaiting"].as_str()),
        (Some("pending"), Some("local"))
    );
    assert_eq!(
        (b_a["state"].as_str(), b_a["awaiting"].as_str()),
        (Some("pending"), Some("remote"))
    );
    assert_eq!(a_b["verification_code"], b_a["verification_code"]);
    assert_eq!(a_b["sector"], "prison_probation");
    assert_eq!(b_a["name"], "Org ngo-a");
    let show = b.ctl(&["peer", "show", "ngo-a"]).await.unwrap();
    assert!(
        show.stdout
            .contains(b_a["verification_code"].as_str().unwrap())
    );

    // A pending peer cannot call yet; a joiner cannot approve for the inviter.
    let b_fp = b.fingerprint().await.unwrap();
    let b_key = node_key(&b, &b_fp).await;
    let err = raw_notify(&a, Some(&b_key)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    let out = b.ctl(&["peer", "approve", "ngo-a"]).await.unwrap();
    assert!(
        !out.success && out.stderr.contains("FailedPrecondition"),
        "{}",
        out.stderr
    );

    // A approves both; each side learns without anyone typing more.
    assert!(
        a.ctl(&["peer", "approve", "prison-b"])
            .await
            .unwrap()
            .success
    );
    assert!(
        a.ctl(&["peer", "approve", "health-c"])
            .await
            .unwrap()
            .success
    );
    b.wait_peer_state("ngo-a", "active", Some("active"))
        .await
        .unwrap();
    c.wait_peer_state("ngo-a", "active", Some("active"))
        .await
        .unwrap();
    a.wait_peer_state("prison-b", "active", Some("active"))
        .await
        .unwrap();
    a.wait_peer_state("health-c", "active", Some("active"))
        .await
        .unwrap();
    let list = a.ctl_json(&["peer", "list"]).await.unwrap();
    let rows: Vec<(String, String, String, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["org_id"].as_str().unwrap().into(),
                p["name"].as_str().unwrap().into(),
                p["sector"].as_str().unwrap().into(),
                p["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (
                "health-c".into(),
                "Org health-c".into(),
                "mental_health".into(),
                "active".into()
            ),
            (
                "prison-b".into(),
                "Org prison-b".into(),
                "prison_probation".into(),
                "active".into()
            ),
        ]
    );

    // B and C, never peered, cannot call each other.
    let c_fp = c.fingerprint().await.unwrap();
    let c_key = node_key(&c, &c_fp).await;
    assert_eq!(
        raw_notify(&c, Some(&b_key)).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    assert_eq!(
        raw_notify(&b, Some(&c_key)).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    // B, approved, can call A.
    raw_notify(&a, Some(&b_key)).await.unwrap();

    // The directory on A's client API lists active peers by service.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", a.api_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let token = a.dev_token("case_manager", "alice").await.unwrap();
    let mut dir = pb::directory_service_client::DirectoryServiceClient::with_interceptor(
        channel,
        with_token(&token),
    );
    let all = dir
        .list_peers(pb::ListPeersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.peers.len(), 2);
    let trauma = dir
        .list_peers(pb::ListPeersRequest {
            service: pb::Service::TraumaPtsd as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        trauma
            .peers
            .iter()
            .map(|p| p.org_id.as_str())
            .collect::<Vec<_>>(),
        ["health-c"]
    );
    let err = dir
        .list_peers(pb::ListPeersRequest {
            service: 9999,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("service"), "{}", err.message());

    // Suspension takes effect at once, in both directions, and B is told.
    assert!(
        a.ctl(&["peer", "suspend", "prison-b"])
            .await
            .unwrap()
            .success
    );
    let err = raw_notify(&a, Some(&b_key)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    b.wait_peer_state("ngo-a", "active", Some("suspended"))
        .await
        .unwrap();
    let listed = dir
        .list_peers(pb::ListPeersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed
            .peers
            .iter()
            .map(|p| p.org_id.as_str())
            .collect::<Vec<_>>(),
        ["health-c"]
    );
    assert!(
        a.ctl(&["peer", "resume", "prison-b"])
            .await
            .unwrap()
            .success
    );
    raw_notify(&a, Some(&b_key)).await.unwrap();
    b.wait_peer_state("ngo-a", "active", Some("active"))
        .await
        .unwrap();

    // Revoking asks first: with nobody at a terminal to answer and no
    // --yes, nothing changes.
    let out = a.ctl(&["peer", "revoke", "health-c"]).await.unwrap();
    assert!(
        !out.success && out.stderr.contains("add --yes"),
        "{}",
        out.stderr
    );
    assert_eq!(
        a.peer("health-c").await.unwrap().unwrap()["state"],
        "active"
    );
    // Revocation is final, and says what becomes of referrals in flight.
    let out = a
        .ctl(&["peer", "revoke", "health-c", "--yes"])
        .await
        .unwrap();
    assert!(out.success, "{}", out.stderr);
    assert!(
        out.stderr.contains("Referrals in flight with health-c")
            && out.stderr.contains("undeliverable")
            && out.stderr.contains("exitnetctl peer join"),
        "{}",
        out.stderr
    );
    assert_eq!(
        raw_notify(&a, Some(&c_key)).await.unwrap_err().code(),
        tonic::Code::PermissionDenied
    );
    c.wait_peer_state("ngo-a", "active", Some("revoked"))
        .await
        .unwrap();
    let out = a.ctl(&["peer", "resume", "health-c"]).await.unwrap();
    assert!(!out.success);

    // A live peering is not replaced by a new invitation: B refuses before
    // calling A, naming what to do, and the invitation stays unused.
    let code = invite(&a, &[]).await;
    let out = b.ctl(&["peer", "join", &code]).await.unwrap();
    assert!(
        !out.success
            && out.stderr.contains("already peered with ngo-a")
            && out.stderr.contains("exitnetctl peer revoke ngo-a"),
        "{}",
        out.stderr
    );
    assert_eq!(b.peer("ngo-a").await.unwrap().unwrap()["state"], "active");
    // After the revoke, the two peer again through a new invitation (the
    // one B could not use): the join replaces the revoked peering on both
    // sides, and both administrators approve as the first time.
    join(&c, &code).await;
    let c_a = c.peer("ngo-a").await.unwrap().unwrap();
    assert_eq!(
        (c_a["state"].as_str(), c_a["awaiting"].as_str()),
        (Some("pending"), Some("remote"))
    );
    let a_c = a.peer("health-c").await.unwrap().unwrap();
    assert_eq!(
        (a_c["state"].as_str(), a_c["awaiting"].as_str()),
        (Some("pending"), Some("local"))
    );
    assert_eq!(a_c["verification_code"], c_a["verification_code"]);
    let out = a.ctl(&["peer", "approve", "health-c"]).await.unwrap();
    assert!(out.success, "{}", out.stderr);
    c.wait_peer_state("ngo-a", "active", Some("active"))
        .await
        .unwrap();
    a.wait_peer_state("health-c", "active", Some("active"))
        .await
        .unwrap();
    raw_notify(&a, Some(&c_key)).await.unwrap();

    // Errors name what was typed.
    let out = a.ctl(&["peer", "show", "no-such-org"]).await.unwrap();
    assert!(
        !out.success && out.stderr.contains("no peer no-such-org"),
        "{}",
        out.stderr
    );
    let out = a.ctl(&["peer", "suspend", "Not_An_Id"]).await.unwrap();
    assert!(
        !out.success
            && out
                .stderr
                .contains("no peer Not_An_Id: not an organisation ID"),
        "{}",
        out.stderr
    );

    let reasons = security_reasons(&a).await;
    for r in ["peer_pending", "peer_suspended", "peer_revoked"] {
        assert!(
            reasons.iter().any(|x| x == r),
            "{r} not recorded: {reasons:?}"
        );
    }
}

#[tokio::test]
async fn three_nodes_on_sqlite() {
    three_nodes_peer_through_exitnetctl(Backend::Sqlite).await;
}

#[tokio::test]
async fn three_nodes_on_postgres() {
    three_nodes_peer_through_exitnetctl(Backend::Postgres).await;
}

async fn refused_federation_calls(backend: Backend) {
    let a = start("ngo-a", backend, "").await;
    let b = start("prison-b", backend, "").await;
    join(&b, &invite(&a, &[]).await).await;
    assert!(
        a.ctl(&["peer", "approve", "prison-b"])
            .await
            .unwrap()
            .success
    );
    b.wait_peer_state("ngo-a", "active", Some("active"))
        .await
        .unwrap();
    a.wait_peer_state("prison-b", "active", Some("active"))
        .await
        .unwrap();

    // No client certificate.
    let err = raw_notify(&a, None).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    // An unknown key.
    let stranger = NodeKey::generate("stranger").unwrap();
    assert_eq!(
        raw_notify(&a, Some(&stranger)).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    // A known organisation ID presenting another key.
    let impostor = NodeKey::generate("prison-b").unwrap();
    assert_eq!(
        raw_notify(&a, Some(&impostor)).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );

    // Invitations: already used, wrong secret, expired, altered, forged.
    let code = invite(&a, &[]).await;
    let probe = NodeKey::generate("probe-1").unwrap();
    raw_join(&a, &probe, &code, "probe-1").await.unwrap();
    let again = NodeKey::generate("probe-2").unwrap();
    assert_eq!(
        raw_join(&a, &again, &code, "probe-2")
            .await
            .unwrap_err()
            .code(),
        tonic::Code::PermissionDenied
    );

    // Expired invitations: `an_invitation_expires_by_the_nodes_clocks`.
    let fresh = invite(&a, &[]).await;
    let mut altered: Vec<char> = fresh.chars().collect();
    let i = altered.len() - 10;
    altered[i] = if altered[i] == 'A' { 'B' } else { 'A' };
    let altered: String = altered.into_iter().collect();
    let out = b.ctl(&["peer", "join", &altered]).await.unwrap();
    assert!(
        !out.success && out.stderr.contains("InvalidArgument"),
        "{}",
        out.stderr
    );

    // A forged code: a stranger's key signs an invitation naming A's endpoint.
    let inv = exitnet_node::protocol::invitation::decode(&fresh).unwrap();
    let forged = exitnet_node::protocol::invitation::encode(&inv, &stranger).unwrap();
    let out = b.ctl(&["peer", "join", &forged]).await.unwrap();
    assert!(
        !out.success && out.stderr.contains("signing key does not match"),
        "{}",
        out.stderr
    );

    // A keeps serving everyone else.
    let b_key = node_key(&b, &b.fingerprint().await.unwrap()).await;
    raw_notify(&a, Some(&b_key)).await.unwrap();
    assert!(
        exitnet_tests::node::health_serving(&a.api_addr)
            .await
            .unwrap()
    );

    let reasons = security_reasons(&a).await;
    for r in [
        "no_client_certificate",
        "unknown_key",
        "key_mismatch_for_known_org",
        "invitation_invalid",
    ] {
        assert!(
            reasons.iter().any(|x| x == r),
            "{r} not recorded: {reasons:?}"
        );
    }
    // Recorded without payload: no secret or profile text in the record.
    let events = a
        .ctl(&["security", "events", "--output", "json"])
        .await
        .unwrap()
        .stdout;
    assert!(!events.contains("Probe"));
}

#[tokio::test]
async fn refused_calls_on_sqlite() {
    refused_federation_calls(Backend::Sqlite).await;
}

#[tokio::test]
async fn refused_calls_on_postgres() {
    refused_federation_calls(Backend::Postgres).await;
}

async fn key_rotation(backend: Backend) {
    let a = start("ngo-a", backend, "").await;
    let b = start("prison-b", backend, "[federation]\nkey_overlap_secs = 3\n").await;
    join(&b, &invite(&a, &[]).await).await;
    assert!(
        a.ctl(&["peer", "approve", "prison-b"])
            .await
            .unwrap()
            .success
    );
    a.wait_peer_state("prison-b", "active", Some("active"))
        .await
        .unwrap();

    let old_fp = b.fingerprint().await.unwrap();
    let old_key = node_key(&b, &old_fp).await;
    let rotated = b.ctl_json(&["identity", "rotate"]).await.unwrap();
    let new_fp = rotated["new_fingerprint"].as_str().unwrap().to_owned();
    assert_eq!(rotated["old_fingerprint"], old_fp.as_str());
    assert_eq!(rotated["peers_notified"], 1);
    assert_ne!(new_fp, old_fp);
    let new_key = node_key(&b, &new_fp).await;
    // Within the overlap both keys are accepted.
    raw_notify(&a, Some(&old_key)).await.unwrap();

    // A learns the new key from the announcement signed by the old one.
    wait_until("A to pin B's new key", Duration::from_secs(20), || async {
        let p = a.peer("prison-b").await.ok()??;
        (p["key_fingerprint"] == new_fp.as_str()).then_some(())
    })
    .await
    .unwrap();
    raw_notify(&a, Some(&new_key)).await.unwrap();
    // A's calls reach B, which now presents the new key.
    assert!(
        a.ctl(&["peer", "suspend", "prison-b"])
            .await
            .unwrap()
            .success
    );
    b.wait_peer_state("ngo-a", "active", Some("suspended"))
        .await
        .unwrap();
    assert!(
        a.ctl(&["peer", "resume", "prison-b"])
            .await
            .unwrap()
            .success
    );
    b.wait_peer_state("ngo-a", "active", Some("active"))
        .await
        .unwrap();

    // After the overlap (3 s) the old key is refused, the new one still accepted.
    let err = wait_until(
        "the old key to be refused",
        Duration::from_secs(20),
        || async { raw_notify(&a, Some(&old_key)).await.err() },
    )
    .await
    .unwrap();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    raw_notify(&a, Some(&new_key)).await.unwrap();

    // A changed profile reaches the peer when the node starts with it.
    b.set_config("[org]\nname = \"Probation Service East\"\nservices = [\"housing\", \"employment_support\"]\n").unwrap();
    let mut b = b;
    b.restart().await.unwrap();
    let p = wait_until(
        "A to see B's new profile",
        Duration::from_secs(30),
        || async {
            let p = a.peer("prison-b").await.ok()??;
            (p["name"] == "Probation Service East").then_some(p)
        },
    )
    .await
    .unwrap();
    assert_eq!(
        p["services"],
        serde_json::json!(["housing", "employment_support"])
    );
}

#[tokio::test]
async fn key_rotation_on_sqlite() {
    key_rotation(Backend::Sqlite).await;
}

#[tokio::test]
async fn key_rotation_on_postgres() {
    key_rotation(Backend::Postgres).await;
}

/// An invitation's lifetime is read on each side's own clock, moved here
/// instead of waited for (two nodes in this process): past it, the inviter
/// refuses the join (as it refuses unknown and used invitations, so a
/// prober learns nothing), and a joiner whose own clock is past it does
/// not even call.
#[tokio::test]
async fn an_invitation_expires_by_the_nodes_clocks() {
    use exitnet_node::error::Error;
    let inviter = exitnet_tests::inproc::spawn_app("inviter-a").await.unwrap();
    let joiner = exitnet_tests::inproc::spawn_app("joiner-b").await.unwrap();
    let invite = |secs| {
        inviter
            .services
            .peering
            .create_invitation(secs, None, "b".into())
    };

    // The inviter's clock moves past the invitation's hour.
    let code = invite(3600).await.unwrap().code;
    inviter.clock.advance_ms(3600 * 1000);
    match joiner.services.peering.join(&code).await {
        Err(Error::FailedPrecondition(m)) => assert!(
            m.contains("the inviter refused") && m.contains("expired"),
            "{m}"
        ),
        other => panic!("joined with an expired invitation: {other:?}"),
    }
    assert!(
        joiner
            .state
            .store
            .get_peer(&inviter.state.org_id)
            .await
            .unwrap()
            .is_none(),
        "the refused join left a peer behind"
    );

    // The joiner's own clock past it: refused before the inviter is called.
    let code = invite(60).await.unwrap().code;
    joiner.clock.advance_ms(3600 * 1000 + 61 * 1000);
    match joiner.services.peering.join(&code).await {
        Err(Error::FailedPrecondition(m)) => {
            assert_eq!(m, "the invitation has expired");
        }
        other => panic!("joined with an expired invitation: {other:?}"),
    }

    // Within its lifetime by both clocks, the same kind of invitation works,
    // and the inviter's audit trail records the join at its own (moved) time.
    let inv = invite(7200).await.unwrap();
    let peer = joiner.services.peering.join(&inv.code).await.unwrap();
    assert_eq!(peer.org_id, inviter.state.org_id);
    let records = inviter
        .state
        .store
        .audit_for_objects(std::slice::from_ref(&inv.invitation_id))
        .await
        .unwrap();
    let join = records
        .iter()
        .find(|r| r.entry.action == "peer.join_request")
        .expect("the join is audited");
    use exitnet_node::clock::Clock;
    assert_eq!(join.entry.at_ms, inviter.clock.now_ms());
}
