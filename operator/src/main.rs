//! `modelpub-operator`: serves `/metrics`, `/healthz` and `/readyz` first
//! (they do not depend on the CRDs or on leadership), then joins the leader
//! election and runs the TrustDomain, ComputeOffer and FederationRound
//! controllers only while this replica holds the Lease.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use modelpub_operator::context::{Config, Context, default_node_agent_image};
use modelpub_operator::controllers;
use modelpub_operator::leader::{self, GateEnd};
use modelpub_operator::scope::{WatchScope, namespace_names};
use modelpub_operator::telemetry::tracing_export::{self, OtlpExport};
use modelpub_operator::telemetry::{Metrics, Readiness, TelemetryServer};
use prometheus_client::registry::Registry;

#[derive(Debug, Parser)]
#[command(
    name = "modelpub-operator",
    version,
    about = "The ModelPub Kubernetes operator"
)]
struct Args {
    /// Where to serve /metrics, /healthz and /readyz (HOST:PORT).
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics_addr: String,
    /// Namespace of the leader-election Lease (the chart passes the pod's
    /// namespace). Without it the operator runs without leader election,
    /// which is only safe with a single replica.
    #[arg(long)]
    lease_namespace: Option<String>,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "modelpub-operator")]
    lease_name: String,
    /// Image of aggregator and participant pods, unless a FederationRound
    /// sets spec.image.
    #[arg(long, default_value_t = default_node_agent_image())]
    node_agent_image: String,
    /// How the operator reaches an aggregator's /status.
    #[arg(long, default_value = "http", value_parser = ["http", "https"])]
    aggregator_status_scheme: String,
    /// Where to serve the federation endpoint other members' operators
    /// call (HOST:PORT, mutual TLS; the chart exposes it as the
    /// `<release>-federation` Service). Absent: no endpoint, so this
    /// cluster can neither coordinate rounds with members nor answer
    /// their handshakes.
    #[arg(long)]
    federation_listen: Option<String>,
    /// Reconcile only these namespaces (comma-separated or repeated); the
    /// operator then needs a Role in each, not a ClusterRole. Absent: every
    /// namespace (the chart's `rbac.clusterWide: true`).
    #[arg(long, value_delimiter = ',')]
    watch_namespaces: Vec<String>,
    /// Namespaces each round's NetworkPolicy admits to the aggregator's
    /// metrics and /status port 9464 (comma-separated): this operator's,
    /// which reads /status, and Prometheus's. Absent: every namespace.
    #[arg(long, value_delimiter = ',')]
    metrics_from_namespaces: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Held until exit: dropping it flushes the spans still queued.
    let _otlp = init_logging().context("cannot start OTLP trace export")?;

    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let readiness = Readiness::default();
    let bound = TelemetryServer::new(registry, readiness.clone())
        .spawn(&args.metrics_addr)
        .await?;
    tracing::info!(%bound, "serving /metrics, /healthz and /readyz");

    let client = kube::Client::try_default().await.context(
        "cannot configure a Kubernetes client (in-cluster service account or KUBECONFIG)",
    )?;
    let instance = std::env::var("POD_NAME").ok();
    let scope = WatchScope::from_names(&args.watch_namespaces)?;
    let metrics_from = namespace_names("--metrics-from-namespaces", &args.metrics_from_namespaces)?;
    match &scope {
        WatchScope::Cluster => tracing::info!("reconciling every namespace"),
        WatchScope::Namespaces(names) => {
            tracing::info!(namespaces = %names.join(","), "reconciling only the watched namespaces")
        }
    }
    let config = Config {
        node_agent_image: args.node_agent_image,
        aggregator_status_scheme: args.aggregator_status_scheme,
        scope,
        metrics_from_namespaces: metrics_from,
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        metrics,
        config,
        instance.clone(),
    ));

    if let Some(address) = &args.federation_listen {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address} for the federation endpoint"))?;
        tracing::info!(bound = %listener.local_addr()?, "serving the federation endpoint");
        let endpoint = ctx.clone();
        tokio::spawn(async move {
            if let Err(e) = modelpub_operator::federation::server::serve(listener, endpoint).await {
                tracing::error!("the federation endpoint stopped: {e}");
            }
        });
    }

    match args.lease_namespace {
        Some(namespace) => {
            let identity = match instance {
                Some(pod) => pod,
                None => random_identity()?,
            };
            let (leading, election) =
                leader::elect(client, &namespace, &args.lease_name, &identity).await?;
            tracing::info!(lease = %format!("{namespace}/{}", args.lease_name), %identity, "joined the leader election");
            readiness.set_ready();
            let gate = leader::run_while_leading(leading, || controllers::run_all(ctx.clone()));
            let end = tokio::select! {
                end = gate => Some(end),
                () = shutdown_signal() => None,
            };
            // The gate (and its channel) is dropped: the election releases
            // the Lease so another replica takes over at once.
            let released = tokio::time::timeout(Duration::from_secs(5), election).await;
            match (end, released) {
                (None, _) => tracing::info!("shut down"),
                (Some(GateEnd::WorkEnded), _) => bail!("the controllers stopped"),
                (Some(GateEnd::ElectionEnded), Ok(Ok(Err(e)))) => {
                    bail!(
                        "leader election with Lease {namespace}/{} failed: {e}",
                        args.lease_name
                    )
                }
                (Some(GateEnd::ElectionEnded), _) => bail!("leader election stopped"),
            }
        }
        None => {
            tracing::warn!(
                "no --lease-namespace: running without leader election (one replica only)"
            );
            readiness.set_ready();
            tokio::select! {
                () = controllers::run_all(ctx) => bail!("the controllers stopped"),
                () = shutdown_signal() => tracing::info!("shut down"),
            }
        }
    }
    Ok(())
}

/// A lease holder identity when `POD_NAME` is not set (running outside a
/// pod): unique per process.
fn random_identity() -> anyhow::Result<String> {
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("no randomness for a lease identity: {e}"))?;
    Ok(format!("modelpub-operator-{}", hex::encode(bytes)))
}

/// Resolves on SIGTERM (the kubelet stopping the pod) or Ctrl-C.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

/// Logs to stderr, and spans over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT`
/// is set (the same exporter as the node-agent's).
fn init_logging() -> Result<Option<OtlpExport>, tracing_export::ExportError> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let export = match tracing_export::endpoint_from_env()? {
        Some(endpoint) => Some(OtlpExport::start(&endpoint, "modelpub-operator")?),
        None => None,
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(export.as_ref().map(|e| e.layer()))
        .init();
    Ok(export)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_have_the_documented_defaults() {
        let a = Args::parse_from(["modelpub-operator"]);
        assert_eq!(a.metrics_addr, "0.0.0.0:8080");
        assert_eq!(a.lease_namespace, None);
        assert_eq!(a.lease_name, "modelpub-operator");
        assert!(
            a.node_agent_image
                .starts_with("ghcr.io/modelpub/modelpub-node-agent:")
        );
        assert_eq!(a.aggregator_status_scheme, "http");
        assert!(a.watch_namespaces.is_empty(), "every namespace by default");
        let a = Args::parse_from([
            "modelpub-operator",
            "--lease-namespace",
            "ops",
            "--node-agent-image",
            "x:1",
            "--watch-namespaces",
            "research,clinic",
        ]);
        assert_eq!(a.watch_namespaces, ["research", "clinic"]);
        assert_eq!(a.lease_namespace.as_deref(), Some("ops"));
        assert_eq!(a.node_agent_image, "x:1");
        assert!(
            Args::try_parse_from(["modelpub-operator", "--aggregator-status-scheme", "ftp"])
                .is_err()
        );
    }

    #[test]
    fn random_identities_differ() {
        assert_ne!(random_identity().unwrap(), random_identity().unwrap());
    }
}
