//! Referrals across real nodes, the whole loop: consent, referral, delivery,
//! acceptance, outcome and withdrawal, through the API and the command line.

use exitnet_proto::pb;
use exitnet_tests::fixtures::{
    NARRATIVE, clients, consent_request, get, inbound, network, referral_request, wait_state,
};
use exitnet_tests::{Backend, NodeProcess, bearer, wait_until};
use std::time::Duration;
use tonic::Code;

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
        let report = n.admin().await.unwrap().verify_audit(false).await.unwrap();
        assert!(report.ok, "{report:?}");
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
