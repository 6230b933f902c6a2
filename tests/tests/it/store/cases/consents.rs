//! Consents, and what the scheduler finds to purge.

use super::*;

pub(super) fn consent(
    id: &str,
    owner: &str,
    team: Option<&str>,
    subject: &str,
    at: i64,
) -> exitnet_node::domain::consent::Consent {
    use exitnet_node::domain::consent::{Consent, ConsentTerms};
    use exitnet_node::domain::{CollectionMethod, LegalBasisKind, NeedArea, Purpose};
    Consent {
        consent_id: id.into(),
        subject_ref: subject.into(),
        terms: ConsentTerms {
            recipients: vec![org("prison-b")],
            purposes: vec![Purpose::ExitSupport],
            purpose_text: String::new(),
            data_categories: vec![],
            need_areas: vec![NeedArea::MentalHealth],
            legal_basis: LegalBasisKind::Consent,
            statute: String::new(),
            restrictions: vec![],
            valid_from_ms: NOW,
            valid_until_ms: NOW + 1_000_000,
        },
        collection_method: CollectionMethod::Written,
        witness: String::new(),
        owner: owner.into(),
        team: team.map(str::to_owned),
        recorded_by: owner.into(),
        recorded_at_ms: at,
        withdrawn_at_ms: None,
    }
}

pub async fn consents_are_idempotent_scoped_and_paged(s: Arc<dyn Store>) {
    use exitnet_node::store::ListScope;
    let first = s
        .insert_consent(
            &consent("c1", "alice", Some("east"), "client-1", NOW),
            "req-1",
            b"d1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(first.consent_id, "c1");
    // A retry with the same request key returns the first consent, not a new one.
    let retry = s
        .insert_consent(
            &consent("c1-retry", "alice", Some("east"), "client-1", NOW + 5),
            "req-1",
            b"d1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(retry.consent_id, "c1");
    // The same key for other content is an error; another owner may use the same key.
    assert!(
        s.insert_consent(
            &consent("cx", "alice", Some("east"), "client-9", NOW),
            "req-1",
            b"d9",
            &[]
        )
        .await
        .is_err()
    );
    s.insert_consent(
        &consent("c2", "bob", None, "client-2", NOW + 1),
        "req-1",
        b"d2",
        &[],
    )
    .await
    .unwrap();
    s.insert_consent(
        &consent("c3", "carol", Some("east"), "client-3", NOW + 2),
        "req-3",
        b"d3",
        &[],
    )
    .await
    .unwrap();
    s.insert_consent(
        &consent("c4", "alice", Some("east"), "client-1", NOW + 3),
        "req-4",
        b"d4",
        &[],
    )
    .await
    .unwrap();
    let ids = |v: Vec<exitnet_node::domain::consent::Consent>| {
        v.into_iter().map(|c| c.consent_id).collect::<Vec<_>>()
    };
    let alice = ListScope::Owner {
        subject: "alice".into(),
        team: Some("east".into()),
    };
    assert_eq!(
        ids(s.list_consents(&alice, None, None, 10).await.unwrap()),
        ["c4", "c3", "c1"]
    );
    let bob = ListScope::Owner {
        subject: "bob".into(),
        team: None,
    };
    assert_eq!(
        ids(s.list_consents(&bob, None, None, 10).await.unwrap()),
        ["c2"]
    );
    assert_eq!(
        ids(s
            .list_consents(&ListScope::All, Some("client-1"), None, 10)
            .await
            .unwrap()),
        ["c4", "c1"]
    );
    let page1 = s
        .list_consents(&ListScope::All, None, None, 2)
        .await
        .unwrap();
    let last = page1.last().unwrap();
    let cursor = (last.recorded_at_ms, last.consent_id.clone());
    assert_eq!(ids(page1), ["c4", "c3"]);
    assert_eq!(
        ids(s
            .list_consents(&ListScope::All, None, Some(&cursor), 10)
            .await
            .unwrap()),
        ["c2", "c1"]
    );
    let stored = s.get_consent("c1").await.unwrap().unwrap();
    assert_eq!(
        stored,
        consent("c1", "alice", Some("east"), "client-1", NOW)
    );
    assert!(s.withdraw_consent("c1", NOW + 9).await.unwrap());
    assert!(!s.withdraw_consent("c1", NOW + 10).await.unwrap());
    assert_eq!(
        s.get_consent("c1").await.unwrap().unwrap().withdrawn_at_ms,
        Some(NOW + 9)
    );
    assert!(s.get_consent("nope").await.unwrap().is_none());
}

pub async fn scheduler_finds_expired_consents_and_retention(s: Arc<dyn Store>) {
    use exitnet_node::store::{NewCreate, ReferralChange, ReferralEvent};
    s.insert_peer(&new_peer("prison-b", "fb", Awaiting::Remote))
        .await
        .unwrap();
    // c1 expires at NOW + 1_000_000 (see `consent`); c2 is withdrawn.
    s.insert_consent(
        &consent("c1", "alice", None, "client-1", NOW),
        "k1",
        b"d1",
        &[],
    )
    .await
    .unwrap();
    s.insert_consent(
        &consent("c2", "alice", None, "client-2", NOW),
        "k2",
        b"d2",
        &[],
    )
    .await
    .unwrap();
    let ev = ReferralEvent {
        state: ReferralState::Requested,
        at_ms: NOW,
        by_org: "ngo-a".into(),
        actor: "alice".into(),
        detail: Default::default(),
        content: None,
    };
    for (id, c, st, at) in [
        ("r1", "c1", "in_progress", NOW),
        ("r2", "c1", "completed", NOW),
        ("r3", "c2", "completed", NOW + 500),
        ("r4", "c2", "accepted", NOW),
    ] {
        s.create_referral(&NewCreate {
            record: referral(id, c, "prison-b", st, at),
            request_key: format!("req-{id}"),
            request_digest: id.as_bytes().to_vec(),
            event: ev.clone(),
            notice: notice(&format!("n-{id}"), "prison-b"),
            audit: vec![],
            wrapped_key: WRAPPED.to_vec(),
        })
        .await
        .unwrap();
    }
    assert!(s.withdraw_consent("c2", NOW + 10).await.unwrap());
    let ids = |v: Vec<exitnet_node::store::ReferralRecord>| {
        let mut v: Vec<String> = v.into_iter().map(|r| r.referral_id).collect();
        v.sort();
        v
    };
    // Not yet expired; then expired: c1's referrals, not the withdrawn c2's.
    assert!(
        s.referrals_with_expired_consent(NOW + 999_999)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        ids(s
            .referrals_with_expired_consent(NOW + 1_000_000)
            .await
            .unwrap()),
        ["r1", "r2"]
    );
    // Retention: closed (completed/declined/failed) before the cut-off, to that peer.
    assert_eq!(
        ids(s
            .closed_referrals_before(&org("prison-b"), NOW + 100)
            .await
            .unwrap()),
        ["r2"]
    );
    assert_eq!(
        ids(s
            .closed_referrals_before(&org("prison-b"), NOW + 600)
            .await
            .unwrap()),
        ["r2", "r3"]
    );
    assert!(
        s.closed_referrals_before(&org("health-c"), NOW + 600)
            .await
            .unwrap()
            .is_empty()
    );
    // Once a purge is pending, neither lists it again, and a second
    // (concurrent) withdrawal of the same referral does not apply.
    let pending = ReferralChange {
        expected_states: vec![ReferralState::Completed],
        expected_purge_status: Some(PurgeStatus::None),
        purge_status: Some(PurgeStatus::Pending),
        now_ms: NOW,
        ..Default::default()
    };
    assert!(s.change_referral("r2", &pending).await.unwrap());
    assert!(!s.change_referral("r2", &pending).await.unwrap());
    assert_eq!(
        ids(s
            .closed_referrals_before(&org("prison-b"), NOW + 600)
            .await
            .unwrap()),
        ["r3"]
    );
    assert_eq!(
        ids(s
            .referrals_with_expired_consent(NOW + 1_000_000)
            .await
            .unwrap()),
        ["r1"]
    );
}
