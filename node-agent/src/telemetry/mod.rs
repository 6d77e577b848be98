//! What the node-agent tells the outside world about itself: Prometheus
//! metrics, liveness and readiness, the aggregator's `/status` JSON (what the
//! operator polls), and tracing spans over OTLP when an endpoint is set.
//!
//! Metric names and the `/status` shape are a contract with the operator
//! (which polls `/status`) and the Grafana dashboard
//! (`deploy/grafana/modelpub-dashboard.json`, checked against a real
//! Prometheus by the e2e suite `prometheus_dashboard`): rename nothing
//! without changing both.

pub mod aggregator;
pub mod memory;
pub mod metrics;
pub mod participant;
pub mod server;
pub mod status;

/// OTLP trace export (crate `modelpub-telemetry`, shared with the operator).
pub use modelpub_telemetry::otlp as tracing_export;

pub use aggregator::AggregatorTelemetry;
pub use metrics::{AggregatorMetrics, ParticipantMetrics};
pub use participant::ParticipantTelemetry;
pub use server::{Health, Readiness, TelemetryServer};
pub use status::{FederationStatus, RoundOutcome, RoundStatus, StatusBoard, StatusPhase};
