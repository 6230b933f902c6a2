//! Prometheus metrics on `metrics.listen` (`GET /metrics`, text format).
//! Labels are organisation IDs, states, outcomes, methods and status codes:
//! never a person, a client reference or case content. Besides the
//! `exitnet_` series: `exitnet_build_info` and the standard `process_*`
//! series (`process.rs`).

mod process;

use crate::store::Store;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    pub peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub peer: String,
    /// `delivered`, `retry`, `refused`, `dropped`, `unreachable`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReceivedLabels {
    pub peer: String,
    /// `offer`, `status`, `withdrawal`, `checkpoint`, `notice`.
    pub kind: String,
    /// `new`, `repeat` (a redelivery answered with the stored receipt),
    /// `refused`, `over_quota` (`limits.peer_*` quotas).
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReferralLabels {
    pub direction: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// The package version (`CARGO_PKG_VERSION`).
    pub version: String,
    /// The short commit hash it was built from, or `unknown` (`build.rs`).
    pub commit: String,
}

/// The commit the binary was built from (`node/build.rs`).
pub const BUILD_COMMIT: &str = env!("EXITNET_BUILD_COMMIT");

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub surface: String,
    /// `/package.Service/Method`.
    pub method: String,
    /// The gRPC status code (0 is OK).
    pub code: String,
}

pub struct Metrics {
    registry: Registry,
    pub deliveries: Family<DeliveryLabels, Counter>,
    pub delivery_latency: Histogram,
    pub received: Family<ReceivedLabels, Counter>,
    pub sign_in_failures: Family<ReasonLabel, Counter>,
    pub calls: Family<CallLabels, Counter>,
    pub peer_reachable: Family<PeerLabel, Gauge>,
    /// SQLite WAL checkpoints after purges (read from the store at scrape).
    wal_checkpoints: Family<OutcomeLabel, Counter>,
    referrals: Family<ReferralLabels, Gauge>,
    outbox_depth: Family<PeerLabel, Gauge>,
    peer_active: Family<PeerLabel, Gauge>,
    audit_records: Gauge,
    audit_checkpoint: Gauge,
    audit_checkpoint_time: Gauge<f64, AtomicU64>,
    audit_checkpoint_interval: Gauge,
    purges_pending: Family<PeerLabel, Gauge>,
    purge_oldest_pending: Family<PeerLabel, Gauge<f64, AtomicU64>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("exitnet");
        let m = Self {
            deliveries: Family::default(),
            // 1 ms to about 65 s.
            delivery_latency: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            received: Family::default(),
            sign_in_failures: Family::default(),
            calls: Family::default(),
            peer_reachable: Family::default(),
            wal_checkpoints: Family::default(),
            referrals: Family::default(),
            outbox_depth: Family::default(),
            peer_active: Family::default(),
            audit_records: Gauge::default(),
            audit_checkpoint: Gauge::default(),
            audit_checkpoint_time: Gauge::default(),
            audit_checkpoint_interval: Gauge::default(),
            purges_pending: Family::default(),
            purge_oldest_pending: Family::default(),
            registry: Registry::default(),
        };
        let build: Family<BuildLabels, Gauge> = Family::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").into(),
                commit: BUILD_COMMIT.into(),
            })
            .set(1);
        registry.register(
            "build_info",
            "1, labelled with the version and the commit the node was built from",
            build,
        );
        registry.register(
            "deliveries",
            "Calls to peers by outcome (referral messages, notices, checkpoints)",
            m.deliveries.clone(),
        );
        registry.register(
            "delivery_latency_seconds",
            "Time from queueing a message to the peer's receipt",
            m.delivery_latency.clone(),
        );
        registry.register(
            "received",
            "Messages and notices received from peers, by kind and outcome",
            m.received.clone(),
        );
        registry.register(
            "sign_in_failures",
            "Client API calls refused at sign-in, by reason",
            m.sign_in_failures.clone(),
        );
        registry.register(
            "calls",
            "gRPC calls served, by surface, method and status code",
            m.calls.clone(),
        );
        registry.register(
            "peer_reachable",
            "1 if the last connection to the peer succeeded, 0 if it failed",
            m.peer_reachable.clone(),
        );
        registry.register(
            "referrals",
            "Referrals held, by direction and state",
            m.referrals.clone(),
        );
        registry.register(
            "outbox_depth",
            "Notices and messages waiting for delivery, per peer",
            m.outbox_depth.clone(),
        );
        registry.register(
            "peer_active",
            "1 if the peering is active on this side",
            m.peer_active.clone(),
        );
        registry.register(
            "audit_records",
            "Records in the audit chain",
            m.audit_records.clone(),
        );
        registry.register(
            "audit_checkpoint_seq",
            "Position of the last signed audit checkpoint",
            m.audit_checkpoint.clone(),
        );
        registry.register(
            "audit_checkpoint_timestamp_seconds",
            "When the last audit checkpoint was signed, in seconds since the epoch (0: none yet)",
            m.audit_checkpoint_time.clone(),
        );
        registry.register(
            "audit_checkpoint_interval_seconds",
            "audit.checkpoint_interval_secs: new records are checkpointed at least this often",
            m.audit_checkpoint_interval.clone(),
        );
        registry.register(
            "purges_pending",
            "Referrals sent to the peer whose purge there is pending (withdrawn, no purge receipt yet)",
            m.purges_pending.clone(),
        );
        registry.register(
            "purge_oldest_pending_timestamp_seconds",
            "Last change of the oldest referral whose purge at the peer is pending, in seconds since the epoch",
            m.purge_oldest_pending.clone(),
        );
        registry.register(
            "wal_checkpoints",
            "SQLite: WAL checkpoints after purges by outcome (done; busy or failed: retried)",
            m.wal_checkpoints.clone(),
        );
        // The standard process series, without the exitnet_ prefix.
        let mut root = Registry::default();
        root.register_collector(Box::new(process::ProcessCollector::default()));
        *root.sub_registry_with_prefix("exitnet") = registry;
        Self {
            registry: root,
            ..m
        }
    }

    /// Reads the gauges that live in the database, then encodes everything.
    pub async fn render(
        &self,
        store: &dyn Store,
        checkpoint_interval_secs: u64,
    ) -> anyhow::Result<String> {
        self.referrals.clear();
        for (direction, s, n) in store.referral_counts().await? {
            self.referrals
                .get_or_create(&ReferralLabels {
                    direction,
                    state: s,
                })
                .set(n);
        }
        self.outbox_depth.clear();
        self.peer_active.clear();
        for p in store.list_peers().await? {
            let label = PeerLabel {
                peer: p.org_id.to_string(),
            };
            self.outbox_depth
                .get_or_create(&label)
                .set(p.pending_notices);
            self.peer_active
                .get_or_create(&label)
                .set(i64::from(p.state == crate::domain::PeerState::Active));
        }
        let (seq, _) = store.audit_head().await?;
        self.audit_records.set(seq);
        if let Some(cp) = store.latest_checkpoint().await? {
            self.audit_checkpoint.set(cp.seq);
            self.audit_checkpoint_time.set(cp.at_ms as f64 / 1000.0);
        }
        self.audit_checkpoint_interval
            .set(i64::try_from(checkpoint_interval_secs).unwrap_or(i64::MAX));
        self.purges_pending.clear();
        self.purge_oldest_pending.clear();
        for (peer, n, oldest_ms) in store.pending_purges().await? {
            let label = PeerLabel { peer };
            self.purges_pending.get_or_create(&label).set(n);
            self.purge_oldest_pending
                .get_or_create(&label)
                .set(oldest_ms as f64 / 1000.0);
        }
        for (outcome, n) in store.wal_checkpoints() {
            let label = OutcomeLabel {
                outcome: outcome.into(),
            };
            // Counted by the store; mirrored here.
            self.wal_checkpoints
                .get_or_create(&label)
                .inner()
                .store(n, std::sync::atomic::Ordering::Relaxed);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    pub fn delivered(&self, peer: &str, outcome: &str) {
        self.deliveries
            .get_or_create(&DeliveryLabels {
                peer: peer.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    pub fn received(&self, peer: &str, kind: &str, outcome: &str) {
        self.received
            .get_or_create(&ReceivedLabels {
                peer: peer.into(),
                kind: kind.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    pub fn reachable(&self, peer: &str, up: bool) {
        self.peer_reachable
            .get_or_create(&PeerLabel { peer: peer.into() })
            .set(i64::from(up));
    }
}

/// Serves `GET /metrics` on `listener` until `stop` turns true.
pub async fn serve(
    metrics: Arc<Metrics>,
    store: Arc<dyn Store>,
    checkpoint_interval_secs: u64,
    listener: tokio::net::TcpListener,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper::{Response, StatusCode};
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let (metrics, store) = (metrics.clone(), store.clone());
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (metrics, store) = (metrics.clone(), store.clone());
                    async move {
                        if req.method() != hyper::Method::GET || req.uri().path() != "/metrics" {
                            Response::builder()
                                .status(StatusCode::NOT_FOUND)
                                .body(Full::new(Bytes::from_static(b"not found\n")))
                        } else {
                            match metrics.render(store.as_ref(), checkpoint_interval_secs).await {
                            Ok(text) => Response::builder()
                                .header(
                                    "content-type",
                                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                )
                                .body(Full::new(Bytes::from(text))),
                            Err(e) => {
                                tracing::warn!(error = %e, "rendering metrics failed");
                                Response::builder()
                                    .status(StatusCode::SERVICE_UNAVAILABLE)
                                    .body(Full::new(Bytes::from_static(b"unavailable\n")))
                            }
                        }
                        }
                    }
                });
            let io = hyper_util::rt::TokioIo::new(stream);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(io, service);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(30), conn).await;
        });
    }
}
