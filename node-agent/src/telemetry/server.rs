//! The HTTP side of telemetry: `/metrics` (OpenMetrics text), `/healthz`,
//! `/readyz`, and on the aggregator `/status`. It runs on its own listener,
//! apart from the mutual-TLS gRPC port, so Prometheus and kubelet probes
//! need no federation certificate.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use modelpub_telemetry::http;
pub use modelpub_telemetry::http::{Health, Readiness, ServerError};
use prometheus_client::registry::Registry;

use super::status::StatusBoard;

/// The shared `/metrics`, `/healthz`, `/readyz`, plus `/status` (404 on a
/// participant).
pub struct TelemetryServer {
    registry: Registry,
    readiness: Readiness,
    health: Health,
    status: Option<Arc<StatusBoard>>,
}

impl TelemetryServer {
    pub fn new(registry: Registry, readiness: Readiness, health: Health) -> Self {
        Self {
            registry,
            readiness,
            health,
            status: None,
        }
    }

    /// Serves `GET /status` from `board` too (the aggregator).
    pub fn with_status(mut self, board: Arc<StatusBoard>) -> Self {
        self.status = Some(board);
        self
    }

    pub fn router(self) -> Router {
        let status = Router::new()
            .route("/status", get(status))
            .with_state(self.status);
        http::router(self.registry, self.readiness, self.health).merge(status)
    }

    /// Binds `addr` (HOST:PORT; port 0 picks a free one) and serves in the
    /// background for as long as the runtime runs. Returns the bound address.
    pub async fn spawn(self, addr: &str) -> Result<SocketAddr, ServerError> {
        http::serve(addr, self.router()).await
    }
}

async fn status(State(board): State<Option<Arc<StatusBoard>>>) -> Response {
    match board {
        Some(board) => axum::Json(board.snapshot()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "/status is served by the aggregator only\n",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::metrics::AggregatorMetrics;
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, Ordering};

    /// One HTTP/1.0 GET on a blocking socket: status code and body.
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
    async fn serves_metrics_probes_and_status() {
        let mut registry = Registry::default();
        let metrics = AggregatorMetrics::new("fed", &mut registry);
        metrics.round_opened(1, 2);
        let readiness = Readiness::default();
        let healthy = Arc::new(AtomicBool::new(true));
        let h = healthy.clone();
        let board = Arc::new(StatusBoard::new("fed", 3, "ab"));
        board.round_opened(1);
        let addr = TelemetryServer::new(
            registry,
            readiness.clone(),
            Arc::new(move || {
                if h.load(Ordering::Relaxed) {
                    Ok(())
                } else {
                    Err("state lock poisoned".into())
                }
            }),
        )
        .with_status(board)
        .spawn("127.0.0.1:0")
        .await
        .unwrap();
        let calls = tokio::task::spawn_blocking(move || {
            let ready_before = get(addr, "/readyz").0;
            readiness.set_ready();
            let ready_after = get(addr, "/readyz").0;
            let health_ok = get(addr, "/healthz").0;
            healthy.store(false, Ordering::Relaxed);
            let health_bad = get(addr, "/healthz");
            (
                ready_before,
                ready_after,
                health_ok,
                health_bad,
                get(addr, "/metrics"),
                get(addr, "/status"),
            )
        })
        .await
        .unwrap();
        let (ready_before, ready_after, health_ok, health_bad, metrics, status) = calls;
        assert_eq!((ready_before, ready_after), (503, 200));
        assert_eq!(health_ok, 200);
        assert_eq!(health_bad.0, 503);
        assert!(health_bad.1.contains("poisoned"));
        assert_eq!(metrics.0, 200);
        assert!(
            metrics
                .1
                .contains(r#"modelpub_round_current{federation="fed"} 1"#),
            "{}",
            metrics.1
        );
        assert_eq!(status.0, 200);
        let json: serde_json::Value = serde_json::from_str(&status.1).unwrap();
        assert_eq!(json["phase"], "Running");
        assert_eq!(json["current_round"], 1);
        assert_eq!(json["total_rounds"], 3);
    }
}
