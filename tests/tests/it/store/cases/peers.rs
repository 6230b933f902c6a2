//! Invitations, joins, peers and their keys, notices from peers, the node's settings.

use super::*;

pub async fn meta_values_are_kept(s: Arc<dyn Store>) {
    assert_eq!(s.meta_get("org_id").await.unwrap(), None);
    assert_eq!(s.meta_init("org_id", "ngo-a").await.unwrap(), "ngo-a");
    // A second initialisation keeps the first value.
    assert_eq!(s.meta_init("org_id", "other").await.unwrap(), "ngo-a");
    s.meta_set("digest", "1").await.unwrap();
    s.meta_set("digest", "2").await.unwrap();
    assert_eq!(s.meta_get("digest").await.unwrap().as_deref(), Some("2"));
}

/// The lookups every call makes (peer by key, settings) may be answered
/// from memory (SQLite); whatever wrote the rows, the next lookup sees it.
pub async fn lookups_see_every_change_at_once(s: Arc<dyn Store>) {
    let by_key = |fp: &'static str| {
        let s = s.clone();
        async move { s.find_peer_by_key(fp, NOW).await.unwrap() }
    };
    // Unknown keys and unset settings, looked up (and remembered) first.
    assert!(by_key("fp-b").await.is_none());
    assert!(by_key("fp-c").await.is_none());
    assert_eq!(s.meta_get("policy:prison-b").await.unwrap(), None);
    s.insert_peer(&new_peer("prison-b", "fp-b", Awaiting::Local))
        .await
        .unwrap();
    assert_eq!(by_key("fp-b").await.unwrap().state, PeerState::Pending);
    s.create_invitation(&invitation("inv", b"hash", NOW + 1000))
        .await
        .unwrap();
    let joined = new_peer("health-c", "fp-c", Awaiting::Local);
    assert_eq!(
        s.accept_join("inv", b"hash", &joined).await.unwrap(),
        Ok(())
    );
    assert_eq!(by_key("fp-c").await.unwrap().org_id, org("health-c"));
    let approve = PeerUpdate {
        state: Some(PeerState::Active),
        awaiting: Some(Awaiting::None),
        remote_state: Some(PeerState::Active),
        now_ms: NOW + 1,
        ..Default::default()
    };
    assert!(s.update_peer(&org("prison-b"), &approve).await.unwrap());
    let p = by_key("fp-b").await.unwrap();
    assert!(p.exchange_allowed());
    // The peer tells us it suspended: its next call is refused.
    let suspended = PeerUpdate {
        remote_state: Some(PeerState::Suspended),
        now_ms: NOW + 2,
        ..Default::default()
    };
    assert!(
        s.apply_notice_once(&org("prison-b"), "n-suspend", &suspended)
            .await
            .unwrap()
    );
    let p = by_key("fp-b").await.unwrap();
    assert_eq!(p.remote_state, Some(PeerState::Suspended));
    assert!(!p.exchange_allowed());
    let p = s
        .peer_for_exchange(&org("prison-b"))
        .await
        .unwrap()
        .unwrap();
    assert!(!p.exchange_allowed());
    let resumed = PeerUpdate {
        remote_state: Some(PeerState::Active),
        now_ms: NOW + 2,
        ..Default::default()
    };
    assert!(
        s.apply_notice_once(&org("prison-b"), "n-resume", &resumed)
            .await
            .unwrap()
    );
    let p = s
        .peer_for_exchange(&org("prison-b"))
        .await
        .unwrap()
        .unwrap();
    assert!(p.exchange_allowed());
    assert!(s.peer_for_exchange(&org("nobody")).await.unwrap().is_none());
    s.touch_peer(&org("prison-b"), NOW + 3).await.unwrap();
    assert_eq!(by_key("fp-b").await.unwrap().last_seen_at_ms, Some(NOW + 3));
    s.meta_set("policy:prison-b", "01").await.unwrap();
    assert_eq!(
        s.meta_get("policy:prison-b").await.unwrap().as_deref(),
        Some("01")
    );
    s.enqueue_notices_with_meta(&[notice("n-1", "prison-b")], "policy:prison-b", "02")
        .await
        .unwrap();
    // The count of pending notices is for administrators, not for calls.
    let counted = s.get_peer(&org("prison-b")).await.unwrap().unwrap();
    assert_eq!(counted.pending_notices, 1);
    let uncounted = s
        .peer_for_exchange(&org("prison-b"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(uncounted.pending_notices, 0);
    assert_eq!(uncounted.last_seen_at_ms, Some(NOW + 3));
    assert_eq!(
        s.meta_get("policy:prison-b").await.unwrap().as_deref(),
        Some("02")
    );
    // Lookups at once from many tasks agree with the database.
    let mut many = tokio::task::JoinSet::new();
    for _ in 0..32 {
        many.spawn(by_key("fp-b"));
    }
    while let Some(p) = many.join_next().await {
        assert_eq!(p.unwrap().unwrap().last_seen_at_ms, Some(NOW + 3));
    }
}

pub async fn invitation_is_single_use_and_checked(s: Arc<dyn Store>) {
    s.create_invitation(&invitation("inv1", b"hash-1", NOW + 1000))
        .await
        .unwrap();
    s.create_invitation(&invitation("old", b"hash-2", NOW - 1))
        .await
        .unwrap();
    let p = new_peer("prison-b", "fp-b", Awaiting::Local);
    assert_eq!(
        s.accept_join("nope", b"hash-1", &p).await.unwrap(),
        Err(JoinRefusal::UnknownInvitation)
    );
    assert_eq!(
        s.accept_join("inv1", b"hash-X", &p).await.unwrap(),
        Err(JoinRefusal::WrongSecret)
    );
    assert_eq!(
        s.accept_join("old", b"hash-2", &p).await.unwrap(),
        Err(JoinRefusal::Expired)
    );
    // Nothing was recorded by the refusals.
    assert!(s.get_peer(&org("prison-b")).await.unwrap().is_none());
    assert_eq!(s.accept_join("inv1", b"hash-1", &p).await.unwrap(), Ok(()));
    let peer = s.get_peer(&org("prison-b")).await.unwrap().unwrap();
    assert_eq!(peer.state, PeerState::Pending);
    assert_eq!(peer.awaiting, Awaiting::Local);
    assert_eq!(peer.key_fingerprint, "fp-b");
    assert_eq!(peer.profile, profile("prison-b"));
    let other = new_peer("health-c", "fp-c", Awaiting::Local);
    assert_eq!(
        s.accept_join("inv1", b"hash-1", &other).await.unwrap(),
        Err(JoinRefusal::AlreadyUsed)
    );
}

pub async fn concurrent_joins_with_one_invitation_admit_one(s: Arc<dyn Store>) {
    s.create_invitation(&invitation("inv", b"h", NOW + 1000))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let p = new_peer(&format!("org-{i}"), &format!("fp-{i}"), Awaiting::Local);
            s.accept_join("inv", b"h", &p).await.unwrap()
        }));
    }
    let mut admitted = 0;
    for t in tasks {
        if t.await.unwrap().is_ok() {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 1);
    assert_eq!(s.list_peers().await.unwrap().len(), 1);
}

pub async fn a_live_peer_or_pinned_key_cannot_join_twice(s: Arc<dyn Store>) {
    s.insert_peer(&new_peer("prison-b", "fp-b", Awaiting::Remote))
        .await
        .unwrap();
    assert!(
        s.insert_peer(&new_peer("prison-b", "fp-x", Awaiting::Remote))
            .await
            .is_err()
    );
    s.create_invitation(&invitation("i1", b"h", NOW + 1000))
        .await
        .unwrap();
    s.create_invitation(&invitation("i2", b"h", NOW + 1000))
        .await
        .unwrap();
    assert_eq!(
        s.accept_join("i1", b"h", &new_peer("prison-b", "fp-y", Awaiting::Local))
            .await
            .unwrap(),
        Err(JoinRefusal::OrgAlreadyPeered)
    );
    assert_eq!(
        s.accept_join("i1", b"h", &new_peer("health-c", "fp-b", Awaiting::Local))
            .await
            .unwrap(),
        Err(JoinRefusal::KeyAlreadyPinned)
    );
    // After revocation the organisation may peer again, through a new invitation.
    let revoke = PeerUpdate {
        state: Some(PeerState::Revoked),
        now_ms: NOW,
        ..Default::default()
    };
    assert!(s.update_peer(&org("prison-b"), &revoke).await.unwrap());
    assert_eq!(
        s.accept_join("i2", b"h", &new_peer("prison-b", "fp-b", Awaiting::Local))
            .await
            .unwrap(),
        Ok(())
    );
    assert_eq!(
        s.get_peer(&org("prison-b")).await.unwrap().unwrap().state,
        PeerState::Pending
    );
}

pub async fn keys_expire_after_their_overlap(s: Arc<dyn Store>) {
    s.insert_peer(&new_peer("prison-b", "old", Awaiting::Remote))
        .await
        .unwrap();
    assert_eq!(
        s.find_peer_by_key("old", NOW)
            .await
            .unwrap()
            .unwrap()
            .org_id,
        org("prison-b")
    );
    let rotate = PeerUpdate {
        add_key: Some(PeerKey {
            added_at_ms: NOW + 1,
            ..key("new")
        }),
        retire_other_keys_at_ms: Some(NOW + 100),
        now_ms: NOW,
        ..Default::default()
    };
    assert!(s.update_peer(&org("prison-b"), &rotate).await.unwrap());
    assert!(s.find_peer_by_key("old", NOW + 99).await.unwrap().is_some());
    assert!(s.find_peer_by_key("new", NOW + 99).await.unwrap().is_some());
    assert!(
        s.find_peer_by_key("old", NOW + 100)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.find_peer_by_key("new", NOW + 100_000)
            .await
            .unwrap()
            .is_some()
    );
    let keys: Vec<String> = s
        .peer_keys(&org("prison-b"), NOW + 200)
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.fingerprint)
        .collect();
    assert_eq!(keys, vec!["new".to_string()]);
    assert_eq!(
        s.get_peer(&org("prison-b"))
            .await
            .unwrap()
            .unwrap()
            .key_fingerprint,
        "new"
    );
    assert!(s.find_peer_by_key("unknown", NOW).await.unwrap().is_none());
}

pub async fn updates_respect_the_expected_state(s: Arc<dyn Store>) {
    s.insert_peer(&new_peer("prison-b", "fp", Awaiting::Local))
        .await
        .unwrap();
    let approve = PeerUpdate {
        expected_state: Some(PeerState::Pending),
        state: Some(PeerState::Active),
        awaiting: Some(Awaiting::None),
        notices: vec![notice("n-approve", "prison-b")],
        now_ms: NOW + 5,
        ..Default::default()
    };
    assert!(s.update_peer(&org("prison-b"), &approve).await.unwrap());
    // The same decision again finds the state changed, and writes nothing,
    // not even its notice.
    let again = PeerUpdate {
        notices: vec![notice("n-again", "prison-b")],
        ..approve.clone()
    };
    assert!(!s.update_peer(&org("prison-b"), &again).await.unwrap());
    let p = s.get_peer(&org("prison-b")).await.unwrap().unwrap();
    assert_eq!(
        (p.state, p.awaiting, p.updated_at_ms, p.pending_notices),
        (PeerState::Active, Awaiting::None, NOW + 5, 1)
    );
    assert!(
        !s.update_peer(&org("nobody"), &PeerUpdate::default())
            .await
            .unwrap()
    );
}

pub async fn notices_apply_once(s: Arc<dyn Store>) {
    s.insert_peer(&new_peer("prison-b", "fp", Awaiting::Remote))
        .await
        .unwrap();
    let mut renamed = profile("prison-b");
    renamed.name = "Renamed".into();
    let u = PeerUpdate {
        remote_state: Some(PeerState::Suspended),
        profile: Some(renamed.clone()),
        now_ms: NOW,
        ..Default::default()
    };
    assert!(
        s.apply_notice_once(&org("prison-b"), "n1", &u)
            .await
            .unwrap()
    );
    let back = PeerUpdate {
        remote_state: Some(PeerState::Active),
        now_ms: NOW,
        ..Default::default()
    };
    // A redelivery of n1 with other content changes nothing.
    assert!(
        !s.apply_notice_once(&org("prison-b"), "n1", &back)
            .await
            .unwrap()
    );
    let p = s.get_peer(&org("prison-b")).await.unwrap().unwrap();
    assert_eq!(p.remote_state, Some(PeerState::Suspended));
    assert_eq!(p.profile.name, "Renamed");
}

pub async fn a_peering_ended_on_either_side_gives_way_keeping_referral_messages(s: Arc<dyn Store>) {
    let b = org("prison-b");
    s.insert_peer(&new_peer("prison-b", "fp-b", Awaiting::Remote))
        .await
        .unwrap();
    // Active here; the other side has revoked (told us through a notice).
    let ended_there = PeerUpdate {
        state: Some(PeerState::Active),
        awaiting: Some(Awaiting::None),
        remote_state: Some(PeerState::Revoked),
        now_ms: NOW + 1,
        ..Default::default()
    };
    assert!(s.update_peer(&b, &ended_there).await.unwrap());
    // Queued for it: a peering notice (plain) and a referral message (sealed).
    let mut message = notice("m-1", "prison-b");
    message.payload = [
        exitnet_node::protocol::messages::SEALED_PREFIX,
        b"opaque".as_slice(),
    ]
    .concat();
    s.enqueue_notices(&[notice("n-1", "prison-b"), message])
        .await
        .unwrap();
    // A new join (with a new key) replaces the ended peering.
    let mut again = new_peer("prison-b", "fp-b2", Awaiting::Remote);
    again.now_ms = NOW + 10;
    s.insert_peer(&again).await.unwrap();
    let p = s.get_peer(&b).await.unwrap().unwrap();
    assert_eq!(
        (
            p.state,
            p.awaiting,
            p.remote_state,
            p.key_fingerprint.as_str()
        ),
        (
            PeerState::Pending,
            Awaiting::Remote,
            Some(PeerState::Pending),
            "fp-b2"
        )
    );
    assert_eq!(p.created_at_ms, NOW + 10);
    assert!(
        s.find_peer_by_key("fp-b", NOW + 10)
            .await
            .unwrap()
            .is_none()
    );
    // The referral message waits for the new peering; the old notice is gone.
    let queued: Vec<String> = s
        .undelivered_notices_for(&b, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.notice_id)
        .collect();
    assert_eq!(queued, ["m-1"]);
    // A live peering is not replaced.
    let e = s
        .insert_peer(&new_peer("prison-b", "fp-b3", Awaiting::Remote))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("already recorded"), "{e}");
    // Nor through an invitation at the inviter's end.
    s.create_invitation(&invitation("i9", b"h", NOW + 1000))
        .await
        .unwrap();
    assert_eq!(
        s.accept_join("i9", b"h", &new_peer("prison-b", "fp-b4", Awaiting::Local))
            .await
            .unwrap(),
        Err(JoinRefusal::OrgAlreadyPeered)
    );
}
