//! `/metrics` (OpenMetrics text), `/healthz` and `/readyz` for the operator.
//! `/healthz` answers while the server's runtime runs; `/readyz` answers
//! 200 once the controllers flip the shared [`Readiness`] flag.

use std::net::SocketAddr;

use axum::Router;
use modelpub_telemetry::http;
pub use modelpub_telemetry::http::{Readiness, ServerError};
use prometheus_client::registry::Registry;

pub struct TelemetryServer {
    registry: Registry,
    readiness: Readiness,
}

impl TelemetryServer {
    pub fn new(registry: Registry, readiness: Readiness) -> Self {
        Self {
            registry,
            readiness,
        }
    }

    /// `/healthz` answers while the server's runtime runs: the operator
    /// has no lock or loop whose death the runtime would not share.
    pub fn router(self) -> Router {
        http::router(self.registry, self.readiness, http::always_healthy())
    }

    /// Binds `addr` (HOST:PORT; port 0 picks a free one) and serves in the
    /// background for as long as the runtime runs. Returns the bound address.
    pub async fn spawn(self, addr: &str) -> Result<SocketAddr, ServerError> {
        http::serve(addr, self.router()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Metrics;
    use std::io::{Read, Write};

    fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let code = text[9..12].parse().unwrap();
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        (code, body.to_string())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serves_metrics_and_flips_readiness() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        drop(metrics.reconcile_started("trustdomain"));
        let readiness = Readiness::default();
        let addr = TelemetryServer::new(registry, readiness.clone())
            .spawn("127.0.0.1:0")
            .await
            .unwrap();
        let (before, after, health, metrics) = tokio::task::spawn_blocking(move || {
            let before = get(addr, "/readyz").0;
            readiness.set_ready();
            (
                before,
                get(addr, "/readyz").0,
                get(addr, "/healthz").0,
                get(addr, "/metrics"),
            )
        })
        .await
        .unwrap();
        assert_eq!((before, after, health), (503, 200, 200));
        assert_eq!(metrics.0, 200);
        assert!(
            metrics
                .1
                .contains(r#"modelpub_reconcile_runs_total{controller="trustdomain"} 1"#),
            "{}",
            metrics.1
        );
    }
}
