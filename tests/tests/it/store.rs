//! One storage suite, written once, run against both backends.

use exitnet_node::config::DatabaseUrl;
use exitnet_node::store::Store;
use exitnet_tests::TestDatabase;
use std::sync::Arc;

async fn sqlite_store() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let store = exitnet_node::store::open(&DatabaseUrl::new(url))
        .await
        .unwrap();
    (dir, store)
}

async fn pg_store() -> (TestDatabase, Arc<dyn Store>) {
    let db = TestDatabase::create().await.unwrap();
    let store = exitnet_node::store::open(&DatabaseUrl::new(db.url.clone()))
        .await
        .unwrap();
    (db, store)
}

macro_rules! store_suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let (_dir, store) = super::sqlite_store().await;
                    assert_eq!(store.backend(), "sqlite");
                    super::cases::$name(store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let (_db, store) = super::pg_store().await;
                    assert_eq!(store.backend(), "postgres");
                    super::cases::$name(store).await;
                }
            )*
        }
    };
}

store_suite!(
    meta_values_are_kept,
    invitation_is_single_use_and_checked,
    concurrent_joins_with_one_invitation_admit_one,
    a_live_peer_or_pinned_key_cannot_join_twice,
    keys_expire_after_their_overlap,
    updates_respect_the_expected_state,
    notices_apply_once,
    outbox_keeps_order_and_counts,
    security_events_newest_first,
    consents_are_idempotent_scoped_and_paged,
    scheduler_finds_expired_consents_and_retention,
    concurrent_audit_appends_form_one_chain,
    receipts_are_accepted_together_and_once,
    offers_are_received_together_and_once,
    lookups_see_every_change_at_once,
    creates_are_stored_together_and_once,
    a_clients_key_goes_with_its_last_referral,
    a_peering_ended_on_either_side_gives_way_keeping_referral_messages,
);

/// A state or purge status this build does not know (a database written by
/// a newer release, or tampered with) makes reading the referral an error,
/// never a value taken for another.
mod unknown_values {
    use super::*;

    /// Changes every referral row behind the store's back.
    async fn tamper(url: &str, sql: &'static str) {
        if url.starts_with("sqlite:") {
            let pool = sqlx::SqlitePool::connect(url).await.unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
            pool.close().await;
        } else {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }

    async fn tamper_and_read(s: Arc<dyn Store>, url: &str) {
        super::cases::one_referral(&s).await;
        for sql in [
            "UPDATE referrals SET state = 'archived'",
            "UPDATE referrals SET state = 'accepted', purge_status = 'shredded'",
        ] {
            tamper(url, sql).await;
            let e = s.get_referral("r1").await.unwrap_err();
            assert_eq!(e.code(), tonic::Code::Internal, "{sql}");
            let listed = s
                .list_referrals(
                    &exitnet_node::store::ListScope::All,
                    &Default::default(),
                    None,
                    10,
                )
                .await;
            assert!(listed.is_err(), "{sql}");
        }
        tamper(url, "UPDATE referrals SET purge_status = 'none'").await;
        assert!(s.get_referral("r1").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn on_sqlite() {
        let (dir, s) = sqlite_store().await;
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        tamper_and_read(s, &url).await;
    }

    #[tokio::test]
    async fn on_postgres() {
        let (db, s) = pg_store().await;
        tamper_and_read(s, &db.url).await;
    }
}

mod cases {
    use exitnet_node::domain::{
        Awaiting, OrgId, OrgProfile, PeerState, PurgeStatus, ReferralState, Sector, Service,
    };
    use exitnet_node::store::{
        JoinRefusal, NewInvitation, NewNotice, NewPeer, PeerKey, PeerUpdate, SecurityEvent, Store,
    };
    use std::sync::Arc;

    const NOW: i64 = 1_800_000_000_000;
    /// The wrapped data key the test referrals are sealed under.
    const WRAPPED: &[u8] = b"wrapped-key";

    fn org(s: &str) -> OrgId {
        OrgId::parse("org", s).unwrap()
    }

    fn profile(id: &str) -> OrgProfile {
        OrgProfile {
            org_id: org(id),
            name: format!("Org {id}"),
            sector: Some(Sector::PrisonProbation),
            need_areas: vec![],
            services: vec![Service::Housing],
            languages: vec!["de".into()],
            settings: vec![],
            accepting_referrals: true,
            updated_at_ms: NOW,
        }
    }

    fn key(fp: &str) -> PeerKey {
        PeerKey {
            fingerprint: fp.into(),
            spki_der: fp.as_bytes().to_vec(),
            added_at_ms: NOW,
            valid_until_ms: None,
        }
    }

    fn new_peer(id: &str, fp: &str, awaiting: Awaiting) -> NewPeer {
        NewPeer {
            profile: profile(id),
            state: PeerState::Pending,
            awaiting,
            remote_state: Some(PeerState::Pending),
            endpoint: "127.0.0.1:7710".into(),
            key: key(fp),
            now_ms: NOW,
        }
    }

    fn invitation(id: &str, secret: &[u8], expires: i64) -> NewInvitation {
        NewInvitation {
            id: id.into(),
            secret_hash: secret.to_vec(),
            expires_at_ms: expires,
            note: String::new(),
            created_at_ms: NOW,
        }
    }

    fn notice(id: &str, to: &str) -> NewNotice {
        NewNotice {
            notice_id: id.into(),
            org_id: org(to),
            payload: id.as_bytes().to_vec(),
            present_key: None,
            now_ms: NOW,
        }
    }

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

    pub async fn outbox_keeps_order_and_counts(s: Arc<dyn Store>) {
        s.insert_peer(&new_peer("prison-b", "fb", Awaiting::Remote))
            .await
            .unwrap();
        s.insert_peer(&new_peer("health-c", "fc", Awaiting::Remote))
            .await
            .unwrap();
        s.enqueue_notices(&[
            notice("a1", "prison-b"),
            notice("c1", "health-c"),
            notice("a2", "prison-b"),
        ])
        .await
        .unwrap();
        let due = s.undelivered_notices(10).await.unwrap();
        let ids: Vec<&str> = due.iter().map(|n| n.notice_id.as_str()).collect();
        assert_eq!(ids, ["a1", "c1", "a2"]);
        assert_eq!(due[0].payload, b"a1".to_vec());
        s.notice_failed(due[0].id, NOW + 500, "unreachable")
            .await
            .unwrap();
        s.notice_failed(due[0].id, NOW + 900, "unreachable")
            .await
            .unwrap();
        let first = &s.undelivered_notices(1).await.unwrap()[0];
        assert_eq!((first.attempts, first.next_attempt_at_ms), (2, NOW + 900));
        s.notice_delivered(due[0].id, NOW).await.unwrap();
        s.notice_dropped(due[1].id, NOW, "peering ended")
            .await
            .unwrap();
        let left: Vec<String> = s
            .undelivered_notices(10)
            .await
            .unwrap()
            .into_iter()
            .map(|n| n.notice_id)
            .collect();
        assert_eq!(left, vec!["a2".to_string()]);
        assert_eq!(
            s.get_peer(&org("prison-b"))
                .await
                .unwrap()
                .unwrap()
                .pending_notices,
            1
        );
        assert_eq!(
            s.get_peer(&org("health-c"))
                .await
                .unwrap()
                .unwrap()
                .pending_notices,
            0
        );
    }

    pub async fn security_events_newest_first(s: Arc<dyn Store>) {
        for (i, reason) in ["unknown_key", "peer_suspended", "no_client_certificate"]
            .iter()
            .enumerate()
        {
            s.record_security_event(
                &SecurityEvent {
                    at_ms: NOW + i as i64,
                    surface: "federation".into(),
                    reason: (*reason).into(),
                    key_fingerprint: Some("fp".into()),
                    org_id: None,
                    remote_addr: Some("127.0.0.1:1".into()),
                    method: Some("Notify".into()),
                },
                1,
            )
            .await
            .unwrap();
        }
        let events = s.security_events(2).await.unwrap();
        let reasons: Vec<&str> = events.iter().map(|(e, _)| e.reason.as_str()).collect();
        assert_eq!(reasons, ["no_client_certificate", "peer_suspended"]);
        assert_eq!(events[0].0.org_id, None);
        // The same refusal again in the same minute, from another port of
        // the same host: counted in the first one's row.
        let again = SecurityEvent {
            at_ms: NOW,
            surface: "federation".into(),
            reason: "unknown_key".into(),
            key_fingerprint: Some("fp".into()),
            org_id: None,
            remote_addr: Some("127.0.0.1:2".into()),
            method: Some("Notify".into()),
        };
        assert_eq!(s.record_security_event(&again, 1).await.unwrap(), 2);
        // Repeats counted in memory are added as one number.
        assert_eq!(s.record_security_event(&again, 40).await.unwrap(), 42);
        let all = s.security_events(10).await.unwrap();
        assert_eq!(all.len(), 3);
        let (first, count) = all.iter().find(|(e, _)| e.reason == "unknown_key").unwrap();
        assert_eq!(*count, 42);
        assert_eq!(first.remote_addr.as_deref(), Some("127.0.0.1"));
        // A minute later: a row of its own.
        let later = SecurityEvent {
            at_ms: NOW + 60_000,
            ..again
        };
        assert_eq!(s.record_security_event(&later, 1).await.unwrap(), 1);
        // Pruned by age, then beyond the newest `keep`.
        assert_eq!(s.prune_security_events(NOW + 1, 100).await.unwrap(), 1);
        assert_eq!(s.prune_security_events(0, 2).await.unwrap(), 1);
        let left = s.security_events(10).await.unwrap();
        let reasons: Vec<&str> = left.iter().map(|(e, _)| e.reason.as_str()).collect();
        assert_eq!(reasons, ["unknown_key", "no_client_certificate"]);
    }

    fn consent(
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

    fn referral(
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
            need_areas: "mental_health".into(),
            services: String::new(),
            urgency: "routine".into(),
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
                detail: vec![],
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
                detail: vec![],
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
            detail: vec![],
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
                    detail: vec![],
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
                detail: vec![],
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
            detail: vec![],
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

    pub async fn concurrent_audit_appends_form_one_chain(s: Arc<dyn Store>) {
        use exitnet_node::audit::{AuditEntry, AuditFilter, GENESIS, record_hash};
        // Eight writers at once (as several replicas would be): one gapless chain.
        let mut tasks = Vec::new();
        for w in 0..8 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..10 {
                    let e =
                        AuditEntry::node(NOW, "ngo-a", "test.append", "test", &format!("w{w}-{i}"));
                    s.append_audit(&[e.clone(), e.about("test.second", "test", "x")])
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let (head, head_hash) = s.audit_head().await.unwrap();
        assert_eq!(head, 160);
        let all = s
            .list_audit(&AuditFilter::default(), 0, 1000)
            .await
            .unwrap();
        assert_eq!(all.len(), 160);
        let mut prev = GENESIS.to_vec();
        for (i, r) in all.iter().enumerate() {
            assert_eq!(r.seq, i as i64 + 1);
            assert_eq!(r.prev_hash, prev);
            assert_eq!(r.hash, record_hash(r.seq, &r.prev_hash, &r.entry));
            prev = r.hash.clone();
        }
        assert_eq!(head_hash, prev);
        // The two records of one append are adjacent.
        for pair in all.chunks(2) {
            assert_eq!(pair[0].entry.action, "test.append");
            assert_eq!(pair[1].entry.action, "test.second");
        }
        // Filters and paging.
        let f = AuditFilter {
            object_id: Some("w3-7".into()),
            ..AuditFilter::default()
        };
        let one = s.list_audit(&f, 0, 10).await.unwrap();
        assert_eq!(one.len(), 1);
        let page = s.list_audit(&AuditFilter::default(), 150, 5).await.unwrap();
        assert_eq!(
            page.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [151, 152, 153, 154, 155]
        );
        let about = s
            .audit_for_objects(&["w3-7".into(), "nothing".into()])
            .await
            .unwrap();
        assert_eq!(about.len(), 1);
    }

    pub async fn a_peering_ended_on_either_side_gives_way_keeping_referral_messages(
        s: Arc<dyn Store>,
    ) {
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
}
