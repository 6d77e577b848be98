//! ComputeOffer scenarios against a mocked API server, and fixtures.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, NodeStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::controller::Action;
use modelpub_crds::compute_offer::{
    OfferLimits, OfferResources, Schedule, Weekday, Window, WorkloadKind,
};
use modelpub_crds::{ComputeOffer, ComputeOfferSpec, ComputeOfferStatus};
use serde_json::{Value, json};

use super::{CAPACITY_REFRESH, reconcile, requeue_after};
use crate::context::Clock;
use crate::rbac::Grant;
use crate::testing::{self, ApiServerVerifier, FakeProbe};

const CO_PATH: &str = "/apis/modelpub.io/v1alpha1/namespaces/research/computeoffers/gpu-days";
const TD_PATH: &str = "/apis/modelpub.io/v1alpha1/namespaces/research/trustdomains/fed";

/// ComputeOffer `research/gpu-days` (generation 2): 4 GPUs to trust
/// domain `fed`, Mondays 09:00-17:00 UTC.
pub(crate) fn offer() -> ComputeOffer {
    let mut co = ComputeOffer::new(
        "gpu-days",
        ComputeOfferSpec {
            trust_domain: "fed".into(),
            resources: OfferResources {
                gpus: 4,
                ..OfferResources::default()
            },
            schedule: Schedule {
                windows: vec![Window {
                    days: vec![Weekday::Monday],
                    start: "09:00".into(),
                    end: "17:00".into(),
                    timezone: "UTC".into(),
                }],
            },
            limits: OfferLimits::default(),
            allowed_workloads: vec![WorkloadKind::FederatedTraining],
        },
    );
    co.metadata = ObjectMeta {
        name: Some("gpu-days".into()),
        namespace: Some("research".into()),
        uid: Some("uid-co".into()),
        generation: Some(2),
        finalizers: Some(vec![crate::FINALIZER.into()]),
        ..ObjectMeta::default()
    };
    co
}

/// A Node with this allocatable GPU count, CPU and memory.
pub(crate) fn node(name: &str, gpus: i32, cpu: &str, memory: &str) -> Node {
    let mut allocatable = std::collections::BTreeMap::from([
        ("cpu".to_string(), Quantity(cpu.into())),
        ("memory".to_string(), Quantity(memory.into())),
    ]);
    if gpus > 0 {
        allocatable.insert("nvidia.com/gpu".into(), Quantity(gpus.to_string()));
    }
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        status: Some(NodeStatus {
            allocatable: Some(allocatable),
            ..NodeStatus::default()
        }),
        ..Node::default()
    }
}

fn node_list(nodes: &[Node]) -> Value {
    json!({"apiVersion": "v1", "kind": "NodeList", "metadata": {"resourceVersion": "7"}, "items": nodes})
}

fn trust_domain() -> Value {
    serde_json::to_value(crate::controllers::trust_domain::tests::trust_domain()).unwrap()
}

async fn status_applied(api: &mut ApiServerVerifier, co: &ComputeOffer) -> ComputeOfferStatus {
    let ex = api.expect("PATCH", &format!("{CO_PATH}/status")).await;
    assert!(ex.query_has("fieldManager=modelpub-operator") && ex.query_has("force=true"));
    assert_eq!(ex.body["kind"], "ComputeOffer");
    let status: ComputeOfferStatus = serde_json::from_value(ex.body["status"].clone()).unwrap();
    let mut stored = co.clone();
    stored.status = Some(status.clone());
    ex.respond(200, &stored);
    status
}

fn condition(status: &ComputeOfferStatus, type_: &str) -> (String, String) {
    let c = modelpub_crds::condition::find(&status.conditions, type_).unwrap();
    (c.status.clone(), c.reason.clone())
}

type Reconcile = tokio::task::JoinHandle<Result<Action, crate::error::Error>>;

/// Starts one reconcile of `co` at `now` and plays it up to the status:
/// GET the trust domain, list nodes (asserting the selector), apply status.
async fn evaluate(
    co: ComputeOffer,
    now: &str,
    nodes: &[Node],
    selector: Option<&str>,
) -> (ComputeOfferStatus, Reconcile, ApiServerVerifier) {
    let (ctx, mut api) = testing::context_with(
        Clock::Fixed(now.parse().unwrap()),
        Arc::new(FakeProbe::all_reachable()),
    );
    let task = tokio::spawn(reconcile(Arc::new(co.clone()), ctx));
    api.expect("GET", TD_PATH)
        .await
        .respond(200, &trust_domain());
    let ex = api.expect("GET", "/api/v1/nodes").await;
    match selector {
        Some(s) => assert!(
            ex.query_has(&format!("labelSelector={s}")),
            "{:?}",
            ex.query
        ),
        None => assert!(
            !ex.query.as_deref().unwrap_or("").contains("labelSelector"),
            "{:?}",
            ex.query
        ),
    }
    ex.respond(200, &node_list(nodes));
    let status = status_applied(&mut api, &co).await;
    (status, task, api)
}

pub(crate) async fn capacity_matches_the_nodes_and_the_offer_is_open() -> BTreeSet<Grant> {
    let nodes = [node("gpu-1", 2, "8", "32Gi"), node("gpu-2", 2, "8", "32Gi")];
    let (status, task, api) = evaluate(offer(), "2026-03-02T10:00:00Z", &nodes, None).await;
    let (result, seen) = api.finish(task).await;
    let action = result.unwrap();
    let cap = status.capacity.clone().unwrap();
    assert_eq!((cap.nodes, cap.gpus), (2, 4));
    assert_eq!(cap.cpu, Some(Quantity("16".into())));
    assert_eq!(cap.memory, Some(Quantity("64Gi".into())));
    assert!(status.open_now);
    assert_eq!(status.reason, None);
    assert_eq!(
        status.next_change_time.as_ref().map(|t| t.0.to_string()),
        Some("2026-03-02T17:00:00Z".to_string())
    );
    assert_eq!(
        condition(&status, "Ready"),
        ("True".into(), "CapacityAvailable".into())
    );
    assert_eq!(condition(&status, "Open"), ("True".into(), "Open".into()));
    assert_eq!(action, Action::requeue(CAPACITY_REFRESH));
    seen
}

pub(crate) async fn too_few_gpus_close_the_offer() -> BTreeSet<Grant> {
    let mut co = offer();
    co.spec.resources.node_selector = [("pool".to_string(), "gpu".to_string())].into();
    let nodes = [node("gpu-1", 2, "8", "32Gi")];
    let (status, task, api) =
        evaluate(co, "2026-03-02T10:00:00Z", &nodes, Some("pool%3Dgpu")).await;
    let (result, seen) = api.finish(task).await;
    assert!(result.is_ok());
    assert!(!status.open_now);
    assert_eq!(
        status.reason.as_deref(),
        Some("offer asks for 4 GPUs but nodes matching pool=gpu report 2 allocatable")
    );
    assert_eq!(
        condition(&status, "Ready"),
        ("False".into(), "InsufficientCapacity".into())
    );
    assert_eq!(
        condition(&status, "Open"),
        ("False".into(), "NoCapacity".into())
    );
    seen
}

pub(crate) async fn outside_the_window_it_closes_and_wakes_at_the_next_one() -> BTreeSet<Grant> {
    let mut co = offer();
    co.spec.schedule.windows[0] = Window {
        days: vec![Weekday::Monday],
        start: "18:00".into(),
        end: "23:00".into(),
        timezone: "Europe/Amsterdam".into(),
    };
    // It was open at the last look: closing is announced.
    co.status = Some(ComputeOfferStatus {
        open_now: true,
        ..ComputeOfferStatus::default()
    });
    let nodes = [node("gpu-1", 4, "8", "32Gi")];
    let (status, task, mut api) = evaluate(co, "2026-03-02T16:58:00Z", &nodes, None).await;
    let ev = api.expect_event("research", "Normal", "OfferClosed").await;
    assert_eq!(
        ev["note"],
        "outside schedule: next window Monday 18:00 Europe/Amsterdam"
    );
    let (result, seen) = api.finish(task).await;
    let action = result.unwrap();
    assert!(!status.open_now);
    assert_eq!(
        status.reason.as_deref(),
        Some("outside schedule: next window Monday 18:00 Europe/Amsterdam")
    );
    assert_eq!(
        status.next_change_time.as_ref().map(|t| t.0.to_string()),
        Some("2026-03-02T17:00:00Z".to_string())
    );
    assert_eq!(
        condition(&status, "Open"),
        ("False".into(), "OutsideWindow".into())
    );
    assert_eq!(action, Action::requeue(Duration::from_secs(120)));
    seen
}

pub(crate) async fn a_missing_trust_domain_is_explained_and_retried() -> BTreeSet<Grant> {
    let co = offer();
    let (ctx, mut api) = testing::context();
    let task = tokio::spawn(reconcile(Arc::new(co.clone()), ctx));
    api.expect("GET", TD_PATH).await.not_found();
    let status = status_applied(&mut api, &co).await;
    assert!(!status.open_now);
    assert_eq!(
        status.reason.as_deref(),
        Some("TrustDomain research/fed not found")
    );
    assert_eq!(
        condition(&status, "Ready"),
        ("False".into(), "TrustDomainNotFound".into())
    );
    let ev = api
        .expect_event("research", "Warning", "MissingReference")
        .await;
    assert_eq!(ev["note"], "TrustDomain research/fed not found");
    let (result, seen) = api.finish(task).await;
    assert_eq!(result.unwrap_err().reason(), "missing_reference");
    seen
}

pub(crate) async fn an_invalid_schedule_names_the_field() -> BTreeSet<Grant> {
    let mut co = offer();
    co.spec.schedule.windows[0].timezone = "Europe/Atlantis".into();
    let (ctx, mut api) = testing::context();
    let task = tokio::spawn(reconcile(Arc::new(co.clone()), ctx));
    let status = status_applied(&mut api, &co).await;
    assert_eq!(
        condition(&status, "Ready"),
        ("False".into(), "InvalidSpec".into())
    );
    assert!(
        status
            .reason
            .as_deref()
            .unwrap()
            .starts_with("spec.schedule.windows[0].timezone: \"Europe/Atlantis\""),
        "{:?}",
        status.reason
    );
    api.expect_event("research", "Warning", "InvalidSpec").await;
    let (result, seen) = api.finish(task).await;
    assert!(result.is_err());
    seen
}

pub(crate) async fn finalizer_then_withdrawal() -> BTreeSet<Grant> {
    let mut fresh = offer();
    fresh.metadata.finalizers = None;
    let (ctx, mut api) = testing::context();
    let task = tokio::spawn(reconcile(Arc::new(fresh), ctx.clone()));
    let ex = api.expect("PATCH", CO_PATH).await;
    assert_eq!(ex.body[1]["value"], json!(["modelpub.io/cleanup"]));
    ex.respond(200, &offer());
    let mut deleting = offer();
    deleting.metadata.deletion_timestamp =
        Some(modelpub_crds::condition::Time(testing::monday_10_utc()));
    let task2 = tokio::spawn(reconcile(Arc::new(deleting), ctx));
    let ev = api
        .expect_event("research", "Normal", "OfferWithdrawn")
        .await;
    assert_eq!(
        ev["note"],
        "offer to trust domain fed withdrawn: no new leases"
    );
    let ex = api.expect("PATCH", CO_PATH).await;
    assert_eq!(
        ex.body[1],
        json!({"op": "remove", "path": "/metadata/finalizers/0"})
    );
    ex.respond(200, &offer());
    let first = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.unwrap(), Action::await_change());
    let (result, seen) = api.finish(task2).await;
    assert_eq!(result.unwrap(), Action::await_change());
    seen
}

/// Every grant the ComputeOffer scenarios exercise.
pub(crate) async fn exercised() -> BTreeSet<Grant> {
    let mut all = BTreeSet::new();
    all.extend(capacity_matches_the_nodes_and_the_offer_is_open().await);
    all.extend(too_few_gpus_close_the_offer().await);
    all.extend(outside_the_window_it_closes_and_wakes_at_the_next_one().await);
    all.extend(a_missing_trust_domain_is_explained_and_retried().await);
    all.extend(an_invalid_schedule_names_the_field().await);
    all.extend(finalizer_then_withdrawal().await);
    all
}

#[test]
fn a_trust_domain_change_wakes_exactly_its_offers() {
    let td = crate::controllers::trust_domain::tests::trust_domain();
    let mine = offer();
    let mut other_domain = offer();
    other_domain.metadata.name = Some("other-domain".into());
    other_domain.spec.trust_domain = "elsewhere".into();
    let mut other_namespace = offer();
    other_namespace.metadata.name = Some("other-ns".into());
    other_namespace.metadata.namespace = Some("lab".into());
    let offers: Vec<_> = [mine, other_domain, other_namespace]
        .into_iter()
        .map(Arc::new)
        .collect();
    let woken: Vec<String> = super::offers_of(&td, &offers)
        .iter()
        .map(|r| format!("{}/{}", r.namespace.as_deref().unwrap_or(""), r.name))
        .collect();
    assert_eq!(woken, ["research/gpu-days"]);
}

#[test]
fn requeue_follows_the_schedule_within_the_refresh_period() {
    let now: jiff::Timestamp = "2026-03-02T10:00:00Z".parse().unwrap();
    let soon: jiff::Timestamp = "2026-03-02T10:01:30Z".parse().unwrap();
    let later: jiff::Timestamp = "2026-03-02T17:00:00Z".parse().unwrap();
    assert_eq!(requeue_after(Some(soon), now), Duration::from_secs(90));
    assert_eq!(requeue_after(Some(later), now), CAPACITY_REFRESH);
    assert_eq!(requeue_after(Some(now), now), Duration::from_secs(1));
    assert_eq!(requeue_after(None, now), CAPACITY_REFRESH);
}

#[tokio::test]
async fn capacity_matches_nodes() {
    capacity_matches_the_nodes_and_the_offer_is_open().await;
}

#[tokio::test]
async fn not_enough_gpus() {
    too_few_gpus_close_the_offer().await;
}

#[tokio::test]
async fn outside_window() {
    outside_the_window_it_closes_and_wakes_at_the_next_one().await;
}

#[tokio::test]
async fn missing_trust_domain() {
    a_missing_trust_domain_is_explained_and_retried().await;
}

#[tokio::test]
async fn invalid_schedule() {
    an_invalid_schedule_names_the_field().await;
}

#[tokio::test]
async fn finalizer_added_then_offer_withdrawn() {
    finalizer_then_withdrawal().await;
}
