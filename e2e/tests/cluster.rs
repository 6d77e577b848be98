//! The whole product, installed and running the way a user runs it: the
//! chart installed with the real helm, the operator running as the chart's
//! ServiceAccount, the README's walk-through typed word for word with the
//! real kubectl, FederationRounds training to the end across node-agent
//! pods, a participant killed mid-round, the operator restarted mid-round,
//! and deletion cleaning up after itself.
//!
//! Against the local cluster (the test-only API server and the process
//! kubelet, see `e2e/src/cluster`) by default; against a real one when
//! `MODELPUB_E2E_KUBECONFIG` names its kubeconfig (`docs/e2e.md`). On
//! failure it prints the operator's log, the Events and the objects' YAML.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use modelpub_crds::federation_round::RoundOutcome;
use modelpub_crds::{FederationRound, Phase, TrustDomain};
use modelpub_e2e::cluster::{Cluster, Failure, eventually};
use modelpub_e2e::helm::repo_root;
use serde_json::Value;

const NS: &str = "modelpub";
const TRUST_DOMAIN: &str = "cardio-research";
/// The round `deploy/examples/federation-round.yaml` declares.
const EXAMPLE_ROUND: &str = "digits-fedavg";
/// The chart's operator pods (release `modelpub`).
const OPERATOR_PODS: &str = "app.kubernetes.io/name=modelpub,app.kubernetes.io/component=operator";
/// How far the cluster's accuracy may be from `modelpub simulate`'s for the
/// same settings: one of the 359 held-out digits classified differently
/// (see `example_round_succeeds_like_the_simulation`).
const ONE_HELD_OUT_EXAMPLE: f64 = 1.0 / 359.0 + 1e-9;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_product_installs_trains_survives_and_cleans_up() -> Result<(), Failure> {
    let started = Instant::now();
    let work = tempfile::tempdir().expect("work dir");
    let cluster = Cluster::start(work.path())
        .await
        .expect("start the cluster");
    let outcome = steps(&cluster, started).await;
    if let Err(e) = &outcome {
        let diagnostics = cluster.diagnostics(NS, OPERATOR_PODS).await;
        eprintln!("{diagnostics}");
        eprintln!(
            "\n===== the suite failed after {:?}: {e:#}",
            started.elapsed()
        );
    }
    cluster.shutdown().await;
    outcome.map_err(|e| Failure(format!("{e:#}")))
}

async fn steps(cluster: &Cluster, started: Instant) -> anyhow::Result<()> {
    let step = |n: u32, what: &str| {
        eprintln!("\n== step {n} ({:.0?} in): {what}", started.elapsed());
    };
    step(1, "the README's helm install: CRDs, RBAC, operator");
    let blocks = readme_walkthrough()?;
    let install = blocks.first().context("README: no helm install block")?;
    run_block(cluster, install)?;
    let operator = operator_ready(cluster).await?;

    step(
        2,
        "the operator runs as the chart's ServiceAccount and leads",
    );
    operator_runs_as_its_service_account(cluster, &operator).await?;

    // A Prometheus configured from the chart's PodMonitor scrapes the
    // example round's pods while it runs (checked after step 4).
    let scraping = RoundScrape::start(cluster)?;

    step(
        3,
        "the README's walk-through: TrustDomain, ComputeOffer, vault keys, FederationRound",
    );
    for block in &blocks[1..] {
        run_block(cluster, block)?;
    }

    step(
        4,
        "the example round succeeds with the accuracy `modelpub simulate` reaches",
    );
    example_round_succeeds_like_the_simulation(cluster).await?;
    if let Some(scraping) = scraping {
        scraping.saw_the_round().await?;
    }

    step(5, "a participant killed mid-round is counted as dropped");
    killed_participant_is_dropped(cluster).await?;

    step(
        7,
        "the operator restarted mid-round: no duplicated pods, the run goes on",
    );
    operator_restart_mid_round(cluster).await?;

    step(
        6,
        "deleting the rounds and the trust domain: finalizers run, children go",
    );
    deletion_cleans_up(cluster).await?;
    eprintln!("\n== all steps passed in {:.0?}", started.elapsed());
    Ok(())
}

// ----- the README --------------------------------------------------------

/// The shell blocks of the README's "On a cluster" section: the helm
/// install, then the kubectl walk-through.
fn readme_walkthrough() -> anyhow::Result<Vec<String>> {
    let blocks = modelpub_e2e::readme::shell_blocks("On a cluster")?;
    ensure!(
        blocks.len() >= 2,
        "README `On a cluster`: expected the helm install block and the kubectl block, found {}",
        blocks.len()
    );
    ensure!(
        blocks[0].contains("helm install"),
        "README: the first block should install the chart:\n{}",
        blocks[0]
    );
    Ok(blocks)
}

fn run_block(cluster: &Cluster, block: &str) -> anyhow::Result<()> {
    eprintln!("$ {}", block.replace('\n', "\n$ "));
    let out = cluster.tools.shell(block).ok()?;
    eprintln!("{out}");
    Ok(())
}

// ----- steps 1 and 2: the operator ---------------------------------------

/// Waits for one Ready operator pod and returns it.
async fn operator_ready(cluster: &Cluster) -> anyhow::Result<Pod> {
    cluster.one_ready_pod(NS, OPERATOR_PODS).await
}

/// The pod runs as the chart's ServiceAccount (whose token is all it has:
/// RBAC the chart does not grant would fail every later step with 403) and
/// holds the leader Lease.
async fn operator_runs_as_its_service_account(cluster: &Cluster, pod: &Pod) -> anyhow::Result<()> {
    let spec = pod.spec.as_ref().context("operator pod without spec")?;
    ensure!(
        spec.service_account_name.as_deref() == Some("modelpub-operator"),
        "the operator pod runs as {:?}, not the chart's ServiceAccount modelpub-operator",
        spec.service_account_name
    );
    operator_token_stays_in_its_namespace(cluster)?;
    let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), NS);
    let name = pod.name_any();
    eventually(
        "the operator pod holding the leader Lease",
        Duration::from_secs(60),
        || {
            let (leases, name) = (leases.clone(), name.clone());
            async move {
                let list = leases.list(&ListParams::default()).await?;
                let holders: Vec<String> = list
                    .items
                    .iter()
                    .filter_map(|l| l.spec.as_ref()?.holder_identity.clone())
                    .collect();
                Ok(if holders.contains(&name) {
                    Ok(())
                } else {
                    Err(format!("lease holders {holders:?}"))
                })
            }
        },
    )
    .await
}

/// The default install is namespaced: with the operator's own token (as
/// `kubectl create token` mints it) Secrets of the release namespace are
/// readable, a Secret in any other namespace, and Secrets cluster-wide,
/// are forbidden.
fn operator_token_stays_in_its_namespace(cluster: &Cluster) -> anyhow::Result<()> {
    let kubectl = |args: &[&str]| cluster.tools.kubectl(args);
    let token = kubectl(&["create", "token", "modelpub-operator", "-n", NS])
        .ok()?
        .trim()
        .to_string();
    ensure!(!token.is_empty(), "kubectl create token printed nothing");
    let as_operator = format!("--token={token}");
    cluster
        .tools
        .kubectl_with_input(
            &["apply", "-f", "-"],
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: not-watched\n",
        )
        .ok()?;
    kubectl(&[
        "create",
        "secret",
        "generic",
        "unrelated",
        "-n",
        "not-watched",
        "--from-literal=k=v",
    ])
    .ok()?;
    kubectl(&[&as_operator, "get", "secrets", "-n", NS]).ok()?;
    for args in [
        &["get", "secret", "unrelated", "-n", "not-watched"][..],
        &["get", "secrets", "--all-namespaces"][..],
    ] {
        let mut full = vec![as_operator.as_str()];
        full.extend_from_slice(args);
        let run = kubectl(&full);
        ensure!(
            !run.success && run.stderr.to_lowercase().contains("forbidden"),
            "`kubectl {}` as the operator should be forbidden: {}{}",
            args.join(" "),
            run.stdout,
            run.stderr
        );
    }
    kubectl(&["delete", "namespace", "not-watched", "--wait=false"]).ok()?;
    Ok(())
}

// ----- the chart's PodMonitor, scraped ------------------------------------

/// Prometheus (the Debian package) scraping what the chart's PodMonitor
/// selects, its targets rewritten from the cluster's pods every half
/// second as prometheus-operator's discovery would have them. Local
/// clusters only: a real cluster's pod IPs are not reachable from the test
/// host, and there prometheus-operator itself reads the PodMonitor.
struct RoundScrape {
    prometheus: modelpub_e2e::prometheus::Prometheus,
    refresher: tokio::task::JoinHandle<()>,
    started: f64,
    _dir: tempfile::TempDir,
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

impl RoundScrape {
    fn start(cluster: &Cluster) -> anyhow::Result<Option<Self>> {
        use modelpub_e2e::pod_monitor;
        use modelpub_e2e::prometheus::{FileSdJob, Prometheus};
        if !cluster.is_local() {
            eprintln!("(the PodMonitor scrape runs on local clusters only)");
            return Ok(None);
        }
        let rendered =
            modelpub_e2e::helm::template("modelpub", NS, &["--set", "podMonitor.enabled=true"]);
        let docs = modelpub_e2e::manifest::parse_documents(&rendered)?;
        let monitor = docs
            .into_iter()
            .find(|d| d["kind"] == "PodMonitor")
            .context("the chart rendered no PodMonitor with podMonitor.enabled=true")?;
        let job = pod_monitor::scrape_job(&monitor)?;
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("targets.json");
        std::fs::write(&file, "[]")?;
        let prometheus = Prometheus::start_with(
            dir.path(),
            &[],
            &[FileSdJob {
                name: "podMonitor/modelpub/modelpub-rounds/0".into(),
                file: file.clone(),
                relabelings: pod_monitor::relabel_configs(&job),
            }],
        )
        .map_err(anyhow::Error::msg)?;
        let pods: Api<Pod> = Api::all(cluster.client.clone());
        let refresher = tokio::spawn(async move {
            loop {
                if let Ok(list) = pods.list(&ListParams::default()).await
                    && let Ok(groups) = pod_monitor::targets(&monitor, &list.items)
                {
                    let next = file.with_extension("json.new");
                    if std::fs::write(&next, Value::Array(groups).to_string()).is_ok() {
                        std::fs::rename(&next, &file).ok();
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        Ok(Some(Self {
            prometheus,
            refresher,
            started: unix_now(),
            _dir: dir,
        }))
    }

    /// The round's aggregator and participant series, labelled with the
    /// namespace and role the PodMonitor gives them.
    async fn saw_the_round(self) -> anyhow::Result<()> {
        self.refresher.abort();
        let end = unix_now();
        let prometheus = &self.prometheus;
        for (what, query) in [
            (
                "the aggregator's rounds",
                format!(
                    r#"modelpub_rounds_total{{namespace="{NS}",role="aggregator",federation="{EXAMPLE_ROUND}"}}"#
                ),
            ),
            (
                "the participants' rounds",
                format!(
                    r#"modelpub_participant_rounds_total{{namespace="{NS}",role="node-agent",federation="{EXAMPLE_ROUND}"}}"#
                ),
            ),
        ] {
            let result = prometheus
                .query_range(&query, self.started, end, 1.0)
                .map_err(anyhow::Error::msg)?;
            ensure!(
                !modelpub_e2e::prometheus::finite_values(&result).is_empty(),
                "Prometheus, configured from the chart's PodMonitor, has no series for {what} (`{query}`); its log:\n{}",
                prometheus.log_text()
            );
        }
        Ok(())
    }
}

// ----- step 4: the example round -----------------------------------------

async fn example_round_succeeds_like_the_simulation(cluster: &Cluster) -> anyhow::Result<()> {
    let fr = succeeded(cluster, EXAMPLE_ROUND, Duration::from_secs(300)).await?;
    let status = fr.status.as_ref().context("no status")?;
    let accuracies: Vec<f64> = status.rounds.iter().filter_map(|r| r.accuracy).collect();
    ensure!(
        accuracies.len() == fr.spec.rounds as usize,
        "status.rounds has {} accuracies for {} rounds: {:?}",
        accuracies.len(),
        fr.spec.rounds,
        status.rounds
    );
    ensure!(
        accuracies.last() > accuracies.first(),
        "accuracy did not improve over the rounds: {accuracies:?}"
    );

    // The same settings through `modelpub simulate`, its institutions
    // named as the vaults (participants seed their batch order from their
    // names). Both runs are seeded; what differs is libtorch's thread count
    // (simulate pins each process to one thread), which changes float sums
    // in the last bits: the model digests differ, the accuracies may differ
    // by a held-out example at most.
    let sim = simulate_like(&fr)?;
    let final_sim = sim["final"]["accuracy"]
        .as_f64()
        .context("simulate: no final accuracy")?;
    let final_fr = status.accuracy.context("status.accuracy missing")?;
    let sim_rounds: Vec<f64> = sim["rounds"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["accuracy"].as_f64())
        .collect();
    eprintln!(
        "per-round accuracy: cluster {accuracies:?}, simulate {sim_rounds:?}; model digest {:?} / {}",
        status.model_digest, sim["final"]["model_sha256"]
    );
    let close = |a: f64, b: f64| (a - b).abs() <= ONE_HELD_OUT_EXAMPLE;
    ensure!(
        close(final_fr, final_sim),
        "final accuracy {final_fr} in the cluster, {final_sim} in `modelpub simulate`"
    );
    ensure!(
        sim_rounds.len() == accuracies.len()
            && sim_rounds
                .iter()
                .zip(&accuracies)
                .all(|(a, b)| close(*a, *b)),
        "per-round accuracy: cluster {accuracies:?}, simulate {sim_rounds:?}"
    );

    // What a user looks at: the printer columns and the Events.
    let get = cluster
        .tools
        .kubectl(&["get", "fr", EXAMPLE_ROUND, "-n", NS])
        .ok()?;
    eprintln!("$ kubectl get fr {EXAMPLE_ROUND} -n {NS}\n{get}");
    let label = format!("{}/{}", fr.spec.rounds, fr.spec.rounds);
    let accuracy = format!("{final_fr:.4}");
    for column in [
        "PHASE",
        "ROUND",
        "ACCURACY",
        "Succeeded",
        &label,
        &accuracy[..5],
    ] {
        ensure!(
            get.contains(column),
            "`kubectl get fr` lacks {column:?}:\n{get}"
        );
    }
    let describe = cluster
        .tools
        .kubectl(&["describe", "fr", EXAMPLE_ROUND, "-n", NS])
        .ok()?;
    for reason in ["RoundsStarted", "Succeeded"] {
        ensure!(
            describe.contains(reason),
            "`kubectl describe fr` shows no {reason} Event:\n{describe}"
        );
    }
    Ok(())
}

/// Runs `modelpub simulate` with the round's settings; its report.json.
fn simulate_like(fr: &FederationRound) -> anyhow::Result<Value> {
    let s = &fr.spec;
    ensure!(
        !s.differential_privacy.enabled,
        "the suite compares a run without DP (DP noise is not reproducible)"
    );
    let out = tempfile::tempdir()?;
    // Participants seed their batch order from their names.
    let names: Vec<&str> = s.data.vaults.iter().map(|v| v.name.as_str()).collect();
    let names = names.join(",");
    let mut args: Vec<String> = [
        "simulate",
        "--data",
        "digits",
        "--institutions",
        &s.data.vaults.len().to_string(),
        "--partition",
        "label",
        "--rounds",
        &s.rounds.to_string(),
        "--seed",
        &s.model.init_seed.to_string(),
        "--min-participants",
        &s.participants.min.to_string(),
        "--skip-local-only",
        "--names",
        &names,
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    // What the round leaves out, both take from the node-agent's defaults.
    let optional = [
        ("--local-epochs", s.local_epochs.map(|v| v.to_string())),
        ("--learning-rate", s.learning_rate.map(|v| v.to_string())),
        ("--batch-size", s.batch_size.map(|v| v.to_string())),
    ];
    for (flag, value) in optional {
        if let Some(v) = value {
            args.extend([flag.to_string(), v]);
        }
    }
    if s.secure_aggregation.enabled {
        if let Some(t) = s.secure_aggregation.threshold {
            args.extend(["--secagg-threshold".into(), t.to_string()]);
        }
        args.extend([
            "--secagg-clip".into(),
            s.secure_aggregation.clip.to_string(),
        ]);
    } else {
        args.extend(["--secure-aggregation".into(), "off".into()]);
    }
    args.extend(["--out".into(), out.path().display().to_string()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = modelpub_e2e::modelpub(&refs);
    ensure!(
        run.status.success(),
        "modelpub {}: {}",
        args.join(" "),
        modelpub_e2e::text(&run)
    );
    Ok(modelpub_e2e::read_json(&out.path().join("report.json")))
}

// ----- steps 5 and 7: faults mid-run -------------------------------------

/// The example round under another name, with `edit` applied.
async fn start_round(
    cluster: &Cluster,
    name: &str,
    edit: impl FnOnce(&mut FederationRound),
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(repo_root().join("deploy/examples/federation-round.yaml"))?;
    let mut fr: FederationRound = serde_saphyr::from_str(&text)?;
    fr.metadata.name = Some(name.into());
    edit(&mut fr);
    let api: Api<FederationRound> = Api::namespaced(cluster.client.clone(), NS);
    api.create(&PostParams::default(), &fr)
        .await
        .with_context(|| format!("create FederationRound {name}"))?;
    Ok(())
}

async fn round(cluster: &Cluster, name: &str) -> anyhow::Result<FederationRound> {
    let api: Api<FederationRound> = Api::namespaced(cluster.client.clone(), NS);
    Ok(api.get(name).await?)
}

/// Waits until round `name` reports at least `completed` completed rounds
/// while still running.
async fn mid_run(cluster: &Cluster, name: &str, completed: u32) -> anyhow::Result<FederationRound> {
    eventually(
        &format!("{name} running with {completed} rounds done"),
        Duration::from_secs(240),
        || async move {
            let fr = round(cluster, name).await?;
            let s = fr.status.clone().unwrap_or_default();
            if s.phase.is_terminal() {
                bail!(
                    "{name} ended ({:?}: {:?}) before the fault could be injected",
                    s.phase,
                    s.message
                );
            }
            let done = s.rounds.len() as u32;
            Ok(if s.phase == Phase::Running && done >= completed {
                Ok(fr)
            } else {
                Err(format!("{:?}, {done} rounds in status", s.phase))
            })
        },
    )
    .await
}

async fn succeeded(
    cluster: &Cluster,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<FederationRound> {
    eventually(&format!("{name} Succeeded"), timeout, || async move {
        let fr = round(cluster, name).await?;
        let s = fr.status.clone().unwrap_or_default();
        match s.phase {
            Phase::Succeeded => Ok(Ok(fr)),
            Phase::Failed => bail!("{name} Failed: {:?}", s.message),
            other => Ok(Err(format!("{other:?} {:?}", s.round_label))),
        }
    })
    .await
}

fn pods_selector(round: &str, component: &str) -> String {
    format!("modelpub.io/federation-round={round},app.kubernetes.io/component={component}")
}

async fn pods_of(cluster: &Cluster, round: &str, component: &str) -> anyhow::Result<Vec<Pod>> {
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), NS);
    let list = pods
        .list(&ListParams::default().labels(&pods_selector(round, component)))
        .await?;
    Ok(list.items)
}

/// Enough rounds that the kill, after the first round shows in status
/// (which trails the aggregator by up to the operator's 5 s poll), still
/// lands inside the run.
const DROPOUT_ROUNDS: u32 = 6;

async fn killed_participant_is_dropped(cluster: &Cluster) -> anyhow::Result<()> {
    const NAME: &str = "digits-dropout";
    // Longer rounds, so the kill lands inside one, and short timeouts,
    // so the survivors do not wait minutes for the dead (as in simulate).
    start_round(cluster, NAME, |fr| {
        fr.spec.rounds = DROPOUT_ROUNDS;
        fr.spec.local_epochs = Some(10);
        fr.spec.participants.round_timeout_seconds = 40;
        fr.spec.secure_aggregation.stage_timeout_seconds = 5;
    })
    .await?;
    mid_run(cluster, NAME, 1).await?;
    let victims = pods_of(cluster, NAME, "node-agent").await?;
    let victim = victims
        .iter()
        .find(|p| p.name_any().contains("hospital-b"))
        .context("no participant pod of hospital-b")?;
    eprintln!("killing participant pod {}", victim.name_any());
    cluster.kill_pod(NS, &victim.name_any()).await?;
    let fr = succeeded(cluster, NAME, Duration::from_secs(300)).await?;
    let rounds = fr.status.map(|s| s.rounds).unwrap_or_default();
    ensure!(
        rounds.iter().any(|r| r.dropped >= 1 && r.participants >= 2),
        "no round counted the killed participant as dropped: {rounds:?}"
    );
    ensure!(
        rounds.len() == DROPOUT_ROUNDS as usize,
        "expected {DROPOUT_ROUNDS} rounds in status after the kill: {rounds:?}"
    );
    Ok(())
}

async fn operator_restart_mid_round(cluster: &Cluster) -> anyhow::Result<()> {
    const NAME: &str = "digits-restart";
    start_round(cluster, NAME, |fr| {
        fr.spec.rounds = 6;
        fr.spec.local_epochs = Some(8);
    })
    .await?;
    let before = mid_run(cluster, NAME, 1).await?;
    let done_before = before.status.map(|s| s.rounds.len()).unwrap_or_default();
    let uids =
        |pods: Vec<Pod>| -> BTreeSet<String> { pods.iter().filter_map(|p| p.uid()).collect() };
    let agents = uids(pods_of(cluster, NAME, "node-agent").await?);
    let aggregators = uids(pods_of(cluster, NAME, "aggregator").await?);
    ensure!(
        agents.len() == 3 && aggregators.len() == 1,
        "pods before the restart: {agents:?} {aggregators:?}"
    );

    let old = operator_ready(cluster).await?;
    eprintln!(
        "restarting the operator: deleting pod {} after {done_before} rounds",
        old.name_any()
    );
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), NS);
    pods.delete(&old.name_any(), &DeleteParams::default())
        .await?;
    let new = eventually("a new operator pod", Duration::from_secs(120), || {
        let old = old.uid();
        async move {
            let pod = operator_ready(cluster).await?;
            Ok(if pod.uid() != old {
                Ok(pod)
            } else {
                Err("the old pod is still the ready one".into())
            })
        }
    })
    .await?;
    eprintln!("new operator pod {}", new.name_any());

    let fr = succeeded(cluster, NAME, Duration::from_secs(300)).await?;
    let status = fr.status.unwrap_or_default();
    // Every round completes. (A participant slowed by the machine's load
    // may still miss a round's straggler cutoff and count as dropped in
    // it: that is the aggregator's rule, not the restart's doing.)
    ensure!(
        status.rounds.len() == 6
            && status
                .rounds
                .iter()
                .all(|r| r.outcome == RoundOutcome::Completed),
        "the run did not go on to the end: {:?}",
        status.rounds
    );
    let agents_after = uids(pods_of(cluster, NAME, "node-agent").await?);
    let aggregators_after = uids(pods_of(cluster, NAME, "aggregator").await?);
    // Finished agents stay (Jobs keep their pods); the finished round
    // scales its aggregator to zero, so that pod may be gone, never new.
    ensure!(
        agents_after == agents && aggregators_after.is_subset(&aggregators),
        "pods were replaced or duplicated: agents {agents:?} -> {agents_after:?}, \
         aggregators {aggregators:?} -> {aggregators_after:?}"
    );
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), NS);
    let selector = format!("modelpub.io/federation-round={NAME}");
    let n = jobs
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .len();
    ensure!(n == 3, "{n} Jobs for three vaults");
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), NS);
    let n = deployments
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .len();
    ensure!(n == 1, "{n} aggregator Deployments");
    Ok(())
}

// ----- step 6: deletion --------------------------------------------------

/// How many children of each kind carry `selector`.
async fn children(client: &Client, selector: &str) -> anyhow::Result<Vec<String>> {
    let lp = ListParams::default().labels(selector);
    let mut found = Vec::new();
    macro_rules! collect {
        ($kind:ty, $label:expr) => {
            for o in Api::<$kind>::namespaced(client.clone(), NS)
                .list(&lp)
                .await?
                .items
            {
                found.push(format!("{} {}", $label, o.name_any()));
            }
        };
    }
    collect!(Deployment, "Deployment");
    collect!(Service, "Service");
    collect!(Job, "Job");
    collect!(Pod, "Pod");
    collect!(ConfigMap, "ConfigMap");
    collect!(Secret, "Secret");
    collect!(NetworkPolicy, "NetworkPolicy");
    Ok(found)
}

async fn deletion_cleans_up(cluster: &Cluster) -> anyhow::Result<()> {
    let client = &cluster.client;
    let rounds: Api<FederationRound> = Api::namespaced(client.clone(), NS);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let identity = [
        format!("{TRUST_DOMAIN}-identity"),
        format!("{TRUST_DOMAIN}-ca"),
    ];
    for name in [EXAMPLE_ROUND, "digits-dropout", "digits-restart"] {
        let fr = rounds.get(name).await?;
        ensure!(
            fr.finalizers().iter().any(|f| f == "modelpub.io/cleanup"),
            "{name} carries no cleanup finalizer: {:?}",
            fr.finalizers()
        );
        let out = cluster
            .tools
            .kubectl(&["delete", "fr", name, "-n", NS, "--timeout=120s"])
            .ok()?;
        eprintln!("$ kubectl delete fr {name} -n {NS}\n{out}");
        let selector = format!("modelpub.io/federation-round={name}");
        eventually(
            &format!("every child of {name} gone"),
            Duration::from_secs(120),
            || {
                let selector = selector.clone();
                async move {
                    let left = children(client, &selector).await?;
                    Ok(if left.is_empty() {
                        Ok(())
                    } else {
                        Err(format!("{left:?}"))
                    })
                }
            },
        )
        .await?;
        for s in &identity {
            ensure!(
                secrets.get_opt(s).await?.is_some(),
                "Secret {s} went with FederationRound {name}: identities belong to the TrustDomain"
            );
        }
    }
    let domains: Api<TrustDomain> = Api::namespaced(client.clone(), NS);
    let td = domains.get(TRUST_DOMAIN).await?;
    ensure!(
        td.finalizers().iter().any(|f| f == "modelpub.io/cleanup"),
        "the TrustDomain carries no cleanup finalizer"
    );
    let out = cluster
        .tools
        .kubectl(&[
            "delete",
            "-f",
            "deploy/examples/trust-domain.yaml",
            "--timeout=120s",
        ])
        .ok()?;
    eprintln!("$ kubectl delete -f deploy/examples/trust-domain.yaml\n{out}");
    let selector = format!("modelpub.io/trust-domain={TRUST_DOMAIN}");
    eventually(
        "every child of the TrustDomain gone",
        Duration::from_secs(120),
        || {
            let (selector, secrets, identity) =
                (selector.clone(), secrets.clone(), identity.clone());
            async move {
                let mut left = children(client, &selector).await?;
                for s in &identity {
                    if secrets.get_opt(s).await?.is_some() {
                        left.push(format!("Secret {s}"));
                    }
                }
                let td_left = domains_left(client).await?;
                left.extend(td_left);
                Ok(if left.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{left:?}"))
                })
            }
        },
    )
    .await?;
    Ok(())
}

async fn domains_left(client: &Client) -> anyhow::Result<Vec<String>> {
    let api: Api<TrustDomain> = Api::namespaced(client.clone(), NS);
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(|t| format!("TrustDomain {}", t.name_any()))
        .collect())
}
