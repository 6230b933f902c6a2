//! Logs and per-call spans. A span carries the surface, the method, the peer
//! or caller, the status and the duration: never a field of a message. The
//! spans can also be exported to an OpenTelemetry collector (`[traces]`).

use crate::config::{LogFormat, TracesConfig};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;
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
    let provider = tracer_provider(traces)?;
    let otel = provider.as_ref().map(|p| {
        use opentelemetry::trace::TracerProvider;
        tracing_opentelemetry::layer().with_tracer(p.tracer("exitnet-node"))
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init();
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

fn tracer_provider(
    cfg: &TracesConfig,
) -> anyhow::Result<Option<opentelemetry_sdk::trace::SdkTracerProvider>> {
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
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                cfg.sample_ratio,
            ))))
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name("exitnet-node")
                    .build(),
            )
            .build(),
    ))
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
