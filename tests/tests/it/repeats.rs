//! Exact repeats of every kind of signed notice are answered as the first
//! time, before any state rule: a peer that crashed after our commit and
//! before it stored our answer sends again and must get the same receipt or
//! witness, never a refusal that it would count as final.

use exitnet_node::identity::{NodeKey, context};
use exitnet_proto::pb;
use exitnet_tests::fixtures::{
    clients, created_referral, peer_with, recorded_consent, referral_request, send_raw, start,
    wait_state,
};
use exitnet_tests::{Backend, NodeProcess};
use prost::Message;
use std::time::Duration;
use tonic::Code;

fn key_of(n: &NodeProcess, fingerprint: &str) -> NodeKey {
    NodeKey::read(&n.data_dir().join("identity"), fingerprint).unwrap()
}

fn now() -> exitnet_proto::Timestamp {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    exitnet_proto::Timestamp {
        seconds: s,
        nanos: 0,
    }
}

fn message(from: &str, to: &str, body: pb::federation_message::Body) -> pb::FederationMessage {
    pb::FederationMessage {
        message_id: uuid::Uuid::now_v7().to_string(),
        sender_org: from.into(),
        recipient_org: to.into(),
        sent_at: Some(now()),
        body: Some(body),
    }
}

/// Sends `msg` twice; both answers must be the same receipt.
async fn twice(to: &NodeProcess, key: &NodeKey, msg: &pb::FederationMessage) -> pb::Receipt {
    let first = send_raw(to, key, msg).await.unwrap().receipt.unwrap();
    let again = send_raw(to, key, msg)
        .await
        .unwrap_or_else(|e| panic!("the repeat was refused: {e:?}"))
        .receipt
        .unwrap();
    assert_eq!(first, again, "a repeat got another answer");
    let r = pb::Receipt::decode(first.payload.as_slice()).unwrap();
    assert_eq!(r.message_id, msg.message_id);
    r
}

/// The audit records with `action` (and `needle` in them) at `n`.
async fn audit_count(n: &NodeProcess, action: &str, needle: &str) -> usize {
    n.audit_records_of(action)
        .await
        .unwrap()
        .iter()
        .filter(|r| {
            exitnetctl::audit::record_json(r)
                .to_string()
                .contains(needle)
        })
        .count()
}

#[tokio::test]
async fn every_kind_of_repeat_gets_the_first_answer() {
    let a = start("ngo-a", Backend::Sqlite).await;
    let b = start("prison-b", Backend::Sqlite).await;
    peer_with(&a, &b).await;
    let a_key = key_of(&a, &a.fingerprint().await.unwrap());
    let b_key = key_of(&b, &b.fingerprint().await.unwrap());
    let alice = a.dev_token("case_manager", "alice").await.unwrap();
    let (mut ac, mut ar) = clients(&a).await;
    let consent = recorded_consent(&a, &alice, "c-repeat", "client-1").await;
    let referral = created_referral(&a, &alice, "r-repeat", &consent, "prison-b").await;
    wait_state(&ar, &alice, &referral, pb::ReferralState::Received).await;

    // A status from B (signed with B's key), twice: the second finds the
    // referral already accepted, and is answered with the first receipt.
    let status = message(
        "prison-b",
        "ngo-a",
        pb::federation_message::Body::Status(pb::ReferralStatus {
            referral_id: referral.clone(),
            change: Some(pb::StateChange {
                state: pb::ReferralState::Accepted as i32,
                ..Default::default()
            }),
        }),
    );
    let r = twice(&a, &b_key, &status).await;
    assert_eq!(r.kind, pb::ReceiptKind::Delivery as i32);
    let got = wait_state(&ar, &alice, &referral, pb::ReferralState::Accepted).await;
    let accepted = got
        .history
        .iter()
        .filter(|e| e.state == pb::ReferralState::Accepted as i32)
        .count();
    assert_eq!(accepted, 1, "the repeat was applied again");
    // The same message ID with other content is refused, not answered.
    let mut reused = status.clone();
    reused.body = Some(pb::federation_message::Body::Status(pb::ReferralStatus {
        referral_id: referral.clone(),
        change: Some(pb::StateChange {
            state: pb::ReferralState::InProgress as i32,
            ..Default::default()
        }),
    }));
    let e = send_raw(&a, &b_key, &reused).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("message_id"), "{}", e.message());

    // A withdrawal from A, twice: one purge, one receipt.
    let withdrawal = message(
        "ngo-a",
        "prison-b",
        pb::federation_message::Body::Withdrawal(pb::ReferralWithdrawal {
            referral_id: referral.clone(),
            cause: pb::WithdrawalCause::SenderWithdrew as i32,
        }),
    );
    let r = twice(&b, &a_key, &withdrawal).await;
    assert_eq!(r.kind, pb::ReceiptKind::Purge as i32);
    assert_eq!(r.purge_outcome(), pb::PurgeOutcome::Purged);
    // A withdrawal of a referral B never held: the receipt says so, in its
    // signed content, rather than reading as a purge.
    let never_held = message(
        "ngo-a",
        "prison-b",
        pb::federation_message::Body::Withdrawal(pb::ReferralWithdrawal {
            referral_id: uuid::Uuid::new_v4().to_string(),
            cause: pb::WithdrawalCause::SenderWithdrew as i32,
        }),
    );
    let r = twice(&b, &a_key, &never_held).await;
    assert_eq!(r.kind, pb::ReceiptKind::Purge as i32);
    assert_eq!(r.purge_outcome(), pb::PurgeOutcome::NothingHeld);
    assert_eq!(audit_count(&b, "referral.purge", &referral).await, 1);

    // An offer, twice: one referral at B. Its terms then stop covering a
    // repeat (the referral is held already): still the first receipt.
    let offer = pb::ReferralOffer {
        referral_id: uuid::Uuid::new_v4().to_string(),
        subject_pseudonym: "0123456789abcdef0123456789abcdef".into(),
        need_areas: vec![pb::NeedArea::FunctionalReintegration as i32],
        services: vec![],
        urgency: pb::Urgency::Routine as i32,
        summary: Some(pb::CaseSummary::default()),
        terms: Some(pb::ConsentTerms {
            recipients: vec!["prison-b".into()],
            purposes: vec![pb::Purpose::ExitSupport as i32],
            need_areas: vec![pb::NeedArea::FunctionalReintegration as i32],
            legal_basis: Some(pb::LegalBasis {
                kind: pb::LegalBasisKind::Consent as i32,
                statute: String::new(),
            }),
            valid_from: Some(exitnet_proto::Timestamp {
                seconds: now().seconds - 60,
                nanos: 0,
            }),
            valid_until: Some(exitnet_proto::Timestamp {
                seconds: now().seconds + 86_400,
                nanos: 0,
            }),
            ..Default::default()
        }),
        consent_ref: "ref".into(),
    };
    let offered = message(
        "ngo-a",
        "prison-b",
        pb::federation_message::Body::Offer(offer.clone()),
    );
    twice(&b, &a_key, &offered).await;
    assert_eq!(
        audit_count(&b, "referral.receive", &offer.referral_id).await,
        1
    );

    // On the client API: a create retried after the consent was withdrawn
    // gets the referral it made, not a refusal; a new request is refused.
    ac.withdraw_consent(exitnet_tests::bearer(
        &alice,
        pb::WithdrawConsentRequest {
            consent_id: consent.clone(),
        },
    ))
    .await
    .unwrap();
    let request = referral_request(
        "r-repeat",
        &consent,
        "prison-b",
        pb::NeedArea::FunctionalReintegration,
        pb::Service::Housing,
    );
    let retried = ar
        .create_referral(exitnet_tests::bearer(&alice, request.clone()))
        .await
        .unwrap_or_else(|e| panic!("the retry was refused: {e:?}"))
        .into_inner()
        .referral
        .unwrap();
    assert_eq!(retried.referral_id, referral);
    let mut other = request;
    other.request_id = "r-repeat-2".into();
    let e = ar
        .create_referral(exitnet_tests::bearer(&alice, other))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // A checkpoint of A's, twice: the same witness, witnessed once.
    let cp = pb::AuditCheckpoint {
        org_id: "ngo-a".into(),
        seq: 1_000_000,
        head_sha256: vec![7; 32],
        at: Some(now()),
        key_fingerprint: a.fingerprint().await.unwrap(),
    }
    .encode_to_vec();
    let signed = pb::SignedCheckpoint {
        signature: a_key.sign_in(context::CHECKPOINT, &cp).unwrap(),
        payload: cp,
    };
    let pinned = vec![b.fingerprint().await.unwrap()];
    let mut client = exitnet_node::transport::client::connect(
        &b.federation_addr,
        Some(&a_key),
        pinned,
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let witness = || {
        let mut client = client.clone();
        let signed = signed.clone();
        async move {
            client
                .notify(pb::NotifyRequest {
                    notice_id: uuid::Uuid::now_v7().to_string(),
                    notice: Some(pb::notify_request::Notice::Checkpoint(signed)),
                })
                .await
                .unwrap()
                .into_inner()
                .witness
                .unwrap()
        }
    };
    let first = witness().await;
    let again = witness().await;
    assert_eq!(first, again, "a repeated checkpoint got another witness");
    assert_eq!(
        audit_count(&b, "checkpoint.witness", "1000000").await,
        1,
        "witnessed twice"
    );
    // Another head at the same position is a fork, refused.
    let fork = pb::AuditCheckpoint {
        org_id: "ngo-a".into(),
        seq: 1_000_000,
        head_sha256: vec![8; 32],
        at: Some(now()),
        key_fingerprint: a.fingerprint().await.unwrap(),
    }
    .encode_to_vec();
    let e = client
        .notify(pb::NotifyRequest {
            notice_id: uuid::Uuid::now_v7().to_string(),
            notice: Some(pb::notify_request::Notice::Checkpoint(
                pb::SignedCheckpoint {
                    signature: a_key.sign_in(context::CHECKPOINT, &fork).unwrap(),
                    payload: fork,
                },
            )),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
}
