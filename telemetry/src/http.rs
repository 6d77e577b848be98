//! The HTTP side of telemetry: `/metrics` (OpenMetrics text), `/healthz`
//! and `/readyz`, on a listener of its own, apart from any mutual-TLS port,
//! so Prometheus and kubelet probes need no federation certificate. A
//! binary adds its own routes (the aggregator's `/status`) with
//! [`Router::merge`].

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

/// Flipped once the process can do its work (the gRPC server is bound, the
/// participant has joined, the controllers have started); `/readyz` answers
/// 503 until then.
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

/// Liveness: `Err(why)` when the process can no longer make progress (a
/// poisoned state lock, say); `/healthz` then answers 503 with the reason.
pub type Health = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Liveness for a process whose serving runtime is all there is to check.
pub fn always_healthy() -> Health {
    Arc::new(|| Ok(()))
}

#[derive(Clone)]
struct Probes {
    registry: Arc<Registry>,
    readiness: Readiness,
    health: Health,
}

/// `/metrics`, `/healthz` and `/readyz`.
pub fn router(registry: Registry, readiness: Readiness, health: Health) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Probes {
            registry: Arc::new(registry),
            readiness,
            health,
        })
}

/// Binds `addr` (HOST:PORT; port 0 picks a free one) and serves `router`
/// in the background for as long as the runtime runs. Returns the bound
/// address.
pub async fn serve(addr: &str, router: Router) -> Result<SocketAddr, ServerError> {
    let bind_error = |source| ServerError::Bind {
        addr: addr.to_string(),
        source,
    };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::warn!(%bound, "metrics server stopped: {e}");
        }
    });
    Ok(bound)
}

async fn metrics(State(probes): State<Probes>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &probes.registry) {
        Ok(()) => ([(header::CONTENT_TYPE, OPENMETRICS)], text).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {e}"),
        )
            .into_response(),
    }
}

async fn healthz(State(probes): State<Probes>) -> Response {
    match (probes.health)() {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

async fn readyz(State(probes): State<Probes>) -> Response {
    if probes.readiness.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
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
    async fn serves_metrics_and_both_probes() {
        let mut registry = Registry::default();
        let counter = Counter::<u64>::default();
        registry.register("modelpub_test_events", "events seen", counter.clone());
        counter.inc();
        let readiness = Readiness::default();
        let healthy = Arc::new(AtomicBool::new(true));
        let h = healthy.clone();
        let health: Health = Arc::new(move || {
            if h.load(Ordering::Relaxed) {
                Ok(())
            } else {
                Err("state lock poisoned".into())
            }
        });
        let addr = serve("127.0.0.1:0", router(registry, readiness.clone(), health))
            .await
            .unwrap();
        let (ready, health, metrics) = tokio::task::spawn_blocking(move || {
            let before = get(addr, "/readyz").0;
            readiness.set_ready();
            let after = get(addr, "/readyz").0;
            readiness.set_not_ready();
            let again = get(addr, "/readyz").0;
            let ok = get(addr, "/healthz").0;
            healthy.store(false, Ordering::Relaxed);
            let bad = get(addr, "/healthz");
            ((before, after, again), (ok, bad), get(addr, "/metrics"))
        })
        .await
        .unwrap();
        assert_eq!(ready, (503, 200, 503));
        assert_eq!(health.0, 200);
        assert_eq!(health.1.0, 503);
        assert!(health.1.1.contains("poisoned"), "{}", health.1.1);
        assert_eq!(metrics.0, 200);
        assert!(
            metrics.1.contains("modelpub_test_events_total 1"),
            "{}",
            metrics.1
        );
    }

    #[tokio::test]
    async fn a_taken_port_is_a_clear_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let app = router(Registry::default(), Readiness::default(), always_healthy());
        let err = serve(&addr, app).await.unwrap_err().to_string();
        assert!(err.contains(&addr), "{err}");
    }
}
