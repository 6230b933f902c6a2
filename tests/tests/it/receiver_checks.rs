//! What a receiving node checks for itself, whatever the sender checked:
//! hand-built, signed messages that skip the sender's checks.

use exitnet_node::identity::{NodeKey, context};
use exitnet_proto::pb;
use exitnet_tests::Backend;
use exitnet_tests::fixtures::{clients, in_a_year, inbound, network, send_raw};
use prost::Message;
use std::time::Duration;
use tonic::Code;

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
    let code = net.b.invite().await.unwrap();
    net.c.join(&code).await.unwrap();
    net.b
        .peer_action("health-c", pb::PeerAction::Approve)
        .await
        .unwrap();
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
        exitnet_node::protocol::messages::sign_for_sending(&a_key, queued.iter(), true).unwrap()
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
