//! Trace export: a node's per-call spans reach an OpenTelemetry collector (a
//! stand-in speaking OTLP/gRPC, started here) and carry no case content.

use exitnet_proto::pb;
use exitnet_proto::pb::consent_service_client::ConsentServiceClient;
use exitnet_tests::{Backend, NodeProcess, NodeSpec, bearer, wait_until};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::{Code, Request, Response, Status};

#[derive(Default, Clone)]
struct Collector(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        req: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.0.lock().unwrap().push(req.into_inner());
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// One exported span: its name, its attributes and its events' attributes as text.
struct Span {
    name: String,
    service: String,
    attrs: Vec<(String, String)>,
}

fn text(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn spans(c: &Collector) -> Vec<Span> {
    let mut out = Vec::new();
    for req in c.0.lock().unwrap().iter() {
        for rs in &req.resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .map(|a| text(&a.value))
                .unwrap_or_default();
            for ss in &rs.scope_spans {
                for s in &ss.spans {
                    let mut attrs: Vec<(String, String)> = s
                        .attributes
                        .iter()
                        .map(|a| (a.key.clone(), text(&a.value)))
                        .collect();
                    for e in &s.events {
                        attrs.push(("event".into(), e.name.clone()));
                        attrs.extend(e.attributes.iter().map(|a| (a.key.clone(), text(&a.value))));
                    }
                    out.push(Span {
                        name: s.name.clone(),
                        service: service.clone(),
                        attrs,
                    });
                }
            }
        }
    }
    out
}

fn has(s: &Span, key: &str, value: &str) -> bool {
    s.attrs.iter().any(|(k, v)| k == key && v == value)
}

#[tokio::test]
async fn spans_reach_the_collector_without_case_content() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let collector = Collector::default();
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
    let alice = node.dev_token("case_manager", "alice").await.unwrap();
    let mut consents = ConsentServiceClient::new(node.api_channel().await.unwrap());
    // A consent recorded for a client, with a witness's name; then bad input.
    let req = pb::RecordConsentRequest {
        request_id: "r-1".into(),
        subject_ref: "client-7731".into(),
        terms: Some(pb::ConsentTerms {
            recipients: vec!["prison-b".into()],
            purposes: vec![pb::Purpose::ExitSupport as i32],
            data_categories: vec![pb::DataCategory::AgeBand as i32],
            need_areas: vec![pb::NeedArea::MentalHealth as i32],
            legal_basis: Some(pb::LegalBasis {
                kind: pb::LegalBasisKind::Consent as i32,
                statute: String::new(),
            }),
            valid_until: Some(exitnet_proto::Timestamp {
                seconds: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs() as i64
                    + 365 * 86400,
                nanos: 0,
            }),
            ..Default::default()
        }),
        collection_method: pb::CollectionMethod::VerbalWitnessed as i32,
        witness: "Witness Wilhelmina".into(),
    };
    consents
        .record_consent(bearer(&alice, req.clone()))
        .await
        .unwrap();
    let mut bad = req.clone();
    bad.request_id = "r-2".into();
    bad.terms = None;
    let e = consents
        .record_consent(bearer(&alice, bad))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // A graceful stop sends what the exporter still holds.
    let (status, _) = node.stop().await.unwrap();
    assert!(status.success());
    let method = "/exitnet.v1.ConsentService/RecordConsent";
    wait_until(
        "both calls' spans at the collector",
        Duration::from_secs(20),
        || {
            let found = spans(&collector)
                .iter()
                .filter(|s| s.name == "call" && has(s, "method", method))
                .count();
            async move { (found >= 2).then_some(()) }
        },
    )
    .await
    .unwrap();
    let all = spans(&collector);
    let calls: Vec<&Span> = all
        .iter()
        .filter(|s| s.name == "call" && has(s, "method", method))
        .collect();
    for s in &calls {
        assert_eq!(s.service, "exitnet-node");
        assert!(has(s, "surface", "client"), "{:?}", s.attrs);
    }
    // The refused call's span tells its status (3, INVALID_ARGUMENT).
    assert!(
        calls.iter().any(|s| has(s, "status", "3")),
        "{:?}",
        calls.iter().map(|s| &s.attrs).collect::<Vec<_>>()
    );
    for s in &all {
        for (k, v) in &s.attrs {
            for personal in ["client-7731", "Wilhelmina"] {
                assert!(!v.contains(personal), "{personal} in span {} {k}", s.name);
            }
        }
    }
}
