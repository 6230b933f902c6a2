//! `exitnet-demo`: three organisations in one process on loopback, each
//! with its own SQLite database in a temporary directory, peered through the
//! real invitation and approval flow, playing one client's case end to end
//! over real mutual TLS. It prints each step so a person can follow it:
//! who acts, what the client agreed to, the outcome, the purge receipt and,
//! at the end, each node's audit trail checked against what its peers
//! witnessed. With `--keep-running` it prints `exitnetctl` commands that work
//! as printed from another terminal in the checkout (`hints`); the
//! integration test `demo` runs each of them.

mod audit;
pub mod hints;

use anyhow::{Context, bail};
use exitnet_node::app::Application;
use exitnet_node::app::Node;
use exitnet_node::app::Services;
use exitnet_node::auth::{Principal, Role};
use exitnet_node::config::Config;
use exitnet_node::consents::NewConsent;
use exitnet_node::domain::PeerAction;
use exitnet_node::domain::time::now_ms;
use exitnet_node::referrals::NewReferral;
use exitnet_proto::pb;
use prost::Message;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Org {
    pub label: &'static str,
    pub state: Arc<Node>,
    pub services: Services,
    pub api: std::net::SocketAddr,
    pub admin_socket: std::path::PathBuf,
}

fn say(step: &str, text: &str) {
    println!("\n── {step}\n{text}");
}

pub fn person(subject: &str) -> Principal {
    Principal {
        subject: subject.into(),
        role: Role::CaseManager,
        team: None,
        on_behalf_of: None,
        expires_at_ms: None,
    }
}

pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("the demo waited 30 s for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub async fn start(
    dir: &std::path::Path,
    id: &str,
    name: &str,
    sector: &str,
    extra: &[(&str, &str)],
    stop: &tokio::sync::watch::Receiver<bool>,
    label: &'static str,
) -> anyhow::Result<(Org, tokio::task::JoinHandle<anyhow::Result<()>>)> {
    let data = dir.join(id);
    let mut env: HashMap<String, String> = [
        ("EXITNET_DATA_DIR", data.display().to_string()),
        ("EXITNET_ORG__ID", id.into()),
        ("EXITNET_ORG__NAME", name.into()),
        ("EXITNET_ORG__SECTOR", sector.into()),
        ("EXITNET_API__LISTEN", "127.0.0.1:0".into()),
        ("EXITNET_FEDERATION__LISTEN", "127.0.0.1:0".into()),
        ("EXITNET_AUTH__MODE", "dev".into()),
        ("EXITNET_FEDERATION__RETRY_INITIAL_MS", "50".into()),
        ("EXITNET_FEDERATION__RETRY_MAX_MS", "1000".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (k, v) in extra {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    let config = Config::load(None, &env)?;
    let app = Application::build(config)
        .await
        .with_context(|| format!("starting {name}"))?;
    let org = Org {
        label,
        state: app.node(),
        services: app.services(),
        api: app.api_addr(),
        admin_socket: app.admin_socket().to_owned(),
    };
    let mut stop = stop.clone();
    let task = tokio::spawn(app.run_until_stopped(async move {
        let _ = stop.wait_for(|s| *s).await;
    }));
    Ok((org, task))
}

pub async fn peer_up(inviter: &Org, joiner: &Org) -> anyhow::Result<()> {
    let inv = inviter
        .services
        .peering
        .create_invitation(3600, None, format!("for {}", joiner.label))
        .await?;
    println!(
        "  {} creates an invitation: {}…",
        inviter.label,
        &inv.code[..48]
    );
    let peer = joiner.services.peering.join(&inv.code).await?;
    let code = exitnet_node::peering::verification_code(
        &joiner.state.fingerprint()?,
        &peer.key_fingerprint,
    );
    println!(
        "  {} joins with it; both administrators read the verification code {code} to each other",
        joiner.label
    );
    inviter
        .services
        .peering
        .decide(&joiner.state.org_id, PeerAction::Approve)
        .await?;
    wait_for("the peering to be active on both sides", || async {
        let a = inviter.state.store.get_peer(&joiner.state.org_id).await?;
        let b = joiner.state.store.get_peer(&inviter.state.org_id).await?;
        Ok(
            (a.is_some_and(|p| p.exchange_allowed()) && b.is_some_and(|p| p.exchange_allowed()))
                .then_some(()),
        )
    })
    .await?;
    // Both ends let the needs narrative travel between these two.
    let mut policy = exitnet_node::policy::PeerPolicy::default();
    policy
        .data_categories
        .push(exitnet_node::domain::DataCategory::NeedsNarrative);
    exitnet_node::policy::set_for_peer(inviter.state.store.as_ref(), &joiner.state.org_id, &policy)
        .await?;
    exitnet_node::policy::set_for_peer(joiner.state.store.as_ref(), &inviter.state.org_id, &policy)
        .await?;
    println!(
        "  {} approves: the two nodes now exchange referrals with each other and nobody else",
        inviter.label
    );
    println!(
        "  both administrators also let a client's needs, described in words, travel between them"
    );
    println!("  (by default only fields with fixed choices, such as age band and risk level, may)");
    Ok(())
}

fn state_of(r: &exitnet_node::store::ReferralRecord) -> String {
    r.state.as_str().replace('_', " ")
}

async fn wait_state(
    org: &Org,
    id: &str,
    want: &str,
) -> anyhow::Result<exitnet_node::store::ReferralRecord> {
    wait_for(&format!("the referral to be {want}"), || async {
        Ok(org
            .state
            .store
            .get_referral(id)
            .await?
            .filter(|r| r.state.as_str() == want))
    })
    .await
}

pub fn consent_request(id: &str, to: &str, area: pb::NeedArea) -> pb::RecordConsentRequest {
    let until = now_ms() / 1000 + 365 * 86400;
    pb::RecordConsentRequest {
        request_id: id.into(),
        subject_ref: "client-2026-117".into(),
        terms: Some(pb::ConsentTerms {
            recipients: vec![to.into()],
            purposes: vec![
                pb::Purpose::ExitSupport as i32,
                pb::Purpose::ServiceProvision as i32,
            ],
            data_categories: vec![
                pb::DataCategory::AgeBand as i32,
                pb::DataCategory::RiskLevel as i32,
                pb::DataCategory::NeedsNarrative as i32,
            ],
            need_areas: vec![area as i32],
            legal_basis: Some(pb::LegalBasis {
                kind: pb::LegalBasisKind::Consent as i32,
                statute: String::new(),
            }),
            restrictions: vec![
                pb::Restriction::NoOnwardSharing as i32,
                pb::Restriction::NotForCriminalInvestigation as i32,
            ],
            valid_until: Some(exitnet_proto::Timestamp {
                seconds: until,
                nanos: 0,
            }),
            ..Default::default()
        }),
        collection_method: pb::CollectionMethod::Written as i32,
        witness: String::new(),
    }
}

pub fn referral_request(
    id: &str,
    consent: &str,
    to: &str,
    area: pb::NeedArea,
    service: pb::Service,
    narrative: &str,
) -> pb::CreateReferralRequest {
    pb::CreateReferralRequest {
        request_id: id.into(),
        consent_id: consent.into(),
        recipient_org: to.into(),
        need_areas: vec![area as i32],
        services: vec![service as i32],
        urgency: pb::Urgency::Soon as i32,
        summary: Some(pb::CaseSummary {
            age_band: pb::AgeBand::AgeBand2534 as i32,
            risk_level: pb::RiskLevel::Moderate as i32,
            needs_narrative: narrative.into(),
            contact_route: pb::ContactRoute::ReferringCaseManager as i32,
            ..Default::default()
        }),
    }
}

/// The case managers who act in the story, each at their own organisation.
const ALICE: &str = "alice";
const BOB: &str = "bob";
const CAROL: &str = "carol";

/// Plays the demo; with `keep_running`, leaves the nodes up until Ctrl-C.
pub async fn run(keep_running: bool) -> anyhow::Result<()> {
    // Kept running, Ctrl-C (or SIGTERM) at any moment stops it gracefully:
    // the handlers are installed now, before the nodes start.
    let stop = keep_running.then(exitnet_node::app::shutdown_signal);
    let started = Instant::now();
    let dir = tempfile_dir()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    say(
        "1. Three organisations start their own nodes",
        "Each has its own SQLite database and its own key; nothing is shared.",
    );
    let (ngo, t1) = start(
        &dir,
        "exit-ngo",
        "Exit Programme Nord (NGO)",
        "ngo",
        &[("EXITNET_ORG__NEED_AREAS", "social_reintegration,cognitive")],
        &stop_rx,
        "the NGO",
    )
    .await?;
    let (prison, t2) = start(
        &dir,
        "probation-service",
        "Prison and Probation Service",
        "prison_probation",
        &[("EXITNET_ORG__SERVICES", "housing,employment_support")],
        &stop_rx,
        "probation",
    )
    .await?;
    let (health, t3) = start(
        &dir,
        "trauma-clinic",
        "Trauma Clinic (mental health)",
        "mental_health",
        &[("EXITNET_ORG__SERVICES", "trauma_ptsd,cbt")],
        &stop_rx,
        "the clinic",
    )
    .await?;
    for o in [&ngo, &prison, &health] {
        println!(
            "  {:<44} key {}…",
            o.state.profile().name,
            &o.state.fingerprint()?[..16]
        );
    }

    say(
        "2. The administrators peer their nodes",
        "Each administrator approves the other organisation; from then on each node talks only to\n\
         the key the other one approved. There is no central registry.",
    );
    peer_up(&ngo, &prison).await?;
    peer_up(&ngo, &health).await?;

    say(
        "3. The client consents",
        "Alice, a case manager at the NGO, records the client's written consent. The client's\n\
         reference in the NGO's own files (client-2026-117) never leaves the NGO.",
    );
    let alice = person(ALICE);
    let c_health = ngo
        .services
        .consents
        .record(
            &alice,
            NewConsent::from_pb(
                consent_request("demo-c1", "trauma-clinic", pb::NeedArea::MentalHealth),
                now_ms(),
            )?,
        )
        .await?;
    let c_prison = ngo
        .services
        .consents
        .record(
            &alice,
            NewConsent::from_pb(
                consent_request(
                    "demo-c2",
                    "probation-service",
                    pb::NeedArea::FunctionalReintegration,
                ),
                now_ms(),
            )?,
        )
        .await?;
    println!(
        "  one consent for the trauma clinic (mental health), one for probation (housing), each for a year;"
    );
    println!(
        "  for exit support and for the service itself only: not for criminal investigation, and not"
    );
    println!("  to be passed on to anyone else");

    say(
        "4. Alice sends two referrals",
        "Each referral is saved together with the signed message that carries it, so neither exists\n\
         without the other; the message is then delivered and the receiver signs a receipt for it.",
    );
    let to_health = ngo
        .services
        .referrals
        .create(
            &alice,
            NewReferral::from_pb(referral_request(
                "demo-r1",
                &c_health.consent_id,
                "trauma-clinic",
                pb::NeedArea::MentalHealth,
                pb::Service::TraumaPtsd,
                "Recurring nightmares since leaving; asks for trauma therapy.",
            ))?,
        )
        .await?;
    let to_prison = ngo
        .services
        .referrals
        .create(
            &alice,
            NewReferral::from_pb(referral_request(
                "demo-r2",
                &c_prison.consent_id,
                "probation-service",
                pb::NeedArea::FunctionalReintegration,
                pb::Service::Housing,
                "Needs housing after release in March; no contact to the old group.",
            ))?,
        )
        .await?;
    let h = wait_state(&ngo, &to_health.referral_id, "received").await?;
    let p = wait_state(&ngo, &to_prison.referral_id, "received").await?;
    println!(
        "  trauma clinic: {} (the NGO keeps the clinic's signed receipt)",
        state_of(&h)
    );
    println!(
        "  probation:     {} (and probation's receipt)",
        state_of(&p)
    );
    let at_h = health
        .state
        .store
        .get_referral(&to_health.referral_id)
        .await?
        .context("at the clinic")?;
    let at_p = prison
        .state
        .store
        .get_referral(&to_prison.referral_id)
        .await?
        .context("at probation")?;
    println!(
        "  the clinic knows the client only as {}…, probation as {}…: different names, so they cannot link the two",
        &at_h.pseudonym[..12],
        &at_p.pseudonym[..12]
    );

    say(
        "5. The receivers act; the NGO sees every step",
        "Carol, a case manager at the trauma clinic, accepts the referral, starts the therapy and\n\
         completes it with an outcome. Bob, a case manager at probation, accepts his and starts.",
    );
    let carol = person(CAROL);
    let bob = person(BOB);
    use exitnet_node::domain::referral::{Outcome, Transition};
    let outcome = Outcome {
        disengagement: Some(exitnet_node::domain::Progress::Some),
        rehabilitation: Some(exitnet_node::domain::Progress::Substantial),
        service_delivered: true,
        note: "Twelve sessions of trauma-focused CBT.".into(),
        ..Default::default()
    };
    for t in [
        Transition::Accept,
        Transition::Start,
        Transition::Complete { outcome },
    ] {
        health
            .services
            .referrals
            .act(&carol, &to_health.referral_id, t)
            .await?;
    }
    for t in [Transition::Accept, Transition::Start] {
        prison
            .services
            .referrals
            .act(&bob, &to_prison.referral_id, t)
            .await?;
    }
    wait_state(&ngo, &to_health.referral_id, "completed").await?;
    wait_state(&ngo, &to_prison.referral_id, "in_progress").await?;
    println!("  what the NGO sees, step by step (by organisation):");
    let mut outcome_seen = None;
    for (label, id) in [
        ("trauma clinic", &to_health.referral_id),
        ("probation", &to_prison.referral_id),
    ] {
        let r = ngo
            .state
            .store
            .get_referral(id)
            .await?
            .context("the referral at the NGO")?;
        let history = ngo.services.referrals.history(&r).await?;
        let steps: Vec<String> = history
            .iter()
            .map(|e| format!("{} ({})", e.state.as_str().replace('_', " "), e.by_org))
            .collect();
        println!("  {label}: {}", steps.join(" → "));
        if let Some(done) = history
            .iter()
            .rev()
            .find(|e| e.state == exitnet_node::domain::ReferralState::Completed)
        {
            outcome_seen = done.detail.outcome.clone();
        }
    }
    for (label, org, id) in [
        ("the clinic", &health, &to_health.referral_id),
        ("probation", &prison, &to_prison.referral_id),
    ] {
        let steps: Vec<String> = org
            .state
            .store
            .referral_history(id)
            .await?
            .iter()
            .filter(|e| !e.actor.is_empty())
            .map(|e| format!("{} by {}", e.state.as_str().replace('_', " "), e.actor))
            .collect();
        println!(
            "  {label}'s own record names its case manager: {} (the NGO is told the organisation only)",
            steps.join(", ")
        );
    }
    let outcome = outcome_seen.context("the NGO has no outcome for the completed referral")?;
    println!("  the outcome the clinic reported to the NGO:");
    println!(
        "    service delivered: {}",
        if outcome.service_delivered {
            "yes"
        } else {
            "no"
        }
    );
    let goals: Vec<String> = [
        ("disengagement", outcome.disengagement),
        ("deradicalisation", outcome.deradicalisation),
        ("reintegration", outcome.reintegration),
        ("rehabilitation", outcome.rehabilitation),
    ]
    .into_iter()
    .filter_map(|(goal, p)| Some(format!("{goal}: {}", p?.as_str())))
    .collect();
    println!("    progress on the goals: {}", goals.join(", "));
    println!("    note: {}", outcome.note);

    say(
        "6. The client withdraws consent for probation",
        "Alice records the withdrawal. Probation is told, deletes the case summary it holds and\n\
         signs a receipt saying so.",
    );
    let (_, told) = ngo
        .services
        .consents
        .withdraw(&alice, &c_prison.consent_id)
        .await?;
    let purged = wait_for("the purge receipt", || async {
        Ok(ngo
            .state
            .store
            .get_referral(&to_prison.referral_id)
            .await?
            .filter(|r| r.purge_status == exitnet_node::domain::PurgeStatus::Done))
    })
    .await?;
    let at_p = prison
        .state
        .store
        .get_referral(&to_prison.referral_id)
        .await?
        .context("at probation")?;
    println!(
        "  {told} recipient told; probation deleted the summary and destroyed the key that sealed it"
    );
    println!(
        "  probation keeps only a tombstone: state {}, summary {}",
        state_of(&at_p),
        if at_p.summary.is_some() {
            "present (!)"
        } else {
            "gone"
        }
    );
    let receipt = ngo
        .state
        .store
        .receipts_for(&to_prison.referral_id)
        .await?
        .into_iter()
        .find(|r| r.kind == pb::ReceiptKind::Purge.as_str_name())
        .context("the NGO holds no purge receipt")?;
    let signed = pb::Receipt::decode(receipt.payload.as_slice()).context("the purge receipt")?;
    let stated = match pb::PurgeOutcome::try_from(signed.purge_outcome) {
        Ok(pb::PurgeOutcome::Purged) => "that it deleted the summary and the key that sealed it",
        Ok(pb::PurgeOutcome::NothingHeld) => "that it never held the referral",
        _ => "that it purged",
    };
    println!(
        "  the NGO keeps the purge receipt: signed by {} with its key {}… (the one the NGO approved)",
        receipt.issued_by,
        signed
            .key_fingerprint
            .get(..16)
            .unwrap_or(&signed.key_fingerprint),
    );
    println!(
        "  at {}, stating {stated}; purge status: {}",
        exitnet_node::domain::time::rfc3339(receipt.at_ms),
        purged.purge_status
    );

    say(
        "7. Each node checks its audit trail",
        "Every node keeps a chained record of everything done on it. Each signs a checkpoint of\n\
         its record and sends it to its peers, who countersign it and keep a copy; then each runs\n\
         `audit verify`, which checks the whole chain, the countersignatures and the copies its\n\
         peers hold, so a node cannot quietly rewrite its own past.",
    );
    for o in [&ngo, &prison, &health] {
        audit::checkpoint_and_verify(o).await?;
    }

    say("Summary", "");
    println!(
        "  3 organisations, 2 peerings, 2 consents, 2 referrals: 1 completed with an outcome, 1 withdrawn and purged"
    );
    println!(
        "  every exchange encrypted, with both ends proving who they are by the keys their administrators"
    );
    println!(
        "  approved; every message signed; every receipt kept; every audit trail verified by its peers"
    );
    println!("  took {:.1} s", started.elapsed().as_secs_f64());

    if let Some(stop) = stop {
        hints::print(&hints::Story {
            ngo: &ngo,
            prison: &prison,
            clinic: &health,
            completed: &to_health.referral_id,
            withdrawn: &to_prison.referral_id,
            alice: ALICE,
            carol: CAROL,
        });
        stop.await;
    }
    let _ = stop_tx.send(true);
    for t in [t1, t2, t3] {
        t.await.context("node task")??;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir =
        std::env::temp_dir().join(format!("exitnet-demo-{}-{}", std::process::id(), now_ms()));
    exitnet_node::identity::create_private_dir(&dir)?;
    Ok(dir)
}
