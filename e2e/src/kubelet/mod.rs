//! A process kubelet for the end-to-end suites: the only node of the test
//! "cluster" served by [`crate::apiserver`] (or any API server), talking to
//! it only through the Kubernetes API, as a real kubelet does.
//!
//! * [`pods`]: Pods whose image is one of the project's ([`images`]) run as
//!   local processes of the binaries built from this repository, with their
//!   command, args, env ([`env`]) and Secret/ConfigMap/emptyDir volumes
//!   ([`volumes`]) materialised under a per-pod directory; phase, container
//!   statuses, exit codes, restarts and readiness go to `pods/status`
//!   ([`status`]).
//! * [`translate`]: the container's absolute mount paths and its
//!   network-namespace addresses, rewritten in what the process is given
//!   (args, env, JSON config files) to the local directories and to the
//!   pod's own loopback address ([`network`]).
//! * [`services`]: each Service gets a loopback address; the kubelet
//!   proxies its ports to the ready pods behind it.
//! * [`workloads`]: Deployments and Jobs get their Pods and status.
//! * [`credentials`]: a pod's ServiceAccount token, as a kubeconfig.
//! * [`node`]: the Node `process-node` with this machine's CPUs and memory.

pub mod credentials;
pub mod env;
pub mod images;
pub mod network;
pub mod node;
pub mod pods;
pub mod probes;
pub mod process;
pub mod services;
pub mod sources;
pub mod status;
pub mod translate;
pub mod volumes;
pub mod workloads;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use tokio::task::JoinHandle;

use images::ImageMap;
use node::Capacity;
use pods::PodRuntime;

/// The node name the kubelet registers and runs pods for.
pub const NODE_NAME: &str = "process-node";

#[derive(Debug, Clone)]
pub struct KubeletConfig {
    pub node_name: String,
    /// Pod directories (volumes, logs) live under `<work_dir>/pods`.
    pub work_dir: PathBuf,
    pub images: ImageMap,
    pub capacity: Capacity,
    /// Upper bound of a pod's `terminationGracePeriodSeconds` (tests need
    /// not wait 30 s for a process that ignores SIGTERM).
    pub max_grace: Duration,
    /// First restart delay of a crashing container; it doubles up to
    /// `max_restart_backoff`.
    pub restart_backoff: Duration,
    pub max_restart_backoff: Duration,
    /// The longest period between probes (a probe's own `periodSeconds`
    /// when shorter): tests should not sit out 10 s periods.
    pub probe_period: Duration,
    /// How often the workload controllers re-check everything even
    /// without a watch event.
    pub resync: Duration,
    /// The API server pods reach as their ServiceAccount ([`credentials`]);
    /// without it pods get no credentials.
    pub api_access: Option<credentials::ApiAccess>,
}

impl KubeletConfig {
    /// The project's images from `bin_dir` (`target/<profile>`), data sets
    /// from `data_dir`, this machine's capacity, short test timings.
    pub fn new(work_dir: &Path, bin_dir: &Path, data_dir: &Path) -> Self {
        Self {
            node_name: NODE_NAME.into(),
            work_dir: work_dir.to_path_buf(),
            images: ImageMap::project(bin_dir, data_dir),
            capacity: Capacity::of_this_machine(),
            max_grace: Duration::from_secs(10),
            restart_backoff: Duration::from_millis(500),
            max_restart_backoff: Duration::from_secs(10),
            probe_period: Duration::from_millis(500),
            resync: Duration::from_secs(2),
            api_access: None,
        }
    }
}

/// A running kubelet; [`Kubelet::shutdown`] stops its pods' processes
/// (dropping it aborts the loops, and `kill_on_drop` ends the processes).
pub struct Kubelet {
    pods: Arc<PodRuntime>,
    tasks: Vec<JoinHandle<()>>,
    config: Arc<KubeletConfig>,
    salt: u64,
}

impl Kubelet {
    /// Registers the Node and starts the pod runtime, the Service proxies
    /// and the Deployment and Job controllers.
    pub async fn start(client: Client, config: KubeletConfig) -> Result<Self, kube::Error> {
        node::register(client.clone(), &config.node_name, &config.capacity).await?;
        let config = Arc::new(config);
        let salt = network::random_u64();
        let pods = PodRuntime::new(client.clone(), config.clone(), salt);
        let proxies = services::ServiceProxies::new(client.clone(), salt);
        let tasks = vec![
            tokio::spawn(pods.clone().run()),
            tokio::spawn(proxies.run(config.resync)),
            tokio::spawn(workloads::run(client, config.resync)),
        ];
        Ok(Self {
            pods,
            tasks,
            config,
            salt,
        })
    }

    /// The loopback address where Service `namespace/name` is proxied
    /// (what pods get for `<name>.<namespace>.svc`).
    pub fn service_address(&self, namespace: &str, name: &str) -> std::net::Ipv4Addr {
        network::service_ip(self.salt, namespace, name)
    }

    /// The local directory of a pod's volume (it goes when the pod does).
    pub fn volume_dir(&self, namespace: &str, pod: &str, volume: &str) -> Option<PathBuf> {
        Some(
            PodRuntime::find_pod_root(&self.config.work_dir, namespace, pod)?
                .join("volumes")
                .join(volume),
        )
    }

    /// `url` as a process outside the pods reaches it: a host naming a
    /// Service (`<svc>.<ns>.svc[.cluster.local]`) becomes the Service's
    /// loopback address (e.g. the operator's aggregator `/status` URL).
    pub fn cluster_url(&self, url: &str) -> String {
        translate::Translator {
            mounts: translate::MountTable::default(),
            pod_ip: std::net::Ipv4Addr::LOCALHOST,
            namespace: "default".into(),
            services: translate::ServiceNames {
                salt: self.salt,
                existing: Default::default(),
            },
        }
        .string(url)
    }

    /// The log (stdout and stderr) of a container, as `kubectl logs` shows it.
    pub fn log(&self, namespace: &str, pod: &str, container: &str) -> String {
        let Some(root) = PodRuntime::find_pod_root(&self.config.work_dir, namespace, pod) else {
            return String::new();
        };
        let path = root.join("logs").join(format!("{container}.log"));
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// Kills a running container's process with SIGKILL, as the kernel's
    /// OOM killer or a crashed node would: the kubelet then reports the exit
    /// (137) and applies the pod's restart policy.
    pub fn kill_container(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> std::io::Result<()> {
        let root =
            PodRuntime::find_pod_root(&self.config.work_dir, namespace, pod).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("no pod {namespace}/{pod} on this node"),
                )
            })?;
        let file = root.join("logs").join(format!("{container}.pid"));
        let pid: i32 = std::fs::read_to_string(&file)?
            .trim()
            .parse()
            .map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: {e}", file.display()),
                )
            })?;
        let pid = rustix::process::Pid::from_raw(pid).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: not a pid", file.display()),
            )
        })?;
        rustix::process::kill_process(pid, rustix::process::Signal::KILL)?;
        Ok(())
    }

    /// Stops the controllers, then every pod's processes.
    pub async fn shutdown(self) {
        for t in &self.tasks {
            t.abort();
        }
        self.pods.stop_all().await;
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
