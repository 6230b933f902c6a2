//! Purge leaves nothing readable: a case whose every free text and outcome
//! carries a marker goes to two recipients, is acted on (accepted, held,
//! started, completed with an outcome; declined; failed), then its consent
//! is withdrawn. Once the purge receipts are in, no marker is in any file of
//! any node's data directory (the SQLite database, its -wal and -shm, read
//! as raw bytes), in any row of any table of a PostgreSQL node, nor in a
//! node's log, and `GetReferral` shows no content at either end.
//! Recipients also purge by themselves: when the terms they hold end, and
//! after a short retention for what they declined or failed, which only the
//! one who closed it and supervisors see meanwhile.

use exitnet_proto::pb;
use exitnet_tests::fixtures::{clients, consent_request, peer_with, start, wait_state};
use exitnet_tests::{Backend, NodeProcess, NodeSpec, bearer, wait_until};
use sqlx::{Connection, Row};
use std::time::Duration;

/// The texts of one test run: each distinct, none found anywhere by chance.
struct Markers {
    nonce: String,
}

impl Markers {
    fn new() -> Self {
        Self {
            nonce: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
        }
    }

    fn m(&self, what: &str) -> String {
        format!("MK{}{what}", self.nonce)
    }

    /// Every marker written into the case.
    fn all(&self) -> Vec<String> {
        [
            "subject",
            "purpose",
            "narrative",
            "security",
            "hold",
            "note",
            "decline",
            "fail",
            "hold2",
        ]
        .iter()
        .map(|w| self.m(w))
        .collect()
    }
}

/// Whether any file under `dir` holds `text` (raw bytes).
pub(crate) fn file_holds(dir: &std::path::Path, text: &str) -> bool {
    !markers_in_files(dir, &[text.to_owned()]).is_empty()
}

/// The markers found in any file under `dir` (raw bytes).
fn markers_in_files(dir: &std::path::Path, markers: &[String]) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let Ok(bytes) = std::fs::read(&p) else {
                continue;
            };
            for m in markers {
                if bytes.windows(m.len()).any(|w| w == m.as_bytes()) {
                    found.push((p.display().to_string(), m.clone()));
                }
            }
        }
    }
    found
}

/// The markers found in any row of any table of a PostgreSQL database.
async fn markers_in_tables(url: &str, markers: &[String]) -> Vec<(String, String)> {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let tables: Vec<String> = sqlx::query(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get::<String, _>("table_name"))
    .collect();
    assert!(tables.iter().any(|t| t == "referral_events"), "{tables:?}");
    let mut found = Vec::new();
    for t in tables {
        // Bytes as text show as hex: look for both forms.
        let rows: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT t::text AS row FROM \"{t}\" t"
        )))
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>("row"))
        .collect();
        for row in rows {
            for m in markers {
                let hex: String = m.bytes().map(|b| format!("{b:02x}")).collect();
                if row.contains(m.as_str()) || row.contains(&hex) {
                    found.push((t.clone(), m.clone()));
                }
            }
        }
    }
    found
}

/// Where a marker is still held by `n`: its data directory's files, its
/// PostgreSQL tables, its log.
async fn markers_at(n: &NodeProcess, markers: &[String]) -> Vec<(String, String)> {
    let mut found = markers_in_files(&n.data_dir(), markers);
    if let Some(db) = &n.db {
        found.extend(markers_in_tables(&db.url, markers).await);
    }
    let log = n.log();
    for m in markers {
        if log.contains(m.as_str()) {
            found.push(("node.log".into(), m.clone()));
        }
    }
    found
}

/// Outbox rows of `n` that still hold a sealed message (case content the
/// master key opens): none once everything was delivered.
async fn sealed_payloads_left(n: &NodeProcess) -> i64 {
    let prefix = exitnet_node::protocol::messages::SEALED_PREFIX;
    count(
        n,
        "SELECT COUNT(*) AS n FROM peer_notices WHERE substr(payload, 1, 3) = $1",
        Some(prefix),
    )
    .await
}

/// Data keys `n` still holds: a purged referral's key, and a sender's
/// client key once none of the client's referrals keeps content, is gone,
/// so no copy of its ciphertext (a backup) opens again.
async fn data_keys_left(n: &NodeProcess) -> i64 {
    count(
        n,
        "SELECT COUNT(*) AS n FROM data_keys WHERE key_id <> 'node:pseudonym'",
        None,
    )
    .await
}

/// `sql` (a `COUNT(*) AS n`, with one bytes parameter or none) on `n`'s
/// database.
async fn count(n: &NodeProcess, sql: &'static str, arg: Option<&[u8]>) -> i64 {
    match &n.db {
        Some(db) => {
            let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
            let mut q = sqlx::query(sql);
            if let Some(a) = arg {
                q = q.bind(a);
            }
            q.fetch_one(&mut c).await.unwrap().get("n")
        }
        None => {
            let mut c = sqlx::SqliteConnection::connect(&n.database_url())
                .await
                .unwrap();
            let mut q = sqlx::query(sql);
            if let Some(a) = arg {
                q = q.bind(a);
            }
            q.fetch_one(&mut c).await.unwrap().get("n")
        }
    }
}

/// No text, no outcome, no summary: what a purged referral shows.
fn assert_no_content(r: &pb::Referral, markers: &[String], at: &str) {
    assert!(r.summary.is_none(), "{at}: summary after purge");
    for c in &r.history {
        assert!(c.text.is_empty(), "{at}: history text after purge: {c:?}");
        assert!(c.outcome.is_none(), "{at}: outcome after purge: {c:?}");
    }
    let shown = format!("{r:?}");
    for m in markers {
        assert!(!shown.contains(m.as_str()), "{at}: {m} shown after purge");
    }
}

async fn get(n: &NodeProcess, token: &str, id: &str) -> pb::Referral {
    let (_, mut r) = clients(n).await;
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

fn marked_consent(mk: &Markers) -> pb::RecordConsentRequest {
    let mut req = consent_request(&format!("c-{}", mk.nonce), &mk.m("subject"));
    let t = req.terms.as_mut().unwrap();
    t.purposes.push(pb::Purpose::Other as i32);
    t.purpose_text = mk.m("purpose");
    t.data_categories
        .push(pb::DataCategory::SecurityConsiderations as i32);
    req
}

fn marked_referral(mk: &Markers, id: &str, consent: &str, to: &str) -> pb::CreateReferralRequest {
    pb::CreateReferralRequest {
        request_id: id.into(),
        consent_id: consent.into(),
        recipient_org: to.into(),
        need_areas: vec![pb::NeedArea::FunctionalReintegration as i32],
        services: vec![pb::Service::Housing as i32],
        urgency: pb::Urgency::Soon as i32,
        summary: Some(pb::CaseSummary {
            age_band: pb::AgeBand::AgeBand2534 as i32,
            risk_level: pb::RiskLevel::Moderate as i32,
            needs_narrative: mk.m("narrative"),
            security: Some(pb::SecurityConsiderations {
                retaliation_risk: pb::RiskLevel::High as i32,
                note: mk.m("security"),
            }),
            ..Default::default()
        }),
    }
}

async fn create(n: &NodeProcess, token: &str, req: pb::CreateReferralRequest) -> String {
    let (_, mut r) = clients(n).await;
    r.create_referral(bearer(token, req))
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap()
        .referral_id
}

/// Waits until the referral has arrived at `n` (its receiver).
async fn arrived(n: &NodeProcess, token: &str, id: &str) {
    let (_, r) = clients(n).await;
    wait_state(&r, token, id, pb::ReferralState::Received).await;
}

async fn purge_leaves_nothing(backend: Backend) {
    let a = start("ngo-a", backend).await;
    let b = start("prison-b", backend).await;
    let c = start("health-c", backend).await;
    peer_with(&a, &b).await;
    peer_with(&a, &c).await;
    let mk = Markers::new();
    let markers = mk.all();
    let alice = a.dev_token("case_manager", "alice").await.unwrap();
    let bob = b.dev_token("case_manager", "bob").await.unwrap();
    let carol = c.dev_token("case_manager", "carol").await.unwrap();
    let (mut ac, ar) = clients(&a).await;
    let (_, mut br) = clients(&b).await;
    let (_, mut cr) = clients(&c).await;

    let consent = ac
        .record_consent(bearer(&alice, marked_consent(&mk)))
        .await
        .unwrap()
        .into_inner()
        .consent
        .unwrap()
        .consent_id;
    let done = create(
        &a,
        &alice,
        marked_referral(&mk, "p-1", &consent, "prison-b"),
    )
    .await;
    let held = create(
        &a,
        &alice,
        marked_referral(&mk, "p-2", &consent, "prison-b"),
    )
    .await;
    let declined = create(
        &a,
        &alice,
        marked_referral(&mk, "p-3", &consent, "health-c"),
    )
    .await;
    let failed = create(
        &a,
        &alice,
        marked_referral(&mk, "p-4", &consent, "health-c"),
    )
    .await;
    for id in [&done, &held] {
        arrived(&b, &bob, id).await;
    }
    for id in [&declined, &failed] {
        arrived(&c, &carol, id).await;
    }

    // Every text-bearing change the API has.
    let id = |s: &str| s.to_owned();
    br.accept_referral(bearer(
        &bob,
        pb::AcceptReferralRequest {
            referral_id: id(&done),
        },
    ))
    .await
    .unwrap();
    br.hold_referral(bearer(
        &bob,
        pb::HoldReferralRequest {
            referral_id: id(&done),
            text: mk.m("hold"),
        },
    ))
    .await
    .unwrap();
    br.start_referral(bearer(
        &bob,
        pb::StartReferralRequest {
            referral_id: id(&done),
        },
    ))
    .await
    .unwrap();
    br.complete_referral(bearer(
        &bob,
        pb::CompleteReferralRequest {
            referral_id: id(&done),
            outcome: Some(pb::Outcome {
                disengagement: pb::Progress::Substantial as i32,
                deradicalisation: pb::Progress::Some as i32,
                reintegration: pb::Progress::Substantial as i32,
                rehabilitation: pb::Progress::Some as i32,
                service_delivered: true,
                note: mk.m("note"),
            }),
        },
    ))
    .await
    .unwrap();
    br.accept_referral(bearer(
        &bob,
        pb::AcceptReferralRequest {
            referral_id: id(&held),
        },
    ))
    .await
    .unwrap();
    br.hold_referral(bearer(
        &bob,
        pb::HoldReferralRequest {
            referral_id: id(&held),
            text: mk.m("hold2"),
        },
    ))
    .await
    .unwrap();
    cr.decline_referral(bearer(
        &carol,
        pb::DeclineReferralRequest {
            referral_id: id(&declined),
            reason: pb::DeclineReason::OutsideMandate as i32,
            text: mk.m("decline"),
        },
    ))
    .await
    .unwrap();
    cr.accept_referral(bearer(
        &carol,
        pb::AcceptReferralRequest {
            referral_id: id(&failed),
        },
    ))
    .await
    .unwrap();
    cr.fail_referral(bearer(
        &carol,
        pb::FailReferralRequest {
            referral_id: id(&failed),
            reason: pb::FailureReason::ClientUnreachable as i32,
            text: mk.m("fail"),
        },
    ))
    .await
    .unwrap();
    wait_state(&ar, &alice, &done, pb::ReferralState::Completed).await;
    wait_state(&ar, &alice, &held, pb::ReferralState::OnHold).await;
    wait_state(&ar, &alice, &declined, pb::ReferralState::Declined).await;
    let seen = wait_state(&ar, &alice, &failed, pb::ReferralState::Failed).await;

    // Meanwhile each end shows what it holds (the test would see content).
    assert!(seen.history.iter().any(|h| h.text == mk.m("fail")));
    let at_a = get(&a, &alice, &done).await;
    let outcome = at_a.history.iter().find_map(|h| h.outcome.clone()).unwrap();
    assert_eq!(outcome.note, mk.m("note"));
    assert_eq!(outcome.disengagement, pb::Progress::Substantial as i32);
    let at_b = get(&b, &bob, &done).await;
    assert!(at_b.history.iter().any(|h| h.text == mk.m("hold")));
    assert_eq!(
        at_b.summary.as_ref().unwrap().needs_narrative,
        mk.m("narrative")
    );
    // Case content is sealed at rest: no text readable in any file or
    // table, only the client reference while the consent holds.
    for n in [&b, &c] {
        let found = markers_at(n, &markers).await;
        let unsealed: Vec<_> = found
            .iter()
            .filter(|(_, m)| *m != mk.m("purpose"))
            .collect();
        assert!(unsealed.is_empty(), "{}: {unsealed:?}", n.spec.org_id);
    }
    let at_sender = markers_at(&a, &markers).await;
    assert!(
        at_sender.iter().any(|(_, m)| *m == mk.m("subject")),
        "the scan finds what is there: {at_sender:?}"
    );

    // The client withdraws consent: every referral resting on it goes.
    ac.withdraw_consent(bearer(
        &alice,
        pb::WithdrawConsentRequest {
            consent_id: consent.clone(),
        },
    ))
    .await
    .unwrap();
    for r in [&done, &held, &declined, &failed] {
        wait_until("the purge receipt", Duration::from_secs(60), || {
            let (a, alice) = (&a, &alice);
            async move {
                (get(a, alice, r).await.purge_status == pb::PurgeStatus::Done as i32).then_some(())
            }
        })
        .await
        .unwrap();
    }

    // Nothing readable is left anywhere (the write-ahead log is truncated
    // after purges, perhaps a moment later: polled, not forced).
    for n in [&a, &b, &c] {
        let left = wait_until(
            &format!("no marker left at {}", n.spec.org_id),
            Duration::from_secs(30),
            || async {
                let found = markers_at(n, &markers).await;
                found.is_empty().then_some(())
            },
        )
        .await;
        if left.is_err() {
            panic!(
                "{} still holds: {:?}",
                n.spec.org_id,
                markers_at(n, &markers).await
            );
        }
    }
    // Delivered messages leave no payload behind (sealed under the master
    // key, which a purge does not destroy, they would still open).
    for n in [&a, &b, &c] {
        wait_until(
            "delivered payloads emptied",
            Duration::from_secs(30),
            || async { (sealed_payloads_left(n).await == 0).then_some(()) },
        )
        .await
        .unwrap();
    }
    // No data key is left at any end: the recipients' went with each
    // purge, the sender's (its client's) with the last referral under it.
    for n in [&a, &b, &c] {
        assert_eq!(
            data_keys_left(n).await,
            0,
            "{} keeps data keys",
            n.spec.org_id
        );
    }
    let sue_a = a.dev_token("supervisor", "sue").await.unwrap();
    let sue_b = b.dev_token("supervisor", "sue").await.unwrap();
    let sue_c = c.dev_token("supervisor", "sue").await.unwrap();
    for r in [&done, &held, &declined, &failed] {
        let seen = get(&a, &alice, r).await;
        assert_no_content(&seen, &markers, "sender");
        assert_no_content(&get(&a, &sue_a, r).await, &markers, "sender's supervisor");
        // The history keeps its codes.
        if *r == declined {
            assert!(
                seen.history
                    .iter()
                    .any(|h| h.decline_reason == pb::DeclineReason::OutsideMandate as i32)
            );
        }
    }
    for r in [&done, &held] {
        let seen = get(&b, &sue_b, r).await;
        assert_eq!(seen.purge_status, pb::PurgeStatus::Done as i32);
        assert_no_content(&seen, &markers, "prison-b");
    }
    for r in [&declined, &failed] {
        let seen = get(&c, &sue_c, r).await;
        assert_eq!(seen.purge_status, pb::PurgeStatus::Done as i32);
        assert_no_content(&seen, &markers, "health-c");
    }
    let (mut ac, _) = clients(&a).await;
    let kept = ac
        .get_consent(bearer(
            &alice,
            pb::GetConsentRequest {
                consent_id: consent.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .consent
        .unwrap();
    assert!(kept.subject_ref.is_empty(), "{kept:?}");
    assert!(kept.withdrawn_at.is_some());
    // Whoever gives the reference again (subject access) still finds it.
    let access = a
        .admin()
        .await
        .unwrap()
        .subject_access(&mk.m("subject"))
        .await
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&access).unwrap();
    assert_eq!(doc["consents"][0]["consent_id"], consent.as_str(), "{doc}");
    assert_eq!(doc["referrals"].as_array().unwrap().len(), 4, "{doc}");
    // Each referral with its state and the state of every step of its history.
    for r in doc["referrals"].as_array().unwrap() {
        assert!(r["state"].as_str().is_some_and(|s| !s.is_empty()), "{doc}");
        let history = r["history"].as_array().unwrap();
        assert!(!history.is_empty(), "{doc}");
        for h in history {
            assert!(h["state"].as_str().is_some_and(|s| !s.is_empty()), "{doc}");
        }
    }
}

#[tokio::test]
async fn purge_leaves_nothing_readable_on_sqlite() {
    purge_leaves_nothing(Backend::Sqlite).await;
}

#[tokio::test]
async fn purge_leaves_nothing_readable_on_postgres() {
    purge_leaves_nothing(Backend::Postgres).await;
}

/// The recipient purges when the terms it holds end, though the sender
/// (down) never tells it. Terms travel in whole days, so the end is moved
/// into the past in the recipient's database instead of waiting for it.
#[tokio::test]
async fn a_recipient_purges_by_itself_when_the_terms_end() {
    let mut a = start("ngo-a", Backend::Sqlite).await;
    let b = start("prison-b", Backend::Sqlite).await;
    peer_with(&a, &b).await;
    let mk = Markers::new();
    let alice = a.dev_token("case_manager", "alice").await.unwrap();
    let bob = b.dev_token("case_manager", "bob").await.unwrap();
    let (mut ac, _) = clients(&a).await;
    let consent = ac
        .record_consent(bearer(&alice, marked_consent(&mk)))
        .await
        .unwrap()
        .into_inner()
        .consent
        .unwrap()
        .consent_id;
    let r = create(
        &a,
        &alice,
        marked_referral(&mk, "e-1", &consent, "prison-b"),
    )
    .await;
    arrived(&b, &bob, &r).await;
    // The sender is gone: nobody will send a withdrawal.
    a.kill().await.unwrap();
    let mut db = sqlx::SqliteConnection::connect(&b.database_url())
        .await
        .unwrap();
    let held = get(&b, &bob, &r).await;
    let ends: i64 = sqlx::query("SELECT expires_at FROM referrals WHERE referral_id = $1")
        .bind(&r)
        .fetch_one(&mut db)
        .await
        .unwrap()
        .get("expires_at");
    let terms_end = held.terms.as_ref().unwrap().valid_until.unwrap();
    assert_eq!(
        ends,
        terms_end.seconds * 1000 + i64::from(terms_end.nanos) / 1_000_000
    );
    // The day comes.
    sqlx::query("UPDATE referrals SET expires_at = $1 WHERE referral_id = $2")
        .bind(ends - 400 * 86_400_000)
        .bind(&r)
        .execute(&mut db)
        .await
        .unwrap();
    drop(db);
    let purged = wait_until("the recipient's own purge", Duration::from_secs(60), || {
        let (b, bob, r) = (&b, &bob, &r);
        async move {
            let got = get(b, bob, r).await;
            (got.purge_status == pb::PurgeStatus::Done as i32).then_some(got)
        }
    })
    .await
    .unwrap();
    assert_no_content(&purged, &mk.all(), "recipient");
    assert_eq!(purged.state, pb::ReferralState::Received as i32);
    let audit = b.audit_records_of("referral.purge.expired").await.unwrap();
    assert!(audit.iter().any(|x| x.object_id == r), "{audit:?}");
    wait_until("no marker left", Duration::from_secs(30), || async {
        markers_in_files(&b.data_dir(), &mk.all())
            .is_empty()
            .then_some(())
    })
    .await
    .unwrap();
}

async fn token(n: &NodeProcess, role: &str, subject: &str, team: &str) -> String {
    let mut admin = n.admin().await.unwrap();
    admin
        .mint_dev_token(subject, role, team)
        .await
        .unwrap()
        .access_token
}

/// A referral declined (or failed) here shows its content only to the case
/// manager who closed it and supervisors, and is purged after
/// `federation.closed_inbound_retention_days`.
#[tokio::test]
async fn declined_referrals_are_hidden_then_purged() {
    let a = start("ngo-a", Backend::Sqlite).await;
    let mut c = NodeProcess::start(
        NodeSpec::new("health-c", Backend::Sqlite).with_toml("[auth]\nteam_claim = \"team\"\n"),
    )
    .await
    .unwrap();
    peer_with(&a, &c).await;
    let mk = Markers::new();
    let alice = a.dev_token("case_manager", "alice").await.unwrap();
    let (mut ac, _) = clients(&a).await;
    let consent = ac
        .record_consent(bearer(&alice, marked_consent(&mk)))
        .await
        .unwrap()
        .into_inner()
        .consent
        .unwrap()
        .consent_id;
    let r = create(
        &a,
        &alice,
        marked_referral(&mk, "d-1", &consent, "health-c"),
    )
    .await;
    let carol = token(&c, "case_manager", "carol", "east").await;
    let dave = token(&c, "case_manager", "dave", "east").await;
    let erin = token(&c, "case_manager", "erin", "west").await;
    let sue = c.dev_token("supervisor", "sue").await.unwrap();
    let auditor = c.dev_token("auditor", "dpo").await.unwrap();
    arrived(&c, &carol, &r).await;
    // In the intake queue every case manager sees it.
    assert!(get(&c, &dave, &r).await.summary.is_some());
    let (_, mut cr) = clients(&c).await;
    cr.decline_referral(bearer(
        &carol,
        pb::DeclineReferralRequest {
            referral_id: r.clone(),
            reason: pb::DeclineReason::NoCapacity as i32,
            text: mk.m("decline"),
        },
    ))
    .await
    .unwrap();
    let full = |x: &pb::Referral| {
        x.summary.is_some() && x.history.iter().any(|h| h.text == mk.m("decline"))
    };
    assert!(full(&get(&c, &carol, &r).await), "the one who declined");
    assert!(full(&get(&c, &sue, &r).await), "a supervisor");
    let team = get(&c, &dave, &r).await;
    assert!(team.summary.is_none() && !full(&team), "{team:?}");
    assert!(team.history.iter().all(|h| h.text.is_empty()));
    let other = cr
        .get_referral(bearer(
            &erin,
            pb::GetReferralRequest {
                referral_id: r.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(other.code(), tonic::Code::PermissionDenied);
    assert!(get(&c, &auditor, &r).await.summary.is_none());

    // Retention 0: purged at the next scheduler round, here, by itself.
    c.set_config("[federation]\nclosed_inbound_retention_days = 0\n")
        .unwrap();
    c.restart().await.unwrap();
    let purged = wait_until("the retention purge", Duration::from_secs(60), || {
        let (c, sue, r) = (&c, &sue, &r);
        async move {
            let got = get(c, sue, r).await;
            (got.purge_status == pb::PurgeStatus::Done as i32).then_some(got)
        }
    })
    .await
    .unwrap();
    assert_no_content(&purged, &mk.all(), "after the retention");
    assert!(
        purged
            .history
            .iter()
            .any(|h| h.decline_reason == pb::DeclineReason::NoCapacity as i32)
    );
    let audit = c.audit_records_of("referral.purge.closed").await.unwrap();
    assert!(audit.iter().any(|x| x.object_id == r), "{audit:?}");
}
