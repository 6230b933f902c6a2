//! Operator tooling against a real node: every series the Grafana dashboard
//! (deploy/grafana/*.json) and the alerting rules (deploy/prometheus/alerts.yml)
//! use is one the node exports, with the build and process series; the
//! purge and reachability series follow the node's real state; and an
//! OpenTelemetry collector that cannot be reached, or fails exports, is
//! warned about in the log.

use exitnet_proto::pb;
use exitnet_proto::pb::node_service_client::NodeServiceClient;
use exitnet_tests::fixtures::{clients, consent_request, peer_with, referral_request, wait_state};
use exitnet_tests::{Backend, NodeProcess, NodeSpec, bearer, wait_until};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const METRICS: &str = "[metrics]\nlisten = \"127.0.0.1:0\"\n";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// One scrape: the families (`# TYPE` lines) with their types, and every
/// sample as `name{labels}` → value.
struct Scrape {
    families: HashMap<String, String>,
    samples: Vec<(String, String, f64)>,
}

impl Scrape {
    fn parse(text: &str) -> Self {
        let mut families = HashMap::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                families.insert(name.to_owned(), kind.to_owned());
            } else if !line.starts_with('#') && !line.is_empty() {
                let (series, value) = line.rsplit_once(' ').unwrap();
                let (name, labels) = match series.split_once('{') {
                    Some((n, l)) => (n, l.trim_end_matches('}')),
                    None => (series, ""),
                };
                samples.push((name.to_owned(), labels.to_owned(), value.parse().unwrap()));
            }
        }
        Self { families, samples }
    }

    /// The family a name used in a query belongs to, if the node exports it:
    /// a family itself, or a counter's `_total`, a histogram's `_bucket`,
    /// `_sum` or `_count`.
    fn family_of(&self, used: &str) -> Option<&str> {
        let is = |family: &str, kinds: &[&str]| {
            self.families
                .get(family)
                .is_some_and(|k| kinds.contains(&k.as_str()))
        };
        if let Some((name, _)) = self.families.get_key_value(used) {
            // A counter's family name is not itself a series.
            return (!is(used, &["counter", "histogram"])).then_some(name.as_str());
        }
        for (suffix, kinds) in [
            ("_total", &["counter"][..]),
            ("_bucket", &["histogram"][..]),
            ("_sum", &["histogram", "summary"][..]),
            ("_count", &["histogram", "summary"][..]),
        ] {
            if let Some(family) = used.strip_suffix(suffix)
                && is(family, kinds)
            {
                return self.families.get_key_value(family).map(|(k, _)| k.as_str());
            }
        }
        None
    }

    /// The value of the one sample `name` whose labels contain all of `labels`.
    fn value(&self, name: &str, labels: &[&str]) -> Option<f64> {
        self.samples
            .iter()
            .find(|(n, l, _)| n == name && labels.iter().all(|want| l.contains(want)))
            .map(|(_, _, v)| *v)
    }
}

/// Every `exitnet_…` and `process_…` name in a text (queries in JSON or YAML).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    for prefix in ["exitnet_", "process_"] {
        let mut from = 0;
        while let Some(at) = text[from..].find(prefix) {
            let start = from + at;
            let mut end = start + prefix.len();
            while end < bytes.len()
                && (bytes[end].is_ascii_lowercase()
                    || bytes[end].is_ascii_digit()
                    || bytes[end] == b'_')
            {
                end += 1;
            }
            // Only at the start of an identifier.
            let starts_word = start == 0
                || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
            if starts_word {
                names.insert(text[start..end].to_owned());
            }
            from = end;
        }
    }
    names
}

/// The dashboards and the rules: (file, its text).
fn ops_files() -> Vec<(String, String)> {
    let mut files = Vec::new();
    let grafana = deploy_dir().join("grafana");
    for entry in std::fs::read_dir(&grafana).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            // A dashboard must be JSON Grafana can import.
            let v: serde_json::Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(v["panels"].as_array().is_some_and(|p| !p.is_empty()));
            files.push((path.display().to_string(), text));
        }
    }
    assert!(!files.is_empty(), "no dashboard in {}", grafana.display());
    let rules = deploy_dir().join("prometheus/alerts.yml");
    files.push((
        rules.display().to_string(),
        std::fs::read_to_string(&rules).unwrap(),
    ));
    files
}

/// A (with metrics) peered with B; a refused sign-in, a referral delivered
/// and accepted; then B stops and A withdraws the consent: the purge at B is
/// pending and B unreachable. At that point every series the dashboard and
/// the rules use is checked against A's scrape; then B comes back, the purge
/// is done and its series go.
#[tokio::test]
async fn every_series_the_dashboard_and_the_rules_use_is_exported() {
    let started = now_secs();
    let a = NodeProcess::start(NodeSpec::new("ngo-a", Backend::Sqlite).with_toml(METRICS))
        .await
        .unwrap();
    let mut b = NodeProcess::start(NodeSpec::new("prison-b", Backend::Sqlite))
        .await
        .unwrap();
    peer_with(&a, &b).await;

    // A call without a token: a sign-in failure.
    let mut node = NodeServiceClient::new(a.api_channel().await.unwrap());
    let refused = node.get_node_info(pb::GetNodeInfoRequest::default()).await;
    assert_eq!(refused.unwrap_err().code(), tonic::Code::Unauthenticated);

    // A referral to B, accepted there (A receives the status message).
    let alice = a.dev_token("case_manager", "alice").await.unwrap();
    let bob = b.dev_token("case_manager", "bob").await.unwrap();
    let (mut ac, ar) = clients(&a).await;
    let consent = ac
        .record_consent(bearer(&alice, consent_request("c-ops", "client-ops")))
        .await
        .unwrap()
        .into_inner()
        .consent
        .unwrap()
        .consent_id;
    let id = ar
        .clone()
        .create_referral(bearer(
            &alice,
            referral_request(
                "r-ops",
                &consent,
                "prison-b",
                pb::NeedArea::FunctionalReintegration,
                pb::Service::Housing,
            ),
        ))
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap()
        .referral_id;
    wait_state(&ar, &alice, &id, pb::ReferralState::Received).await;
    let (_, mut br) = clients(&b).await;
    br.accept_referral(bearer(
        &bob,
        pb::AcceptReferralRequest {
            referral_id: id.clone(),
        },
    ))
    .await
    .unwrap();
    wait_state(&ar, &alice, &id, pb::ReferralState::Accepted).await;

    // B goes away; the consent is withdrawn: the withdrawal cannot be
    // delivered, so the purge at B stays pending.
    let (status, _) = b.stop().await.unwrap();
    assert!(status.success());
    let before_withdrawal = now_secs();
    ac.withdraw_consent(bearer(
        &alice,
        pb::WithdrawConsentRequest {
            consent_id: consent.clone(),
        },
    ))
    .await
    .unwrap();
    let pending = wait_until(
        "A to show the pending purge and B unreachable",
        Duration::from_secs(30),
        || async {
            let s = Scrape::parse(&a.metrics().await.ok()?);
            let reachable = s.value("exitnet_peer_reachable", &["peer=\"prison-b\""])?;
            let pending = s.value("exitnet_purges_pending", &["peer=\"prison-b\""])?;
            (reachable == 0.0 && pending == 1.0).then_some(s)
        },
    )
    .await
    .unwrap();
    let oldest = pending
        .value(
            "exitnet_purge_oldest_pending_timestamp_seconds",
            &["peer=\"prison-b\""],
        )
        .unwrap();
    assert!(
        oldest >= before_withdrawal - 1.0 && oldest <= now_secs() + 1.0,
        "oldest pending purge at {oldest}, withdrawn at {before_withdrawal}"
    );

    // Every name used by the dashboards and the rules is exported.
    let mut used = BTreeSet::new();
    let mut missing = Vec::new();
    for (file, text) in ops_files() {
        for name in metric_names(&text) {
            if pending.family_of(&name).is_none() {
                missing.push(format!("{name} (in {file})"));
            }
            used.insert(name);
        }
    }
    assert!(
        missing.is_empty(),
        "used but not exported by the node: {missing:?}\nexported families: {:?}",
        pending.families
    );
    // The extraction found what the alerts are about (it is not vacuous).
    for name in [
        "exitnet_peer_reachable",
        "exitnet_outbox_depth",
        "exitnet_deliveries_total",
        "exitnet_sign_in_failures_total",
        "exitnet_audit_checkpoint_timestamp_seconds",
        "exitnet_purge_oldest_pending_timestamp_seconds",
        "exitnet_build_info",
        "process_resident_memory_bytes",
    ] {
        assert!(used.contains(name), "{name} is used nowhere: {used:?}");
    }

    // The build and process series.
    let build = pending
        .samples
        .iter()
        .find(|(n, _, _)| n == "exitnet_build_info")
        .expect("exitnet_build_info");
    assert_eq!(build.2, 1.0);
    assert!(
        build
            .1
            .contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{}",
        build.1
    );
    let commit = build
        .1
        .split("commit=\"")
        .nth(1)
        .and_then(|c| c.split('"').next())
        .unwrap();
    assert!(
        commit == "unknown" || (commit.len() >= 4 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
        "commit label {commit:?}"
    );
    for (family, kind) in [
        ("process_cpu_seconds", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_virtual_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
        ("process_max_fds", "gauge"),
        ("process_start_time_seconds", "gauge"),
        ("exitnet_build_info", "gauge"),
        ("exitnet_audit_checkpoint_timestamp_seconds", "gauge"),
        ("exitnet_audit_checkpoint_interval_seconds", "gauge"),
    ] {
        assert_eq!(
            pending.families.get(family).map(String::as_str),
            Some(kind),
            "{family}"
        );
    }
    let v = |name: &str| pending.value(name, &[]).unwrap();
    assert!(v("process_cpu_seconds_total") > 0.0);
    assert!(v("process_resident_memory_bytes") > 1e6);
    assert!(v("process_virtual_memory_bytes") >= v("process_resident_memory_bytes"));
    assert!(v("process_open_fds") >= 3.0);
    assert!(v("process_max_fds") >= v("process_open_fds"));
    let start = v("process_start_time_seconds");
    assert!(
        start >= started - 2.0 && start <= now_secs() + 1.0,
        "process_start_time_seconds {start}, the test started at {started}"
    );
    // The default checkpoint interval, and a checkpoint signed since the start.
    assert_eq!(v("exitnet_audit_checkpoint_interval_seconds"), 300.0);
    let checkpoint = v("exitnet_audit_checkpoint_timestamp_seconds");
    assert!(
        checkpoint >= started - 1.0 && checkpoint <= now_secs() + 1.0,
        "{checkpoint}"
    );

    // B comes back: the withdrawal is delivered, the purge done, and the
    // pending-purge series go; B is reachable again.
    b.restart().await.unwrap();
    wait_until(
        "the purge to be done and B reachable",
        Duration::from_secs(30),
        || async {
            let s = Scrape::parse(&a.metrics().await.ok()?);
            let reachable = s.value("exitnet_peer_reachable", &["peer=\"prison-b\""])?;
            let gone = s.value("exitnet_purges_pending", &[]).is_none()
                && s.value("exitnet_purge_oldest_pending_timestamp_seconds", &[])
                    .is_none();
            (reachable == 1.0 && gone).then_some(())
        },
    )
    .await
    .unwrap();
}

#[test]
fn metric_names_are_found_in_queries() {
    let names = metric_names(
        r#"{"expr": "sum by (peer) (rate(exitnet_deliveries_total{outcome=\"refused\"}[5m]))"}
           expr: time() - exitnet_purge_oldest_pending_timestamp_seconds > 86400
           runbook: docs/operations.md#exitnetpurgependingold; x_exitnet_not_this
           rate(process_cpu_seconds_total[5m])"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        [
            "exitnet_deliveries_total",
            "exitnet_purge_oldest_pending_timestamp_seconds",
            "process_cpu_seconds_total"
        ]
    );
}

/// A collector that refuses every export, counting them.
#[derive(Default, Clone)]
struct RefusingCollector(Arc<AtomicUsize>);

#[tonic::async_trait]
impl TraceService for RefusingCollector {
    async fn export(
        &self,
        _: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Err(tonic::Status::unavailable("collector overloaded"))
    }
}

fn warnings(log: &str, what: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("WARN") && l.contains(what))
        .count()
}

/// Nothing listens at the collector's address: the node says so at start.
/// A collector that answers but refuses exports: the node says so once,
/// however many exports fail.
#[tokio::test]
async fn an_unreachable_collector_is_warned_about() {
    // A port nothing listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut node = NodeProcess::start(
        NodeSpec::new("ngo-a", Backend::Sqlite)
            .with_toml(&format!("[traces]\notlp_endpoint = \"http://{closed}\"\n")),
    )
    .await
    .unwrap();
    wait_until(
        "the warning about the collector",
        Duration::from_secs(20),
        || async { (warnings(&node.log(), "cannot be reached") == 1).then_some(()) },
    )
    .await
    .unwrap();
    let log = node.log();
    assert!(log.contains(&format!("collector={closed}")), "{log}");
    node.stop().await.unwrap();

    // Reachable, but every export fails.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let collector = RefusingCollector::default();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let mut node = NodeProcess::start(
        NodeSpec::new("ngo-a", Backend::Sqlite)
            .with_toml(&format!("[traces]\notlp_endpoint = \"http://{addr}\"\n")),
    )
    .await
    .unwrap();
    // Calls make spans; the exporter sends them in batches (every 5 s) and
    // on the graceful stop.
    let token = node.dev_token("case_manager", "alice").await.unwrap();
    let mut client = NodeServiceClient::new(node.api_channel().await.unwrap());
    for _ in 0..3 {
        client
            .get_node_info(bearer(&token, pb::GetNodeInfoRequest::default()))
            .await
            .unwrap();
    }
    wait_until(
        "a refused export and its warning",
        Duration::from_secs(30),
        || async {
            (collector.0.load(Ordering::SeqCst) >= 1
                && warnings(
                    &node.log(),
                    "exporting spans to the OpenTelemetry collector",
                ) >= 1)
                .then_some(())
        },
    )
    .await
    .unwrap();
    for _ in 0..3 {
        client
            .get_node_info(bearer(&token, pb::GetNodeInfoRequest::default()))
            .await
            .unwrap();
    }
    let (status, _) = node.stop().await.unwrap();
    assert!(status.success());
    let log = node.log();
    // The later calls' spans went out too (on schedule or on the stop).
    assert!(collector.0.load(Ordering::SeqCst) >= 2, "{log}");
    // Several failed exports, one warning (the next would come 5 minutes later).
    assert_eq!(
        warnings(&log, "exporting spans to the OpenTelemetry collector"),
        1,
        "{log}"
    );
    assert_eq!(warnings(&log, "cannot be reached"), 0, "{log}");
}
