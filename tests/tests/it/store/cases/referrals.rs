//! Referrals: creates together and once, a client's data key.

use super::*;

pub(super) fn referral(
    id: &str,
    consent: &str,
    peer: &str,
    state: &str,
    updated: i64,
) -> exitnet_node::store::ReferralRecord {
    exitnet_node::store::ReferralRecord {
        referral_id: id.into(),
        outbound: true,
        peer_org: org(peer),
        owner: "alice".into(),
        team: None,
        consent_id: Some(consent.into()),
        pseudonym: "p".into(),
        need_areas: vec![NeedArea::MentalHealth],
        services: vec![],
        urgency: Urgency::Routine,
        key_id: "subject:x".into(),
        summary: Some(b"sealed".to_vec()),
        terms: vec![],
        state: ReferralState::parse(state).unwrap(),
        purge_status: PurgeStatus::None,
        purged_at_ms: None,
        created_at_ms: updated,
        updated_at_ms: updated,
        expires_at_ms: None,
    }
}

/// One outbound referral, `r1`, to `prison-b`.
pub async fn one_referral(s: &Arc<dyn Store>) {
    use exitnet_node::store::{NewCreate, ReferralEvent};
    s.insert_peer(&new_peer("prison-b", "fb", Awaiting::Remote))
        .await
        .unwrap();
    s.create_referral(&NewCreate {
        record: referral("r1", "c1", "prison-b", "requested", NOW),
        request_key: "req-r1".into(),
        request_digest: b"r1".to_vec(),
        event: ReferralEvent {
            state: ReferralState::Requested,
            at_ms: NOW,
            by_org: "ngo-a".into(),
            actor: "alice".into(),
            detail: Default::default(),
            content: None,
        },
        notice: notice("n-r1", "prison-b"),
        audit: vec![],
        wrapped_key: WRAPPED.to_vec(),
    })
    .await
    .unwrap();
}

/// A sender's data key is its client's: it stays while any referral
/// under it keeps content and goes with the last one's purge; a create
/// puts back the key it sealed under, and is refused (to be retried)
/// when another key took its place.
pub async fn a_clients_key_goes_with_its_last_referral(s: Arc<dyn Store>) {
    use exitnet_node::store::{NewCreate, ReferralChange, ReferralEvent};
    s.insert_peer(&new_peer("prison-b", "fb", Awaiting::Remote))
        .await
        .unwrap();
    let create = |id: &str, wrapped: &[u8]| NewCreate {
        record: referral(id, "c1", "prison-b", "requested", NOW),
        request_key: format!("req-{id}"),
        request_digest: id.as_bytes().to_vec(),
        event: ReferralEvent {
            state: ReferralState::Requested,
            at_ms: NOW,
            by_org: "ngo-a".into(),
            actor: "alice".into(),
            detail: Default::default(),
            content: None,
        },
        notice: notice(&format!("n-{id}"), "prison-b"),
        audit: vec![],
        wrapped_key: wrapped.to_vec(),
    };
    let purge = ReferralChange {
        expected_purge_status: Some(PurgeStatus::None),
        purge_status: Some(PurgeStatus::Pending),
        purge_summary: true,
        now_ms: NOW,
        ..Default::default()
    };
    // Stored with the referral although nobody stored it before.
    s.create_referrals(&[create("r1", WRAPPED), create("r2", WRAPPED)])
        .await
        .unwrap()
        .into_iter()
        .for_each(|r| assert!(r.is_ok(), "{r:?}"));
    assert_eq!(
        s.find_data_key("subject:x").await.unwrap().as_deref(),
        Some(WRAPPED)
    );
    assert!(s.change_referral("r1", &purge).await.unwrap());
    assert!(
        s.find_data_key("subject:x").await.unwrap().is_some(),
        "r2 keeps content under the key"
    );
    // Another key in its place: refused, nothing stored.
    let e = s
        .create_referral(&create("r3", b"other"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e}");
    assert!(s.get_referral("r3").await.unwrap().is_none());
    assert!(s.change_referral("r2", &purge).await.unwrap());
    assert!(
        s.find_data_key("subject:x").await.unwrap().is_none(),
        "the last purge destroys the client's key"
    );
    // A referral sealed under the key just released puts it back.
    s.create_referral(&create("r4", WRAPPED)).await.unwrap();
    assert_eq!(
        s.find_data_key("subject:x").await.unwrap().as_deref(),
        Some(WRAPPED)
    );
}

pub async fn creates_are_stored_together_and_once(s: Arc<dyn Store>) {
    use exitnet_node::audit::AuditEntry;
    use exitnet_node::error::Error;
    use exitnet_node::store::{NewCreate, ReferralEvent};
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
    let create = |id: &str, request: &str| NewCreate {
        record: referral(id, "c1", "prison-b", "requested", NOW),
        request_key: request.into(),
        request_digest: request.as_bytes().to_vec(),
        event: ReferralEvent {
            state: ReferralState::Requested,
            at_ms: NOW,
            by_org: "ngo-a".into(),
            actor: "alice".into(),
            detail: Default::default(),
            content: None,
        },
        notice: notice(&format!("n-{id}"), "prison-b"),
        audit: vec![AuditEntry::peer(
            NOW,
            "ngo-a",
            "referral.create",
            "referral",
            id,
        )],
        wrapped_key: WRAPPED.to_vec(),
    };
    let first = s
        .create_referrals(&[create("r1", "q1"), create("r2", "q2"), create("r3", "q3")])
        .await
        .unwrap();
    let ids: Vec<String> = first.into_iter().map(|r| r.unwrap().referral_id).collect();
    assert_eq!(ids, ["r1", "r2", "r3"]);
    // A retry of q1 (a new ID, the same request: the first referral), a
    // new one, an ID already taken under a new request (refused, nothing
    // kept), and another new one.
    let second = s
        .create_referrals(&[
            create("r1-retry", "q1"),
            create("r4", "q4"),
            create("r2", "q5"),
            create("r6", "q6"),
        ])
        .await
        .unwrap();
    let mut second = second.into_iter();
    assert_eq!(second.next().unwrap().unwrap().referral_id, "r1");
    assert_eq!(second.next().unwrap().unwrap().referral_id, "r4");
    assert!(matches!(
        second.next().unwrap(),
        Err(Error::AlreadyExists(_))
    ));
    assert_eq!(second.next().unwrap().unwrap().referral_id, "r6");
    assert!(s.get_referral("r1-retry").await.unwrap().is_none());
    for id in ["r1", "r2", "r3", "r4", "r6"] {
        assert!(s.get_referral(id).await.unwrap().unwrap().outbound, "{id}");
        assert_eq!(s.referral_history(id).await.unwrap().len(), 1, "{id}");
        let created = s
            .audit_for_objects(&[id.to_string()])
            .await
            .unwrap()
            .into_iter()
            .filter(|a| a.entry.action == "referral.create")
            .count();
        assert_eq!(created, 1, "{id}");
    }
    // One notice queued per new referral, in order.
    let queued: Vec<String> = s
        .undelivered_notices_for(&org("prison-b"), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.notice_id)
        .collect();
    assert_eq!(queued, ["n-r1", "n-r2", "n-r3", "n-r4", "n-r6"]);
    assert!(s.create_referrals(&[]).await.unwrap().is_empty());
    // The chain over the batched records holds.
    let (head, _) = s.audit_head().await.unwrap();
    assert_eq!(head, 5);
}
