//! Referrals across real nodes: the closed loop, scope at both ends,
//! pseudonyms, durable delivery and withdrawal that reaches every recipient.

use exitnet_node::identity::{NodeKey, context};
use exitnet_proto::pb;
use exitnet_proto::pb::consent_service_client::ConsentServiceClient;
use exitnet_proto::pb::referral_service_client::ReferralServiceClient;
use exitnet_tests::{Backend, NodeProcess, NodeSpec, bearer, wait_until};
use prost::Message;
use std::time::Duration;
use tonic::Code;

pub(crate) const NARRATIVE: &str =
    "Needs stable housing after release; motivated, attends mentoring weekly. Marker-7f3a.";

struct Net {
    a: NodeProcess,
    b: NodeProcess,
    c: NodeProcess,
}

pub(crate) async fn start(org: &str, backend: Backend) -> NodeProcess {
    NodeProcess::start(NodeSpec::new(org, backend))
        .await
        .unwrap()
}

/// A (NGO) peered with B (prison and probation) and C (mental health).
async fn network(backend: Backend) -> Net {
    let a = start("ngo-a", backend).await;
    let b = start("prison-b", backend).await;
    let c = start("health-c", backend).await;
    peer_with(&a, &b).await;
    peer_with(&a, &c).await;
    Net { a, b, c }
}

/// Peers `n` with `a` (invited by `a`, approved by both) and lets the needs
/// narrative through in both directions, as the tests send it.
pub(crate) async fn peer_with(a: &NodeProcess, n: &NodeProcess) {
    let code = a.ctl_json(&["peer", "invite"]).await.unwrap()["code"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(n.ctl(&["peer", "join", &code]).await.unwrap().success);
    assert!(
        a.ctl(&["peer", "approve", &n.spec.org_id])
            .await
            .unwrap()
            .success
    );
    a.wait_peer_state(&n.spec.org_id, "active", Some("active"))
        .await
        .unwrap();
    n.wait_peer_state(&a.spec.org_id, "active", Some("active"))
        .await
        .unwrap();
    assert!(
        a.ctl(&["peer", "policy", &n.spec.org_id, "--allow-narrative"])
            .await
            .unwrap()
            .success
    );
    assert!(
        n.ctl(&["peer", "policy", &a.spec.org_id, "--allow-narrative"])
            .await
            .unwrap()
            .success
    );
}

fn in_a_year() -> exitnet_proto::Timestamp {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    exitnet_proto::Timestamp {
        seconds: now + 365 * 86400,
        nanos: 0,
    }
}

pub(crate) fn consent_request(id: &str, client: &str) -> pb::RecordConsentRequest {
    pb::RecordConsentRequest {
        request_id: id.into(),
        subject_ref: client.into(),
        terms: Some(pb::ConsentTerms {
            recipients: vec!["prison-b".into(), "health-c".into()],
            purposes: vec![
                pb::Purpose::ExitSupport as i32,
                pb::Purpose::ServiceProvision as i32,
            ],
            data_categories: vec![
                pb::DataCategory::AgeBand as i32,
                pb::DataCategory::RiskLevel as i32,
                pb::DataCategory::NeedsNarrative as i32,
            ],
            need_areas: vec![
                pb::NeedArea::FunctionalReintegration as i32,
                pb::NeedArea::MentalHealth as i32,
            ],
            legal_basis: Some(pb::LegalBasis {
                kind: pb::LegalBasisKind::Consent as i32,
                statute: String::new(),
            }),
            restrictions: vec![pb::Restriction::NoOnwardSharing as i32],
            valid_until: Some(in_a_year()),
            ..Default::default()
        }),
        collection_method: pb::CollectionMethod::Written as i32,
        witness: String::new(),
    }
}

pub(crate) fn referral_request(
    id: &str,
    consent: &str,
    to: &str,
    area: pb::NeedArea,
    service: pb::Service,
) -> pb::CreateReferralRequest {
    pb::CreateReferralRequest {
        request_id: id.into(),
        consent_id: consent.into(),
        recipient_org: to.into(),
        need_areas: vec![area as i32],
        services: vec![service as i32],
        urgency: pb::Urgency::Soon as i32,
        summary: Some(pb::CaseSummary {
            age_band: pb::AgeBand::AgeBand2534 as i32,
            risk_level: pb::RiskLevel::Moderate as i32,
            needs_narrative: NARRATIVE.into(),
            ..Default::default()
        }),
    }
}

/// Records `consent_request(request_id, client)` at `n` as `token`; its ID.
pub(crate) async fn recorded_consent(
    n: &NodeProcess,
    token: &str,
    request_id: &str,
    client: &str,
) -> String {
    let (mut c, _) = clients(n).await;
    c.record_consent(bearer(token, consent_request(request_id, client)))
        .await
        .unwrap()
        .into_inner()
        .consent
        .unwrap()
        .consent_id
}

/// Creates a housing referral `request_id` to `to` under `consent` at `n`
/// as `token`; its ID.
pub(crate) async fn created_referral(
    n: &NodeProcess,
    token: &str,
    request_id: &str,
    consent: &str,
    to: &str,
) -> String {
    let (_, mut r) = clients(n).await;
    r.create_referral(bearer(
        token,
        referral_request(
            request_id,
            consent,
            to,
            pb::NeedArea::FunctionalReintegration,
            pb::Service::Housing,
        ),
    ))
    .await
    .unwrap()
    .into_inner()
    .referral
    .unwrap()
    .referral_id
}

pub(crate) async fn clients(
    n: &NodeProcess,
) -> (
    ConsentServiceClient<tonic::transport::Channel>,
    ReferralServiceClient<tonic::transport::Channel>,
) {
    let ch = n.api_channel().await.unwrap();
    (
        ConsentServiceClient::new(ch.clone()),
        ReferralServiceClient::new(ch),
    )
}

async fn get(
    r: &mut ReferralServiceClient<tonic::transport::Channel>,
    token: &str,
    id: &str,
) -> pb::Referral {
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

pub(crate) async fn wait_state(
    r: &ReferralServiceClient<tonic::transport::Channel>,
    token: &str,
    id: &str,
    state: pb::ReferralState,
) -> pb::Referral {
    wait_until(
        &format!("referral {id} to be {state:?}"),
        Duration::from_secs(30),
        || {
            let mut r = r.clone();
            async move {
                let got = r
                    .get_referral(bearer(
                        token,
                        pb::GetReferralRequest {
                            referral_id: id.into(),
                        },
                    ))
                    .await
                    .ok()?
                    .into_inner()
                    .referral?;
                (got.state == state as i32).then_some(got)
            }
        },
    )
    .await
    .unwrap()
}

async fn inbound(
    r: &mut ReferralServiceClient<tonic::transport::Channel>,
    token: &str,
) -> Vec<pb::Referral> {
    r.list_referrals(bearer(
        token,
        pb::ListReferralsRequest {
            direction: pb::Direction::Inbound as i32,
            page_size: 500,
            ..Default::default()
        },
    ))
    .await
    .unwrap()
    .into_inner()
    .referrals
}

/// Every referral ID the caller can list, page by page.
async fn all_ids(
    r: &mut ReferralServiceClient<tonic::transport::Channel>,
    token: &str,
) -> Option<Vec<String>> {
    ids_in(r, token, pb::Direction::Unspecified).await
}

/// Every inbound referral ID at `n` that `token` may list, all pages.
pub(crate) async fn inbound_ids(n: &NodeProcess, token: &str) -> Vec<String> {
    let (_, mut r) = clients(n).await;
    ids_in(&mut r, token, pb::Direction::Inbound)
        .await
        .expect("listing inbound referrals")
}

async fn ids_in(
    r: &mut ReferralServiceClient<tonic::transport::Channel>,
    token: &str,
    direction: pb::Direction,
) -> Option<Vec<String>> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = r
            .list_referrals(bearer(
                token,
                pb::ListReferralsRequest {
                    direction: direction as i32,
                    page_size: 500,
                    page_token: page_token.clone(),
                    ..Default::default()
                },
            ))
            .await
            .ok()?
            .into_inner();
        all.extend(page.referrals.into_iter().map(|r| r.referral_id));
        if page.next_page_token.is_empty() {
            return Some(all);
        }
        page_token = page.next_page_token;
    }
}

async fn closed_loop(backend: Backend) {
    let net = network(backend).await;
    let alice = net.a.dev_token("case_manager", "alice").await.unwrap();
    let bob = net.b.dev_token("case_manager", "bob").await.unwrap();
    let (mut ac, mut ar) = clients(&net.a).await;
    let (_, mut br) = clients(&net.b).await;
    let consent = ac
        .record_consent(bearer(&alice, consent_request("c-1", "client-4711")))
        .await
        .unwrap()
        .into_inner()
        .consent
        .unwrap();

    let req = referral_request(
        "r-1",
        &consent.consent_id,
        "prison-b",
        pb::NeedArea::FunctionalReintegration,
        pb::Service::Housing,
    );
    let made = ar
        .create_referral(bearer(&alice, req.clone()))
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    assert_eq!(made.state, pb::ReferralState::Requested as i32);
    // A retry after a timeout returns the same referral.
    let again = ar
        .create_referral(bearer(&alice, req))
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    assert_eq!(again.referral_id, made.referral_id);
    let id = made.referral_id.clone();
    wait_state(&ar, &alice, &id, pb::ReferralState::Received).await;

    // At B: one inbound referral with the summary and a pseudonym, no client reference.
    let list = inbound(&mut br, &bob).await;
    assert_eq!(list.len(), 1);
    let at_b = &list[0];
    assert_eq!(at_b.referral_id, id);
    assert_eq!(at_b.peer_org, "ngo-a");
    assert_eq!(at_b.summary.as_ref().unwrap().needs_narrative, NARRATIVE);
    assert_eq!(at_b.subject_pseudonym.len(), 32);
    assert_eq!(
        at_b.terms.as_ref().unwrap().recipients,
        ["prison-b"],
        "the other recipients stay hidden"
    );
    // Only the receiver sets these states, in order.
    let e = br
        .start_referral(bearer(
            &bob,
            pb::StartReferralRequest {
                referral_id: id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let e = ar
        .accept_referral(bearer(
            &alice,
            pb::AcceptReferralRequest {
                referral_id: id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    br.accept_referral(bearer(
        &bob,
        pb::AcceptReferralRequest {
            referral_id: id.clone(),
        },
    ))
    .await
    .unwrap();
    wait_state(&ar, &alice, &id, pb::ReferralState::Accepted).await;
    br.start_referral(bearer(
        &bob,
        pb::StartReferralRequest {
            referral_id: id.clone(),
        },
    ))
    .await
    .unwrap();
    wait_state(&ar, &alice, &id, pb::ReferralState::InProgress).await;
    let e = br
        .complete_referral(bearer(
            &bob,
            pb::CompleteReferralRequest {
                referral_id: id.clone(),
                outcome: None,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("outcome"));
    let outcome = pb::Outcome {
        disengagement: pb::Progress::Some as i32,
        reintegration: pb::Progress::Substantial as i32,
        service_delivered: true,
        note: "Housing secured.".into(),
        ..Default::default()
    };
    br.complete_referral(bearer(
        &bob,
        pb::CompleteReferralRequest {
            referral_id: id.clone(),
            outcome: Some(outcome.clone()),
        },
    ))
    .await
    .unwrap();
    let done = wait_state(&ar, &alice, &id, pb::ReferralState::Completed).await;
    let states: Vec<i32> = done.history.iter().map(|h| h.state).collect();
    use pb::ReferralState as S;
    assert_eq!(
        states,
        [
            S::Requested,
            S::Received,
            S::Accepted,
            S::InProgress,
            S::Completed
        ]
        .map(|s| s as i32)
    );
    let last = done.history.last().unwrap();
    assert_eq!(last.by_org, "prison-b");
    assert_eq!(
        last.outcome.as_ref().unwrap().reintegration,
        pb::Progress::Substantial as i32
    );
    // Bob (at B) is now the owner; another case manager at B cannot act on it.
    let eve = net.b.dev_token("case_manager", "eve").await.unwrap();
    let e = br
        .get_referral(bearer(
            &eve,
            pb::GetReferralRequest {
                referral_id: id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    // The auditor at A sees the loop, not the case content.
    let dpo = net.a.dev_token("auditor", "dpo").await.unwrap();
    let seen = get(&mut ar, &dpo, &id).await;
    assert!(seen.summary.is_none());
    assert_eq!(seen.state, S::Completed as i32);

    // Pairwise pseudonyms: C gets another one; a second referral to B the same.
    let to_c = referral_request(
        "r-2",
        &consent.consent_id,
        "health-c",
        pb::NeedArea::MentalHealth,
        pb::Service::TraumaPtsd,
    );
    let rc = ar
        .create_referral(bearer(&alice, to_c))
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    let second = referral_request(
        "r-3",
        &consent.consent_id,
        "prison-b",
        pb::NeedArea::FunctionalReintegration,
        pb::Service::EmploymentSupport,
    );
    let rb2 = ar
        .create_referral(bearer(&alice, second))
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    wait_state(&ar, &alice, &rc.referral_id, S::Received).await;
    wait_state(&ar, &alice, &rb2.referral_id, S::Received).await;
    let carl = net.c.dev_token("case_manager", "carl").await.unwrap();
    let (_, mut cr) = clients(&net.c).await;
    let at_c = inbound(&mut cr, &carl).await;
    let at_b = inbound(&mut br, &bob).await;
    assert_eq!(at_c.len(), 1);
    assert_eq!(at_b.len(), 2);
    assert_eq!(at_b[0].subject_pseudonym, at_b[1].subject_pseudonym);
    assert_ne!(at_c[0].subject_pseudonym, at_b[0].subject_pseudonym);

    // Out of scope at the sender, each refusal naming the term.
    let d = |f: fn(&mut pb::CreateReferralRequest)| {
        let mut r = referral_request(
            "x",
            &consent.consent_id,
            "prison-b",
            pb::NeedArea::FunctionalReintegration,
            pb::Service::Housing,
        );
        r.request_id = format!("x-{}", uuid::Uuid::new_v4());
        f(&mut r);
        r
    };
    let cases: Vec<(pb::CreateReferralRequest, &str)> = vec![
        (d(|r| r.recipient_org = "police-x".into()), "recipient_org"),
        (
            d(|r| r.need_areas = vec![pb::NeedArea::Security as i32]),
            "need_areas",
        ),
        (
            d(|r| r.services = vec![pb::Service::SafetyPlanning as i32]),
            "services",
        ),
        (
            d(|r| r.summary.as_mut().unwrap().gender = pb::Gender::Male as i32),
            "summary.gender",
        ),
    ];
    for (req, field) in cases {
        let e = ar.create_referral(bearer(&alice, req)).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{field}: {e:?}");
        assert!(e.message().starts_with(field), "{field}: {}", e.message());
    }
    let bob_at_a = net.a.dev_token("case_manager", "bob").await.unwrap();
    let e = ar
        .create_referral(bearer(&bob_at_a, d(|_| {})))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = ar
        .create_referral(bearer(
            &alice,
            d(|r| r.summary.as_mut().unwrap().needs_narrative = "x".repeat(2001)),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("summary.needs_narrative"));

    // Every call above left its audit record, in the trail of the node that
    // served it; no record holds any case content or the client reference.
    use crate::audit::{export, has};
    let at_a = export(&net.a).await;
    let cid = consent.consent_id.as_str();
    for (action, object, actor, result) in [
        ("consent.record", cid, "alice", "ok"),
        ("referral.create", id.as_str(), "alice", "ok"),
        ("receipt.delivery", id.as_str(), "prison-b", "ok"),
        ("referral.status.accepted", id.as_str(), "prison-b", "ok"),
        ("referral.status.in_progress", id.as_str(), "prison-b", "ok"),
        ("referral.status.completed", id.as_str(), "prison-b", "ok"),
        ("referral.read", id.as_str(), "alice", "ok"),
        ("referral.read", id.as_str(), "dpo", "ok"),
        ("referral.create", cid, "bob", "denied"),
        ("referral.create", rc.referral_id.as_str(), "alice", "ok"),
    ] {
        assert!(
            has(&at_a, action, object, actor, result),
            "A: no {action} {object} by {actor} ({result})"
        );
    }
    let at_b = export(&net.b).await;
    for (action, actor, result) in [
        ("referral.receive", "ngo-a", "ok"),
        ("referral.list", "bob", "ok"),
        ("referral.accepted", "bob", "ok"),
        ("referral.in_progress", "bob", "ok"),
        ("referral.completed", "bob", "ok"),
        ("referral.read", "eve", "denied"),
    ] {
        assert!(
            has(&at_b, action, &id, actor, result),
            "B: no {action} by {actor} ({result})"
        );
    }
    let at_c = export(&net.c).await;
    assert!(has(
        &at_c,
        "referral.receive",
        &rc.referral_id,
        "ngo-a",
        "ok"
    ));
    for line in at_a.iter().chain(&at_b).chain(&at_c) {
        let text = line.to_string();
        for secret in [NARRATIVE, "Marker-7f3a", "Housing secured.", "client-4711"] {
            assert!(
                !text.contains(secret),
                "an audit record holds {secret:?}: {text}"
            );
        }
    }
    for n in [&net.a, &net.b, &net.c] {
        let out = n.ctl(&["audit", "verify"]).await.unwrap();
        assert!(out.success, "{} {}", out.stdout, out.stderr);
    }
}

#[tokio::test]
async fn closed_loop_on_sqlite() {
    closed_loop(Backend::Sqlite).await;
}

#[tokio::test]
async fn closed_loop_on_postgres() {
    closed_loop(Backend::Postgres).await;
}

/// Sends a hand-built, signed message to `to`, as `from_key` presenting itself.
pub(crate) async fn send_raw(
    to: &NodeProcess,
    key: &NodeKey,
    msg: &pb::FederationMessage,
) -> Result<pb::NotifyResponse, tonic::Status> {
    let payload = msg.encode_to_vec();
    let signature = key.sign_in(context::MESSAGE, &payload).unwrap();
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
            notice_id: msg.message_id.clone(),
            notice: Some(pb::notify_request::Notice::Message(pb::SignedMessage {
                payload,
                signature,
                batch: None,
            })),
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn the_receiver_checks_what_skips_the_senders_checks() {
    let net = network(Backend::Sqlite).await;
    let a_key = NodeKey::read(
        &net.a.data_dir().join("identity"),
        &net.a.fingerprint().await.unwrap(),
    )
    .unwrap();
    let c_key = NodeKey::read(
        &net.c.data_dir().join("identity"),
        &net.c.fingerprint().await.unwrap(),
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let terms = |recipient: &str, cats: Vec<i32>| pb::ConsentTerms {
        recipients: vec![recipient.into()],
        purposes: vec![pb::Purpose::ExitSupport as i32],
        data_categories: cats,
        need_areas: vec![pb::NeedArea::FunctionalReintegration as i32],
        legal_basis: Some(pb::LegalBasis {
            kind: pb::LegalBasisKind::Consent as i32,
            statute: String::new(),
        }),
        valid_from: Some(exitnet_proto::Timestamp {
            seconds: now - 10,
            nanos: 0,
        }),
        valid_until: Some(in_a_year()),
        ..Default::default()
    };
    let offer = |recipient_in_terms: &str, cats: Vec<i32>, narrative: &str| pb::ReferralOffer {
        referral_id: uuid::Uuid::new_v4().to_string(),
        subject_pseudonym: "0123456789abcdef0123456789abcdef".into(),
        need_areas: vec![pb::NeedArea::FunctionalReintegration as i32],
        services: vec![],
        urgency: pb::Urgency::Routine as i32,
        summary: Some(pb::CaseSummary {
            needs_narrative: narrative.into(),
            ..Default::default()
        }),
        terms: Some(terms(recipient_in_terms, cats)),
        consent_ref: "ref".into(),
    };
    let msg = |sender: &str, o: pb::ReferralOffer| pb::FederationMessage {
        message_id: uuid::Uuid::now_v7().to_string(),
        sender_org: sender.into(),
        recipient_org: "prison-b".into(),
        sent_at: Some(exitnet_proto::Timestamp {
            seconds: now,
            nanos: 0,
        }),
        body: Some(pb::federation_message::Body::Offer(o)),
    };
    let narrative = vec![pb::DataCategory::NeedsNarrative as i32];
    // Terms that do not name B.
    let e = send_raw(
        &net.b,
        &a_key,
        &msg("ngo-a", offer("health-c", narrative.clone(), "x")),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("terms.recipients"), "{}", e.message());
    // A summary field the terms do not cover.
    let e = send_raw(
        &net.b,
        &a_key,
        &msg("ngo-a", offer("prison-b", vec![], "x")),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("needs_narrative"), "{}", e.message());
    // C peers with B too; then a message signed by A but sent by C is refused.
    let code = net.b.ctl_json(&["peer", "invite"]).await.unwrap()["code"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(net.c.ctl(&["peer", "join", &code]).await.unwrap().success);
    assert!(
        net.b
            .ctl(&["peer", "approve", "health-c"])
            .await
            .unwrap()
            .success
    );
    net.b
        .wait_peer_state("health-c", "active", Some("active"))
        .await
        .unwrap();
    let signed_by_a = msg("ngo-a", offer("prison-b", narrative.clone(), "x"));
    let payload = signed_by_a.encode_to_vec();
    let a_signature = a_key.sign_in(context::MESSAGE, &payload).unwrap();
    let pinned = vec![net.b.fingerprint().await.unwrap()];
    let mut as_c = exitnet_node::transport::client::connect(
        &net.b.federation_addr,
        Some(&c_key),
        pinned,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let e = as_c
        .notify(pb::NotifyRequest {
            notice_id: signed_by_a.message_id.clone(),
            notice: Some(pb::notify_request::Notice::Message(pb::SignedMessage {
                payload,
                signature: a_signature,
                batch: None,
            })),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("signature"), "{}", e.message());
    // C signs a message itself but names A as the sender.
    let e = send_raw(
        &net.b,
        &c_key,
        &msg("ngo-a", offer("prison-b", narrative.clone(), "x")),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("sender_org"), "{}", e.message());
    // A valid offer, then its replay: the same receipt, one referral.
    let ok = msg("ngo-a", offer("prison-b", narrative.clone(), "hand-built"));
    let first = send_raw(&net.b, &a_key, &ok)
        .await
        .unwrap()
        .receipt
        .unwrap();
    let replay = send_raw(&net.b, &a_key, &ok)
        .await
        .unwrap()
        .receipt
        .unwrap();
    assert_eq!(first, replay);
    let r = pb::Receipt::decode(first.payload.as_slice()).unwrap();
    assert_eq!(
        (r.receiver_org.as_str(), r.sender_org.as_str()),
        ("prison-b", "ngo-a")
    );
    let bob = net.b.dev_token("case_manager", "bob").await.unwrap();
    let (_, mut br) = clients(&net.b).await;
    assert_eq!(inbound(&mut br, &bob).await.len(), 1);
    // Several messages in one NotifyBatch, each answered as Notify would
    // answer it, in order: a new offer, one refused for its terms, and a
    // replay of `ok` (answered with the receipt it got the first time).
    let signed = |m: &pb::FederationMessage| {
        let payload = m.encode_to_vec();
        pb::NotifyRequest {
            notice_id: m.message_id.clone(),
            notice: Some(pb::notify_request::Notice::Message(pb::SignedMessage {
                signature: a_key.sign_in(context::MESSAGE, &payload).unwrap(),
                batch: None,
                payload,
            })),
        }
    };
    let fresh = msg("ngo-a", offer("prison-b", narrative.clone(), "batched"));
    let not_ours = msg("ngo-a", offer("health-c", narrative.clone(), "x"));
    let mut as_a = exitnet_node::transport::client::connect(
        &net.b.federation_addr,
        Some(&a_key),
        vec![net.b.fingerprint().await.unwrap()],
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let outcomes = as_a
        .notify_batch(pb::NotifyBatchRequest {
            notices: vec![signed(&fresh), signed(&not_ours), signed(&ok)],
        })
        .await
        .unwrap()
        .into_inner()
        .outcomes;
    assert_eq!(outcomes.len(), 3);
    use pb::notify_outcome::Outcome;
    let Some(Outcome::Response(pb::NotifyResponse {
        receipt: Some(receipt),
        ..
    })) = &outcomes[0].outcome
    else {
        panic!("{:?}", outcomes[0]);
    };
    let Some(pb::federation_message::Body::Offer(fresh_offer)) = &fresh.body else {
        unreachable!()
    };
    assert_eq!(
        pb::Receipt::decode(receipt.payload.as_slice())
            .unwrap()
            .referral_id,
        fresh_offer.referral_id
    );
    let Some(Outcome::Refusal(refusal)) = &outcomes[1].outcome else {
        panic!("{:?}", outcomes[1]);
    };
    assert_eq!(refusal.code, Code::PermissionDenied as i32);
    assert!(
        refusal.message.contains("terms.recipients"),
        "{}",
        refusal.message
    );
    let Some(Outcome::Response(again)) = &outcomes[2].outcome else {
        panic!("{:?}", outcomes[2]);
    };
    assert_eq!(again.receipt.as_ref(), Some(&first));
    assert_eq!(inbound(&mut br, &bob).await.len(), 2);
    // A batch's shape is checked before anything in it is applied.
    let peering_notice = pb::NotifyRequest {
        notice_id: uuid::Uuid::now_v7().to_string(),
        notice: Some(pb::notify_request::Notice::State(
            pb::PeerState::Active as i32,
        )),
    };
    for (notices, field) in [
        (vec![], "notices"),
        (vec![signed(&fresh); 65], "notices"),
        (vec![signed(&fresh), peering_notice], "notices[1].message"),
    ] {
        let e = as_a
            .notify_batch(pb::NotifyBatchRequest { notices })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
        assert!(e.message().starts_with(field), "{}", e.message());
    }
    assert_eq!(inbound(&mut br, &bob).await.len(), 2);
    // Messages signed together, as a sender's NotifyBatch sends them (one
    // signature over their batch's root, a proof each): accepted, and B
    // signs its receipts for them together too.
    let together = |ms: &[pb::FederationMessage]| {
        let queued: Vec<pb::NotifyRequest> = ms
            .iter()
            .map(|m| pb::NotifyRequest {
                notice_id: m.message_id.clone(),
                notice: Some(pb::notify_request::Notice::Message(pb::SignedMessage {
                    payload: m.encode_to_vec(),
                    signature: vec![],
                    batch: None,
                })),
            })
            .collect();
        exitnet_node::referrals::messages::sign_for_sending(&a_key, queued.iter(), true).unwrap()
    };
    let pair = [
        msg("ngo-a", offer("prison-b", narrative.clone(), "together-1")),
        msg("ngo-a", offer("prison-b", narrative.clone(), "together-2")),
    ];
    let outcomes = as_a
        .notify_batch(pb::NotifyBatchRequest {
            notices: together(&pair),
        })
        .await
        .unwrap()
        .into_inner()
        .outcomes;
    let receipts: Vec<pb::SignedReceipt> = outcomes
        .iter()
        .map(|o| match &o.outcome {
            Some(Outcome::Response(r)) => r.receipt.clone().unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(receipts.iter().all(|r| r.batch.is_some()), "{receipts:?}");
    assert_eq!(receipts[0].signature, receipts[1].signature);
    assert_eq!(inbound(&mut br, &bob).await.len(), 4);
    // A payload that is not the leaf its proof names is refused, alone.
    let mut notices = together(&[
        msg("ngo-a", offer("prison-b", narrative.clone(), "forged-1")),
        msg("ngo-a", offer("prison-b", narrative.clone(), "forged-2")),
    ]);
    let swapped = msg("ngo-a", offer("prison-b", narrative.clone(), "forged-3"));
    notices[1].notice_id = swapped.message_id.clone();
    if let Some(pb::notify_request::Notice::Message(m)) = &mut notices[1].notice {
        m.payload = swapped.encode_to_vec();
    }
    let outcomes = as_a
        .notify_batch(pb::NotifyBatchRequest { notices })
        .await
        .unwrap()
        .into_inner()
        .outcomes;
    assert!(matches!(outcomes[0].outcome, Some(Outcome::Response(_))));
    let Some(Outcome::Refusal(refusal)) = &outcomes[1].outcome else {
        panic!("{:?}", outcomes[1]);
    };
    assert_eq!(refusal.code, Code::PermissionDenied as i32);
    assert!(refusal.message.contains("signature"), "{}", refusal.message);
    assert_eq!(inbound(&mut br, &bob).await.len(), 5);
    // A message for another recipient is refused (no replay to other nodes).
    let mut elsewhere = msg("ngo-a", offer("prison-b", narrative, "x"));
    elsewhere.recipient_org = "health-c".into();
    let e = send_raw(&net.b, &a_key, &elsewhere).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(inbound(&mut br, &bob).await.len(), 5);
}

fn raw_db_contains(node: &NodeProcess, needle: &str) -> bool {
    ["exitnet.db", "exitnet.db-wal"].iter().any(|f| {
        std::fs::read(node.data_dir().join(f))
            .map(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
            .unwrap_or(false)
    })
}

#[tokio::test]
async fn withdrawal_reaches_every_recipient_even_one_that_was_down() {
    let mut net = network(Backend::Sqlite).await;
    let alice = net.a.dev_token("case_manager", "alice").await.unwrap();
    let (mut ac, mut ar) = clients(&net.a).await;
    let consent = ac
        .record_consent(bearer(&alice, consent_request("c-1", "client-99")))
        .await
        .unwrap()
        .into_inner()
        .consent
        .unwrap();
    let rb = ar
        .create_referral(bearer(
            &alice,
            referral_request(
                "r-b",
                &consent.consent_id,
                "prison-b",
                pb::NeedArea::FunctionalReintegration,
                pb::Service::Housing,
            ),
        ))
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    let rc = ar
        .create_referral(bearer(
            &alice,
            referral_request(
                "r-c",
                &consent.consent_id,
                "health-c",
                pb::NeedArea::MentalHealth,
                pb::Service::TraumaPtsd,
            ),
        ))
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    wait_state(&ar, &alice, &rb.referral_id, pb::ReferralState::Received).await;
    wait_state(&ar, &alice, &rc.referral_id, pb::ReferralState::Received).await;
    // Case content is sealed at rest: not even before the purge is it in the files.
    assert!(!raw_db_contains(&net.c, "Marker-7f3a"));
    assert!(!raw_db_contains(&net.a, "Marker-7f3a"));
    let data_keys = |n: &NodeProcess| {
        let url = n.database_url();
        async move {
            use sqlx::Connection;
            let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
            let n: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM data_keys WHERE key_id LIKE 'referral:%'")
                    .fetch_one(&mut c)
                    .await
                    .unwrap();
            n
        }
    };
    assert_eq!(data_keys(&net.c).await, 1);

    // C goes down; the client withdraws consent.
    let (status, _) = net.c.stop().await.unwrap();
    assert!(status.success());
    let w = ac
        .withdraw_consent(bearer(
            &alice,
            pb::WithdrawConsentRequest {
                consent_id: consent.consent_id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(w.recipients_notified, 2);
    // B purges at once; C's purge is pending.
    let purged_b = wait_until("B's purge receipt", Duration::from_secs(30), || {
        let mut ar = ar.clone();
        let (alice, id) = (alice.clone(), rb.referral_id.clone());
        async move {
            let r = ar
                .get_referral(bearer(&alice, pb::GetReferralRequest { referral_id: id }))
                .await
                .ok()?
                .into_inner()
                .referral?;
            (r.purge_status == pb::PurgeStatus::Done as i32).then_some(r)
        }
    })
    .await
    .unwrap();
    assert_eq!(purged_b.state, pb::ReferralState::Withdrawn as i32);
    assert!(purged_b.purged_at.is_some());
    let at_c = get(&mut ar, &alice, &rc.referral_id).await;
    assert_eq!(at_c.purge_status, pb::PurgeStatus::Pending as i32);
    // C returns and purges.
    net.c.restart().await.unwrap();
    wait_until("C's purge receipt", Duration::from_secs(30), || {
        let mut ar = ar.clone();
        let (alice, id) = (alice.clone(), rc.referral_id.clone());
        async move {
            let r = ar
                .get_referral(bearer(&alice, pb::GetReferralRequest { referral_id: id }))
                .await
                .ok()?
                .into_inner()
                .referral?;
            (r.purge_status == pb::PurgeStatus::Done as i32).then_some(())
        }
    })
    .await
    .unwrap();
    // At B and C: a tombstone without the summary, and no trace in the raw files.
    let bob = net.b.dev_token("case_manager", "bob").await.unwrap();
    let (_, mut br) = clients(&net.b).await;
    let tomb = get(&mut br, &bob, &rb.referral_id).await;
    assert!(tomb.summary.is_none());
    assert_eq!(tomb.state, pb::ReferralState::Withdrawn as i32);
    assert_eq!(tomb.purge_status, pb::PurgeStatus::Done as i32);
    assert!(
        !raw_db_contains(&net.c, "Marker-7f3a"),
        "purged text found in C's database files"
    );
    assert!(
        !raw_db_contains(&net.b, "Marker-7f3a"),
        "purged text found in B's database files"
    );
    // The purge destroyed the referral's data key at C and at B.
    assert_eq!(data_keys(&net.c).await, 0);
    assert_eq!(data_keys(&net.b).await, 0);
    // New referrals under the withdrawn consent are refused at the sender.
    let e = ar
        .create_referral(bearer(
            &alice,
            referral_request(
                "r-late",
                &consent.consent_id,
                "prison-b",
                pb::NeedArea::FunctionalReintegration,
                pb::Service::Housing,
            ),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().starts_with("consent_id"));
}

#[tokio::test]
async fn a_receiver_down_during_a_burst_gets_everything_exactly_once() {
    let mut net = network(Backend::Sqlite).await;
    let alice = net.a.dev_token("case_manager", "alice").await.unwrap();
    let (mut ac, ar) = clients(&net.a).await;
    let consent = ac
        .record_consent(bearer(&alice, consent_request("c-1", "client-5")))
        .await
        .unwrap()
        .into_inner()
        .consent
        .unwrap();
    let (status, _) = net.b.stop().await.unwrap();
    assert!(status.success());
    const N: usize = 1000;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let (mut ar, alice, cid) = (ar.clone(), alice.clone(), consent.consent_id.clone());
        tasks.spawn(async move {
            let mut ids = Vec::new();
            for i in (worker..N).step_by(8) {
                let req = referral_request(
                    &format!("burst-{i}"),
                    &cid,
                    "prison-b",
                    pb::NeedArea::FunctionalReintegration,
                    pb::Service::Housing,
                );
                ids.push(
                    ar.create_referral(bearer(&alice, req))
                        .await
                        .unwrap()
                        .into_inner()
                        .referral
                        .unwrap()
                        .referral_id,
                );
            }
            ids
        });
    }
    let mut sent = Vec::new();
    while let Some(ids) = tasks.join_next().await {
        sent.extend(ids.unwrap());
    }
    assert_eq!(sent.len(), N);
    // B is down with 1,000 messages queued for it: C is not held up.
    let to_c = referral_request(
        "to-c",
        &consent.consent_id,
        "health-c",
        pb::NeedArea::MentalHealth,
        pb::Service::TraumaPtsd,
    );
    let rc = ar
        .clone()
        .create_referral(bearer(&alice, to_c))
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    wait_state(&ar, &alice, &rc.referral_id, pb::ReferralState::Received).await;
    net.b.restart().await.unwrap();
    let bob = net.b.dev_token("case_manager", "bob").await.unwrap();
    let (_, br) = clients(&net.b).await;
    let mut got = wait_until(
        "all referrals to arrive at B",
        Duration::from_secs(120),
        || {
            let (mut br, bob) = (br.clone(), bob.clone());
            async move {
                let all = all_ids(&mut br, &bob).await?;
                (all.len() >= N).then_some(all)
            }
        },
    )
    .await
    .unwrap();
    got.sort();
    sent.sort();
    assert_eq!(got, sent, "every referral exactly once");

    // The backlog went in batches: B signed each call's receipts once, and
    // each receipt still verifies on its own, with its inclusion proof.
    let id = &sent[N / 2];
    wait_state(&ar, &alice, id, pb::ReferralState::Received).await;
    let out = net.a.ctl(&["receipt", "export", id]).await.unwrap();
    assert!(out.success, "{}", out.stderr);
    let line = out.stdout.lines().find(|l| l.contains("prison-b")).unwrap();
    let mut receipt: serde_json::Value = serde_json::from_str(line).unwrap();
    assert!(
        receipt["batch"].is_string(),
        "not signed in a batch: {line}"
    );
    let file = net.a.dir.path().join("batched.jsonl");
    let path = file.to_str().unwrap().to_owned();
    let verify = |text: String| {
        std::fs::write(&file, text).unwrap();
        let a = &net.a;
        let path = path.clone();
        async move { a.ctl(&["receipt", "verify", &path]).await }
    };
    let ok = verify(line.to_owned()).await.unwrap();
    assert!(ok.success, "{} {}", ok.stdout, ok.stderr);
    assert!(ok.stdout.contains("VALID  delivery receipt by prison-b"));
    // Moved to another place in its batch, or with one sibling changed, or
    // without its proof, it proves nothing.
    use base64::Engine;
    use prost::Message;
    let b64 = base64::engine::general_purpose::STANDARD;
    let proof = pb::BatchProof::decode(
        b64.decode(receipt["batch"].as_str().unwrap())
            .unwrap()
            .as_slice(),
    )
    .unwrap();
    assert!(proof.size >= 2 && !proof.path.is_empty(), "{proof:?}");
    let mut moved = proof.clone();
    moved.index = (proof.index + 1) % proof.size;
    let mut sibling = proof.clone();
    sibling.path[0][0] ^= 1;
    for forged in [moved, sibling] {
        receipt["batch"] = b64.encode(forged.encode_to_vec()).into();
        let bad = verify(receipt.to_string()).await.unwrap();
        assert!(!bad.success);
        assert!(bad.stdout.contains("INVALID"), "{}", bad.stdout);
    }
    receipt.as_object_mut().unwrap().remove("batch");
    let bad = verify(receipt.to_string()).await.unwrap();
    assert!(!bad.success);
    assert!(bad.stdout.contains("INVALID"), "{}", bad.stdout);
}

#[tokio::test]
async fn a_sender_killed_mid_burst_delivers_every_confirmed_referral_once() {
    let mut net = network(Backend::Sqlite).await;
    let alice = net.a.dev_token("case_manager", "alice").await.unwrap();
    let (mut ac, ar) = clients(&net.a).await;
    let consent = ac
        .record_consent(bearer(&alice, consent_request("c-1", "client-6")))
        .await
        .unwrap()
        .into_inner()
        .consent
        .unwrap();
    const WORKERS: usize = 8;
    let confirmed = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..WORKERS {
        let (mut ar, alice, cid, confirmed) = (
            ar.clone(),
            alice.clone(),
            consent.consent_id.clone(),
            confirmed.clone(),
        );
        tasks.spawn(async move {
            for i in (worker..1000).step_by(WORKERS) {
                let req = referral_request(
                    &format!("kill-{i}"),
                    &cid,
                    "prison-b",
                    pb::NeedArea::FunctionalReintegration,
                    pb::Service::Housing,
                );
                match ar.create_referral(bearer(&alice, req)).await {
                    Ok(r) => confirmed
                        .lock()
                        .unwrap()
                        .push(r.into_inner().referral.unwrap().referral_id),
                    Err(_) => return, // the node is gone
                }
            }
        });
    }
    wait_until("some referrals confirmed", Duration::from_secs(60), || {
        let n = confirmed.lock().unwrap().len();
        async move { (n >= 200).then_some(()) }
    })
    .await
    .unwrap();
    net.a.kill().await.unwrap();
    while tasks.join_next().await.is_some() {}
    let mut confirmed = confirmed.lock().unwrap().clone();
    net.a.restart().await.unwrap();
    let bob = net.b.dev_token("case_manager", "bob").await.unwrap();
    let (_, br) = clients(&net.b).await;
    let got = wait_until(
        "every confirmed referral at B",
        Duration::from_secs(120),
        || {
            let (mut br, bob, want) = (br.clone(), bob.clone(), confirmed.clone());
            async move {
                let all = all_ids(&mut br, &bob).await?;
                want.iter().all(|id| all.contains(id)).then_some(all)
            }
        },
    )
    .await
    .unwrap();
    let mut unique = got.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), got.len(), "a referral arrived twice");
    confirmed.sort();
    // Beyond the confirmed ones, at most the calls in flight at the kill
    // (committed, answer lost; a retry with the same request_id finds them).
    let unconfirmed = got
        .iter()
        .filter(|id| confirmed.binary_search(id).is_err())
        .count();
    assert!(
        unconfirmed <= WORKERS,
        "{unconfirmed} unconfirmed referrals arrived"
    );
}

#[tokio::test]
async fn peer_policy_is_enforced_at_both_ends() {
    let net = network(Backend::Sqlite).await;
    let alice = net.a.dev_token("case_manager", "alice").await.unwrap();
    let (mut ac, mut ar) = clients(&net.a).await;
    let consent = ac
        .record_consent(bearer(&alice, consent_request("c-1", "client-8")))
        .await
        .unwrap()
        .into_inner()
        .consent
        .unwrap();
    // Back to the default for C: the narrative is refused at the sender.
    let shown = net
        .a
        .ctl_json(&["peer", "policy", "health-c", "--deny-narrative"])
        .await
        .unwrap();
    assert!(
        !shown["data_categories"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "needs_narrative")
    );
    let e = ar
        .create_referral(bearer(
            &alice,
            referral_request(
                "p-1",
                &consent.consent_id,
                "health-c",
                pb::NeedArea::MentalHealth,
                pb::Service::TraumaPtsd,
            ),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(
        e.message().starts_with("summary.needs_narrative") && e.message().contains("policy"),
        "{}",
        e.message()
    );
    // A allows it again, but C's own policy for A refuses it: the receiver
    // refuses, and the referral fails at A with C's reason.
    assert!(
        net.a
            .ctl(&["peer", "policy", "health-c", "--allow-narrative"])
            .await
            .unwrap()
            .success
    );
    assert!(
        net.c
            .ctl(&["peer", "policy", "ngo-a", "--deny-narrative"])
            .await
            .unwrap()
            .success
    );
    let r = ar
        .create_referral(bearer(
            &alice,
            referral_request(
                "p-2",
                &consent.consent_id,
                "health-c",
                pb::NeedArea::MentalHealth,
                pb::Service::TraumaPtsd,
            ),
        ))
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    let failed = wait_state(&ar, &alice, &r.referral_id, pb::ReferralState::Failed).await;
    let last = failed.history.last().unwrap();
    assert_eq!(
        last.failure_reason,
        pb::FailureReason::RefusedByReceiver as i32
    );
    assert!(last.text.contains("needs_narrative"), "{}", last.text);
    // Need areas can be narrowed per peer.
    assert!(
        net.a
            .ctl(&[
                "peer",
                "policy",
                "health-c",
                "--need-areas",
                "mental_health"
            ])
            .await
            .unwrap()
            .success
    );
    let e = ar
        .create_referral(bearer(
            &alice,
            referral_request(
                "p-3",
                &consent.consent_id,
                "health-c",
                pb::NeedArea::FunctionalReintegration,
                pb::Service::Housing,
            ),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().starts_with("need_areas"), "{}", e.message());
    let out = net.a.ctl(&["peer", "policy", "nobody-x"]).await.unwrap();
    assert!(!out.success);
}

#[tokio::test]
async fn an_expired_consent_purges_at_every_recipient() {
    let net = network(Backend::Sqlite).await;
    let alice = net.a.dev_token("case_manager", "alice").await.unwrap();
    let (mut ac, ar) = clients(&net.a).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut req = consent_request("c-short", "client-12");
    // Recipients receive the end as a whole day (rounded down), so a consent
    // must reach a midnight UTC to be used at all: it ends at the next one.
    // (the one after when the next is less than a minute away).
    let mut midnight = now - now % 86_400_000 + 86_400_000;
    if midnight - now < 60_000 {
        midnight += 86_400_000;
    }
    req.terms.as_mut().unwrap().valid_until = Some(exitnet_proto::Timestamp {
        seconds: midnight / 1000,
        nanos: 0,
    });
    let consent = ac
        .record_consent(bearer(&alice, req))
        .await
        .unwrap()
        .into_inner()
        .consent
        .unwrap();
    let mut ar2 = ar.clone();
    let r = ar2
        .create_referral(bearer(
            &alice,
            referral_request(
                "e-1",
                &consent.consent_id,
                "prison-b",
                pb::NeedArea::FunctionalReintegration,
                pb::Service::Housing,
            ),
        ))
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    wait_state(&ar, &alice, &r.referral_id, pb::ReferralState::Received).await;
    // The consent ends (its end moved to a moment ago at the sender, rather
    // than waiting for midnight); no one withdraws anything: the scheduler
    // finds the expiry.
    {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&net.a.database_url())
            .await
            .unwrap();
        sqlx::query("UPDATE consents SET valid_until = $1 WHERE consent_id = $2")
            .bind(now - 1000)
            .bind(&consent.consent_id)
            .execute(&mut c)
            .await
            .unwrap();
    }
    let purged = wait_until("the expiry purge", Duration::from_secs(60), || {
        let (mut ar, alice, id) = (ar.clone(), alice.clone(), r.referral_id.clone());
        async move {
            let got = ar
                .get_referral(bearer(&alice, pb::GetReferralRequest { referral_id: id }))
                .await
                .ok()?
                .into_inner()
                .referral?;
            (got.purge_status == pb::PurgeStatus::Done as i32).then_some(got)
        }
    })
    .await
    .unwrap();
    assert_eq!(purged.state, pb::ReferralState::Withdrawn as i32);
    let bob = net.b.dev_token("case_manager", "bob").await.unwrap();
    let (_, mut br) = clients(&net.b).await;
    assert!(get(&mut br, &bob, &r.referral_id).await.summary.is_none());
}

#[tokio::test]
async fn the_happy_path_from_the_command_line() {
    let net = network(Backend::Sqlite).await;
    let alice = net.a.dev_token("case_manager", "alice").await.unwrap();
    let bob = net.b.dev_token("case_manager", "bob").await.unwrap();
    let run = |node: &NodeProcess, token: &str, args: Vec<String>| {
        let mut full = vec!["--output".to_string(), "json".into()];
        full.extend(args);
        full.extend([
            "--api".into(),
            node.api_addr.clone(),
            "--token".into(),
            token.to_owned(),
        ]);
        let out = std::process::Command::new(exitnet_tests::binary("exitnetctl").unwrap())
            .args(&full)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{full:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let consent = run(
        &net.a,
        &alice,
        s(&[
            "consent",
            "record",
            "--subject",
            "client-cli",
            "--recipient",
            "prison-b",
            "--need-area",
            "functional_reintegration",
            "--field",
            "age_band,needs_narrative",
        ]),
    );
    let consent_id = consent["consent_id"].as_str().unwrap().to_owned();
    let made = run(
        &net.a,
        &alice,
        s(&[
            "referral",
            "create",
            "--consent",
            &consent_id,
            "--to",
            "prison-b",
            "--need-area",
            "functional_reintegration",
            "--service",
            "housing",
            "--urgency",
            "soon",
            "--age-band",
            "25_34",
            "--narrative",
            "Housing after release.",
        ]),
    );
    let id = made["referral_id"].as_str().unwrap().to_owned();
    let (_, ar) = clients(&net.a).await;
    wait_state(&ar, &alice, &id, pb::ReferralState::Received).await;
    let inbox = run(&net.b, &bob, s(&["referral", "list", "--inbound"]));
    assert_eq!(inbox[0]["referral_id"], id.as_str());
    assert_eq!(
        inbox[0]["summary"]["needs_narrative"],
        "Housing after release."
    );
    for step in ["accept", "start"] {
        run(&net.b, &bob, s(&["referral", step, &id]));
    }
    run(
        &net.b,
        &bob,
        s(&[
            "referral",
            "complete",
            &id,
            "--reintegration",
            "substantial",
            "--delivered",
            "--note",
            "Flat found.",
        ]),
    );
    wait_state(&ar, &alice, &id, pb::ReferralState::Completed).await;
    let shown = run(&net.a, &alice, s(&["referral", "show", &id]));
    let states: Vec<&str> = shown["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        [
            "requested",
            "received",
            "accepted",
            "in_progress",
            "completed"
        ]
    );
    run(&net.a, &alice, s(&["consent", "withdraw", &consent_id]));
    wait_until("the purge receipt", Duration::from_secs(30), || async {
        let v = run(&net.a, &alice, s(&["referral", "show", &id]));
        (v["purge_status"] == "done").then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn watching_referrals_shows_each_change_to_those_who_may_see_it() {
    let net = network(Backend::Sqlite).await;
    let alice = net.a.dev_token("case_manager", "alice").await.unwrap();
    let mallory = net.a.dev_token("case_manager", "mallory").await.unwrap();
    let (mut ac, mut ar) = clients(&net.a).await;
    let consent = ac
        .record_consent(bearer(&alice, consent_request("c-w", "client-w")))
        .await
        .unwrap()
        .into_inner()
        .consent
        .unwrap();
    let mut watch = ar
        .clone()
        .watch_referrals(bearer(&alice, pb::WatchReferralsRequest {}))
        .await
        .unwrap()
        .into_inner();
    let mut other = ar
        .clone()
        .watch_referrals(bearer(&mallory, pb::WatchReferralsRequest {}))
        .await
        .unwrap()
        .into_inner();
    let r = ar
        .create_referral(bearer(
            &alice,
            referral_request(
                "w-1",
                &consent.consent_id,
                "prison-b",
                pb::NeedArea::FunctionalReintegration,
                pb::Service::Housing,
            ),
        ))
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    let mut seen = Vec::new();
    while !seen.contains(&(pb::ReferralState::Received as i32)) {
        let msg = tokio::time::timeout(Duration::from_secs(30), watch.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let got = msg.referral.unwrap();
        assert_eq!(got.referral_id, r.referral_id);
        seen.push(got.state);
    }
    assert_eq!(seen.first(), Some(&(pb::ReferralState::Requested as i32)));
    // Another case manager's watch shows nothing of Alice's referral.
    let quiet = tokio::time::timeout(Duration::from_millis(500), other.message()).await;
    assert!(quiet.is_err(), "mallory saw {quiet:?}");
}

#[tokio::test]
async fn suspension_holds_referrals_and_supervisors_reassign() {
    let net = network(Backend::Sqlite).await;
    let alice = net.a.dev_token("case_manager", "alice").await.unwrap();
    let sys = net.a.dev_token("system", "agency-crm").await.unwrap();
    let sue = net.a.dev_token("supervisor", "sue").await.unwrap();
    let carol = net.a.dev_token("case_manager", "carol").await.unwrap();
    let (mut ac, mut ar) = clients(&net.a).await;
    let consent = ac
        .record_consent(bearer(&alice, consent_request("c-s", "client-s")))
        .await
        .unwrap()
        .into_inner()
        .consent
        .unwrap();

    // While B is suspended, a referral to it is refused at creation …
    assert!(
        net.a
            .ctl(&["peer", "suspend", "prison-b"])
            .await
            .unwrap()
            .success
    );
    let req = |id: &str| {
        referral_request(
            id,
            &consent.consent_id,
            "prison-b",
            pb::NeedArea::FunctionalReintegration,
            pb::Service::Housing,
        )
    };
    let e = ar
        .create_referral(bearer(&alice, req("s-0")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    // … and so it is while B has suspended us (B told us so).
    assert!(
        net.a
            .ctl(&["peer", "resume", "prison-b"])
            .await
            .unwrap()
            .success
    );
    net.a
        .wait_peer_state("prison-b", "active", Some("active"))
        .await
        .unwrap();
    assert!(
        net.b
            .ctl(&["peer", "suspend", "ngo-a"])
            .await
            .unwrap()
            .success
    );
    net.a
        .wait_peer_state("prison-b", "active", Some("suspended"))
        .await
        .unwrap();
    let e = ar
        .create_referral(bearer(&alice, req("s-1")))
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::FailedPrecondition,
        "B suspended us: nothing new goes out"
    );
    assert!(
        net.b
            .ctl(&["peer", "resume", "ngo-a"])
            .await
            .unwrap()
            .success
    );
    net.a
        .wait_peer_state("prison-b", "active", Some("active"))
        .await
        .unwrap();
    // A system acting for Alice creates one; the history names who did it.
    let mut r = bearer(&sys, req("s-2"));
    r.metadata_mut()
        .insert("x-exitnet-on-behalf-of", "alice".parse().unwrap());
    let made = ar
        .create_referral(r)
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    assert_eq!(made.history[0].actor, "agency-crm (system) for alice");
    assert_eq!(made.owner, "alice");
    let got = wait_state(&ar, &alice, &made.referral_id, pb::ReferralState::Received).await;
    // The receiver's history entries carry no actor of ours; ours are not sent.
    let bob = net.b.dev_token("case_manager", "bob").await.unwrap();
    let (_, mut br) = clients(&net.b).await;
    let at_b = get(&mut br, &bob, &made.referral_id).await;
    assert!(
        at_b.history.iter().all(|h| !h.actor.contains("alice")),
        "{:?}",
        at_b.history
    );
    assert_eq!(got.state, pb::ReferralState::Received as i32);

    // Reassigning: supervisors only.
    let e = ar
        .reassign_referral(bearer(
            &alice,
            pb::ReassignReferralRequest {
                referral_id: made.referral_id.clone(),
                owner: "carol".into(),
                team: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = ar
        .get_referral(bearer(
            &carol,
            pb::GetReferralRequest {
                referral_id: made.referral_id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let moved = ar
        .reassign_referral(bearer(
            &sue,
            pb::ReassignReferralRequest {
                referral_id: made.referral_id.clone(),
                owner: "carol".into(),
                team: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    assert_eq!(moved.owner, "carol");
    get(&mut ar, &carol, &made.referral_id).await;
    let e = ar
        .get_referral(bearer(
            &alice,
            pb::GetReferralRequest {
                referral_id: made.referral_id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
}
