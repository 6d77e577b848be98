//! A minimal OTLP/gRPC trace collector on loopback, for tests that check
//! spans really leave the process (feature `test-collector`; never used by
//! the binaries).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;

/// One exported span and the `service.name` of the resource it came with.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub service: Option<String>,
    pub span: Span,
}

/// Keeps every span it is sent.
#[derive(Clone, Default)]
pub struct Collector(Arc<Mutex<Vec<ReceivedSpan>>>);

impl Collector {
    /// Serves a new collector on `127.0.0.1:<free port>` on `runtime`.
    pub fn start(runtime: &tokio::runtime::Runtime) -> std::io::Result<(Self, SocketAddr)> {
        let collector = Self::default();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        runtime.spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(collector.clone()))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        Ok((collector, addr))
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// A span attribute as text (strings as they are, other values printed).
pub fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            Value::IntValue(i) => Some(i.to_string()),
            other => Some(format!("{other:?}")),
        })
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                });
            for span in rs.scope_spans.into_iter().flat_map(|ss| ss.spans) {
                received.push(ReceivedSpan {
                    service: service.clone(),
                    span,
                });
            }
        }
        self.0
            .lock()
            .map_err(|_| tonic::Status::internal("collector lock poisoned"))?
            .extend(received);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}
