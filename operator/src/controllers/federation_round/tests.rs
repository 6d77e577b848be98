//! FederationRound scenarios against a mocked API server: every request a
//! reconcile makes, in order, with its key body content.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action;
use modelpub_crds::condition::{READY, Time, find, new_condition};
use modelpub_crds::{FederationRound, FederationRoundStatus, Phase, TrustDomain};
use serde_json::{Value, json};

use super::build::fixtures::round_fixture;
use super::build::{Round, secrets};
use super::progress::{FixedStatus, parse_status};
use super::{POLL_INTERVAL, reconcile};
use crate::context::Context;
use crate::identity::{self, SecretData};
use crate::rbac::Grant;
use crate::testing::{self, ApiServerVerifier};

pub(super) const NS: &str = "lab";
pub(super) const FR_PATH: &str = "/apis/modelpub.io/v1alpha1/namespaces/lab/federationrounds/mnist";
pub(super) const TD_PATH: &str = "/apis/modelpub.io/v1alpha1/namespaces/lab/trustdomains/hospitals";
pub(super) const SECRETS: &str = "/api/v1/namespaces/lab/secrets";
pub(super) const CONFIG_MAPS: &str = "/api/v1/namespaces/lab/configmaps";
pub(super) const JOBS: &str = "/apis/batch/v1/namespaces/lab/jobs";
const PODS: &str = "/api/v1/namespaces/lab/pods";
const VAULTS: [&str; 3] = ["hospital-a", "hospital-b", "hospital-c"];
const PARTY_SECRETS: [&str; 4] = [
    "mnist-aggregator",
    "mnist-agent-hospital-a",
    "mnist-agent-hospital-b",
    "mnist-agent-hospital-c",
];

pub(super) fn round() -> FederationRound {
    let mut fr = round_fixture();
    fr.metadata.finalizers = Some(vec![crate::FINALIZER.into()]);
    fr
}

pub(super) fn with_status(status: FederationRoundStatus) -> FederationRound {
    let mut fr = round();
    fr.status = Some(status);
    fr
}

pub(super) fn trust_domain() -> TrustDomain {
    let mut td: TrustDomain = serde_json::from_value(json!({
        "apiVersion": "modelpub.io/v1alpha1",
        "kind": "TrustDomain",
        "metadata": {"name": "hospitals", "namespace": NS, "uid": "uid-td"},
        "spec": {"self": {"name": "hospital-hq", "endpoint": "hq.example:7443"}, "members": [], "policy": {}}
    }))
    .unwrap();
    let mut status = modelpub_crds::TrustDomainStatus::default();
    status.conditions.push(new_condition(
        READY,
        true,
        "Issued",
        "identity and CA issued",
        Some(1),
        Time(testing::monday_10_utc()),
    ));
    td.status = Some(status);
    td
}

pub(super) fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items})
}

pub(super) fn deleted() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Success"})
}

/// The context with the aggregator's `/status` answering `answer`.
fn context_answering(answer: Result<&str, &str>) -> (Arc<Context>, ApiServerVerifier) {
    let (ctx, api) = testing::context();
    let mut ctx = Arc::try_unwrap(ctx)
        .ok()
        .expect("the test holds the only context");
    ctx.aggregator_status = Arc::new(FixedStatus(match answer {
        Ok(json) => Ok(parse_status(json).expect("sample /status")),
        Err(why) => Err(why.to_string()),
    }));
    (Arc::new(ctx), api)
}

/// The party Secrets as they would be stored: generated once from a CA.
fn stored_secrets(ca: &SecretData) -> Vec<Secret> {
    let fr = round();
    let round = Round::new(&fr).unwrap();
    secrets::planned(&round)
        .iter()
        .map(|p| secrets::secret(&round, p, secrets::generate(p, "ca", ca).unwrap()))
        .collect()
}

async fn trust_domain_read(api: &mut ApiServerVerifier) {
    api.expect("GET", TD_PATH)
        .await
        .respond(200, &trust_domain());
}

async fn secrets_listed(api: &mut ApiServerVerifier, stored: &[Secret]) {
    let ex = api.expect("GET", SECRETS).await;
    assert!(
        ex.query_has(
            "labelSelector=app.kubernetes.io%2Fmanaged-by%3Dmodelpub-operator%2Cmodelpub.io%2Ffederation-round%3Dmnist"
        ),
        "{:?}",
        ex.query
    );
    let items = stored
        .iter()
        .map(|s| serde_json::to_value(s).unwrap())
        .collect();
    ex.respond(200, &list("SecretList", items));
}

/// Expects the server-side applies of every child, in order, and returns
/// the participant config the first agent ConfigMap carries.
async fn children_applied(api: &mut ApiServerVerifier, replicas: i64) -> Value {
    let mut configs = Vec::new();
    for name in [
        "mnist-aggregator-config",
        "mnist-agent-hospital-a-config",
        "mnist-agent-hospital-b-config",
        "mnist-agent-hospital-c-config",
    ] {
        let ex = api.expect("PATCH", &format!("{CONFIG_MAPS}/{name}")).await;
        assert!(
            ex.query_has("fieldManager=modelpub-operator"),
            "{:?}",
            ex.query
        );
        assert!(ex.query_has("force=true"), "{:?}", ex.query);
        assert_eq!(ex.body["kind"], "ConfigMap");
        let config: Value =
            serde_json::from_str(ex.body["data"]["config.json"].as_str().unwrap()).unwrap();
        configs.push(config);
        ex.echo(200);
    }
    let ex = api
        .expect("PATCH", "/api/v1/namespaces/lab/services/mnist-aggregator")
        .await;
    assert_eq!(ex.body["spec"]["ports"][0]["port"], 7443);
    ex.echo(200);
    let ex = api
        .expect(
            "PATCH",
            "/apis/apps/v1/namespaces/lab/deployments/mnist-aggregator",
        )
        .await;
    assert_eq!(ex.body["spec"]["replicas"], replicas);
    assert_eq!(
        ex.body["metadata"]["ownerReferences"][0]["kind"],
        "FederationRound"
    );
    ex.echo(200);
    for vault in VAULTS {
        let ex = api
            .expect("PATCH", &format!("{JOBS}/mnist-agent-{vault}"))
            .await;
        assert_eq!(ex.body["spec"]["backoffLimit"], 0);
        let pod = &ex.body["spec"]["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Never");
        assert_eq!(
            pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"],
            "1"
        );
        assert_eq!(
            pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"],
            true
        );
        ex.echo(200);
    }
    api.expect(
        "PATCH",
        "/apis/networking.k8s.io/v1/namespaces/lab/networkpolicies/mnist-federation",
    )
    .await
    .echo(200);
    // The aggregator config names every participant; each participant
    // config names the aggregator and its Service.
    let roster: Vec<&str> = configs[0]["roster"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(roster, VAULTS);
    assert_eq!(
        configs[1]["aggregator_identity"]["name"],
        "mnist-aggregator"
    );
    assert_eq!(
        configs[1]["aggregator_url"],
        "https://mnist-aggregator.lab.svc:7443"
    );
    configs[1].clone()
}

/// Expects the orphan sweeps (Jobs, then ConfigMaps), answering with
/// `jobs` listed.
async fn orphans_swept(api: &mut ApiServerVerifier, jobs: Vec<Value>) {
    api.expect("GET", JOBS)
        .await
        .respond(200, &list("JobList", jobs));
    api.expect("GET", CONFIG_MAPS)
        .await
        .respond(200, &list("ConfigMapList", vec![]));
}

async fn pods_listed(api: &mut ApiServerVerifier, pods: Vec<Value>) {
    let ex = api.expect("GET", PODS).await;
    assert!(
        ex.query_has(
            "labelSelector=app.kubernetes.io%2Fcomponent%3Dnode-agent%2Cmodelpub.io%2Ffederation-round%3Dmnist"
        ),
        "{:?}",
        ex.query
    );
    ex.respond(200, &list("PodList", pods));
}

pub(super) async fn status_applied(api: &mut ApiServerVerifier) -> FederationRoundStatus {
    let ex = api.expect("PATCH", &format!("{FR_PATH}/status")).await;
    assert!(
        ex.query_has("fieldManager=modelpub-operator"),
        "{:?}",
        ex.query
    );
    assert_eq!(ex.body["kind"], "FederationRound");
    let status: FederationRoundStatus = serde_json::from_value(ex.body["status"].clone()).unwrap();
    ex.respond(200, &with_status(status.clone()));
    status
}

fn pod(vault: &str, phase: &str, reason: Option<&str>) -> Value {
    let mut status = json!({"phase": phase});
    if let Some(r) = reason {
        status["containerStatuses"] = json!([{
            "name": "participant", "image": "img", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 137, "reason": r}}
        }]);
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("mnist-agent-{vault}-x1"), "namespace": NS,
                     "labels": {"modelpub.io/vault": vault}},
        "status": status
    })
}

pub(crate) async fn first_reconcile_issues_identities_and_creates_children() -> BTreeSet<Grant> {
    let (ctx, mut api) = context_answering(Err("connection refused"));
    let task = tokio::spawn(reconcile(Arc::new(round()), ctx));
    trust_domain_read(&mut api).await;
    secrets_listed(&mut api, &[]).await;
    let ca = identity::generate_ca_data("hospitals").unwrap();
    api.expect("GET", &format!("{SECRETS}/hospitals-ca"))
        .await
        .respond(
            200,
            &json!({"apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": "hospitals-ca", "namespace": NS},
                    "data": serde_json::to_value(&ca).unwrap()}),
        );
    for name in PARTY_SECRETS {
        let ex = api.expect("POST", SECRETS).await;
        let s: Secret = serde_json::from_value(ex.body.clone()).unwrap();
        assert_eq!(s.metadata.name.as_deref(), Some(name));
        assert_eq!(s.immutable, Some(true));
        let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("FederationRound", "mnist")
        );
        let data = s.data.unwrap();
        assert!(data.contains_key("tls.crt") && data.contains_key("identity.key"));
        assert_eq!(data.contains_key("vault.key"), name == "mnist-aggregator");
        ex.echo(201);
    }
    let ev = api.expect_event(NS, "Normal", "IdentitiesIssued").await;
    assert_eq!(
        ev["note"],
        "issued identities and certificates for mnist-aggregator, hospital-a, hospital-b, hospital-c from the trust domain's CA"
    );
    children_applied(&mut api, 1).await;
    orphans_swept(&mut api, vec![]).await;
    pods_listed(&mut api, vec![]).await;
    let status = status_applied(&mut api).await;
    assert_eq!(status.phase, Phase::Pending);
    assert_eq!(status.round_label.as_deref(), Some("0/5"));
    assert!(
        status.message.as_deref().unwrap().starts_with(
            "no status from the aggregator yet: GET http://mnist-aggregator.lab.svc:9464/status"
        ),
        "{:?}",
        status.message
    );
    let (result, seen) = api.finish(task).await;
    assert_eq!(result.unwrap(), Action::requeue(POLL_INTERVAL));
    seen
}

const RUNNING: &str = r#"{"federation":"mnist","phase":"Running","message":"round 2 of 5 in progress",
    "current_round":2,"total_rounds":5,"model_digest":"5e1f",
    "rounds":[{"round":1,"accuracy":0.62,"loss":1.1,"participants":3,"dropped":0,"update_bytes":9000,
               "epsilon_spent":null,"duration_secs":1.4,"outcome":"completed","reason":null}]}"#;

pub(crate) async fn progress_from_the_aggregator_fills_the_status() -> BTreeSet<Grant> {
    let ca = identity::generate_ca_data("hospitals").unwrap();
    let stored = stored_secrets(&ca);
    let (ctx, mut api) = context_answering(Ok(RUNNING));
    let task = tokio::spawn(reconcile(Arc::new(round()), ctx));
    trust_domain_read(&mut api).await;
    // Every Secret exists: nothing is issued again.
    secrets_listed(&mut api, &stored).await;
    let participant = children_applied(&mut api, 1).await;
    let listed: Vec<String> = stored
        .iter()
        .skip(1)
        .map(|s| {
            let id = identity::identity_from_data("s", s.data.as_ref().unwrap()).unwrap();
            id.public().public_key
        })
        .collect();
    assert_eq!(participant["roster"][0]["public_key"], listed[0].as_str());
    // A Job of a vault the round no longer has is deleted.
    let orphan = json!({"apiVersion": "batch/v1", "kind": "Job",
                        "metadata": {"name": "mnist-agent-old", "namespace": NS}});
    let kept = json!({"apiVersion": "batch/v1", "kind": "Job",
                      "metadata": {"name": "mnist-agent-hospital-a", "namespace": NS}});
    api.expect("GET", JOBS)
        .await
        .respond(200, &list("JobList", vec![kept, orphan]));
    let ex = api
        .expect("DELETE", &format!("{JOBS}/mnist-agent-old"))
        .await;
    assert_eq!(ex.body["propagationPolicy"], "Background");
    ex.respond(200, &deleted());
    api.expect("GET", CONFIG_MAPS)
        .await
        .respond(200, &list("ConfigMapList", vec![]));
    pods_listed(
        &mut api,
        VAULTS.iter().map(|v| pod(v, "Running", None)).collect(),
    )
    .await;
    let status = status_applied(&mut api).await;
    assert_eq!(status.phase, Phase::Running);
    assert_eq!((status.current_round, status.total_rounds), (2, 5));
    assert_eq!(status.round_label.as_deref(), Some("2/5"));
    assert_eq!(status.accuracy, Some(0.62));
    assert_eq!(status.model_digest.as_deref(), Some("5e1f"));
    assert_eq!(status.rounds[0].participants, 3);
    assert_eq!(status.start_time, Some(Time(testing::monday_10_utc())));
    let progressing = find(&status.conditions, "Progressing").unwrap();
    assert_eq!(
        (progressing.status.as_str(), progressing.observed_generation),
        ("True", Some(1))
    );
    api.expect_event(NS, "Normal", "RoundsStarted").await;
    let (result, seen) = api.finish(task).await;
    assert_eq!(result.unwrap(), Action::requeue(POLL_INTERVAL));
    seen
}

pub(crate) async fn failed_agent_pods_are_dropouts() -> BTreeSet<Grant> {
    let ca = identity::generate_ca_data("hospitals").unwrap();
    let stored = stored_secrets(&ca);
    let running = FederationRoundStatus {
        phase: Phase::Running,
        current_round: 2,
        total_rounds: 5,
        ..FederationRoundStatus::default()
    };
    let (ctx, mut api) = context_answering(Ok(RUNNING));
    let task = tokio::spawn(reconcile(Arc::new(with_status(running)), ctx));
    trust_domain_read(&mut api).await;
    secrets_listed(&mut api, &stored).await;
    children_applied(&mut api, 1).await;
    orphans_swept(&mut api, vec![]).await;
    pods_listed(
        &mut api,
        vec![
            pod("hospital-a", "Running", None),
            pod("hospital-b", "Failed", Some("OOMKilled")),
            pod("hospital-c", "Failed", Some("Error")),
        ],
    )
    .await;
    let status = status_applied(&mut api).await;
    assert_eq!(status.phase, Phase::Failed);
    assert_eq!(
        status.message.as_deref(),
        Some(
            "only 1 of 3 participants are left, below spec.participants.min (2); dropped: \
             hospital-b (OOMKilled, exit code 137), hospital-c (Error, exit code 137)"
        )
    );
    let failed = find(&status.conditions, "Failed").unwrap();
    assert_eq!(
        (failed.status.as_str(), failed.reason.as_str()),
        ("True", "BelowMinimumParticipants")
    );
    assert_eq!(status.completion_time, Some(Time(testing::monday_10_utc())));
    let ev = api.expect_event(NS, "Warning", "Failed").await;
    assert!(
        ev["note"].as_str().unwrap().starts_with("only 1 of 3"),
        "{ev}"
    );
    let (result, seen) = api.finish(task).await;
    assert_eq!(result.unwrap(), Action::await_change());
    seen
}

pub(crate) async fn a_finished_round_stops_its_aggregator() -> BTreeSet<Grant> {
    let ca = identity::generate_ca_data("hospitals").unwrap();
    let stored = stored_secrets(&ca);
    let done = FederationRoundStatus {
        phase: Phase::Succeeded,
        current_round: 5,
        total_rounds: 5,
        ..FederationRoundStatus::default()
    };
    let (ctx, mut api) = context_answering(Ok(RUNNING));
    let task = tokio::spawn(reconcile(Arc::new(with_status(done)), ctx));
    trust_domain_read(&mut api).await;
    secrets_listed(&mut api, &stored).await;
    // Scaled to zero; no polling, no status change.
    children_applied(&mut api, 0).await;
    orphans_swept(&mut api, vec![]).await;
    let (result, seen) = api.finish(task).await;
    assert_eq!(result.unwrap(), Action::await_change());
    seen
}

pub(crate) async fn deletion_removes_every_child_then_the_finalizer() -> BTreeSet<Grant> {
    let mut fr = round();
    fr.metadata.deletion_timestamp = Some(Time(testing::monday_10_utc()));
    let (ctx, mut api) = testing::context();
    let task = tokio::spawn(reconcile(Arc::new(fr), ctx));
    for vault in VAULTS {
        api.expect("DELETE", &format!("{JOBS}/mnist-agent-{vault}"))
            .await
            .respond(200, &deleted());
    }
    api.expect(
        "DELETE",
        "/apis/apps/v1/namespaces/lab/deployments/mnist-aggregator",
    )
    .await
    .respond(200, &deleted());
    api.expect("DELETE", "/api/v1/namespaces/lab/services/mnist-aggregator")
        .await
        .respond(200, &deleted());
    // Already gone: not an error.
    api.expect(
        "DELETE",
        "/apis/networking.k8s.io/v1/namespaces/lab/networkpolicies/mnist-federation",
    )
    .await
    .not_found();
    for name in [
        "mnist-aggregator-config",
        "mnist-agent-hospital-a-config",
        "mnist-agent-hospital-b-config",
        "mnist-agent-hospital-c-config",
    ] {
        api.expect("DELETE", &format!("{CONFIG_MAPS}/{name}"))
            .await
            .respond(200, &deleted());
    }
    for name in PARTY_SECRETS {
        api.expect("DELETE", &format!("{SECRETS}/{name}"))
            .await
            .respond(200, &deleted());
    }
    let ev = api.expect_event(NS, "Normal", "ChildrenDeleted").await;
    let note = ev["note"].as_str().unwrap();
    assert!(
        note.starts_with("deleted Job mnist-agent-hospital-a, "),
        "{note}"
    );
    assert!(!note.contains("NetworkPolicy"), "{note}");
    assert!(note.ends_with("Secret mnist-agent-hospital-c"), "{note}");
    let ex = api.expect("PATCH", FR_PATH).await;
    assert_eq!(
        ex.body,
        json!([
            {"op": "test", "path": "/metadata/finalizers/0", "value": "modelpub.io/cleanup"},
            {"op": "remove", "path": "/metadata/finalizers/0"},
        ])
    );
    ex.respond(200, &round_fixture());
    let (result, seen) = api.finish(task).await;
    assert_eq!(result.unwrap(), Action::await_change());
    seen
}

pub(crate) async fn an_invalid_spec_fails_the_round() -> BTreeSet<Grant> {
    let mut fr = round();
    fr.spec.participants.min = 4;
    let (ctx, mut api) = testing::context();
    let task = tokio::spawn(reconcile(Arc::new(fr), ctx));
    trust_domain_read(&mut api).await;
    let status = status_applied(&mut api).await;
    assert_eq!(status.phase, Phase::Failed);
    assert_eq!(
        status.message.as_deref(),
        Some("invalid spec: spec.participants.min: 4 exceeds the 3 vaults in spec.data.vaults")
    );
    let ev = api.expect_event(NS, "Warning", "InvalidSpec").await;
    assert!(
        ev["note"]
            .as_str()
            .unwrap()
            .contains("spec.participants.min"),
        "{ev}"
    );
    let (result, seen) = api.finish(task).await;
    assert!(
        matches!(result, Err(crate::error::Error::Finalizer(_))),
        "{result:?}"
    );
    seen
}

pub(crate) async fn a_missing_trust_domain_keeps_the_round_pending() -> BTreeSet<Grant> {
    let (ctx, mut api) = testing::context();
    let task = tokio::spawn(reconcile(Arc::new(round()), ctx));
    api.expect("GET", TD_PATH).await.not_found();
    let status = status_applied(&mut api).await;
    assert_eq!(status.phase, Phase::Pending);
    assert_eq!(
        status.message.as_deref(),
        Some("spec.trustDomain: TrustDomain lab/hospitals does not exist")
    );
    api.expect_event(NS, "Warning", "MissingReference").await;
    let (result, seen) = api.finish(task).await;
    assert!(result.is_err());
    seen
}

/// Every grant the FederationRound scenarios exercise.
pub(crate) async fn exercised() -> BTreeSet<Grant> {
    let mut all = BTreeSet::new();
    all.extend(first_reconcile_issues_identities_and_creates_children().await);
    all.extend(progress_from_the_aggregator_fills_the_status().await);
    all.extend(failed_agent_pods_are_dropouts().await);
    all.extend(a_finished_round_stops_its_aggregator().await);
    all.extend(deletion_removes_every_child_then_the_finalizer().await);
    all.extend(an_invalid_spec_fails_the_round().await);
    all.extend(a_missing_trust_domain_keeps_the_round_pending().await);
    all.extend(without_consent_nothing_runs().await);
    all
}

#[tokio::test]
async fn without_consent_the_round_waits_and_creates_nothing() {
    without_consent_nothing_runs().await;
}

/// The trust domain requires consent (the default) and the round carries no
/// `modelpub.io/consent: granted`: only its status is written.
pub(crate) async fn without_consent_nothing_runs() -> BTreeSet<Grant> {
    let (ctx, mut api) = testing::context();
    let mut fr = round();
    fr.metadata.annotations =
        Some([("modelpub.io/consent".to_string(), "pending".to_string())].into());
    let task = tokio::spawn(reconcile(Arc::new(fr), ctx));
    trust_domain_read(&mut api).await;
    let status = status_applied(&mut api).await;
    assert_eq!(status.phase, Phase::Pending);
    let message = status.message.as_deref().unwrap_or_default();
    assert!(
        message.contains("kubectl annotate federationround mnist modelpub.io/consent=granted"),
        "{message}"
    );
    let progressing = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Progressing")
        .expect("a Progressing condition");
    assert_eq!(progressing.reason, "AwaitingConsent");
    let (result, seen) = api.finish(task).await;
    assert!(result.is_ok(), "{result:?}");
    seen
}

#[tokio::test]
async fn first_reconcile_creates_secrets_configs_aggregator_jobs_and_policy() {
    first_reconcile_issues_identities_and_creates_children().await;
}

#[tokio::test]
async fn aggregator_progress_becomes_status() {
    progress_from_the_aggregator_fills_the_status().await;
}

#[tokio::test]
async fn a_failed_agent_pod_counts_as_dropped() {
    failed_agent_pods_are_dropouts().await;
}

#[tokio::test]
async fn a_finished_round_scales_the_aggregator_to_zero() {
    a_finished_round_stops_its_aggregator().await;
}

#[tokio::test]
async fn deletion_cleans_up() {
    deletion_removes_every_child_then_the_finalizer().await;
}

#[tokio::test]
async fn invalid_spec() {
    an_invalid_spec_fails_the_round().await;
}

#[tokio::test]
async fn missing_trust_domain() {
    a_missing_trust_domain_keeps_the_round_pending().await;
}
