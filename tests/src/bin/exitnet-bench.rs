//! `exitnet-bench`: measures a node against a bare tonic mutual-TLS call on
//! the same machine, in the same run, and prints figures; its last line is
//! one JSON object. Run: `cargo run --release -p exitnet-tests --bin exitnet-bench [-- --postgres]`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use exitnet_demo::{self as demo, Org, consent_request, referral_request};
use exitnet_node::auth::{Authenticator, Role};
use exitnet_node::domain::OrgId;
use exitnet_proto::pb;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

type Stop = tokio::sync::watch::Sender<bool>;

// The allocator the node binary uses (node/src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Node {
    org: Org,
    stop: Stop,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _db: Option<exitnet_tests::TestDatabase>,
}

async fn node(
    dir: &std::path::Path,
    id: &str,
    sector: &str,
    pg: bool,
    extra: &[(&str, &str)],
) -> Node {
    let db = if pg {
        Some(exitnet_tests::TestDatabase::create().await.unwrap())
    } else {
        None
    };
    node_on(dir, id, sector, db, extra).await
}

async fn node_on(
    dir: &std::path::Path,
    id: &str,
    sector: &str,
    db: Option<exitnet_tests::TestDatabase>,
    extra: &[(&str, &str)],
) -> Node {
    let mut env: Vec<(&str, String)> = extra.iter().map(|(k, v)| (*k, v.to_string())).collect();
    env.push(("EXITNET_FEDERATION__SCHEDULER_INTERVAL_SECS", "3600".into()));
    env.push(("EXITNET_LOG__FORMAT", "text".into()));
    // The benchmark measures throughput, not the limits that guard it.
    for (k, v) in [
        ("EXITNET_LIMITS__CALLER_CALLS_PER_SEC", "1000000"),
        ("EXITNET_LIMITS__CALLER_BURST", "1000000"),
        ("EXITNET_LIMITS__CALLER_MAX_IN_FLIGHT", "100000"),
        ("EXITNET_LIMITS__PEER_CALLS_PER_SEC", "1000000"),
        ("EXITNET_LIMITS__PEER_BURST", "1000000"),
        ("EXITNET_LIMITS__ADDRESS_CALLS_PER_SEC", "1000000"),
        ("EXITNET_LIMITS__ADDRESS_BURST", "1000000"),
    ] {
        // A node given a limit of its own (the strangers' phase) keeps it.
        if !extra.iter().any(|(e, _)| *e == k) {
            env.push((k, v.into()));
        }
    }
    if let Some(d) = &db {
        env.push(("EXITNET_DATABASE_URL", d.url.clone()));
    }
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let (org, task) = demo::start(dir, id, id, sector, &env_refs, &rx, "node")
        .await
        .unwrap();
    Node {
        org,
        stop,
        task,
        _db: db,
    }
}

/// Stops a node; returns its database (PostgreSQL) for a restart.
async fn stop(n: Node) -> Option<exitnet_tests::TestDatabase> {
    let _ = n.stop.send(true);
    n.task.await.unwrap().unwrap();
    n._db
}

fn token(state: &exitnet_node::app::Node) -> String {
    match &*state.auth {
        Authenticator::Dev(d) => d
            .mint(&state.config.auth, "alice", Role::CaseManager, None)
            .unwrap(),
        _ => panic!("bench nodes run in dev sign-in mode"),
    }
}

async fn api(org: &Org) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{}", org.api))
        .unwrap()
        .tcp_nodelay(true)
        .connect()
        .await
        .unwrap()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn rss_mb(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Waits until no outbound referral of `org` is still `requested`.
async fn all_received(org: &Org, peers: &[OrgId], total: usize) {
    let filter = exitnet_node::store::ReferralFilter {
        outbound: Some(true),
        state: Some("requested".into()),
        peer_org: None,
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        // The probe must not load the node it measures: while anything is
        // still queued (a lookup in the outbox's small index) the referral
        // table, which a listing would scan, is not asked.
        // Only the peers measured count (the strangers phase's peer,
        // stopped since, keeps notices queued), each a lookup in the
        // outbox's index.
        let mut queued = false;
        for peer in peers {
            queued |= !org
                .state
                .store
                .undelivered_notices_for(peer, 1)
                .await
                .unwrap()
                .is_empty();
        }
        if queued {
            assert!(
                Instant::now() < deadline,
                "{total} referrals not received in 600 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        let left = org
            .state
            .store
            .list_referrals(&exitnet_node::store::ListScope::All, &filter, None, 1)
            .await
            .unwrap();
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{total} referrals not received in 600 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn create_many(
    org: &Org,
    consent: &str,
    to: &str,
    n: usize,
    concurrency: usize,
    tag: &str,
) -> Vec<f64> {
    let ch = api(org).await;
    let tok = token(&org.state);
    let mut set = tokio::task::JoinSet::new();
    for w in 0..concurrency {
        let mut c = pb::referral_service_client::ReferralServiceClient::new(ch.clone());
        let (tok, consent, to, tag) = (
            tok.clone(),
            consent.to_owned(),
            to.to_owned(),
            tag.to_owned(),
        );
        set.spawn(async move {
            let mut lat = Vec::new();
            for i in (w..n).step_by(concurrency) {
                let req = referral_request(
                    &format!("{tag}-{i}"),
                    &consent,
                    &to,
                    pb::NeedArea::FunctionalReintegration,
                    pb::Service::Housing,
                    "Housing after release.",
                );
                let mut r = tonic::Request::new(req);
                r.metadata_mut()
                    .insert("authorization", format!("Bearer {tok}").parse().unwrap());
                let t = Instant::now();
                c.create_referral(r).await.unwrap();
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            lat
        });
    }
    let mut all = Vec::new();
    while let Some(l) = set.join_next().await {
        all.extend(l.unwrap());
    }
    all.sort_by(|a, b| a.partial_cmp(b).unwrap());
    all
}

/// The baseline: a bare tonic health call over mutual TLS (TCP_NODELAY), no database.
async fn baseline(dir: &std::path::Path, calls_c1: usize, calls_c64: usize) -> (f64, f64, f64) {
    let key = exitnet_node::identity::NodeKey::generate("baseline").unwrap();
    let client_key = exitnet_node::identity::NodeKey::generate("client").unwrap();
    let current = exitnet_node::tls::CurrentKey::new(key.certified_key().unwrap());
    let cfg = exitnet_node::tls::federation_server_config(current).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = exitnet_node::tls::tls_incoming(listener, cfg, Duration::from_secs(5), None);
    let (_reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(incoming),
    );
    let _ = dir;
    let ch = exitnet_node::transport::client::channel(
        &addr.to_string(),
        Some(&client_key),
        vec![key.fingerprint().to_owned()],
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let mut c = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    let req = || tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    };
    for _ in 0..200 {
        c.check(req()).await.unwrap();
    }
    let mut lat = Vec::new();
    for _ in 0..calls_c1 {
        let t = Instant::now();
        c.check(req()).await.unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for w in 0..64 {
        let mut c = tonic_health::pb::health_client::HealthClient::new(ch.clone());
        set.spawn(async move {
            for _ in (w..calls_c64).step_by(64) {
                c.check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .unwrap();
            }
        });
    }
    while set.join_next().await.is_some() {}
    let per_s = calls_c64 as f64 / started.elapsed().as_secs_f64();
    (percentile(&lat, 0.5), percentile(&lat, 0.99), per_s)
}

/// What a stranger's flood did to a peer's latency (milliseconds).
struct Strangers {
    quiet_p50: f64,
    quiet_p99: f64,
    flood_p50: f64,
    flood_p99: f64,
    flood_calls_per_s: f64,
    unauthenticated: u64,
    limited: u64,
    cut_off: u64,
}

/// A node with the default limits on strangers, peered with `a`; A's
/// offers to it (each a whole intake) timed in `rounds` quiet windows and
/// as many during a flood from an unknown key (50 calls at a time, from a
/// thread at the lowest CPU priority: an attacker's own work runs on its
/// machines, not ours). Windows alternate, so the machine's other work
/// falls on both alike.
/// The peer whose offers the strangers phase times (stopped after it).
const GUARD: &str = "bench-guard";

async fn strangers(dir: &std::path::Path, a: &Node, rounds: usize, per_round: usize) -> Strangers {
    use exitnet_tests::peer::{lowest_cpu_priority, strangers_flood, timed_offer};
    use std::sync::atomic::{AtomicU64, Ordering};
    let g = node(
        dir,
        GUARD,
        "prison_probation",
        false,
        &[
            ("EXITNET_LIMITS__ADDRESS_CALLS_PER_SEC", "200"),
            ("EXITNET_LIMITS__ADDRESS_BURST", "400"),
        ],
    )
    .await;
    demo::peer_up(&a.org, &g.org).await.unwrap();
    let a_fp = a.org.state.fingerprint().unwrap();
    let a_key =
        exitnet_node::identity::NodeKey::read(&a.org.state.config.data_dir.join("identity"), &a_fp)
            .unwrap();
    let (addr, g_fp) = (
        g.org.state.federation_bound.to_string(),
        g.org.state.fingerprint().unwrap(),
    );
    let peer = exitnet_node::transport::client::connect(
        &addr,
        Some(&a_key),
        vec![g_fp.clone()],
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let offer = || timed_offer(&peer, &a_key, "bench-ngo", GUARD);
    for _ in 0..50 {
        offer().await.unwrap();
    }
    let (go_tx, go) = tokio::sync::watch::channel(false);
    let done = std::sync::Arc::new(AtomicU64::new(0));
    let counted = done.clone();
    let flood = std::thread::spawn(move || {
        lowest_cpu_priority().unwrap();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(strangers_flood(addr, g_fp, usize::MAX / 2, 50, go, counted))
            .unwrap()
    });
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (mut quiet, mut loaded, mut calls, mut flooding) = (Vec::new(), Vec::new(), 0, 0.0);
    for _ in 0..rounds {
        go_tx.send(false).unwrap();
        for _ in 0..per_round {
            quiet.push(ms(offer().await.unwrap()));
        }
        go_tx.send(true).unwrap();
        let (before, started) = (done.load(Ordering::Relaxed), Instant::now());
        for _ in 0..per_round {
            loaded.push(ms(offer().await.unwrap()));
        }
        calls += done.load(Ordering::Relaxed) - before;
        flooding += started.elapsed().as_secs_f64();
    }
    // Paused, then closed: the flood's tasks end.
    go_tx.send(false).unwrap();
    drop(go_tx);
    let answers = tokio::task::spawn_blocking(move || flood.join().unwrap())
        .await
        .unwrap();
    assert!(answers.other.is_empty(), "{:?}", answers.other);
    stop(g).await;
    quiet.sort_by(f64::total_cmp);
    loaded.sort_by(f64::total_cmp);
    Strangers {
        quiet_p50: percentile(&quiet, 0.5),
        quiet_p99: percentile(&quiet, 0.99),
        flood_p50: percentile(&loaded, 0.5),
        flood_p99: percentile(&loaded, 0.99),
        flood_calls_per_s: calls as f64 / flooding,
        unauthenticated: answers.unauthenticated,
        limited: answers.limited,
        cut_off: answers.cut_off,
    }
}

#[tokio::main]
async fn main() {
    let pg = std::env::args().any(|a| a == "--postgres");
    let quick = std::env::args().any(|a| a == "--quick");
    let scale = if quick { 10 } else { 1 };
    let dir = std::env::temp_dir().join(format!("exitnet-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    println!(
        "exitnet-bench: backend {}, {} cores",
        if pg { "postgres" } else { "sqlite" },
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );

    let (base_p50, base_p99, base_per_s) = baseline(&dir, 2000 / scale, 20000 / scale).await;
    println!(
        "baseline (bare tonic mTLS health call): p50 {base_p50:.3} ms, p99 {base_p99:.3} ms at concurrency 1; {base_per_s:.0} calls/s at concurrency 64"
    );

    let a = node(&dir, "bench-ngo", "ngo", pg, &[]).await;
    // The receiver never accepts what it receives here: its quota of
    // pending intake (10,000 by default) would stop the drain, which
    // measures delivery, not the quota.
    let roomy = ("EXITNET_LIMITS__PEER_MAX_PENDING_INTAKE", "1000000");
    let mut b = node(&dir, "bench-prison", "prison_probation", pg, &[roomy]).await;
    let prison = [OrgId::parse("peer", "bench-prison").unwrap()];
    demo::peer_up(&a.org, &b.org).await.unwrap();
    let alice = demo::person("alice");
    let consent = a
        .org
        .services
        .consents
        .record(
            &alice,
            exitnet_node::consents::NewConsent::from_pb(
                consent_request(
                    "bench-c",
                    "bench-prison",
                    pb::NeedArea::FunctionalReintegration,
                ),
                exitnet_node::domain::time::now_ms(),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let cid = consent.consent_id.clone();

    // Create latency at concurrency 1 (after a warm-up).
    create_many(&a.org, &cid, "bench-prison", 100 / scale.min(10), 1, "warm").await;
    all_received(&a.org, &prison, 100).await;
    let lat = create_many(&a.org, &cid, "bench-prison", 1000 / scale, 1, "c1").await;
    let (create_p50, create_p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
    println!(
        "create referral (client API, commit + queue): p50 {create_p50:.3} ms, p99 {create_p99:.3} ms at concurrency 1 — {:.1}x / {:.1}x the baseline",
        create_p50 / base_p50,
        create_p99 / base_p99
    );
    all_received(&a.org, &prison, 1000).await;

    // End to end at concurrency 64: from the API call to committed at the receiver and acknowledged back.
    let n = 4000 / scale;
    let started = Instant::now();
    create_many(&a.org, &cid, "bench-prison", n, 64, "c64").await;
    let created_s = started.elapsed().as_secs_f64();
    all_received(&a.org, &prison, n).await;
    let referrals_per_s = n as f64 / started.elapsed().as_secs_f64();
    let load_rss = rss_mb(std::process::id());
    println!(
        "end to end (created, delivered, receipt back): {referrals_per_s:.0} referrals/s at concurrency 64 — {:.2} of the baseline's calls/s (the {n} creates returned after {created_s:.2} s)",
        referrals_per_s / base_per_s
    );

    // A stranger's flood against a peer's latency.
    let strangers = strangers(&dir, &a, 10, 100 / scale).await;
    println!(
        "strangers: a peer's offers p50 {:.2} / p99 {:.2} ms quiet, p50 {:.2} / p99 {:.2} ms during a flood from an unknown key ({:.0} stranger calls/s answered, {} refused unauthenticated, {} limited, {} cut off with their connection) — p99 {:.2}x quiet",
        strangers.quiet_p50,
        strangers.quiet_p99,
        strangers.flood_p50,
        strangers.flood_p99,
        strangers.flood_calls_per_s,
        strangers.unauthenticated,
        strangers.limited,
        strangers.cut_off,
        strangers.flood_p99 / strangers.quiet_p99
    );

    // Backlog drain: 10,000 queued while the receiver is down.
    let b_dir_api = b.org.api;
    let b_fed = b.org.state.federation_bound;
    let b_db = stop(b).await;
    let n = 10000 / scale;
    create_many(&a.org, &cid, "bench-prison", n, 64, "drain").await;
    let restart_env = [
        ("EXITNET_API__LISTEN", b_dir_api.to_string()),
        ("EXITNET_FEDERATION__LISTEN", b_fed.to_string()),
    ];
    let mut refs: Vec<(&str, &str)> = restart_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    refs.push(roomy);
    println!("backlog drain: {n} referrals queued; the receiver returns");
    let started = Instant::now();
    b = node_on(&dir, "bench-prison", "prison_probation", b_db, &refs).await;
    a.org.state.outbox.wake();
    all_received(&a.org, &prison, n).await;
    let drain_s = started.elapsed().as_secs_f64();
    println!(
        "backlog drain: {n} referrals queued while the receiver was down, delivered {drain_s:.2} s after it returned"
    );

    // Fan-out: a withdrawal covering referrals to 20 peers.
    let mut peers = Vec::new();
    for i in 0..20 {
        // The 20 recipients run on SQLite even with --postgres: 22 connection
        // pools in one process would exceed PostgreSQL's default max_connections.
        let p = node(
            &dir,
            &format!("bench-peer-{i:02}"),
            "mental_health",
            false,
            &[],
        )
        .await;
        demo::peer_up(&a.org, &p.org).await.unwrap();
        peers.push(p);
    }
    let mut req = consent_request("bench-fan", "bench-peer-00", pb::NeedArea::MentalHealth);
    req.terms.as_mut().unwrap().recipients =
        (0..20).map(|i| format!("bench-peer-{i:02}")).collect();
    let fan = a
        .org
        .services
        .consents
        .record(
            &alice,
            exitnet_node::consents::NewConsent::from_pb(req, exitnet_node::domain::time::now_ms())
                .unwrap(),
        )
        .await
        .unwrap();
    for i in 0..20 {
        let r = referral_request(
            &format!("fan-{i}"),
            &fan.consent_id,
            &format!("bench-peer-{i:02}"),
            pb::NeedArea::MentalHealth,
            pb::Service::TraumaPtsd,
            "Trauma therapy.",
        );
        a.org
            .services
            .referrals
            .create(
                &alice,
                exitnet_node::referrals::NewReferral::from_pb(r).unwrap(),
            )
            .await
            .unwrap();
    }
    let fan_peers: Vec<OrgId> = (0..20)
        .map(|i| OrgId::parse("peer", &format!("bench-peer-{i:02}")).unwrap())
        .collect();
    all_received(&a.org, &fan_peers, 20).await;
    let started = Instant::now();
    a.org
        .services
        .consents
        .withdraw(&alice, &fan.consent_id)
        .await
        .unwrap();
    loop {
        let under = a
            .org
            .state
            .store
            .referrals_under_consent(&fan.consent_id)
            .await
            .unwrap();
        if under
            .iter()
            .all(|r| r.purge_status == exitnet_node::domain::PurgeStatus::Done)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let fanout_ms = started.elapsed().as_secs_f64() * 1000.0;
    println!("withdrawal fan-out to 20 peers: every purge receipt in after {fanout_ms:.0} ms");

    // Idle memory of one node process.
    let exe_dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let _ = std::process::Command::new(cargo)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "exitnet-node",
            "--bin",
            "exitnet-node",
        ])
        .status();
    let idle_dir = dir.join("idle");
    std::fs::create_dir_all(&idle_dir).unwrap();
    // Without the node's binary beside this one (a copied bench), the idle
    // figure is left out rather than the run lost.
    let idle_rss = match std::process::Command::new(exe_dir.join("exitnet-node"))
        .arg("run")
        .current_dir(&idle_dir)
        .env("EXITNET_ORG__ID", "bench-idle")
        .env("EXITNET_API__LISTEN", "127.0.0.1:0")
        .env("EXITNET_FEDERATION__LISTEN", "127.0.0.1:0")
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        Ok(mut child) => {
            let listening = idle_dir.join("exitnet-data/listening.json");
            let t = Instant::now();
            while !listening.exists() && t.elapsed() < Duration::from_secs(30) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // Let it settle: idle means serving with nothing to do.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let rss = rss_mb(child.id());
            let _ = child.kill();
            let _ = child.wait();
            rss
        }
        Err(e) => {
            println!("memory: no exitnet-node beside the bench ({e}): idle figure left out");
            f64::NAN
        }
    };
    println!(
        "memory: one idle node process {idle_rss:.1} MB resident; this bench process (2 nodes + clients) {load_rss:.1} MB under load"
    );

    for p in peers {
        stop(p).await;
    }
    stop(b).await;
    stop(a).await;
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{}",
        serde_json::json!({
            "backend": if pg { "postgres" } else { "sqlite" },
            "create_p50_ms": create_p50, "create_p99_ms": create_p99,
            "baseline_p50_ms": base_p50, "baseline_p99_ms": base_p99,
            "referrals_per_s": referrals_per_s, "baseline_calls_per_s": base_per_s,
            "drain_10k_s": drain_s, "withdraw_fanout_20_ms": fanout_ms,
            "strangers_quiet_p99_ms": strangers.quiet_p99,
            "strangers_flood_p99_ms": strangers.flood_p99,
            "strangers_flood_calls_per_s": strangers.flood_calls_per_s,
            "strangers_cut_off": strangers.cut_off,
            "idle_rss_mb": idle_rss, "bench_process_rss_under_load_mb": load_rss,
        })
    );
}
