//! `exitnet-node demo`: three organisations in one process on loopback, each
//! with its own SQLite database in a temporary directory, peered through the
//! real invitation and approval flow, playing one client's case end to end
//! over real mutual TLS. It prints each step so a person can follow it.

use crate::app::Application;
use crate::auth::{Principal, Role};
use crate::config::Config;
use crate::consents::{self, NewConsent};
use crate::domain::PeerAction;
use crate::domain::time::now_ms;
use crate::referrals::{self, NewReferral};
use crate::state::NodeState;
use anyhow::{Context, bail};
use exitnet_proto::pb;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Org {
    pub label: &'static str,
    pub state: Arc<NodeState>,
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
        state: app.state(),
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
    let inv = crate::peering::create_invitation(
        &inviter.state,
        3600,
        None,
        format!("for {}", joiner.label),
    )
    .await?;
    println!(
        "  {} creates an invitation: {}…",
        inviter.label,
        &inv.code[..48]
    );
    let peer = crate::peering::join(&joiner.state, &inv.code).await?;
    let code =
        crate::peering::verification_code(&joiner.state.fingerprint()?, &peer.key_fingerprint);
    println!(
        "  {} joins with it; both administrators read the verification code {code} to each other",
        joiner.label
    );
    crate::peering::decide(&inviter.state, &joiner.state.org_id, PeerAction::Approve).await?;
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
    let mut policy = crate::policy::PeerPolicy::default();
    policy
        .data_categories
        .push(crate::domain::DataCategory::NeedsNarrative);
    crate::policy::set_for_peer(&inviter.state, &joiner.state.org_id, &policy).await?;
    crate::policy::set_for_peer(&joiner.state, &inviter.state.org_id, &policy).await?;
    println!(
        "  {} approves: the peering is active on both sides (the narrative is enabled in both policies)",
        inviter.label
    );
    Ok(())
}

fn state_of(r: &crate::store::ReferralRecord) -> String {
    r.state.replace('_', " ")
}

async fn wait_state(
    org: &Org,
    id: &str,
    want: &str,
) -> anyhow::Result<crate::store::ReferralRecord> {
    wait_for(&format!("the referral to be {want}"), || async {
        Ok(org
            .state
            .store
            .get_referral(id)
            .await?
            .filter(|r| r.state == want))
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

/// Plays the demo; with `keep_running`, leaves the nodes up until Ctrl-C.
pub async fn run(keep_running: bool) -> anyhow::Result<()> {
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
        "Two-sided approval, keys pinned, no central registry.",
    );
    peer_up(&ngo, &prison).await?;
    peer_up(&ngo, &health).await?;

    say(
        "3. The client consents",
        "Recorded by the NGO's case manager; the client reference never leaves the NGO.",
    );
    let alice = person("alice");
    let c_health = consents::record(
        &ngo.state,
        &alice,
        NewConsent::from_pb(
            consent_request("demo-c1", "trauma-clinic", pb::NeedArea::MentalHealth),
            now_ms(),
        )?,
    )
    .await?;
    let c_prison = consents::record(
        &ngo.state,
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
        "  consent for the trauma clinic (mental health) and one for probation (housing), each for a year,"
    );
    println!(
        "  for exit support and service provision, not for criminal investigation, no onward sharing"
    );

    say(
        "4. Two referrals leave the NGO",
        "Each is committed with its signed message in one transaction, then delivered.",
    );
    let to_health = referrals::create(
        &ngo.state,
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
    let to_prison = referrals::create(
        &ngo.state,
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
        "  trauma clinic: {} (signed delivery receipt held by the NGO)",
        state_of(&h)
    );
    println!("  probation:     {}", state_of(&p));
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
        "  the clinic knows the client as {}…, probation as {}… — they cannot link the two",
        &at_h.pseudonym[..12],
        &at_p.pseudonym[..12]
    );

    say(
        "5. The receivers act; the NGO sees every step",
        "Accepted, in progress, completed with an outcome.",
    );
    let carol = person("carol");
    let bob = person("bob");
    referrals::act(
        &health.state,
        &carol,
        &to_health.referral_id,
        crate::domain::ReferralState::Accepted,
        pb::StateChange::default(),
    )
    .await?;
    referrals::act(
        &health.state,
        &carol,
        &to_health.referral_id,
        crate::domain::ReferralState::InProgress,
        pb::StateChange::default(),
    )
    .await?;
    let outcome = pb::Outcome {
        disengagement: pb::Progress::Some as i32,
        rehabilitation: pb::Progress::Substantial as i32,
        service_delivered: true,
        note: "Twelve sessions of trauma-focused CBT.".into(),
        ..Default::default()
    };
    referrals::act(
        &health.state,
        &carol,
        &to_health.referral_id,
        crate::domain::ReferralState::Completed,
        pb::StateChange {
            outcome: Some(outcome),
            ..Default::default()
        },
    )
    .await?;
    referrals::act(
        &prison.state,
        &bob,
        &to_prison.referral_id,
        crate::domain::ReferralState::Accepted,
        pb::StateChange::default(),
    )
    .await?;
    referrals::act(
        &prison.state,
        &bob,
        &to_prison.referral_id,
        crate::domain::ReferralState::InProgress,
        pb::StateChange::default(),
    )
    .await?;
    wait_state(&ngo, &to_health.referral_id, "completed").await?;
    wait_state(&ngo, &to_prison.referral_id, "in_progress").await?;
    for (label, id) in [
        ("trauma clinic", &to_health.referral_id),
        ("probation", &to_prison.referral_id),
    ] {
        let history = ngo.state.store.referral_history(id).await?;
        let steps: Vec<String> = history
            .iter()
            .map(|e| format!("{} ({})", e.state.replace('_', " "), e.by_org))
            .collect();
        println!("  {label}: {}", steps.join(" → "));
    }

    say(
        "6. The client withdraws consent for probation",
        "Withdrawal reaches the recipient, which purges and signs a receipt.",
    );
    let (_, told) = consents::withdraw(&ngo.state, &alice, &c_prison.consent_id).await?;
    let purged = wait_for("the purge receipt", || async {
        Ok(ngo
            .state
            .store
            .get_referral(&to_prison.referral_id)
            .await?
            .filter(|r| r.purge_status == "done"))
    })
    .await?;
    let at_p = prison
        .state
        .store
        .get_referral(&to_prison.referral_id)
        .await?
        .context("at probation")?;
    println!("  {told} recipient told; probation purged the summary and destroyed its data key");
    println!(
        "  probation keeps a tombstone: state {}, summary {}",
        state_of(&at_p),
        if at_p.summary.is_some() {
            "present (!)"
        } else {
            "gone"
        }
    );
    println!(
        "  the NGO holds the signed purge receipt, purge status: {}",
        purged.purge_status
    );

    say("Summary", "");
    println!(
        "  3 organisations, 2 peerings, 2 consents, 2 referrals: 1 completed with an outcome, 1 withdrawn and purged"
    );
    println!(
        "  every exchange over mutual TLS pinned to approved keys; every message signed; every receipt kept"
    );
    println!("  took {:.1} s", started.elapsed().as_secs_f64());

    if keep_running {
        println!("\nThe three nodes keep running (Ctrl-C to stop). Try, for example:");
        for o in [&ngo, &prison, &health] {
            println!(
                "  exitnetctl --socket {} peer list      # {}, client API {}",
                o.admin_socket.display(),
                o.label,
                o.api
            );
        }
        println!(
            "  exitnetctl --socket {} dev-token --role case_manager --subject alice",
            ngo.admin_socket.display()
        );
        crate::app::shutdown_signal().await;
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
    crate::identity::create_private_dir(&dir)?;
    Ok(dir)
}
