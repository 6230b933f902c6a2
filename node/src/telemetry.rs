//! Logs and per-call spans. A span carries the surface, the method, the peer
//! or caller, the status and the duration: never a field of a message. The
//! spans can also be exported to an OpenTelemetry collector (`[traces]`);
//! when that collector cannot be reached, the log says so (at start, and on
//! failed exports at most every `EXPORT_WARNING_EVERY`).

use crate::config::{LogFormat, TracesConfig};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tonic::codegen::http;
use tracing::Instrument;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber: text on a terminal, JSON when configured;
/// `RUST_LOG` overrides the default level (info). Logs go to stderr; spans
/// also to the OTLP collector if one is configured. Call within the runtime.
pub fn init(format: LogFormat, traces: &TracesConfig) -> anyhow::Result<Traces> {
    use std::io::IsTerminal;
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
        LogFormat::Text => fmt.boxed(),
    };
    let (provider, check) = tracer_provider(traces)?.unzip();
    let otel = provider.as_ref().map(|p| {
        use opentelemetry::trace::TracerProvider;
        tracing_opentelemetry::layer().with_tracer(p.tracer("exitnet-node"))
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init();
    // Once the log is set up, so that its warning is not lost.
    if let Some(Some(check)) = check {
        check_collector(check);
    }
    Ok(Traces { provider })
}

/// The span exporter, if any; `shutdown` sends what is still buffered.
pub struct Traces {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Traces {
    pub fn shutdown(self) {
        if let Some(p) = self.provider
            && let Err(e) = p.shutdown()
        {
            tracing::warn!(error = %e, "flushing the trace exporter failed");
        }
    }
}

/// The provider exporting to `traces.otlp_endpoint`, and the check of the
/// collector to make once the log is set up.
type Exporting = (
    opentelemetry_sdk::trace::SdkTracerProvider,
    Option<CollectorCheck>,
);

fn tracer_provider(cfg: &TracesConfig) -> anyhow::Result<Option<Exporting>> {
    use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
    use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
    let Some(endpoint) = &cfg.otlp_endpoint else {
        return Ok(None);
    };
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .with_timeout(std::time::Duration::from_secs(5));
    if endpoint.starts_with("https://") {
        exporter =
            exporter.with_tls_config(tonic::transport::ClientTlsConfig::new().with_enabled_roots());
    }
    let exporter = exporter
        .build()
        .map_err(|e| anyhow::anyhow!("traces.otlp_endpoint: {e}"))?;
    let collector = collector_address(endpoint);
    let health = Arc::new(Mutex::new(ExportHealth::default()));
    let check = collector.clone().map(|(host, port)| CollectorCheck {
        host,
        port,
        health: health.clone(),
    });
    let exporter = WatchedExporter {
        inner: exporter,
        collector: collector
            .map(|(h, p)| format!("{h}:{p}"))
            .unwrap_or_default(),
        health,
    };
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            cfg.sample_ratio,
        ))))
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("exitnet-node")
                .build(),
        )
        .build();
    Ok(Some((provider, check)))
}

/// At most one warning about failed exports per this period.
const EXPORT_WARNING_EVERY: Duration = Duration::from_secs(300);

/// Whether exports fail, and when that was last said in the log.
#[derive(Debug, Default)]
struct ExportHealth {
    failing: bool,
    last_warning: Option<Instant>,
    /// Failures since the last warning.
    unreported: u64,
}

impl ExportHealth {
    /// A failure at `now`: `Some(failures)` to warn about now, or `None`
    /// while a warning was given less than `EXPORT_WARNING_EVERY` ago.
    fn failed(&mut self, now: Instant) -> Option<u64> {
        self.failing = true;
        self.unreported += 1;
        let due = self
            .last_warning
            .is_none_or(|at| now.saturating_duration_since(at) >= EXPORT_WARNING_EVERY);
        due.then(|| {
            self.last_warning = Some(now);
            std::mem::take(&mut self.unreported)
        })
    }

    /// A success: true if exports failed before (to say they work again).
    fn succeeded(&mut self) -> bool {
        self.unreported = 0;
        self.last_warning = None;
        std::mem::take(&mut self.failing)
    }
}

/// `host` and `port` of the collector's URL (the port the scheme implies if
/// none is given); never the user information a URL could carry.
fn collector_address(endpoint: &str) -> Option<(String, u16)> {
    let uri: http::Uri = endpoint.parse().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    Some((host.to_owned(), port))
}

/// The collector's address, and the state the exporter shares.
#[derive(Debug)]
struct CollectorCheck {
    host: String,
    port: u16,
    health: Arc<Mutex<ExportHealth>>,
}

/// Tries a TCP connection to the collector once, in the background, and
/// warns if there is none: spans would be dropped silently otherwise until
/// the first export fails.
fn check_collector(check: CollectorCheck) {
    let CollectorCheck { host, port, health } = check;
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let connected = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await;
        let error = match connected {
            Ok(Ok(_)) => return,
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no connection within 5 s".to_owned(),
        };
        let warn = health
            .lock()
            .map(|mut h| h.failed(Instant::now()).is_some())
            .unwrap_or(true);
        if warn {
            tracing::warn!(
                collector = %format!("{host}:{port}"),
                error = %error,
                "the OpenTelemetry collector (traces.otlp_endpoint) cannot be reached: spans are dropped until it can"
            );
        }
    });
}

/// The OTLP exporter, saying in the log when exports fail (rate-limited)
/// and when they work again.
#[derive(Debug)]
struct WatchedExporter<E> {
    inner: E,
    /// `host:port`, for the log.
    collector: String,
    health: Arc<Mutex<ExportHealth>>,
}

impl<E: opentelemetry_sdk::trace::SpanExporter> opentelemetry_sdk::trace::SpanExporter
    for WatchedExporter<E>
{
    async fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        match &result {
            Err(e) => {
                let warn = self
                    .health
                    .lock()
                    .map(|mut h| h.failed(Instant::now()))
                    .ok()
                    .flatten();
                if let Some(failures) = warn {
                    tracing::warn!(
                        collector = %self.collector,
                        error = %e,
                        spans,
                        failures,
                        "exporting spans to the OpenTelemetry collector (traces.otlp_endpoint) failed; they are dropped"
                    );
                }
            }
            Ok(()) => {
                if self.health.lock().is_ok_and(|mut h| h.succeeded()) {
                    tracing::info!(
                        collector = %self.collector,
                        "spans reach the OpenTelemetry collector again"
                    );
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// tonic answers a request above the decoding limit with OUT_OF_RANGE; the
/// API promises RESOURCE_EXHAUSTED for it (as gRPC itself does for oversized
/// messages), so the status is rewritten here, where every call passes.
fn oversize_is_resource_exhausted(headers: &mut http::HeaderMap) {
    let oversize = headers.get("grpc-status").is_some_and(|v| v == "11")
        && headers
            .get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|m| {
                m.contains("message%20length%20too%20large")
                    || m.contains("message length too large")
            });
    if oversize {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
        headers.insert(
            "grpc-message",
            http::HeaderValue::from_static("message: larger than limits.max_message_bytes"),
        );
    }
    // A message that is not valid protobuf (wrong wire types, invalid UTF-8
    // in a string field) is the caller's error, not ours: INVALID_ARGUMENT,
    // keeping prost's text, which names the message and field.
    let undecodable = headers.get("grpc-status").is_some_and(|v| v == "13")
        && headers
            .get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|m| {
                m.starts_with("failed%20to%20decode%20Protobuf%20message")
                    || m.starts_with("failed to decode Protobuf message")
            });
    if undecodable {
        headers.insert("grpc-status", http::HeaderValue::from_static("3"));
    }
}

/// The called method's path, for handlers that record it (security events).
#[derive(Debug, Clone)]
pub struct CallPath(pub String);

/// A tower layer that wraps every gRPC call in a span and logs its outcome.
#[derive(Debug, Clone)]
pub struct CallLog {
    surface: &'static str,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
}

impl CallLog {
    pub fn new(surface: &'static str, metrics: std::sync::Arc<crate::metrics::Metrics>) -> Self {
        Self { surface, metrics }
    }
}

impl<S> tower::Layer<S> for CallLog {
    type Service = CallLogService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallLogService {
            inner,
            surface: self.surface,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct CallLogService<S> {
    inner: S,
    surface: &'static str,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
}

impl<S, B, RB> tower::Service<http::Request<B>> for CallLogService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>> + Send,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        // The path is /package.Service/Method: fixed names, no content.
        let method = req.uri().path().to_owned();
        req.extensions_mut().insert(CallPath(method.clone()));
        let span = tracing::info_span!(
            "call",
            surface = self.surface,
            method = %method,
            peer = tracing::field::Empty,
            caller = tracing::field::Empty,
        );
        let started = Instant::now();
        let fut = self.inner.call(req);
        let (metrics, surface) = (self.metrics.clone(), self.surface);
        Box::pin(
            async move {
                let mut result = fut.await;
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                if let Ok(resp) = &mut result {
                    oversize_is_resource_exhausted(resp.headers_mut());
                }
                match &result {
                    Ok(resp) => {
                        // Errors come as trailers-only responses with the status
                        // in the headers; a successful unary call ends with 0.
                        let status = resp
                            .headers()
                            .get("grpc-status")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("0")
                            .to_owned();
                        metrics
                            .calls
                            .get_or_create(&crate::metrics::CallLabels {
                                surface: surface.into(),
                                // Unknown paths are not label values: no unbounded series.
                                method: if status == "12" {
                                    "unknown".into()
                                } else {
                                    method.clone()
                                },
                                code: status.clone(),
                            })
                            .inc();
                        if status == "0" {
                            tracing::debug!(status = %status, ms = format!("{ms:.2}"), "call");
                        } else {
                            tracing::info!(status = %status, ms = format!("{ms:.2}"), "call");
                        }
                    }
                    Err(_) => tracing::warn!(ms = format!("{ms:.2}"), "call failed in transport"),
                }
                result
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_failures_are_reported_at_most_every_period() {
        let mut h = ExportHealth::default();
        let t0 = Instant::now();
        assert_eq!(h.failed(t0), Some(1));
        assert_eq!(h.failed(t0 + Duration::from_secs(5)), None);
        assert_eq!(h.failed(t0 + Duration::from_secs(299)), None);
        // The next warning counts the failures it stands for.
        assert_eq!(h.failed(t0 + EXPORT_WARNING_EVERY), Some(3));
        assert_eq!(h.failed(t0 + EXPORT_WARNING_EVERY), None);
        // Working again: said once; a new failure is reported at once.
        assert!(h.succeeded());
        assert!(!h.succeeded());
        let t1 = t0 + EXPORT_WARNING_EVERY + Duration::from_secs(1);
        assert_eq!(h.failed(t1), Some(1));
    }

    #[test]
    fn the_collector_address_carries_no_credentials() {
        assert_eq!(
            collector_address("http://collector:4317"),
            Some(("collector".into(), 4317))
        );
        assert_eq!(
            collector_address("https://user:secret@otel.example.org/"),
            Some(("otel.example.org".into(), 443))
        );
        assert_eq!(
            collector_address("http://[::1]:4317"),
            Some(("::1".into(), 4317))
        );
        assert_eq!(
            collector_address("http://127.0.0.1"),
            Some(("127.0.0.1".into(), 80))
        );
        assert_eq!(collector_address("not a url"), None);
    }
}
