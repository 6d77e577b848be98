//! The cluster the end-to-end suite runs against, as a user has it: a
//! kubeconfig, `kubectl` and `helm`.
//!
//! * With `MODELPUB_E2E_KUBECONFIG` set, that cluster (kind with the images
//!   built from `deploy/docker/`, see `docs/e2e.md`).
//! * Otherwise a local one ([`local`]): the test-only API server
//!   ([`crate::apiserver`]) and the process kubelet ([`crate::kubelet`])
//!   running this repository's binaries as pods.
//!
//! The suite only talks to the cluster through the API, `kubectl` and
//! `helm`, so it runs unchanged against either; the two places a cluster
//! differs (where container logs come from, and nothing else) are
//! [`Cluster::container_log`].

pub mod diagnostics;
pub mod local;
pub mod tools;
pub mod wait;

use std::path::{Path, PathBuf};

use kube::Client;

pub use tools::Tools;
pub use wait::eventually;

/// The environment variable naming a real cluster's kubeconfig.
pub const KUBECONFIG_ENV: &str = "MODELPUB_E2E_KUBECONFIG";

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{KUBECONFIG_ENV}={path}: {source}")]
    Kubeconfig {
        path: String,
        source: kube::config::KubeconfigError,
    },
    #[error("client for {what}: {message}")]
    Client { what: String, message: String },
    #[error("starting the local cluster: {0}")]
    Local(String),
}

/// A cluster with an admin client and an admin kubeconfig file.
pub struct Cluster {
    pub client: Client,
    /// For `kubectl`/`helm` (`KUBECONFIG`).
    pub kubeconfig: PathBuf,
    pub tools: Tools,
    local: Option<local::LocalCluster>,
}

impl Cluster {
    /// The cluster `MODELPUB_E2E_KUBECONFIG` names, else a local one with
    /// its files under `work_dir`.
    pub async fn start(work_dir: &Path) -> Result<Self, ClusterError> {
        match std::env::var(KUBECONFIG_ENV) {
            Ok(path) if !path.is_empty() => Self::real(PathBuf::from(path)).await,
            _ => Self::start_local(work_dir).await,
        }
    }

    /// A local cluster whatever `MODELPUB_E2E_KUBECONFIG` says: for suites
    /// that need several clusters at once (`tests/peering.rs`).
    pub async fn start_local(work_dir: &Path) -> Result<Self, ClusterError> {
        let local = local::LocalCluster::start(work_dir).await?;
        Ok(Self {
            client: local.client.clone(),
            kubeconfig: local.kubeconfig.clone(),
            tools: Tools::new(&local.kubeconfig),
            local: Some(local),
        })
    }

    /// Waits up to 3 minutes for exactly one Ready pod matching `selector`
    /// in `namespace` (the chart's operator) and returns it.
    pub async fn one_ready_pod(
        &self,
        namespace: &str,
        selector: &str,
    ) -> anyhow::Result<k8s_openapi::api::core::v1::Pod> {
        use k8s_openapi::api::core::v1::Pod;
        let pods: kube::Api<Pod> = kube::Api::namespaced(self.client.clone(), namespace);
        eventually(
            &format!("one Ready pod {selector}"),
            std::time::Duration::from_secs(180),
            || {
                let pods = pods.clone();
                async move {
                    let list = pods
                        .list(&kube::api::ListParams::default().labels(selector))
                        .await?;
                    let ready: Vec<Pod> = list.items.into_iter().filter(is_ready).collect();
                    Ok(match ready.len() {
                        1 => Ok(ready.into_iter().next().expect("one")),
                        n => Err(format!("{n} ready pods")),
                    })
                }
            },
        )
        .await
    }

    async fn real(path: PathBuf) -> Result<Self, ClusterError> {
        let kubeconfig = kube::config::Kubeconfig::read_from(&path).map_err(|source| {
            ClusterError::Kubeconfig {
                path: path.display().to_string(),
                source,
            }
        })?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .map_err(|source| ClusterError::Kubeconfig {
                path: path.display().to_string(),
                source,
            })?;
        let client = Client::try_from(config).map_err(|e| ClusterError::Client {
            what: path.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(Self {
            client,
            tools: Tools::new(&path),
            kubeconfig: path,
            local: None,
        })
    }

    /// Whether this is the local (API server + process kubelet) cluster.
    pub fn is_local(&self) -> bool {
        self.local.is_some()
    }

    /// What a pod's container printed: the kubelet's log file locally,
    /// `kubectl logs` on a real cluster.
    pub fn container_log(&self, namespace: &str, pod: &str, container: &str) -> String {
        match &self.local {
            Some(local) => local.kubelet.log(namespace, pod, container),
            None => {
                let run = self
                    .tools
                    .kubectl(&["logs", "-n", namespace, pod, "-c", container]);
                format!("{}{}", run.stdout, run.stderr)
            }
        }
    }

    /// Kills a pod's process the hard way: SIGKILL to its first container
    /// locally (the pod fails with exit code 137, as after an OOM kill); on
    /// a real cluster, where the suite cannot reach the process, a forced
    /// deletion (`kubectl delete pod --grace-period=0 --force`).
    pub async fn kill_pod(&self, namespace: &str, pod: &str) -> anyhow::Result<()> {
        match &self.local {
            Some(local) => {
                let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
                    kube::Api::namespaced(self.client.clone(), namespace);
                let p = pods.get(pod).await?;
                let container = p
                    .spec
                    .and_then(|s| s.containers.into_iter().next())
                    .map(|c| c.name)
                    .ok_or_else(|| anyhow::anyhow!("pod {namespace}/{pod} has no container"))?;
                local.kubelet.kill_container(namespace, pod, &container)?;
                Ok(())
            }
            None => {
                self.tools
                    .kubectl(&[
                        "delete",
                        "pod",
                        pod,
                        "-n",
                        namespace,
                        "--grace-period=0",
                        "--force",
                    ])
                    .ok()?;
                Ok(())
            }
        }
    }

    /// The local cluster's admin kubeconfig as JSON (what
    /// `ApiServer::kubeconfig` writes), for merging several into one file
    /// with a context each; `None` on a real cluster.
    pub fn local_kubeconfig_json(&self) -> Option<serde_json::Value> {
        self.local.as_ref()?;
        let text = std::fs::read_to_string(&self.kubeconfig).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Stops the local cluster's pods (a real cluster is left as it is).
    pub async fn shutdown(self) {
        if let Some(local) = self.local {
            local.shutdown().await;
        }
    }
}

/// A suite's error as the test's last words: returned from the test, not
/// panicked, so no backtrace buries it under the diagnostics when CI shows
/// the tail.
pub struct Failure(pub String);

impl std::fmt::Debug for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Running, Ready and not being deleted.
pub fn is_ready(pod: &k8s_openapi::api::core::v1::Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}
