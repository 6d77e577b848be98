//! Following a running round: the aggregator's `GET /status` (behind
//! [`StatusSource`], so tests answer with a fake) and the participant
//! pods' phases, turned into what the round's status says ([`Progress`]).
//!
//! A participant pod that failed is a dropout: its Job never retries
//! (`backoffLimit: 0`). When fewer participants are left than
//! `spec.participants.min`, no further round can complete and the run
//! fails with that reason, even before the aggregator's round timeout.

use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Deserialize;

use super::build::agent::VAULT_LABEL;

/// The aggregator's `/status` JSON (the node-agent's `FederationStatus`).
/// Lenient: fields it may leave out default, so an older or newer
/// aggregator still reads.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AggregatorStatus {
    #[serde(default)]
    pub federation: String,
    pub phase: AggregatorPhase,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub current_round: u32,
    #[serde(default)]
    pub total_rounds: u32,
    #[serde(default)]
    pub model_digest: String,
    #[serde(default)]
    pub rounds: Vec<RoundReport>,
    /// Clients refused in the aggregator's TLS handshake.
    #[serde(default)]
    pub refused: Vec<RefusedClient>,
}

/// One client the aggregator's TLS handshake refused.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RefusedClient {
    pub name: String,
    #[serde(default)]
    pub certificate_sha256: String,
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub unix_secs: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum AggregatorPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoundOutcome {
    Completed,
    Failed,
}

/// One finished round as the aggregator reports it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RoundReport {
    pub round: u32,
    #[serde(default)]
    pub accuracy: Option<f64>,
    #[serde(default)]
    pub loss: Option<f64>,
    #[serde(default)]
    pub participants: u32,
    #[serde(default)]
    pub dropped: u32,
    #[serde(default)]
    pub update_bytes: u64,
    #[serde(default)]
    pub epsilon_spent: Option<f64>,
    #[serde(default)]
    pub duration_secs: Option<f64>,
    pub outcome: RoundOutcome,
    #[serde(default)]
    pub reason: Option<String>,
}

/// Where an aggregator's `/status` comes from.
pub trait StatusSource: Send + Sync {
    /// GETs `url` (e.g. `http://mnist-aggregator.lab.svc:9464/status`);
    /// the error says why there is no status (unreachable, not JSON...).
    fn fetch(&self, url: String) -> BoxFuture<'static, Result<AggregatorStatus, String>>;
}

/// The `/status` URL of a round's aggregator Service: at the cluster IP
/// the API server allocated to it when the Service has one (what its DNS
/// name resolves to, without depending on cluster DNS where the operator
/// runs), else at the DNS name.
pub fn status_url(scheme: &str, round: &str, namespace: &str, cluster_ip: Option<&str>) -> String {
    let host = match cluster_ip.map(str::trim) {
        Some(ip) if !ip.is_empty() && ip != "None" => ip.to_string(),
        _ => super::build::names::aggregator_host(round, namespace),
    };
    format!(
        "{scheme}://{host}:{}/status",
        modelpub_agent_config::pod::METRICS_PORT
    )
}

/// Plain HTTP GET with a short timeout (ureq on a blocking thread: one
/// small request per reconcile).
#[derive(Debug, Clone)]
pub struct HttpStatusSource {
    agent: ureq::Agent,
}

impl Default for HttpStatusSource {
    fn default() -> Self {
        Self::new(Duration::from_secs(3))
    }
}

impl HttpStatusSource {
    pub fn new(timeout: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .build()
            .into();
        Self { agent }
    }
}

impl StatusSource for HttpStatusSource {
    fn fetch(&self, url: String) -> BoxFuture<'static, Result<AggregatorStatus, String>> {
        let agent = self.agent.clone();
        Box::pin(async move {
            let get = url.clone();
            let body = tokio::task::spawn_blocking(move || {
                agent
                    .get(&get)
                    .call()
                    .and_then(|mut r| r.body_mut().read_to_string())
            })
            .await
            .map_err(|e| format!("GET {url}: {e}"))?
            .map_err(|e| format!("GET {url}: {e}"))?;
            parse_status(&body).map_err(|e| format!("GET {url}: {e}"))
        })
    }
}

/// A source that always gives the same answer: a stand-in where no
/// aggregator can be reached (tests, dry runs).
#[derive(Debug, Clone)]
pub struct FixedStatus(pub Result<AggregatorStatus, String>);

impl StatusSource for FixedStatus {
    fn fetch(&self, url: String) -> BoxFuture<'static, Result<AggregatorStatus, String>> {
        let answer = self.0.clone().map_err(|why| format!("GET {url}: {why}"));
        Box::pin(async move { answer })
    }
}

/// Parses a `/status` body.
pub fn parse_status(body: &str) -> Result<AggregatorStatus, String> {
    serde_json::from_str(body).map_err(|e| format!("not an aggregator status: {e}"))
}

/// What a participant pod is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentState {
    Pending,
    Running,
    Succeeded,
    /// The pod failed: a dropout, with why.
    Failed(String),
}

/// One vault's participant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub vault: String,
    pub state: AgentState,
    /// When its participant container exited, where the kubelet says.
    pub finished_at: Option<Time>,
}

/// The participants of `vaults` from the round's pods. A vault without a
/// pod yet is Pending; a vault with a failed pod stays a dropout even if
/// another pod of it exists.
pub fn agents(vaults: &[String], pods: &[Pod]) -> Vec<Agent> {
    vaults
        .iter()
        .map(|vault| {
            let mut state = AgentState::Pending;
            let mut finished_at = None;
            for pod in pods.iter().filter(|p| {
                p.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(VAULT_LABEL))
                    .is_some_and(|v| v == vault)
            }) {
                let s = pod_state(pod);
                if s == AgentState::Succeeded {
                    finished_at = finished_at.max(finish_time(pod));
                }
                state = match (&state, s) {
                    (AgentState::Failed(_), _) => state,
                    (_, failed @ AgentState::Failed(_)) => failed,
                    (AgentState::Succeeded, _) => state,
                    (_, s) => s,
                };
            }
            Agent {
                vault: vault.clone(),
                state,
                finished_at,
            }
        })
        .collect()
}

/// When the pod's last container finished.
fn finish_time(pod: &Pod) -> Option<Time> {
    pod.status
        .as_ref()?
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.clone())
        .max()
}

fn pod_state(pod: &Pod) -> AgentState {
    let status = pod.status.as_ref();
    match status.and_then(|s| s.phase.as_deref()) {
        Some("Running") => AgentState::Running,
        Some("Succeeded") => AgentState::Succeeded,
        Some("Failed") => AgentState::Failed(failure_reason(pod)),
        _ => AgentState::Pending,
    }
}

/// Why a pod failed: the pod's reason, else its main container's
/// termination reason and exit code.
fn failure_reason(pod: &Pod) -> String {
    let Some(status) = pod.status.as_ref() else {
        return "pod failed".into();
    };
    if let Some(reason) = &status.reason {
        return reason.clone();
    }
    status
        .container_statuses
        .iter()
        .flatten()
        .find_map(|c| c.state.as_ref()?.terminated.as_ref())
        .map(|t| match &t.reason {
            Some(r) => format!("{r}, exit code {}", t.exit_code),
            None => format!("exit code {}", t.exit_code),
        })
        .unwrap_or_else(|| "pod failed".into())
}

/// The dropouts, `vault (why)`, for messages.
pub fn dropouts(agents: &[Agent]) -> Vec<String> {
    agents
        .iter()
        .filter_map(|a| match &a.state {
            AgentState::Failed(why) => Some(format!("{} ({why})", a.vault)),
            _ => None,
        })
        .collect()
}

/// Participants still able to send updates (not failed).
pub fn alive(agents: &[Agent]) -> usize {
    agents
        .iter()
        .filter(|a| !matches!(a.state, AgentState::Failed(_)))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStatus, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    pub fn pod(vault: &str, phase: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(format!("mnist-agent-{vault}-abcde")),
                labels: Some(BTreeMap::from([(
                    VAULT_LABEL.to_string(),
                    vault.to_string(),
                )])),
                ..ObjectMeta::default()
            },
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    /// `pod` with its participant container terminated as `how`.
    fn terminated(mut pod: Pod, how: ContainerStateTerminated) -> Pod {
        if let Some(s) = pod.status.as_mut() {
            s.container_statuses = Some(vec![ContainerStatus {
                name: "participant".into(),
                state: Some(ContainerState {
                    terminated: Some(how),
                    ..ContainerState::default()
                }),
                ..ContainerStatus::default()
            }]);
        }
        pod
    }

    #[test]
    fn parses_the_aggregator_status() {
        let s = parse_status(
            r#"{"federation":"mnist","phase":"Running","message":"round 2 of 5 in progress",
                "current_round":2,"total_rounds":5,"model_digest":"ab12",
                "rounds":[{"round":1,"accuracy":0.81,"loss":0.6,"participants":3,"dropped":0,
                           "update_bytes":12345,"epsilon_spent":null,"duration_secs":1.5,
                           "outcome":"completed","reason":null}]}"#,
        )
        .unwrap();
        assert_eq!(s.phase, AggregatorPhase::Running);
        assert_eq!((s.current_round, s.total_rounds), (2, 5));
        assert_eq!(s.rounds[0].accuracy, Some(0.81));
        assert_eq!(s.rounds[0].outcome, RoundOutcome::Completed);
        let err = parse_status(r#"{"phase":"Exploded"}"#).unwrap_err();
        assert!(err.starts_with("not an aggregator status"), "{err}");
        assert!(parse_status("<html>").is_err());
    }

    #[test]
    fn failed_pods_are_dropouts_with_their_reason() {
        let oom = terminated(
            pod("hospital-b", "Failed"),
            ContainerStateTerminated {
                exit_code: 137,
                reason: Some("OOMKilled".into()),
                ..ContainerStateTerminated::default()
            },
        );
        let vaults = ["hospital-a", "hospital-b", "hospital-c"].map(String::from);
        let a = agents(&vaults, &[pod("hospital-a", "Running"), oom]);
        assert_eq!(a[0].state, AgentState::Running);
        assert_eq!(
            a[1].state,
            AgentState::Failed("OOMKilled, exit code 137".into())
        );
        assert_eq!(a[2].state, AgentState::Pending, "no pod yet");
        assert_eq!(dropouts(&a), ["hospital-b (OOMKilled, exit code 137)"]);
        assert_eq!(alive(&a), 2);
        let mut evicted = pod("hospital-c", "Failed");
        if let Some(s) = evicted.status.as_mut() {
            s.reason = Some("Evicted".into());
        }
        assert_eq!(
            agents(&vaults[2..], &[evicted])[0].state,
            AgentState::Failed("Evicted".into())
        );
    }

    #[test]
    fn a_finished_participant_says_when() {
        let at = |s: &str| Time(s.parse().unwrap());
        let done = terminated(
            pod("hospital-a", "Succeeded"),
            ContainerStateTerminated {
                exit_code: 0,
                finished_at: Some(at("2026-03-02T10:00:05Z")),
                ..ContainerStateTerminated::default()
            },
        );
        let vaults = ["hospital-a", "hospital-b"].map(String::from);
        let a = agents(&vaults, &[done, pod("hospital-b", "Running")]);
        assert_eq!(a[0].state, AgentState::Succeeded);
        assert_eq!(a[0].finished_at, Some(at("2026-03-02T10:00:05Z")));
        assert_eq!(a[1].finished_at, None, "still running");
    }

    #[test]
    fn status_urls_name_the_service_metrics_port() {
        assert_eq!(
            status_url("http", "mnist", "lab", None),
            "http://mnist-aggregator.lab.svc:9464/status"
        );
        assert_eq!(
            status_url("http", "mnist", "lab", Some("10.96.4.7")),
            "http://10.96.4.7:9464/status"
        );
        for headless in ["None", ""] {
            assert_eq!(
                status_url("http", "mnist", "lab", Some(headless)),
                "http://mnist-aggregator.lab.svc:9464/status"
            );
        }
    }

    #[tokio::test]
    async fn the_http_source_reads_a_real_endpoint_and_reports_failures() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route(
            "/status",
            axum::routing::get(|| async {
                r#"{"federation":"f","phase":"Succeeded","message":"done","current_round":1,
                    "total_rounds":1,"model_digest":"cd","rounds":[]}"#
            }),
        );
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let source = HttpStatusSource::default();
        let s = source.fetch(format!("http://{addr}/status")).await.unwrap();
        assert_eq!(s.phase, AggregatorPhase::Succeeded);
        let err = source
            .fetch(format!("http://{addr}/missing"))
            .await
            .unwrap_err();
        assert!(err.contains("/missing"), "{err}");
        server.abort();
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gone = closed.local_addr().unwrap();
        drop(closed);
        let err = source
            .fetch(format!("http://{gone}/status"))
            .await
            .unwrap_err();
        assert!(
            err.starts_with(&format!("GET http://{gone}/status")),
            "{err}"
        );
    }
}
