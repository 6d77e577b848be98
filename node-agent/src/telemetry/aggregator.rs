//! The aggregator's telemetry in one place: every event the driver and the
//! gRPC handlers report goes to both the metrics and the `/status` board, so
//! the two can never disagree.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::registry::Registry;

use super::metrics::AggregatorMetrics;
use super::server::{Health, Readiness, ServerError, TelemetryServer};
use super::status::StatusBoard;
use crate::round_record::RoundRecord;

pub struct AggregatorTelemetry {
    metrics: AggregatorMetrics,
    status: Arc<StatusBoard>,
    readiness: Readiness,
}

impl AggregatorTelemetry {
    /// The telemetry of a run of `total_rounds` starting from the model
    /// `model_digest`, and the registry its metrics live in (for [`Self::serve`]).
    pub fn new(federation: &str, total_rounds: u32, model_digest: &str) -> (Self, Registry) {
        let mut registry = Registry::default();
        let telemetry = Self {
            metrics: AggregatorMetrics::new(federation, &mut registry),
            status: Arc::new(StatusBoard::new(federation, total_rounds, model_digest)),
            readiness: Readiness::default(),
        };
        (telemetry, registry)
    }

    /// Serves /metrics, /healthz, /readyz and /status on `addr`.
    pub async fn serve(
        &self,
        addr: &str,
        registry: Registry,
        health: Health,
    ) -> Result<SocketAddr, ServerError> {
        TelemetryServer::new(registry, self.readiness.clone(), health)
            .with_status(self.status.clone())
            .spawn(addr)
            .await
    }

    /// The gRPC server accepts connections.
    pub fn ready(&self) {
        self.readiness.set_ready();
    }

    pub fn status(&self) -> &StatusBoard {
        &self.status
    }

    pub fn round_opened(&self, round: u32, planned: usize) {
        self.metrics.round_opened(round, planned);
        self.status.round_opened(round);
    }

    pub fn update_accepted(&self, bytes: u64) {
        self.metrics.update_accepted(bytes);
    }

    pub fn round_closed(&self, record: &RoundRecord) {
        self.metrics.round_closed(record);
        self.status.round_closed(record);
    }

    /// A round closed before a restart (checkpoint.rs): back on the status
    /// board, but not counted again in the metrics, whose counters start
    /// over with the process as Prometheus expects of a restart.
    pub fn round_restored(&self, record: &RoundRecord) {
        self.status.round_closed(record);
    }

    /// The run ended: `Ok(summary)`, or `Err(why it was aborted)`.
    pub fn finished(&self, outcome: Result<&str, &str>) {
        self.status.finished(outcome);
    }
}
