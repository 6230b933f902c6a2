//! Policy at both ends: peer policies, consents that expire, suspended
//! peerings, and supervisors who reassign.

use exitnet_proto::pb;
use exitnet_tests::fixtures::{
    clients, consent_request, get, network, referral_request, set_narrative, wait_state,
};
use exitnet_tests::{Backend, bearer, wait_until};
use std::time::Duration;
use tonic::Code;

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
    set_narrative(&net.a, "health-c", true).await;
    set_narrative(&net.c, "ngo-a", false).await;
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
    let mut admin = net.a.admin().await.unwrap();
    let mut policy = admin
        .peer_policy("health-c")
        .await
        .unwrap()
        .policy
        .unwrap_or_default();
    policy.need_areas = vec![pb::NeedArea::MentalHealth as i32];
    admin.set_peer_policy("health-c", policy).await.unwrap();
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
    net.a
        .peer_action("prison-b", pb::PeerAction::Suspend)
        .await
        .unwrap();
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
    net.a
        .peer_action("prison-b", pb::PeerAction::Resume)
        .await
        .unwrap();
    net.a
        .wait_peer_state("prison-b", "active", Some("active"))
        .await
        .unwrap();
    net.b
        .peer_action("ngo-a", pb::PeerAction::Suspend)
        .await
        .unwrap();
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
    net.b
        .peer_action("ngo-a", pb::PeerAction::Resume)
        .await
        .unwrap();
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
