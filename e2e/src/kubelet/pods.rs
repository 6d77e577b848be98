//! The pod runtime: watches Pods bound to this node (or to no node: the
//! process kubelet is the cluster's only node and its scheduler), runs each
//! as local processes (init containers in order, then the containers
//! together, restarted per `restartPolicy`, and when their liveness probe
//! fails), reports through
//! `pods/status`, and stops the processes (SIGTERM, then SIGKILL after the
//! grace period) when the Pod is deleted.
//!
//! A pod that cannot run here (an image other than the project's, an
//! unsupported volume, a missing Secret) stays Pending with a reason and a
//! message saying why; it is never reported as having run.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Probe, Secret, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio::sync::{Mutex, watch};

use super::KubeletConfig;
use super::credentials;
use super::env;
use super::network::PodIpPool;
use super::process::{self, Launch};
use super::sources::{Sources, referenced};
use super::status::{Blocked, ContainerRecord, PodRecord, RunState, now, pod_status, restarts};
use super::translate::{ServiceNames, Translator};
use super::volumes;

/// Shared by the pod workers.
pub struct PodRuntime {
    client: Client,
    config: Arc<KubeletConfig>,
    salt: u64,
    ips: std::sync::Mutex<PodIpPool>,
    workers: std::sync::Mutex<HashMap<String, watch::Sender<bool>>>,
}

fn key(pod: &Pod) -> Option<String> {
    pod.metadata.uid.clone()
}

impl PodRuntime {
    pub fn new(client: Client, config: Arc<KubeletConfig>, salt: u64) -> Arc<Self> {
        Arc::new(Self {
            client,
            config,
            salt,
            ips: std::sync::Mutex::new(PodIpPool::new(salt)),
            workers: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Where the kubelet keeps a pod's volumes and logs: one directory
    /// per pod uid, so a pod recreated under the same name never shares
    /// (or has removed) the files of the one it replaces.
    pub fn pod_root(work_dir: &Path, namespace: &str, name: &str, uid: &str) -> PathBuf {
        work_dir
            .join("pods")
            .join(format!("{namespace}_{name}_{uid}"))
    }

    /// The directory of the newest pod named `namespace/name`.
    pub fn find_pod_root(work_dir: &Path, namespace: &str, name: &str) -> Option<PathBuf> {
        let prefix = format!("{namespace}_{name}_");
        std::fs::read_dir(work_dir.join("pods"))
            .ok()?
            .filter_map(Result::ok)
            // Pod names cannot contain `_`: the prefix names one pod.
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(&prefix))
            })
            .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
            .map(|e| e.path())
    }

    /// Watches Pods until the stream ends (never, short of a panic).
    pub async fn run(self: Arc<Self>) {
        let api: Api<Pod> = Api::all(self.client.clone());
        let mut stream = watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut listed: Option<BTreeSet<String>> = None;
        while let Some(event) = stream.next().await {
            match event {
                Ok(Event::Apply(pod)) => self.observe(pod),
                Ok(Event::InitApply(pod)) => {
                    if let (Some(seen), Some(uid)) = (listed.as_mut(), key(&pod)) {
                        seen.insert(uid);
                    }
                    self.observe(pod);
                }
                Ok(Event::Delete(pod)) => {
                    if let Some(uid) = key(&pod) {
                        self.stop(&uid);
                    }
                }
                Ok(Event::Init) => listed = Some(BTreeSet::new()),
                Ok(Event::InitDone) => {
                    // Pods deleted while the watch was down: stop them too.
                    let seen = listed.take().unwrap_or_default();
                    let gone: Vec<String> = self
                        .workers
                        .lock()
                        .map(|w| w.keys().filter(|k| !seen.contains(*k)).cloned().collect())
                        .unwrap_or_default();
                    for uid in gone {
                        self.stop(&uid);
                    }
                }
                Err(e) => tracing::warn!("kubelet: pod watch: {e}"),
            }
        }
    }

    fn ours(&self, pod: &Pod) -> bool {
        match pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            None | Some("") => true,
            Some(node) => node == self.config.node_name,
        }
    }

    fn observe(self: &Arc<Self>, pod: Pod) {
        let Some(uid) = key(&pod) else { return };
        if !self.ours(&pod) {
            return;
        }
        if pod.metadata.deletion_timestamp.is_some() {
            self.stop(&uid);
            return;
        }
        let finished = matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        let Ok(mut workers) = self.workers.lock() else {
            return;
        };
        if workers.contains_key(&uid) || finished {
            return;
        }
        let (tx, rx) = watch::channel(false);
        workers.insert(uid.clone(), tx);
        let rt = self.clone();
        tokio::spawn(async move {
            let graceful_delete = rt.clone().run_pod(pod.clone(), rx).await;
            if let Ok(mut w) = rt.workers.lock() {
                w.remove(&uid);
            }
            if graceful_delete {
                rt.finish_delete(&pod).await;
            }
        });
    }

    /// Signals the worker of `uid` to stop its processes.
    pub fn stop(&self, uid: &str) {
        if let Ok(workers) = self.workers.lock()
            && let Some(tx) = workers.get(uid)
        {
            let _ = tx.send(true);
        }
    }

    /// Stops every pod (kubelet shutdown) and waits for the processes.
    pub async fn stop_all(&self) {
        let uids: Vec<String> = self
            .workers
            .lock()
            .map(|w| w.keys().cloned().collect())
            .unwrap_or_default();
        for uid in &uids {
            self.stop(uid);
        }
        for _ in 0..600 {
            if self.workers.lock().map(|w| w.is_empty()).unwrap_or(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A pod deleted gracefully (deletionTimestamp set) is removed for good
    /// once its processes are gone, as a kubelet does.
    async fn finish_delete(&self, pod: &Pod) {
        let (Some(ns), Some(name)) = (&pod.metadata.namespace, &pod.metadata.name) else {
            return;
        };
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let still_there = api
            .get_opt(name)
            .await
            .ok()
            .flatten()
            .is_some_and(|p| p.metadata.uid == pod.metadata.uid);
        if still_there {
            let _ = api
                .delete(
                    name,
                    &DeleteParams {
                        grace_period_seconds: Some(0),
                        ..DeleteParams::default()
                    },
                )
                .await;
        }
    }

    /// Runs one pod until it is told to stop; whether the stop came from a
    /// graceful deletion the kubelet must complete.
    async fn run_pod(self: Arc<Self>, pod: Pod, mut stop: watch::Receiver<bool>) -> bool {
        let ns = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = pod.metadata.name.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let root = Self::pod_root(&self.config.work_dir, &ns, &name, &uid);
        let ip = match self.ips.lock().map(|mut p| p.allocate()) {
            Ok(Ok(ip)) => ip,
            _ => {
                tracing::error!("kubelet: no pod address left for {ns}/{name}");
                return false;
            }
        };
        let pod_worker = PodWorker {
            rt: self.clone(),
            api: Api::namespaced(self.client.clone(), &ns),
            namespace: ns,
            name,
            root,
            ip,
            record: Mutex::new(PodRecord {
                pod_ip: Some(ip),
                started: now(),
                init: Vec::new(),
                main: Vec::new(),
                blocked: None,
            }),
        };
        pod_worker.run(&pod, &mut stop).await;
        if let Ok(mut p) = self.ips.lock() {
            p.release(ip);
        }
        if let Err(e) = remove_tree(&pod_worker.root) {
            tracing::warn!("kubelet: cannot remove {}: {e}", pod_worker.root.display());
        }
        pod.metadata.deletion_timestamp.is_some() || {
            // the stop may have come from a later event that set it
            let api: Api<Pod> = pod_worker.api.clone();
            api.get_opt(&pod_worker.name)
                .await
                .ok()
                .flatten()
                .is_some_and(|p| p.metadata.deletion_timestamp.is_some())
        }
    }
}

fn remove_tree(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

struct PodWorker {
    rt: Arc<PodRuntime>,
    api: Api<Pod>,
    namespace: String,
    name: String,
    root: PathBuf,
    ip: Ipv4Addr,
    record: Mutex<PodRecord>,
}

/// Which list a container is in.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Init(usize),
    Main(usize),
}

fn stopped(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow()
}

/// Resolves once the pod is told to stop (or its runtime is gone).
async fn stopping(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns must not live across an await.
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}

impl PodWorker {
    /// Writes the record's status through `pods/status` (the record lock
    /// is held across the write, so reports land in order).
    async fn report(&self, change: impl FnOnce(&mut PodRecord)) {
        let mut record = self.record.lock().await;
        change(&mut record);
        let status = pod_status(&record);
        let patch = serde_json::json!({ "status": status });
        if let Err(e) = self
            .api
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::debug!("kubelet: status of {}/{}: {e}", self.namespace, self.name);
        }
    }

    async fn block(&self, reason: &str, message: String, stop: &mut watch::Receiver<bool>) {
        tracing::info!(
            "kubelet: {}/{} blocked: {message}",
            self.namespace,
            self.name
        );
        self.report(|r| {
            r.blocked = Some(Blocked {
                reason: reason.into(),
                message,
            })
        })
        .await;
        stopping(stop).await;
    }

    async fn run(&self, pod: &Pod, stop: &mut watch::Receiver<bool>) {
        let Some(spec) = pod.spec.clone() else { return };
        let init: Vec<Container> = spec.init_containers.clone().unwrap_or_default();
        let image = |c: &Container| c.image.clone().unwrap_or_default();
        self.record.lock().await.init = init
            .iter()
            .map(|c| ContainerRecord::new(&c.name, &image(c)))
            .collect();
        self.record.lock().await.main = spec
            .containers
            .iter()
            .map(|c| ContainerRecord::new(&c.name, &image(c)))
            .collect();
        let config = &self.rt.config;
        // 1. every image must be runnable here
        let mut lines = Vec::new();
        for c in init.iter().chain(&spec.containers) {
            match config.images.command_line(
                &c.name,
                c.image.as_deref(),
                c.command.as_deref(),
                c.args.as_deref(),
            ) {
                Ok(line) => lines.push(line),
                Err(e) => return self.block("ImageNotRunnable", e.to_string(), stop).await,
            }
        }
        // 2. the Secrets and ConfigMaps it refers to (wait until they exist)
        let sources = loop {
            match self.fetch_sources(pod).await {
                Ok(s) => break s,
                Err(message) => {
                    let first = self.record.lock().await.blocked.is_none();
                    if first {
                        self.report(|r| {
                            r.blocked = Some(Blocked {
                                reason: "ContainerCreating".into(),
                                message,
                            })
                        })
                        .await;
                    }
                    let wait = tokio::time::sleep(Duration::from_millis(500));
                    tokio::select! {
                        _ = wait => {}
                        _ = stopping(stop) => return,
                    }
                }
            }
        };
        self.record.lock().await.blocked = None;
        // 3. volumes, mount table, translation
        let translator = match self.translator(&spec).await {
            Ok(t) => t,
            Err(e) => return self.block("CreateContainerConfigError", e, stop).await,
        };
        if let Err(e) = volumes::materialise(&self.root, &spec, &sources, &translator) {
            return self
                .block("CreateContainerConfigError", e.to_string(), stop)
                .await;
        }
        let kubeconfig = match &config.api_access {
            Some(access) if credentials::wanted(&spec) => {
                let account = credentials::service_account(&spec);
                match credentials::write(&self.root, access, &self.namespace, account) {
                    Ok(path) => Some(path),
                    Err(e) => {
                        let why = format!("service account token: {e}");
                        return self.block("CreateContainerConfigError", why, stop).await;
                    }
                }
            }
            _ => None,
        };
        let mut launches = Vec::new();
        for (c, (runtime, argv)) in init.iter().chain(&spec.containers).zip(lines) {
            let launched = self.launch(pod, c, runtime, argv, &sources, &translator);
            let launched = launched.map(|mut l| {
                if let Some(path) = &kubeconfig {
                    l.env
                        .insert("KUBECONFIG".into(), path.display().to_string());
                }
                l
            });
            match launched {
                Ok(l) => launches.push(l),
                Err(e) => return self.block("CreateContainerConfigError", e, stop).await,
            }
        }
        let main_launches = launches.split_off(init.len());
        self.report(|_| {}).await;
        let policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        let grace =
            Duration::from_secs(spec.termination_grace_period_seconds.unwrap_or(30).max(0) as u64)
                .min(config.max_grace);
        // 4. init containers, one after the other
        let init_policy = if policy == "Never" {
            "Never"
        } else {
            "OnFailure"
        };
        for (i, launch) in launches.iter().enumerate() {
            self.supervise(
                Slot::Init(i),
                launch,
                None,
                init_policy,
                grace,
                stop.clone(),
            )
            .await;
            let ok = self.record.lock().await.init[i].succeeded();
            if !ok || stopped(stop) {
                stopping(stop).await;
                return;
            }
        }
        // 5. the containers, together, with readiness probes
        let supervisors = main_launches.iter().enumerate().map(|(i, launch)| {
            let c = &spec.containers[i];
            let liveness = c.liveness_probe.as_ref().map(|p| (p, c));
            self.supervise(
                Slot::Main(i),
                launch,
                liveness,
                &policy,
                grace,
                stop.clone(),
            )
        });
        let probes = self.probe_loop(&spec.containers);
        tokio::select! {
            _ = futures::future::join_all(supervisors) => {}
            _ = probes => {}
        }
        // finished pods keep their record until deleted
        stopping(stop).await;
    }

    async fn fetch_sources(&self, pod: &Pod) -> Result<Sources, String> {
        let refs = referenced(pod);
        let client = self.rt.client.clone();
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &self.namespace);
        let config_maps: Api<ConfigMap> = Api::namespaced(client, &self.namespace);
        let mut sources = Sources::default();
        for (name, optional) in &refs.secrets {
            match secrets.get_opt(name).await {
                Ok(Some(s)) => sources.add_secret(name, &s),
                Ok(None) if *optional => {}
                Ok(None) => return Err(format!("Secret `{name}` not found")),
                Err(e) => return Err(format!("cannot read Secret `{name}`: {e}")),
            }
        }
        for (name, optional) in &refs.config_maps {
            match config_maps.get_opt(name).await {
                Ok(Some(c)) => sources.add_config_map(name, &c),
                Ok(None) if *optional => {}
                Ok(None) => return Err(format!("ConfigMap `{name}` not found")),
                Err(e) => return Err(format!("cannot read ConfigMap `{name}`: {e}")),
            }
        }
        Ok(sources)
    }

    async fn translator(
        &self,
        spec: &k8s_openapi::api::core::v1::PodSpec,
    ) -> Result<Translator, String> {
        let mounts = volumes::mount_table(&self.root, spec).map_err(|e| e.to_string())?;
        let services: Api<Service> = Api::namespaced(self.rt.client.clone(), &self.namespace);
        let existing = services
            .list(&ListParams::default())
            .await
            .map(|l| {
                l.items
                    .into_iter()
                    .filter_map(|s| s.metadata.name)
                    .map(|n| (self.namespace.clone(), n))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Translator {
            mounts,
            pod_ip: self.ip,
            namespace: self.namespace.clone(),
            services: ServiceNames {
                salt: self.rt.salt,
                existing,
            },
        })
    }

    fn launch(
        &self,
        pod: &Pod,
        c: &Container,
        runtime: super::images::ImageRuntime,
        argv: Vec<String>,
        sources: &Sources,
        t: &Translator,
    ) -> Result<Launch, String> {
        let vars = env::resolve(pod, c, self.ip, sources).map_err(|e| e.to_string())?;
        let argv = argv
            .iter()
            .map(|a| t.string(&env::expand(a, &vars)))
            .collect();
        let mut full = std::collections::BTreeMap::new();
        if let Ok(path) = std::env::var("PATH") {
            full.insert("PATH".to_string(), path);
        }
        full.insert("HOSTNAME".to_string(), self.name.clone());
        if let Some(tmp) = t.mounts.local_path("/tmp") {
            full.insert("TMPDIR".to_string(), tmp.display().to_string());
        }
        full.extend(runtime.env.iter().cloned());
        full.extend(env::translated(&vars, t));
        let scratch = self.root.join("rootfs");
        let workdir = c.working_dir.clone().or(runtime.workdir.clone());
        let cwd = workdir.map(|w| t.dir(&w, &scratch)).unwrap_or(scratch);
        Ok(Launch {
            binary: runtime.binary,
            argv,
            env: full,
            cwd,
            log: self.root.join("logs").join(format!("{}.log", c.name)),
        })
    }

    async fn update(&self, slot: Slot, change: impl FnOnce(&mut ContainerRecord)) {
        self.report(|r| {
            let c = match slot {
                Slot::Init(i) => r.init.get_mut(i),
                Slot::Main(i) => r.main.get_mut(i),
            };
            if let Some(c) = c {
                change(c);
            }
        })
        .await;
    }

    /// Runs one container, restarting it per `policy` with a doubling
    /// back-off, until it is done or the pod stops.
    async fn supervise(
        &self,
        slot: Slot,
        launch: &Launch,
        liveness: Option<(&Probe, &Container)>,
        policy: &str,
        grace: Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        let config = &self.rt.config;
        let mut backoff = config.restart_backoff;
        loop {
            if stopped(&stop) {
                self.update(slot, |c| c.done = true).await;
                return;
            }
            let started = now();
            let (exit_code, signal) = match process::spawn(launch) {
                Ok(mut child) => {
                    // Beside the log, for `Kubelet::kill_container`.
                    if let Some(pid) = child.id() {
                        let _ = std::fs::write(launch.log.with_extension("pid"), pid.to_string());
                    }
                    let running = RunState::Running {
                        started: started.clone(),
                    };
                    self.update(slot, |c| c.state = running).await;
                    tokio::select! {
                        status = child.wait() => match status {
                            Ok(s) => process::exit_code(s),
                            Err(_) => (1, None),
                        },
                        reason = self.liveness_failure(liveness) => {
                            tracing::info!("kubelet: {} failed its liveness probe ({reason}): restarting", launch.binary.display());
                            let status = process::terminate(&mut child, grace).await;
                            status.map(process::exit_code).unwrap_or((137, Some(9)))
                        },
                        _ = stopping(&mut stop) => {
                            let status = process::terminate(&mut child, grace).await;
                            let (code, signal) = status.map(process::exit_code).unwrap_or((137, Some(9)));
                            let finished = now();
                            self.update(slot, |c| {
                                c.state = RunState::Terminated { exit_code: code, signal, started: Some(started), finished };
                                c.ready = false;
                                c.done = true;
                            }).await;
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!("kubelet: cannot start {}: {e}", launch.binary.display());
                    (128, None)
                }
            };
            let finished = now();
            let again = restarts(policy, exit_code) && !stopped(&stop);
            self.update(slot, |c| {
                c.state = RunState::Terminated {
                    exit_code,
                    signal,
                    started: Some(started),
                    finished,
                };
                c.ready = false;
                c.done = !again;
            })
            .await;
            if !again {
                return;
            }
            let wait = tokio::time::sleep(backoff);
            backoff = (backoff * 2).min(config.max_restart_backoff);
            self.update(slot, |c| {
                c.last_terminated = Some(c.state.clone());
                c.restart_count += 1;
                c.state = RunState::waiting("CrashLoopBackOff", None);
            })
            .await;
            tokio::select! {
                _ = wait => {}
                _ = stopping(&mut stop) => {}
            }
        }
    }

    /// Resolves once a liveness probe has failed `failureThreshold` times in
    /// a row (after `initialDelaySeconds`; periods no longer than the
    /// kubelet's probe period); never without a probe.
    async fn liveness_failure(&self, liveness: Option<(&Probe, &Container)>) -> String {
        let Some((probe, container)) = liveness else {
            return std::future::pending().await;
        };
        let secs = |s: Option<i32>, default: i32| {
            Duration::from_secs(u64::try_from(s.unwrap_or(default)).unwrap_or(0))
        };
        tokio::time::sleep(secs(probe.initial_delay_seconds, 0)).await;
        let period = secs(probe.period_seconds, 10).min(self.rt.config.probe_period);
        let threshold = probe.failure_threshold.unwrap_or(3).max(1);
        let mut failures = 0;
        loop {
            match super::probes::check(probe, container, self.ip).await {
                Ok(()) => failures = 0,
                Err(reason) => {
                    failures += 1;
                    if failures >= threshold {
                        return reason;
                    }
                }
            }
            tokio::time::sleep(period).await;
        }
    }

    /// Readiness of the running containers: their probe passes, or they
    /// have none. Never ends: the supervisors decide when the pod is done.
    async fn probe_loop(&self, containers: &[Container]) {
        let period = self.rt.config.probe_period;
        loop {
            for (i, c) in containers.iter().enumerate() {
                let running = {
                    let r = self.record.lock().await;
                    matches!(
                        r.main.get(i).map(|c| &c.state),
                        Some(RunState::Running { .. })
                    )
                };
                let ready = match (&c.readiness_probe, running) {
                    (_, false) => false,
                    (None, true) => true,
                    (Some(p), true) => super::probes::check(p, c, self.ip).await.is_ok(),
                };
                let changed = self.record.lock().await.main.get(i).is_some_and(|r| {
                    r.ready != ready && matches!(r.state, RunState::Running { .. }) == running
                });
                if changed {
                    self.update(Slot::Main(i), |r| {
                        if matches!(r.state, RunState::Running { .. }) {
                            r.ready = ready;
                        }
                    })
                    .await;
                }
            }
            tokio::time::sleep(period).await;
        }
    }
}
