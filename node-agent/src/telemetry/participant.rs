//! A participant's telemetry: its metrics, and a metrics server when the
//! configuration asks for one (`metrics_listen`).

use prometheus_client::registry::Registry;
use std::sync::Arc;

use super::metrics::ParticipantMetrics;
use super::server::{Readiness, ServerError, TelemetryServer};

pub struct ParticipantTelemetry {
    pub metrics: ParticipantMetrics,
    readiness: Readiness,
}

impl ParticipantTelemetry {
    /// Records metrics always; serves them when `listen` is set. Readiness
    /// stays false until [`Self::joined`].
    pub async fn start(
        federation: &str,
        party: &str,
        listen: Option<&str>,
    ) -> Result<Self, ServerError> {
        let mut registry = Registry::default();
        let telemetry = Self {
            metrics: ParticipantMetrics::new(federation, party, &mut registry),
            readiness: Readiness::default(),
        };
        if let Some(addr) = listen {
            // A participant's loop lives in this process; if the server
            // answers, the loop's runtime is alive.
            let bound =
                TelemetryServer::new(registry, telemetry.readiness.clone(), Arc::new(|| Ok(())))
                    .spawn(addr)
                    .await?;
            tracing::info!(%bound, "metrics listening");
        }
        Ok(telemetry)
    }

    /// The aggregator accepted the join.
    pub fn joined(&self) {
        self.readiness.set_ready();
    }
}
