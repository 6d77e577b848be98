//! The operator's telemetry: reconcile metrics for Prometheus, `/healthz`
//! and `/readyz` for the kubelet, on one plain-HTTP listener
//! (`--metrics-addr`, default 0.0.0.0:8080).
//!
//! ```no_run
//! # async fn demo() -> Result<(), modelpub_operator::telemetry::ServerError> {
//! use modelpub_operator::telemetry::{Metrics, Readiness, TelemetryServer};
//! let mut registry = prometheus_client::registry::Registry::default();
//! let metrics = Metrics::new(&mut registry);
//! let readiness = Readiness::default();
//! TelemetryServer::new(registry, readiness.clone()).spawn("0.0.0.0:8080").await?;
//! // in a reconciler:
//! let run = metrics.reconcile_started("federationround");
//! // ... on error: run.failed("apply");  (the duration is observed when `run` drops)
//! readiness.set_ready(); // once the controllers' caches are synced
//! # Ok(()) }
//! ```

pub mod metrics;
pub mod server;

/// OTLP trace export when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (crate
/// `modelpub-telemetry`, shared with the node-agent): in `main`, keep the
/// [`tracing_export::OtlpExport`] alive and add its `layer()` to the
/// subscriber, as `modelpub`'s `main.rs` does.
pub use modelpub_telemetry::otlp as tracing_export;

pub use metrics::{Metrics, ReconcileRun};
pub use server::{Readiness, ServerError, TelemetryServer};
