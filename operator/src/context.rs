//! What every controller shares: the API client, metrics, the event
//! publisher, operator settings, the retry backoff, the clock and the
//! member prober. Built once in `main` (or by `testing` around a mocked API
//! server) and handed to each reconcile as `Arc<Context>`.

use std::sync::Arc;

use jiff::Timestamp;
use kube::Client;
use modelpub_crds::condition::Time;

use crate::controllers::federation_round::progress::{HttpStatusSource, StatusSource};
use crate::controllers::trust_domain::probe::{MemberProbe, NetworkProbe};
use crate::error::Backoff;
use crate::events::Events;
use crate::federation::client::{NetworkLink, PeerLink};
use crate::federation::refusals::Refusals;
use crate::scope::WatchScope;
use crate::telemetry::Metrics;

/// Settings from the operator's flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Image of aggregator and participant pods unless a FederationRound
    /// sets `spec.image` (`--node-agent-image`).
    pub node_agent_image: String,
    /// `http` or `https`: how the operator reaches an aggregator's
    /// `/status` (`--aggregator-status-scheme`).
    pub aggregator_status_scheme: String,
    /// The namespaces reconciled (`--watch-namespaces`).
    pub scope: WatchScope,
    /// Namespaces a round's NetworkPolicy admits to the aggregator's
    /// metrics and `/status` port (`--metrics-from-namespaces`); empty:
    /// every namespace.
    pub metrics_from_namespaces: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node_agent_image: default_node_agent_image(),
            aggregator_status_scheme: "http".to_string(),
            scope: WatchScope::Cluster,
            metrics_from_namespaces: Vec::new(),
        }
    }
}

/// `ghcr.io/modelpub/modelpub-node-agent:<this crate's version>`.
pub fn default_node_agent_image() -> String {
    format!(
        "ghcr.io/modelpub/modelpub-node-agent:{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// Where "now" comes from: the system clock in the operator, a fixed
/// instant in tests (so schedule windows and condition times are exact).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    System,
    Fixed(Timestamp),
}

impl Clock {
    pub fn now(&self) -> Timestamp {
        match self {
            Clock::System => Timestamp::now(),
            Clock::Fixed(t) => *t,
        }
    }

    /// `now` as a Kubernetes `metav1.Time` (second precision, as the API
    /// server stores it).
    pub fn now_time(&self) -> Time {
        let now = self.now();
        Time(Timestamp::from_second(now.as_second()).unwrap_or(now))
    }
}

/// Shared state of all controllers.
pub struct Context {
    pub client: Client,
    pub metrics: Metrics,
    pub events: Events,
    pub config: Config,
    pub backoff: Backoff,
    pub clock: Clock,
    /// How TrustDomain members are probed (the network in the operator, a
    /// fake in tests).
    pub prober: Arc<dyn MemberProbe>,
    /// Where FederationRound aggregators' `/status` comes from (HTTP in the
    /// operator, a fixed answer in tests).
    pub aggregator_status: Arc<dyn StatusSource>,
    /// How this cluster calls members' federation endpoints (the network
    /// in the operator, canned replies in tests).
    pub peering: Arc<dyn PeerLink>,
    /// Clients the federation endpoint refused, until the TrustDomain
    /// status shows them.
    pub refusals: Arc<Refusals>,
}

impl Context {
    /// The operator's context: system clock, network member probe, default
    /// backoff. `instance` (the pod name) tells replicas' events apart.
    pub fn new(client: Client, metrics: Metrics, config: Config, instance: Option<String>) -> Self {
        Self {
            events: Events::new(client.clone(), instance),
            client,
            metrics,
            config,
            backoff: Backoff::default(),
            clock: Clock::System,
            prober: Arc::new(NetworkProbe::default()),
            aggregator_status: Arc::new(HttpStatusSource::default()),
            peering: Arc::new(NetworkLink::default()),
            refusals: Arc::default(),
        }
    }
}
