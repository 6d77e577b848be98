//! `/metrics` (OpenMetrics text), `/healthz` and `/readyz` for the operator.
//! `/healthz` answers while the server's runtime runs; `/readyz` answers
//! 200 once the controllers flip the shared [`Readiness`] flag.

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

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen for metrics on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// Set by the controllers once they can reconcile (caches synced).
#[derive(Clone, Default, Debug)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set_ready(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn set_not_ready(&self) {
        self.0.store(false, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

#[derive(Clone)]
pub struct TelemetryServer {
    registry: Arc<Registry>,
    readiness: Readiness,
}

impl TelemetryServer {
    pub fn new(registry: Registry, readiness: Readiness) -> Self {
        Self {
            registry: Arc::new(registry),
            readiness,
        }
    }

    pub fn router(self) -> Router {
        Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
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
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &server.registry) {
        Ok(()) => ([(header::CONTENT_TYPE, OPENMETRICS)], text).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {e}"),
        )
            .into_response(),
    }
}

async fn healthz() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

async fn readyz(State(server): State<TelemetryServer>) -> Response {
    if server.readiness.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
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

    #[tokio::test]
    async fn a_taken_port_is_a_clear_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let err = TelemetryServer::new(Registry::default(), Readiness::default())
            .spawn(&addr)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(&addr), "{err}");
    }
}
