//! What peers send: offers and receipts, together and once.

use super::*;

pub async fn receipts_are_accepted_together_and_once(s: Arc<dyn Store>) {
    use exitnet_node::audit::AuditEntry;
    use exitnet_node::store::NewCreate;
    use exitnet_node::store::{AcceptedReceipt, ReceiptRecord, ReferralChange, ReferralEvent};
    s.insert_peer(&new_peer("prison-b", "fb", Awaiting::Remote))
        .await
        .unwrap();
    s.insert_consent(
        &consent("c1", "alice", None, "client-1", NOW),
        "k1",
        b"d1",
        &[],
    )
    .await
    .unwrap();
    let event = |state: &str| ReferralEvent {
        state: ReferralState::parse(state).unwrap(),
        at_ms: NOW,
        by_org: "ngo-a".into(),
        actor: String::new(),
        detail: Default::default(),
        content: None,
    };
    for id in ["r1", "r2", "r3"] {
        s.create_referral(&NewCreate {
            record: referral(id, "c1", "prison-b", "requested", NOW),
            request_key: format!("req-{id}"),
            request_digest: id.as_bytes().to_vec(),
            event: event("requested"),
            notice: notice(&format!("n-{id}"), "prison-b"),
            audit: vec![],
            wrapped_key: WRAPPED.to_vec(),
        })
        .await
        .unwrap();
    }
    let rows: Vec<i64> = s
        .undelivered_notices(10)
        .await
        .unwrap()
        .iter()
        .map(|n| n.id)
        .collect();
    assert_eq!(rows.len(), 3);
    let item = |i: usize, id: &str| AcceptedReceipt {
        notice_row: rows[i],
        receipt: ReceiptRecord {
            message_id: format!("m-{id}"),
            issued_by: "prison-b".into(),
            counterpart: "ngo-a".into(),
            referral_id: id.into(),
            kind: "RECEIPT_KIND_DELIVERY".into(),
            payload: id.as_bytes().to_vec(),
            signature: b"sig".to_vec(),
            batch: Some(format!("proof of {id}").into_bytes()),
            at_ms: NOW + 1,
        },
        change: Some((
            id.into(),
            ReferralChange {
                expected_states: vec![ReferralState::Requested],
                state: Some(ReferralState::Received),
                event: Some(event("received")),
                now_ms: NOW + 2,
                ..Default::default()
            },
        )),
        audit: vec![AuditEntry::peer(
            NOW,
            "prison-b",
            "receipt.delivery",
            "referral",
            id,
        )],
    };
    s.accept_receipts(&[item(0, "r1"), item(1, "r2")], NOW + 3)
        .await
        .unwrap();
    // A redelivered receipt (r1) with a new one (r3): only r3 is new.
    s.accept_receipts(&[item(0, "r1"), item(2, "r3")], NOW + 3)
        .await
        .unwrap();
    // And an empty batch is nothing.
    s.accept_receipts(&[], NOW + 3).await.unwrap();
    for id in ["r1", "r2", "r3"] {
        let r = s.get_referral(id).await.unwrap().unwrap();
        assert_eq!(r.state, ReferralState::Received, "{id}");
        let states: Vec<&str> = s
            .referral_history(id)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.state.as_str())
            .collect();
        assert_eq!(states, ["requested", "received"], "{id}");
        let kept = s.receipts_for(id).await.unwrap();
        assert_eq!(kept.len(), 1, "{id}");
        // A batch's inclusion proof is kept with its receipt.
        assert_eq!(kept[0].batch, Some(format!("proof of {id}").into_bytes()));
        let recorded = s
            .audit_for_objects(&[id.to_string()])
            .await
            .unwrap()
            .into_iter()
            .filter(|a| a.entry.action == "receipt.delivery")
            .count();
        assert_eq!(recorded, 1, "{id}: one audit record per receipt");
    }
    assert!(s.undelivered_notices(10).await.unwrap().is_empty());
    assert_eq!(
        s.get_peer(&org("prison-b"))
            .await
            .unwrap()
            .unwrap()
            .pending_notices,
        0
    );
}

pub async fn offers_are_received_together_and_once(s: Arc<dyn Store>) {
    use exitnet_node::audit::AuditEntry;
    use exitnet_node::error::Error;
    use exitnet_node::store::{NewOffer, ReceiptRecord, ReferralEvent};
    s.insert_peer(&new_peer("ngo-a", "fa", Awaiting::Remote))
        .await
        .unwrap();
    let offer = |msg: &str, id: &str, payload: &[u8]| {
        let mut record = referral(id, "c-remote", "ngo-a", "requested", NOW);
        record.outbound = false;
        record.consent_id = None;
        record.owner = String::new();
        record.key_id = format!("referral:{id}");
        NewOffer {
            receipt: ReceiptRecord {
                message_id: msg.into(),
                issued_by: "prison-b".into(),
                counterpart: "ngo-a".into(),
                referral_id: id.into(),
                kind: "RECEIPT_KIND_DELIVERY".into(),
                payload: payload.to_vec(),
                signature: b"sig".to_vec(),
                batch: None,
                at_ms: NOW,
            },
            record,
            event: ReferralEvent {
                state: ReferralState::Requested,
                at_ms: NOW,
                by_org: "ngo-a".into(),
                actor: String::new(),
                detail: Default::default(),
                content: None,
            },
            wrapped_key: Some(format!("wrapped-{id}").into_bytes()),
            audit: vec![AuditEntry::peer(
                NOW,
                "ngo-a",
                "referral.receive",
                "referral",
                id,
            )],
        }
    };
    let first = s
        .receive_offers(&[
            offer("m1", "r1", b"p1"),
            offer("m2", "r2", b"p2"),
            offer("m3", "r3", b"p3"),
        ])
        .await
        .unwrap();
    let payloads: Vec<Vec<u8>> = first.into_iter().map(|r| r.unwrap().payload).collect();
    assert_eq!(payloads, [b"p1".to_vec(), b"p2".to_vec(), b"p3".to_vec()]);
    // A repeat of m1 (answered with the receipt stored the first time),
    // a new offer, an offer reusing r2's ID under a new message (refused,
    // and nothing of it kept), and another new one.
    let second = s
        .receive_offers(&[
            offer("m1", "r1", b"p1-again"),
            offer("m4", "r4", b"p4"),
            offer("m5", "r2", b"p5"),
            offer("m6", "r6", b"p6"),
        ])
        .await
        .unwrap();
    let mut second = second.into_iter();
    assert_eq!(second.next().unwrap().unwrap().payload, b"p1");
    assert_eq!(second.next().unwrap().unwrap().payload, b"p4");
    assert!(matches!(
        second.next().unwrap(),
        Err(Error::AlreadyExists(m)) if m.contains("referral_id")
    ));
    assert_eq!(second.next().unwrap().unwrap().payload, b"p6");
    for id in ["r1", "r2", "r3", "r4", "r6"] {
        let r = s.get_referral(id).await.unwrap().unwrap();
        assert!(!r.outbound, "{id}");
        assert_eq!(s.referral_history(id).await.unwrap().len(), 1, "{id}");
        assert_eq!(s.receipts_for(id).await.unwrap().len(), 1, "{id}");
        assert_eq!(
            s.data_key(&format!("referral:{id}"), b"other", NOW)
                .await
                .unwrap(),
            format!("wrapped-{id}").into_bytes(),
            "{id}: its own data key, stored with it"
        );
        let received = s
            .audit_for_objects(&[id.to_string()])
            .await
            .unwrap()
            .into_iter()
            .filter(|a| a.entry.action == "referral.receive")
            .count();
        assert_eq!(received, 1, "{id}");
    }
    assert_eq!(s.receipts_for("r2").await.unwrap()[0].payload, b"p2");
    assert!(s.receive_offers(&[]).await.unwrap().is_empty());
}
