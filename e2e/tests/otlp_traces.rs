//! Traces over OTLP from the built binary: `modelpub simulate` with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at a small OTLP/gRPC collector
//! this test runs on loopback. Every process of the federation (the
//! aggregator and each institution) exports its round spans there.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use modelpub_e2e::{modelpub_bin, text};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;

/// Keeps every span it is sent.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans = request
            .into_inner()
            .resource_spans
            .into_iter()
            .flat_map(|rs| rs.scope_spans)
            .flat_map(|ss| ss.spans);
        self.0.lock().unwrap().extend(spans);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            Value::IntValue(i) => Some(i.to_string()),
            other => Some(format!("{other:?}")),
        })
}

#[test]
fn every_party_exports_its_round_spans() {
    let collector = Collector::default();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    runtime.spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let tmp = tempfile::tempdir().unwrap();
    let run = std::process::Command::new(modelpub_bin())
        .args(["simulate", "--rounds", "2", "--skip-local-only", "--out"])
        .arg(tmp.path().join("run"))
        .env("RUST_LOG", "info")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"))
        .output()
        .expect("run modelpub simulate");
    assert!(run.status.success(), "simulate failed:\n{}", text(&run));

    let spans = collector.0.lock().unwrap();
    let rounds: Vec<&Span> = spans.iter().filter(|s| s.name == "round").collect();
    let aggregator: BTreeSet<String> = rounds
        .iter()
        .filter(|s| attribute(s, "participant").is_none())
        .filter_map(|s| attribute(s, "round"))
        .collect();
    assert_eq!(
        aggregator,
        BTreeSet::from(["1".to_string(), "2".to_string()]),
        "the aggregator's round spans; all spans: {:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    let institutions: BTreeSet<String> = rounds
        .iter()
        .filter_map(|s| attribute(s, "participant"))
        .collect();
    assert_eq!(
        institutions,
        BTreeSet::from(["inst-0".into(), "inst-1".into(), "inst-2".into()]),
        "every institution's round spans"
    );
    assert!(
        rounds
            .iter()
            .all(|s| attribute(s, "federation").as_deref() == Some("modelpub-simulate")),
        "round spans name their federation"
    );
}
