//! Issue 17, item 4: two recipients of one client's referrals cannot join
//! their records. Everything each receives is compared field by field: the
//! only equal values are code-list values, the sender's ID and whole days.

use exitnet_proto::pb;
use exitnet_tests::fixtures::{clients, peer_with, start, wait_state};
use exitnet_tests::{Backend, NodeProcess, bearer};
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// Free text in the consent that must reach no recipient.
const PURPOSE_MARKER: &str = "purpose-for-client-Q7x9";
const STATUTE_MARKER: &str = "statute-case-2026-4711";

/// Fields whose values come from public code lists (../shared/VOCABULARY.md):
/// equal at both recipients by design.
const CODE_FIELDS: &[&str] = &[
    "direction",
    "need_areas",
    "services",
    "urgency",
    "state",
    "purge_status",
    "summary.age_band",
    "summary.gender",
    "summary.setting",
    "summary.ideological_context",
    "summary.risk_level",
    "summary.security",
    "summary.contact_route",
    "terms.purposes",
    "terms.data_categories",
    "terms.need_areas",
    "terms.legal_basis.kind",
    "terms.restrictions",
];

fn ts(t: &Option<exitnet_proto::Timestamp>) -> String {
    t.as_ref()
        .map(|t| format!("{}.{:09}", t.seconds, t.nanos))
        .unwrap_or_default()
}

/// Every field of a referral as one recipient sees it, by path.
fn fields(r: &pb::Referral) -> BTreeMap<String, String> {
    let mut f = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        f.insert(k.to_owned(), v);
    };
    put("referral_id", r.referral_id.clone());
    put("direction", r.direction.to_string());
    put("peer_org", r.peer_org.clone());
    put("consent_id", r.consent_id.clone());
    put("subject_pseudonym", r.subject_pseudonym.clone());
    put("need_areas", format!("{:?}", r.need_areas));
    put("services", format!("{:?}", r.services));
    put("urgency", r.urgency.to_string());
    put("state", r.state.to_string());
    put("purge_status", r.purge_status.to_string());
    put("purged_at", ts(&r.purged_at));
    put("owner", r.owner.clone());
    put("created_at", ts(&r.created_at));
    put("updated_at", ts(&r.updated_at));
    let s = r.summary.clone().unwrap_or_default();
    put("summary.age_band", s.age_band.to_string());
    put("summary.gender", s.gender.to_string());
    put("summary.languages", s.languages.join(","));
    put("summary.setting", s.setting.to_string());
    put(
        "summary.ideological_context",
        s.ideological_context.to_string(),
    );
    put("summary.risk_level", s.risk_level.to_string());
    put("summary.security", format!("{:?}", s.security));
    put("summary.needs_narrative", s.needs_narrative.clone());
    put("summary.contact_route", format!("{:?}", s.contact_route));
    let t = r.terms.clone().unwrap_or_default();
    put("terms.recipients", t.recipients.join(","));
    put("terms.purposes", format!("{:?}", t.purposes));
    put("terms.purpose_text", t.purpose_text.clone());
    put("terms.data_categories", format!("{:?}", t.data_categories));
    put("terms.need_areas", format!("{:?}", t.need_areas));
    let lb = t.legal_basis.clone().unwrap_or_default();
    put("terms.legal_basis.kind", lb.kind.to_string());
    put("terms.legal_basis.statute", lb.statute.clone());
    put("terms.restrictions", format!("{:?}", t.restrictions));
    put("terms.valid_from", ts(&t.valid_from));
    put("terms.valid_until", ts(&t.valid_until));
    for (i, h) in r.history.iter().enumerate() {
        put(&format!("history.{i}.state"), h.state.to_string());
        put(&format!("history.{i}.at"), ts(&h.at));
        put(&format!("history.{i}.by_org"), h.by_org.clone());
        put(
            &format!("history.{i}.decline_reason"),
            h.decline_reason.to_string(),
        );
        put(
            &format!("history.{i}.failure_reason"),
            h.failure_reason.to_string(),
        );
        put(&format!("history.{i}.text"), h.text.clone());
        put(&format!("history.{i}.outcome"), format!("{:?}", h.outcome));
        put(&format!("history.{i}.actor"), h.actor.clone());
    }
    f
}

fn code_field(path: &str) -> bool {
    CODE_FIELDS.contains(&path)
        || ["state", "decline_reason", "failure_reason", "outcome"]
            .iter()
            .any(|c| path.starts_with("history.") && path.ends_with(&format!(".{c}")))
}

/// A time that says a day and nothing finer (`seconds.nanos`).
fn whole_day(v: &str) -> bool {
    v.split_once('.').is_some_and(|(s, n)| {
        s.parse::<i64>().is_ok_and(|s| s % 86_400 == 0) && n.chars().all(|c| c == '0')
    })
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The IDs of the referral messages a receiver has had from the sender (it
/// issued a receipt for each; peering and audit notices are not about a client).
async fn seen_message_ids(n: &NodeProcess) -> Vec<String> {
    let url = n.database_url();
    let q = "SELECT message_id FROM receipts WHERE counterpart = 'ngo-a' ORDER BY message_id";
    if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let ids = sqlx::query_scalar(q).fetch_all(&pool).await.unwrap();
        pool.close().await;
        ids
    } else {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        let ids = sqlx::query_scalar(q).fetch_all(&pool).await.unwrap();
        pool.close().await;
        ids
    }
}

async fn two_recipients_cannot_link_a_client(backend: Backend) {
    let a = start("ngo-a", backend).await;
    let b = start("prison-b", backend).await;
    let c = start("health-c", backend).await;
    peer_with(&a, &b).await;
    peer_with(&a, &c).await;
    let alice = a.dev_token("case_manager", "alice").await.unwrap();
    let (mut ac, mut ar) = clients(&a).await;

    // One consent, with every value a recipient could match on: times to the
    // millisecond, a purpose and a statute in free text.
    let now = now_secs();
    let mut req = exitnet_tests::fixtures::consent_request("link-1", "client-link");
    let terms = req.terms.as_mut().unwrap();
    terms.purposes.push(pb::Purpose::Other as i32);
    terms.purpose_text = PURPOSE_MARKER.into();
    terms.legal_basis = Some(pb::LegalBasis {
        kind: pb::LegalBasisKind::Statute as i32,
        statute: STATUTE_MARKER.into(),
    });
    terms.valid_from = Some(exitnet_proto::Timestamp {
        seconds: now - 3600,
        nanos: 123_000_000,
    });
    let real_until = now + 200 * 86_400 + 4321;
    terms.valid_until = Some(exitnet_proto::Timestamp {
        seconds: real_until,
        nanos: 456_000_000,
    });
    let consent = ac
        .record_consent(bearer(&alice, req))
        .await
        .unwrap()
        .into_inner()
        .consent
        .unwrap()
        .consent_id;

    // A referral to each, one after the other (so each receiver's own clock
    // readings differ), with the same coded summary; the narrative is what
    // the case manager writes for each recipient.
    let mut seen = Vec::new();
    for (n, to, narrative) in [
        (&b, "prison-b", "Weekly probation contact; housing first."),
        (
            &c,
            "health-c",
            "Trauma history; prefers a female counsellor.",
        ),
    ] {
        let mut r = exitnet_tests::fixtures::referral_request(
            &format!("link-{to}"),
            &consent,
            to,
            pb::NeedArea::MentalHealth,
            pb::Service::TraumaPtsd,
        );
        let summary = r.summary.as_mut().unwrap();
        summary.needs_narrative = narrative.into();
        let id = ar
            .create_referral(bearer(&alice, r))
            .await
            .unwrap()
            .into_inner()
            .referral
            .unwrap()
            .referral_id;
        let (_, nr) = clients(n).await;
        let sue = n.dev_token("supervisor", "sue").await.unwrap();
        wait_state(&nr, &sue, &id, pb::ReferralState::Received).await;
        // Each receiver accepts it (its history grows by a step).
        let worker = n
            .dev_token("case_manager", &format!("worker-{to}"))
            .await
            .unwrap();
        nr.clone()
            .accept_referral(bearer(
                &worker,
                pb::AcceptReferralRequest {
                    referral_id: id.clone(),
                },
            ))
            .await
            .unwrap();
        let got = wait_state(&nr, &sue, &id, pb::ReferralState::Accepted).await;
        seen.push(got);
    }

    let (fb, fc) = (fields(&seen[0]), fields(&seen[1]));
    assert_eq!(fb.keys().collect::<Vec<_>>(), fc.keys().collect::<Vec<_>>());
    let mut equal = Vec::new();
    for (k, vb) in &fb {
        let vc = &fc[k];
        if vb != vc || vb.is_empty() || vb == "0" || vb == "None" {
            continue;
        }
        equal.push(k.clone());
        assert!(
            code_field(k) || vb == "ngo-a" || whole_day(vb),
            "{k} is the same at both recipients and is neither a code, the sender nor a day: {vb}"
        );
    }
    // The comparison compared something: codes, the sender and the dates.
    for k in [
        "peer_org",
        "terms.purposes",
        "terms.valid_from",
        "terms.valid_until",
        "summary.risk_level",
    ] {
        assert!(equal.contains(&k.to_owned()), "{k} not compared: {equal:?}");
    }
    // What identifies the client or the referral differs.
    for k in [
        "referral_id",
        "subject_pseudonym",
        "created_at",
        "history.0.at",
    ] {
        assert_ne!(fb[k], fc[k], "{k}");
    }
    // No free text of the consent, at either.
    for f in [&fb, &fc] {
        let all = format!("{f:?}");
        assert!(!all.contains(PURPOSE_MARKER) && !all.contains(STATUTE_MARKER));
        // The coarse end is the day the consent ends, never later.
        let until: i64 = f["terms.valid_until"]
            .split('.')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(until, real_until - real_until % 86_400);
        let from: i64 = f["terms.valid_from"]
            .split('.')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(from, (now - 3600) - (now - 3600) % 86_400);
    }
    // The messages' IDs: one each, random (UUID version 4: no time in them),
    // none shared.
    let (mb, mc) = (seen_message_ids(&b).await, seen_message_ids(&c).await);
    assert!(!mb.is_empty() && !mc.is_empty());
    for id in mb.iter().chain(&mc) {
        assert_eq!(id.as_bytes().get(14), Some(&b'4'), "{id} is not a UUIDv4");
    }
    assert!(mb.iter().all(|id| !mc.contains(id)));
}

#[tokio::test]
async fn two_recipients_cannot_link_a_client_on_sqlite() {
    two_recipients_cannot_link_a_client(Backend::Sqlite).await;
}

#[tokio::test]
async fn two_recipients_cannot_link_a_client_on_postgres() {
    two_recipients_cannot_link_a_client(Backend::Postgres).await;
}
