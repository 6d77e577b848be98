//! OTLP trace export.
//!
//! Tracing spans go out over OTLP (gRPC) when an endpoint is configured
//! (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`,
//! e.g. `http://otel-collector:4317`). Without one nothing is exported and
//! nothing extra runs.
//!
//! The exporter is tonic, the same tonic 0.14 the federation protocol uses.
//! It gets a small runtime of its own: the batch processor exports from its
//! own thread, and tonic's connection needs a Tokio runtime that outlives
//! every command's runtime, up to the final flush.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetryLayer;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(
        "OTEL_EXPORTER_OTLP_PROTOCOL is `{0}`; modelpub exports traces over OTLP/gRPC only (unset it or set `grpc`)"
    )]
    UnsupportedProtocol(String),
    #[error(
        "OTLP endpoint `{0}` must be plain gRPC, http://HOST:PORT (e.g. an in-cluster collector); TLS to the collector is not built in"
    )]
    BadEndpoint(String),
    #[error("cannot start the OTLP exporter's runtime: {0}")]
    Runtime(#[from] std::io::Error),
    #[error("cannot build the OTLP span exporter for {endpoint}: {source}")]
    Build {
        endpoint: String,
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// The OTLP endpoint from the standard environment variables, if any.
pub fn endpoint_from_env() -> Result<Option<String>, ExportError> {
    if let Ok(protocol) = std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL")
        && !protocol.is_empty()
        && protocol != "grpc"
    {
        return Err(ExportError::UnsupportedProtocol(protocol));
    }
    Ok([
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .filter_map(|v| std::env::var(v).ok())
    .find(|e| !e.trim().is_empty()))
}

/// A running OTLP span export. Dropping it flushes the spans still queued.
pub struct OtlpExport {
    provider: SdkTracerProvider,
    // Declared after `provider` so it is dropped after the final flush.
    _runtime: tokio::runtime::Runtime,
}

impl OtlpExport {
    /// Exports to `endpoint` as `service_name` (`OTEL_SERVICE_NAME`, when
    /// set, wins, as the OpenTelemetry conventions say).
    pub fn start(endpoint: &str, service_name: &str) -> Result<Self, ExportError> {
        // The exporter is built without a TLS stack of its own (no second
        // set of root certificates in every image); an https:// endpoint
        // would only fail later, at the first export.
        if !endpoint.starts_with("http://") {
            return Err(ExportError::BadEndpoint(endpoint.to_string()));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otlp-export")
            .enable_all()
            .build()?;
        let exporter = runtime
            .block_on(async {
                opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(endpoint)
                    .build()
            })
            .map_err(|source| ExportError::Build {
                endpoint: endpoint.to_string(),
                source,
            })?;
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(service_name.to_string());
        }
        let provider = {
            let _in_runtime = runtime.enter();
            SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource.build())
                .build()
        };
        Ok(Self {
            provider,
            _runtime: runtime,
        })
    }

    /// The `tracing` layer that turns spans into OpenTelemetry spans.
    pub fn layer<S>(&self) -> OpenTelemetryLayer<S, SdkTracer>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        tracing_opentelemetry::layer().with_tracer(self.provider.tracer("modelpub"))
    }
}

impl Drop for OtlpExport {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("warning: flushing OTLP spans: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_collector::{Collector, attribute};
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn spans_reach_a_real_otlp_grpc_collector() {
        let server_runtime = tokio::runtime::Runtime::new().unwrap();
        let (collector, addr) = Collector::start(&server_runtime).unwrap();

        let export = OtlpExport::start(&format!("http://{addr}"), "modelpub-test").unwrap();
        let subscriber = tracing_subscriber::registry().with(export.layer());
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("round", round = 7u32);
            let _entered = span.enter();
            tracing::info!("inside the round");
        });
        drop(export); // flushes

        let spans = collector.spans();
        let round = spans
            .iter()
            .find(|s| s.span.name == "round")
            .unwrap_or_else(|| panic!("no `round` span among {} exported", spans.len()));
        assert_eq!(
            round.service.as_deref(),
            Some("modelpub-test"),
            "service.name"
        );
        // tracing-opentelemetry writes unsigned fields as strings.
        assert_eq!(
            attribute(&round.span, "round").as_deref(),
            Some("7"),
            "the span keeps its fields: {:?}",
            round.span.attributes
        );
    }

    #[test]
    fn a_malformed_endpoint_is_a_clear_error() {
        for endpoint in ["collector:4317", "https://collector:4317"] {
            let err = OtlpExport::start(endpoint, "x")
                .err()
                .expect("an error")
                .to_string();
            assert!(err.contains(endpoint) && err.contains("http://"), "{err}");
        }
    }
}
