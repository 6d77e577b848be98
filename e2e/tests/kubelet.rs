//! The process kubelet against the test API server: Jobs, Deployments and
//! Services whose pods run as local processes of the binaries built from
//! this repository (`modelpub`; build it first with
//! `cargo build -p modelpub-node-agent --bin modelpub`), talking to the
//! server only through the Kubernetes API.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use modelpub_e2e::apiserver::ApiServer;
use modelpub_e2e::kubelet::images::ImageRuntime;
use modelpub_e2e::kubelet::{Kubelet, KubeletConfig};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const AGENT: &str = "ghcr.io/modelpub/modelpub-node-agent:0.1.0";
/// A test-only image: Python's http.server and urllib stand in for a web
/// server and a client, to check Deployments and Services without TLS.
const PYTHON: &str = "e2e.local/python";

struct Cluster {
    client: Client,
    kubelet: Kubelet,
    _server: ApiServer,
    _work: tempfile::TempDir,
}

fn python3() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("python3"))
                .find(|p| p.is_file())
        })
        .expect("python3 on PATH")
}

async fn cluster() -> Cluster {
    let server = ApiServer::start().await.expect("start the API server");
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&server.kubeconfig(&server.admin_token()))
        .expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("client config");
    let client = Client::try_from(config).expect("client");
    let work = tempfile::tempdir().unwrap();
    let bin_dir = modelpub_e2e::modelpub_bin()
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let data_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data");
    let mut config = KubeletConfig::new(work.path(), &bin_dir, &data_dir);
    config.images = config.images.clone().with(
        PYTHON,
        ImageRuntime {
            binary: python3(),
            entrypoint_names: vec!["python3".into()],
            env: Vec::new(),
            workdir: None,
        },
    );
    let kubelet = Kubelet::start(client.clone(), config)
        .await
        .expect("start the kubelet");
    Cluster {
        client,
        kubelet,
        _server: server,
        _work: work,
    }
}

/// Polls `f` until it gives `Some`, or fails naming `what`.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn create<K>(client: &Client, obj: serde_json::Value) -> K
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(obj).expect("object");
    Api::<K>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &obj)
        .await
        .expect("create")
}

async fn pods_labelled(client: &Client, selector: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), "default")
        .list(&ListParams::default().labels(selector))
        .await
        .expect("list pods")
        .items
}

fn job_condition(job: &Job, type_: &str) -> Option<String> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
        .map(|c| c.reason.clone().unwrap_or_default())
}

async fn job_finished(client: &Client, name: &str, condition: &str) -> Job {
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    eventually(
        &format!("Job {name} {condition}"),
        Duration::from_secs(240),
        || {
            let jobs = jobs.clone();
            async move {
                let j = jobs.get(name).await.ok()?;
                job_condition(&j, condition).map(|_| j)
            }
        },
    )
    .await
}

fn terminated_exit_code(pod: &Pod) -> Option<i32> {
    pod.status.as_ref()?.container_statuses.as_ref()?[0]
        .state
        .as_ref()?
        .terminated
        .as_ref()
        .map(|t| t.exit_code)
}

fn phase(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_seals_a_vault_with_a_key_from_a_mounted_secret() {
    let c = cluster().await;
    let _: Secret = create(
        &c.client,
        json!({"metadata": {"name": "vault-key"},
               "stringData": {"key": "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"}}),
    )
    .await;
    let _: Job = create(
        &c.client,
        json!({
            "metadata": {"name": "seal"},
            "spec": {"backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "seal", "image": AGENT,
                    "args": ["vault", "seal", "--dataset", "digits", "--part", "0", "--of", "2",
                             "--key-file", "/etc/modelpub/vault-key/vault.key",
                             "--out", "/var/lib/modelpub/vault"],
                    "volumeMounts": [
                        {"name": "party", "mountPath": "/var/lib/modelpub"},
                        {"name": "key", "mountPath": "/etc/modelpub/vault-key", "readOnly": true}]
                }],
                "volumes": [
                    {"name": "party", "emptyDir": {}},
                    {"name": "key", "secret": {"secretName": "vault-key", "defaultMode": 0o440,
                                               "items": [{"key": "key", "path": "vault.key"}]}}]
            }}}
        }),
    )
    .await;
    let job = job_finished(&c.client, "seal", "Complete").await;
    let status = job.status.unwrap();
    assert_eq!((status.succeeded, status.failed.unwrap_or(0)), (Some(1), 0));
    let pods = pods_labelled(&c.client, "job-name=seal").await;
    assert_eq!(pods.len(), 1);
    let pod = &pods[0];
    let name = pod.metadata.name.clone().unwrap();
    assert_eq!(
        phase(pod),
        "Succeeded",
        "{}",
        c.kubelet.log("default", &name, "seal")
    );
    assert_eq!(terminated_exit_code(pod), Some(0));
    let ip = pod.status.as_ref().unwrap().pod_ip.clone().unwrap();
    assert!(ip.starts_with("127."), "pods live on loopback: {ip}");
    let vault = c
        .kubelet
        .volume_dir("default", &name, "party")
        .expect("the pod's directory")
        .join("vault");
    let sealed = std::fs::read_dir(&vault)
        .unwrap_or_else(|e| panic!("{} (the translated --out): {e}", vault.display()))
        .count();
    assert!(sealed > 0, "the vault was sealed into the pod's emptyDir");
    // The node the pod ran on, with this machine's capacity and no GPUs.
    let node = Api::<k8s_openapi::api::core::v1::Node>::all(c.client.clone())
        .get("process-node")
        .await
        .expect("the kubelet's Node");
    let allocatable = node.status.unwrap().allocatable.unwrap();
    assert!(allocatable["cpu"].0.parse::<u32>().unwrap() >= 1);
    assert!(allocatable["memory"].0.ends_with("Ki"));
    assert!(!allocatable.contains_key("nvidia.com/gpu"));
    c.kubelet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_reported_with_their_exit_codes_and_foreign_images_never_run() {
    let c = cluster().await;
    // A node-agent that fails: the key file is not there.
    let _: Pod = create(
        &c.client,
        json!({"metadata": {"name": "broken"}, "spec": {"restartPolicy": "Never", "containers": [{
            "name": "seal", "image": AGENT,
            "args": ["vault", "seal", "--dataset", "digits", "--part", "0", "--of", "1",
                     "--key-file", "/etc/nowhere/vault.key", "--out", "/tmp/v"]}]}}),
    )
    .await;
    // Not one of the project's images.
    let _: Pod = create(
        &c.client,
        json!({"metadata": {"name": "nginx"}, "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}),
    )
    .await;
    // Restarted on failure, with the count and the last exit code.
    let _: Pod = create(
        &c.client,
        json!({"metadata": {"name": "crash"}, "spec": {"restartPolicy": "OnFailure", "containers": [{
            "name": "py", "image": PYTHON, "args": ["-c", "import sys; sys.exit(3)"]}]}}),
    )
    .await;
    // Alive as a process but failing its liveness probe: restarted.
    let _: Pod = create(
        &c.client,
        json!({"metadata": {"name": "unhealthy"}, "spec": {"containers": [{
            "name": "py", "image": PYTHON, "args": ["-c", "import time; time.sleep(600)"],
            "livenessProbe": {"tcpSocket": {"port": 9}, "periodSeconds": 1, "failureThreshold": 2}}]}}),
    )
    .await;
    // A Job whose pods fail: retried once (backoffLimit 1), then Failed.
    let _: Job = create(
        &c.client,
        json!({"metadata": {"name": "doomed"}, "spec": {"backoffLimit": 1, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "py", "image": PYTHON, "args": ["-c", "raise SystemExit(7)"]}]}}}}),
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let broken = eventually("pod broken Failed", Duration::from_secs(120), || {
        let pods = pods.clone();
        async move {
            pods.get("broken")
                .await
                .ok()
                .filter(|p| phase(p) == "Failed")
        }
    })
    .await;
    assert_eq!(terminated_exit_code(&broken), Some(1));
    assert!(
        c.kubelet
            .log("default", "broken", "seal")
            .contains("--key-file"),
        "the process's own error is in its log"
    );
    let crash = eventually("pod crash restarted", Duration::from_secs(60), || {
        let pods = pods.clone();
        async move {
            let p = pods.get("crash").await.ok()?;
            let s = p.status.as_ref()?.container_statuses.as_ref()?[0].clone();
            (s.restart_count >= 1).then_some(s)
        }
    })
    .await;
    let last = crash.last_state.unwrap().terminated.unwrap();
    assert_eq!(last.exit_code, 3);
    let unhealthy = eventually("pod unhealthy restarted", Duration::from_secs(60), || {
        let pods = pods.clone();
        async move {
            let p = pods.get("unhealthy").await.ok()?;
            let s = p.status.as_ref()?.container_statuses.as_ref()?[0].clone();
            (s.restart_count >= 1).then_some(s)
        }
    })
    .await;
    let killed = unhealthy.last_state.unwrap().terminated.unwrap();
    assert_eq!(
        (killed.exit_code, killed.signal),
        (143, Some(15)),
        "stopped with SIGTERM"
    );
    let doomed = job_finished(&c.client, "doomed", "Failed").await;
    assert_eq!(
        job_condition(&doomed, "Failed").as_deref(),
        Some("BackoffLimitExceeded")
    );
    assert_eq!(doomed.status.unwrap().failed, Some(2));
    let nginx = pods.get("nginx").await.unwrap();
    let status = nginx.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    assert_eq!(status.reason.as_deref(), Some("ImageNotRunnable"));
    assert!(status.message.unwrap().contains("nginx:1.27"));
    c.kubelet.shutdown().await;
}

async fn http_get(addr: std::net::SocketAddr) -> std::io::Result<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_behind_a_service_is_reached_on_loopback_and_scales_to_zero() {
    let c = cluster().await;
    let _: Service = create(
        &c.client,
        json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"},
               "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}),
    )
    .await;
    let _: Deployment = create(
        &c.client,
        json!({"metadata": {"name": "web"}, "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{
                "name": "http", "image": PYTHON,
                "args": ["-m", "http.server", "8000", "--bind", "$(POD_IP)"],
                "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                "ports": [{"name": "http", "containerPort": 8000}],
                "readinessProbe": {"httpGet": {"path": "/", "port": "http"}}}]}}}}),
    )
    .await;
    let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), "default");
    eventually("Deployment web ready", Duration::from_secs(60), || {
        let d = deployments.clone();
        async move {
            let s = d.get("web").await.ok()?.status?;
            (s.ready_replicas == Some(1) && s.available_replicas == Some(1)).then_some(())
        }
    })
    .await;
    let pods = pods_labelled(&c.client, "app=web").await;
    assert_eq!(pods.len(), 1);
    let pod_name = pods[0].metadata.name.clone().unwrap();
    let suffix = pod_name
        .strip_prefix("web-")
        .expect("named after the Deployment");
    assert_eq!(suffix.len(), 5, "{pod_name}");
    let owner = &pods[0].metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Deployment", "web")
    );
    // From outside: the Service's loopback address.
    let service = std::net::SocketAddr::from((c.kubelet.service_address("default", "web"), 80));
    let answer = eventually(
        "the Service to answer",
        Duration::from_secs(30),
        || async move {
            http_get(service)
                .await
                .ok()
                .filter(|a| a.starts_with("HTTP/1.0 200"))
        },
    )
    .await;
    assert!(answer.contains("Directory listing"), "{answer}");
    assert_eq!(
        c.kubelet.cluster_url("http://web.default.svc:80/"),
        format!("http://{service}/"),
        "what a process outside the pods dials for a Service name"
    );
    // From a pod: the Service's DNS name, as a pod in a cluster dials it.
    let _: Job = create(
        &c.client,
        json!({"metadata": {"name": "fetch"}, "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "py", "image": PYTHON, "args": [
                "-c", "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=10)",
                "http://web.default.svc:80/"]}]}}}}),
    )
    .await;
    job_finished(&c.client, "fetch", "Complete").await;
    // Scale to zero: the pod and its process go.
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await
        .unwrap();
    let client = c.client.clone();
    eventually("web scaled to zero", Duration::from_secs(60), || {
        let (client, d) = (client.clone(), deployments.clone());
        async move {
            let gone = pods_labelled(&client, "app=web").await.is_empty();
            let s = d.get("web").await.ok()?.status?;
            (gone && s.replicas.unwrap_or(0) == 0 && s.ready_replicas.unwrap_or(0) == 0)
                .then_some(())
        }
    })
    .await;
    // No ready pod behind the Service: connections are closed unanswered.
    eventually(
        "the Service to have no backend",
        Duration::from_secs(30),
        || async move {
            http_get(service)
                .await
                .map_or(true, |a| a.is_empty())
                .then_some(())
        },
    )
    .await;
    c.kubelet.shutdown().await;
}

/// The pods of a FederationRound exactly as the operator builds them
/// (aggregator Deployment and Service, one participant Job per vault,
/// their Secrets and ConfigMaps), without the operator: the node-agent's
/// pod mode, the path and address translation and the Service proxy carry
/// a real mutual-TLS federation to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_federation_rounds_pods_train_to_the_end() {
    use modelpub_crds::FederationRound;
    use modelpub_operator::controllers::federation_round::build::{
        self, Identities, Round, secrets,
    };
    use modelpub_operator::identity;

    let c = cluster().await;
    let fr: FederationRound = serde_json::from_value(json!({
        "apiVersion": "modelpub.io/v1alpha1",
        "kind": "FederationRound",
        "metadata": {"name": "mnist", "namespace": "default", "uid": "uid-mnist"},
        "spec": {
            "trustDomain": "hospitals",
            "model": {"architecture": "mlp", "hiddenSizes": [16], "licence": "Apache-2.0"},
            "data": {"dataset": "digits", "dataClass": "research", "vaults": [
                {"name": "hospital-a", "keySecretRef": {"name": "hospital-a-vault"}},
                {"name": "hospital-b", "keySecretRef": {"name": "hospital-b-vault"}}]},
            "rounds": 2,
            "localEpochs": 1,
            "participants": {"min": 2}
        }
    }))
    .expect("FederationRound");
    let round = Round::new(&fr).expect("round");
    let ca = identity::generate_ca_data("hospitals").expect("CA");
    let plans = secrets::planned(&round);
    let mut public = Vec::new();
    for plan in &plans {
        let data = secrets::generate(plan, "hospitals-ca", &ca).expect("party material");
        let mut secret = secrets::secret(&round, plan, data);
        public.push(secrets::public_identity(&round, plan, &secret).expect("identity"));
        // The round is not in this API server: no owner to collect them.
        secret.metadata.owner_references = None;
        Api::<Secret>::namespaced(c.client.clone(), "default")
            .create(&PostParams::default(), &secret)
            .await
            .expect("party Secret");
    }
    for vault in ["hospital-a", "hospital-b"] {
        let _: Secret = create(
            &c.client,
            json!({"metadata": {"name": format!("{vault}-vault")},
                   "stringData": {"vault.key": "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"}}),
        )
        .await;
    }
    let ids = Identities {
        aggregator: public.remove(0),
        agents: public,
    };
    let children = build::children(&round, &ids, AGENT, false, &[], &[]).expect("children");
    let ns = |c: &Client| (c.clone(), "default");
    for mut cm in children.config_maps {
        cm.metadata.owner_references = None;
        let (client, n) = ns(&c.client);
        Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client, n)
            .create(&PostParams::default(), &cm)
            .await
            .expect("ConfigMap");
    }
    let mut service = children.service;
    service.metadata.owner_references = None;
    Api::<Service>::namespaced(c.client.clone(), "default")
        .create(&PostParams::default(), &service)
        .await
        .expect("Service");
    let mut deployment = children.deployment;
    deployment.metadata.owner_references = None;
    Api::<Deployment>::namespaced(c.client.clone(), "default")
        .create(&PostParams::default(), &deployment)
        .await
        .expect("Deployment");
    let mut job_names = Vec::new();
    for mut job in children.jobs {
        job.metadata.owner_references = None;
        job_names.push(job.metadata.name.clone().unwrap());
        Api::<Job>::namespaced(c.client.clone(), "default")
            .create(&PostParams::default(), &job)
            .await
            .expect("Job");
    }
    for name in &job_names {
        let jobs: Api<Job> = Api::namespaced(c.client.clone(), "default");
        let outcome = eventually(
            &format!("Job {name} to finish"),
            Duration::from_secs(400),
            || {
                let jobs = jobs.clone();
                async move {
                    let j = jobs.get(name).await.ok()?;
                    job_condition(&j, "Complete")
                        .map(|_| "Complete")
                        .or(job_condition(&j, "Failed").map(|_| "Failed"))
                }
            },
        )
        .await;
        if outcome != "Complete" {
            let pods = pods_labelled(&c.client, &format!("job-name={name}")).await;
            let pod = pods[0].metadata.name.clone().unwrap();
            let agg = pods_labelled(&c.client, "app.kubernetes.io/component=aggregator").await;
            let agg_logs = agg
                .iter()
                .map(|p| {
                    c.kubelet
                        .log("default", p.metadata.name.as_deref().unwrap(), "aggregator")
                })
                .collect::<Vec<_>>()
                .join("\n");
            panic!(
                "Job {name} failed:\n--- participant\n{}\n--- aggregator\n{agg_logs}",
                c.kubelet.log("default", &pod, "participant")
            );
        }
    }
    // Every participant trained every round over mutual TLS to the
    // aggregator's Service name, and the aggregator finished the run.
    for name in &job_names {
        let pods = pods_labelled(&c.client, &format!("job-name={name}")).await;
        assert_eq!(pods.len(), 1, "backoffLimit 0: one pod per participant");
        assert_eq!(terminated_exit_code(&pods[0]), Some(0));
        let log = c.kubelet.log(
            "default",
            pods[0].metadata.name.as_deref().unwrap(),
            "participant",
        );
        assert!(
            log.contains("federation finished: 2 of 2 rounds completed"),
            "{log}"
        );
    }
    let aggregators = pods_labelled(&c.client, "app.kubernetes.io/component=aggregator").await;
    assert_eq!(aggregators.len(), 1);
    let aggregator = aggregators[0].metadata.name.clone().unwrap();
    let log = c.kubelet.log("default", &aggregator, "aggregator");
    assert!(
        log.contains("run finished: 2 of 2 rounds completed"),
        "{log}"
    );
    let rounds = c
        .kubelet
        .volume_dir("default", &aggregator, "party")
        .expect("the aggregator pod's directory")
        .join("rounds.jsonl");
    let rounds = std::fs::read_to_string(&rounds).expect("the aggregator's rounds file");
    assert!(
        rounds.contains(r#""round":2,"succeeded":true"#) && rounds.contains(r#""secure":true"#),
        "{rounds}"
    );
    c.kubelet.shutdown().await;
}
