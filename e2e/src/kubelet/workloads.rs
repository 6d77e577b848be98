//! The workload controllers a cluster runs beside the kubelet: a
//! Deployment gets `replicas` Pods from its template (owned by it, named
//! `<deployment>-<5 chars>`, labelled `pod-template-hash`; a changed
//! template replaces them all, as the `Recreate` strategy does), a Job gets
//! Pods until `completions` succeed or more than `backoffLimit` fail. Both
//! write their status (replicas/readyReplicas/availableReplicas;
//! active/succeeded/failed and the Complete/Failed conditions).
//!
//! Not modelled: ReplicaSets (pods are owned by the Deployment directly),
//! rolling-update surge limits, Job back-off delays, indexed Jobs,
//! `activeDeadlineSeconds`, `ttlSecondsAfterFinished`.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::network::random_u64;
use super::status::now;

/// Label of a Deployment's pods naming their template's hash.
pub const TEMPLATE_HASH: &str = "pod-template-hash";

/// One item per change to a `K` (errors included: they mean "look again").
pub fn changes<K>(api: Api<K>) -> BoxStream<'static, ()>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .map(|_| ())
        .boxed()
}

/// Waits for a change (or `resync`), then lets a burst of changes pass
/// so one reconcile covers them.
pub async fn settle(events: &mut (impl Stream<Item = ()> + Unpin), resync: Duration) {
    let _ = tokio::time::timeout(resync, events.next()).await;
    while let Ok(Some(())) = tokio::time::timeout(Duration::from_millis(30), events.next()).await {}
}

/// Runs the Deployment and Job controllers forever.
pub async fn run(client: Client, resync: Duration) {
    let mut events = futures::stream::select(
        futures::stream::select(
            changes(Api::<Deployment>::all(client.clone())),
            changes(Api::<Job>::all(client.clone())),
        ),
        changes(Api::<Pod>::all(client.clone())),
    );
    loop {
        if let Err(e) = reconcile_all(&client).await {
            tracing::warn!("kubelet: workloads: {e}");
        }
        settle(&mut events, resync).await;
    }
}

/// A name suffix like the controllers': 5 characters without vowels.
pub fn suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut n = random_u64();
    (0..5)
        .map(|_| {
            let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
            n /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

/// A short stable hash of a pod template.
pub fn template_hash(template: &PodTemplateSpec) -> String {
    let bytes = serde_json::to_vec(template).unwrap_or_default();
    hex::encode(&Sha256::digest(&bytes)[..5])
}

fn owned_by<'a>(pods: &'a [Pod], uid: &str) -> Vec<&'a Pod> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == uid && o.controller == Some(true))
        })
        .collect()
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A Pod from `template`, owned by the controller `owner`.
pub fn pod_from_template(
    template: &PodTemplateSpec,
    name: String,
    namespace: &str,
    owner: OwnerReference,
    extra_labels: BTreeMap<String, String>,
) -> Pod {
    let meta = template.metadata.clone().unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    labels.extend(extra_labels);
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace.into()),
            labels: Some(labels),
            annotations: meta.annotations,
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

fn owner_reference<K: Resource<DynamicType = ()>>(obj: &K) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: obj.meta().name.clone()?,
        uid: obj.meta().uid.clone()?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

async fn reconcile_all(client: &Client) -> Result<(), kube::Error> {
    let lp = ListParams::default();
    let pods = Api::<Pod>::all(client.clone()).list(&lp).await?.items;
    for d in Api::<Deployment>::all(client.clone())
        .list(&lp)
        .await?
        .items
    {
        deployment(client, &d, &pods).await?;
    }
    for j in Api::<Job>::all(client.clone()).list(&lp).await?.items {
        job(client, &j, &pods).await?;
    }
    Ok(())
}

/// Changes to make for a Deployment: pods to delete, how many to create,
/// and its status.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentPlan {
    pub delete: Vec<String>,
    pub create: usize,
    pub status: Value,
}

pub fn plan_deployment(d: &Deployment, pods: &[Pod]) -> Option<DeploymentPlan> {
    let spec = d.spec.as_ref()?;
    let uid = d.metadata.uid.as_deref()?;
    let desired = usize::try_from(spec.replicas.unwrap_or(1)).unwrap_or(0);
    let hash = template_hash(&spec.template);
    let owned = owned_by(pods, uid);
    let (current, stale): (Vec<&Pod>, Vec<&Pod>) = owned.iter().partition(|p| {
        p.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(TEMPLATE_HASH))
            == Some(&hash)
    });
    let mut delete: Vec<String> = stale
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let mut keep: Vec<&Pod> = current.clone();
    // Scale down: the not-ready ones go first.
    keep.sort_by_key(|p| std::cmp::Reverse(is_ready(p)));
    if keep.len() > desired {
        delete.extend(
            keep.split_off(desired)
                .iter()
                .filter_map(|p| p.metadata.name.clone()),
        );
    }
    // Recreate: the new template's pods start once the old ones are gone.
    let create = if stale.is_empty() {
        desired.saturating_sub(keep.len())
    } else {
        0
    };
    let ready = keep.iter().filter(|p| is_ready(p)).count();
    let available = ready >= desired;
    let status = json!({
        "observedGeneration": d.metadata.generation,
        "replicas": owned.len(),
        "updatedReplicas": current.len(),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "unavailableReplicas": desired.saturating_sub(ready),
        "conditions": [{
            "type": "Available",
            "status": if available { "True" } else { "False" },
            "reason": if available { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
            "message": format!("{ready} of {desired} replicas ready"),
        }],
    });
    Some(DeploymentPlan {
        delete,
        create,
        status,
    })
}

/// Whether `status` differs from `current` in any field it sets
/// (condition timestamps aside), so unchanged status is not rewritten
/// (every write is a watch event that would wake the controller again).
fn status_changed(current: Option<Value>, status: &Value) -> bool {
    let current = current.unwrap_or(Value::Null);
    // Condition timestamps change on every computation; compare the rest.
    let strip = |v: &Value| -> Value {
        let mut v = v.clone();
        if let Some(items) = v.as_array_mut() {
            for item in items {
                if let Some(o) = item.as_object_mut() {
                    o.remove("lastTransitionTime");
                    o.remove("lastProbeTime");
                    o.remove("lastUpdateTime");
                }
            }
        }
        v
    };
    let Some(fields) = status.as_object() else {
        return true;
    };
    fields.iter().any(|(k, v)| {
        let have = current.get(k).map(strip).unwrap_or(Value::Null);
        let want = strip(v);
        // a zero count and an absent one are the same to readers
        !(have == want || (have.is_null() && want == json!(0)))
    })
}

async fn deployment(client: &Client, d: &Deployment, pods: &[Pod]) -> Result<(), kube::Error> {
    let (Some(ns), Some(name)) = (d.metadata.namespace.as_deref(), d.metadata.name.as_deref())
    else {
        return Ok(());
    };
    let Some(plan) = plan_deployment(d, pods) else {
        return Ok(());
    };
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), ns);
    for p in &plan.delete {
        ignore_not_found(pods_api.delete(p, &DeleteParams::default()).await.map(drop))?;
    }
    if let (Some(spec), Some(owner)) = (&d.spec, owner_reference(d)) {
        let labels = BTreeMap::from([(TEMPLATE_HASH.to_string(), template_hash(&spec.template))]);
        for _ in 0..plan.create {
            let pod = pod_from_template(
                &spec.template,
                format!("{name}-{}", suffix()),
                ns,
                owner.clone(),
                labels.clone(),
            );
            pods_api.create(&PostParams::default(), &pod).await?;
        }
    }
    let current = serde_json::to_value(&d.status).ok();
    if status_changed(current, &plan.status) {
        let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": plan.status})),
        )
        .await?;
    }
    Ok(())
}

/// Changes to make for a Job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobPlan {
    pub delete: Vec<String>,
    pub create: usize,
    pub status: Value,
}

fn finished(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        })
}

pub fn plan_job(job: &Job, pods: &[Pod]) -> Option<JobPlan> {
    let spec = job.spec.as_ref()?;
    let uid = job.metadata.uid.as_deref()?;
    if finished(job) {
        return None;
    }
    let owned = owned_by(pods, uid);
    let count = |p: &str| owned.iter().filter(|x| phase(x) == p).count();
    let succeeded = count("Succeeded");
    let failed = count("Failed");
    let active: Vec<&&Pod> = owned
        .iter()
        .filter(|p| !matches!(phase(p), "Succeeded" | "Failed"))
        .collect();
    let completions = usize::try_from(spec.completions.unwrap_or(1)).unwrap_or(1);
    let parallelism = usize::try_from(spec.parallelism.unwrap_or(1)).unwrap_or(1);
    let backoff_limit = usize::try_from(spec.backoff_limit.unwrap_or(6)).unwrap_or(0);
    let t = now();
    let start = job
        .status
        .as_ref()
        .and_then(|s| s.start_time.clone())
        .unwrap_or_else(|| t.clone());
    let condition = |type_: &str, reason: &str, message: &str| {
        json!({"type": type_, "status": "True", "reason": reason, "message": message,
               "lastTransitionTime": t, "lastProbeTime": t})
    };
    let mut status = json!({
        "startTime": start,
        "active": active.len(),
        "ready": active.iter().filter(|p| is_ready(p)).count(),
        "succeeded": succeeded,
        "failed": failed,
    });
    let names = |ps: &[&&Pod]| -> Vec<String> {
        ps.iter().filter_map(|p| p.metadata.name.clone()).collect()
    };
    if succeeded >= completions {
        status["conditions"] = json!([
            condition(
                "SuccessCriteriaMet",
                "CompletionsReached",
                "Reached expected number of succeeded pods"
            ),
            condition(
                "Complete",
                "CompletionsReached",
                "Reached expected number of succeeded pods"
            ),
        ]);
        status["completionTime"] = json!(t);
        status["active"] = json!(0);
        return Some(JobPlan {
            delete: names(&active),
            create: 0,
            status,
        });
    }
    if failed > backoff_limit {
        let message = "Job has reached the specified backoff limit";
        status["conditions"] = json!([
            condition("FailureTarget", "BackoffLimitExceeded", message),
            condition("Failed", "BackoffLimitExceeded", message),
        ]);
        status["active"] = json!(0);
        return Some(JobPlan {
            delete: names(&active),
            create: 0,
            status,
        });
    }
    let wanted = parallelism.min(completions - succeeded);
    Some(JobPlan {
        delete: Vec::new(),
        create: wanted.saturating_sub(active.len()),
        status,
    })
}

async fn job(client: &Client, j: &Job, pods: &[Pod]) -> Result<(), kube::Error> {
    let (Some(ns), Some(name)) = (j.metadata.namespace.as_deref(), j.metadata.name.as_deref())
    else {
        return Ok(());
    };
    let Some(plan) = plan_job(j, pods) else {
        return Ok(());
    };
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), ns);
    for p in &plan.delete {
        ignore_not_found(pods_api.delete(p, &DeleteParams::default()).await.map(drop))?;
    }
    if let (Some(spec), Some(owner)) = (&j.spec, owner_reference(j)) {
        let uid = owner.uid.clone();
        let labels = BTreeMap::from([
            ("batch.kubernetes.io/job-name".to_string(), name.to_string()),
            ("job-name".to_string(), name.to_string()),
            (
                "batch.kubernetes.io/controller-uid".to_string(),
                uid.clone(),
            ),
            ("controller-uid".to_string(), uid),
        ]);
        for _ in 0..plan.create {
            let pod = pod_from_template(
                &spec.template,
                format!("{name}-{}", suffix()),
                ns,
                owner.clone(),
                labels.clone(),
            );
            pods_api.create(&PostParams::default(), &pod).await?;
        }
    }
    let mut compared = plan.status.clone();
    if let Some(o) = compared.as_object_mut() {
        o.remove("startTime");
    }
    let current = serde_json::to_value(&j.status).ok();
    if status_changed(current, &compared)
        || j.status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .is_none()
    {
        let api: Api<Job> = Api::namespaced(client.clone(), ns);
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": plan.status})),
        )
        .await?;
    }
    Ok(())
}

fn ignore_not_found(r: Result<(), kube::Error>) -> Result<(), kube::Error> {
    match r {
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(replicas: i32) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "agg", "namespace": "lab", "uid": "d1", "generation": 2},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "agg"}},
                     "template": {"metadata": {"labels": {"app": "agg"}},
                                  "spec": {"containers": [{"name": "c", "image": "i"}]}}}
        }))
        .unwrap()
    }

    fn owned_pod(name: &str, owner: &str, hash: &str, phase: &str, ready: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "lab",
                         "labels": {"app": "agg", TEMPLATE_HASH: hash},
                         "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "o", "uid": owner, "controller": true}]},
            "spec": {"containers": []},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        }))
        .unwrap()
    }

    #[test]
    fn deployments_scale_up_down_and_replace_stale_pods() {
        let d = deployment(2);
        let hash = template_hash(&d.spec.as_ref().unwrap().template);
        let plan = plan_deployment(&d, &[]).unwrap();
        assert_eq!((plan.create, plan.delete.len()), (2, 0));
        assert_eq!(plan.status["replicas"], 0);
        let pods = vec![
            owned_pod("agg-a", "d1", &hash, "Running", true),
            owned_pod("agg-b", "d1", &hash, "Pending", false),
            owned_pod("other", "zz", &hash, "Running", true),
        ];
        let plan = plan_deployment(&d, &pods).unwrap();
        assert_eq!((plan.create, plan.delete.len()), (0, 0));
        assert_eq!(plan.status["replicas"], 2);
        assert_eq!(plan.status["readyReplicas"], 1);
        assert_eq!(plan.status["availableReplicas"], 1);
        assert_eq!(plan.status["conditions"][0]["status"], "False");
        let plan = plan_deployment(&deployment(0), &pods).unwrap();
        let mut deleted = plan.delete.clone();
        deleted.sort();
        assert_eq!(deleted, ["agg-a", "agg-b"], "scale to zero");
        assert_eq!(plan.status["readyReplicas"], 0);
        assert_eq!(plan.status["conditions"][0]["status"], "True");
        let plan = plan_deployment(&deployment(1), &pods).unwrap();
        assert_eq!(plan.delete, ["agg-b"], "the not-ready pod goes first");
        let stale = vec![owned_pod("agg-old", "d1", "0000000000", "Running", true)];
        let plan = plan_deployment(&d, &stale).unwrap();
        assert_eq!(plan.delete, ["agg-old"]);
        assert_eq!(plan.create, 0, "recreate: new pods once the old are gone");
    }

    fn job(backoff: i32) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "seal", "namespace": "lab", "uid": "j1"},
            "spec": {"backoffLimit": backoff, "template": {"spec": {"restartPolicy": "Never", "containers": []}}}
        }))
        .unwrap()
    }

    #[test]
    fn jobs_complete_fail_and_retry_within_the_backoff_limit() {
        let plan = plan_job(&job(0), &[]).unwrap();
        assert_eq!(plan.create, 1);
        let running = vec![owned_pod("seal-a", "j1", "", "Running", true)];
        let plan = plan_job(&job(0), &running).unwrap();
        assert_eq!((plan.create, plan.status["active"].clone()), (0, json!(1)));
        let done = vec![owned_pod("seal-a", "j1", "", "Succeeded", false)];
        let plan = plan_job(&job(0), &done).unwrap();
        assert_eq!(plan.status["succeeded"], 1);
        assert_eq!(plan.status["conditions"][1]["type"], "Complete");
        let failed = vec![owned_pod("seal-a", "j1", "", "Failed", false)];
        let plan = plan_job(&job(0), &failed).unwrap();
        assert_eq!(plan.status["failed"], 1);
        assert_eq!(plan.status["conditions"][1]["type"], "Failed");
        assert_eq!(
            plan.status["conditions"][1]["reason"],
            "BackoffLimitExceeded"
        );
        let plan = plan_job(&job(1), &failed).unwrap();
        assert_eq!(plan.create, 1, "one retry left");
        assert!(plan.status.get("conditions").is_none());
        let mut complete = job(0);
        complete.status =
            serde_json::from_value(json!({"conditions": [{"type": "Complete", "status": "True"}]}))
                .unwrap();
        assert_eq!(
            plan_job(&complete, &done),
            None,
            "finished jobs are left alone"
        );
    }

    #[test]
    fn unchanged_status_is_not_rewritten() {
        let want = json!({"replicas": 1, "failed": 0, "conditions": [{"type": "A", "status": "True", "lastTransitionTime": "x"}]});
        let have = json!({"replicas": 1, "conditions": [{"type": "A", "status": "True", "lastTransitionTime": "y"}]});
        assert!(!status_changed(Some(have.clone()), &want));
        assert!(status_changed(Some(have), &json!({"replicas": 2})));
        assert!(status_changed(None, &want));
    }

    #[test]
    fn suffixes_are_five_lowercase_consonants_or_digits() {
        let s = suffix();
        assert_eq!(s.len(), 5);
        assert!(
            s.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)),
            "{s}"
        );
    }
}
