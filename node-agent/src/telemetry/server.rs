//! The HTTP side of telemetry: `/metrics` (OpenMetrics text), `/healthz`,
//! `/readyz`, and on the aggregator `/status`. It runs on its own listener,
//! apart from the mutual-TLS gRPC port, so Prometheus and kubelet probes
//! need no federation certificate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use super::metrics::render;
use super::status::StatusBoard;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen for metrics on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// Flipped once the role can do its work (the gRPC server is bound, or the
/// participant has joined); `/readyz` answers 503 until then.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set_ready(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Liveness: `Err(why)` when the process can no longer make progress (a
/// poisoned state lock, say); `/healthz` then answers 503 with the reason.
pub type Health = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

#[derive(Clone)]
pub struct TelemetryServer {
    registry: Arc<Registry>,
    readiness: Readiness,
    health: Health,
    status: Option<Arc<StatusBoard>>,
}

impl TelemetryServer {
    pub fn new(registry: Registry, readiness: Readiness, health: Health) -> Self {
        Self {
            registry: Arc::new(registry),
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
        Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/status", get(status))
            .with_state(self)
    }

    /// Binds `addr` (HOST:PORT; port 0 picks a free one) and serves in the
    /// background for as long as the runtime runs. Returns the bound address.
    pub async fn spawn(self, addr: &str) -> Result<SocketAddr, ServerError> {
        let bind_error = |source| ServerError::Bind {
            addr: addr.to_string(),
            source,
        };
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        let bound = listener.local_addr().map_err(bind_error)?;
        let router = self.router();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::warn!(%bound, "metrics server stopped: {e}");
            }
        });
        Ok(bound)
    }
}

async fn metrics(State(server): State<TelemetryServer>) -> Response {
    match render(&server.registry) {
        Ok(text) => ([(header::CONTENT_TYPE, OPENMETRICS)], text).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {e}"),
        )
            .into_response(),
    }
}

async fn healthz(State(server): State<TelemetryServer>) -> Response {
    match (server.health)() {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

async fn readyz(State(server): State<TelemetryServer>) -> Response {
    if server.readiness.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn status(State(server): State<TelemetryServer>) -> Response {
    match &server.status {
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

    #[tokio::test]
    async fn a_taken_port_is_a_clear_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let server = TelemetryServer::new(
            Registry::default(),
            Readiness::default(),
            Arc::new(|| Ok(())),
        );
        let err = server.spawn(&addr).await.unwrap_err().to_string();
        assert!(err.contains(&addr), "{err}");
    }
}
