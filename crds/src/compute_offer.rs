//! `ComputeOffer` (`co`): GPU time this cluster lends to the members of a
//! trust domain. The spec is the lender's offer and policy; the status is
//! what the operator grants and measures (request in spec, grant in status).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::{Condition, Time};

/// Compute this cluster lends to a trust domain's members: which nodes, when,
/// and within which limits. Borrowers never change it; the lender's policy
/// decides.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "modelpub.io",
    version = "v1alpha1",
    kind = "ComputeOffer",
    doc = "ComputeOffer (co): GPU time this cluster lends to the members of a trust domain, within windows and limits.",
    plural = "computeoffers",
    shortname = "co",
    category = "modelpub",
    namespaced,
    status = "ComputeOfferStatus",
    printcolumn = r#"{"name":"TrustDomain","type":"string","description":"The trust domain whose members may borrow","jsonPath":".spec.trustDomain"}"#,
    printcolumn = r#"{"name":"GPUs","type":"integer","description":"GPUs offered","jsonPath":".spec.resources.gpus"}"#,
    printcolumn = r#"{"name":"Leased","type":"integer","description":"GPUs leased now","jsonPath":".status.leasedNow"}"#,
    printcolumn = r#"{"name":"Open","type":"boolean","description":"Inside a schedule window with budget left","jsonPath":".status.openNow"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ComputeOfferSpec {
    /// Name of the TrustDomain (same namespace) whose members may borrow.
    /// Immutable: receipts issued under the offer name this domain.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("trustDomain is immutable"))]
    pub trust_domain: String,
    /// What is lent.
    #[serde(default)]
    pub resources: OfferResources,
    /// When it is lent. No windows means always.
    #[serde(default)]
    pub schedule: Schedule,
    /// Caps on leases and energy.
    #[serde(default)]
    pub limits: OfferLimits,
    /// The kinds of workload borrowers may run.
    #[serde(default = "default_workloads")]
    // A set of WorkloadKind values: bounded for the API server's cost
    // estimates, with room for kinds to come.
    #[schemars(length(min = 1, max = 8))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub allowed_workloads: Vec<WorkloadKind>,
}

/// The resources on offer.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OfferResources {
    /// GPUs (`nvidia.com/gpu`) lent at most at once.
    #[serde(default)]
    #[schemars(range(min = 0, max = 4096))]
    pub gpus: i32,
    /// CPU lent at most at once, a Kubernetes quantity such as `8` or `500m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    /// Memory lent at most at once, a Kubernetes quantity such as `32Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
    /// Only nodes with these labels run borrowed work.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
}

/// Lending windows.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    /// Weekly windows in which the offer is open. Empty means always open.
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub windows: Vec<Window>,
}

/// One weekly window, e.g. nights on working days.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.start != self.end").message("start and end must differ; a window that ends before it starts runs past midnight").field_path(".end"))]
pub struct Window {
    /// The days the window starts on. A window running past midnight ends on
    /// the next day.
    #[schemars(length(min = 1, max = 7))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub days: Vec<Weekday>,
    /// Opening time, `HH:MM` (24-hour clock) in `timezone`.
    #[schemars(regex(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    pub start: String,
    /// Closing time, `HH:MM` in `timezone`; `24:00` is midnight at the end
    /// of the day. Earlier than `start` means the next day.
    #[schemars(regex(pattern = r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$"))]
    pub end: String,
    /// IANA time zone of `start` and `end`, e.g. `Europe/Berlin`.
    #[serde(default = "default_timezone")]
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+)*$")
    )]
    pub timezone: String,
}

/// A day of the week.
#[derive(
    JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord,
)]
pub enum Weekday {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

/// Caps that hold whatever borrowers ask.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OfferLimits {
    /// Longest single lease, a duration such as `30m`, `4h` or `1h30m`.
    #[serde(default = "default_max_lease")]
    #[schemars(
        length(min = 2, max = 32),
        regex(pattern = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?$")
    )]
    pub max_lease_duration: String,
    /// Energy borrowed work may use per day (local time of the first
    /// window), in kilowatt-hours. Absent means no energy cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1000000.0))]
    pub energy_budget_k_wh_per_day: Option<f64>,
    /// Leases that may run at once.
    #[serde(default = "default_concurrent_leases")]
    #[schemars(range(min = 1, max = 1024))]
    pub max_concurrent_leases: i32,
}

impl Default for OfferLimits {
    fn default() -> Self {
        Self {
            max_lease_duration: default_max_lease(),
            energy_budget_k_wh_per_day: None,
            max_concurrent_leases: default_concurrent_leases(),
        }
    }
}

/// A kind of borrowed workload.
#[derive(
    JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord,
)]
pub enum WorkloadKind {
    /// A participant or aggregator of a FederationRound.
    FederatedTraining,
    /// Evaluating a published model on this cluster's held-out data.
    Evaluation,
}

fn default_workloads() -> Vec<WorkloadKind> {
    vec![WorkloadKind::FederatedTraining]
}

fn default_timezone() -> String {
    "UTC".to_string()
}

fn default_max_lease() -> String {
    "4h".to_string()
}

fn default_concurrent_leases() -> i32 {
    1
}

/// What the operator sees and grants.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ComputeOfferStatus {
    /// Allocatable resources on the nodes matching `nodeSelector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<Capacity>,
    /// Whether the offer is open now: inside a window, under the energy
    /// budget and under the lease limits.
    #[serde(default)]
    pub open_now: bool,
    /// Why the offer is closed, in words, e.g. `outside schedule: next
    /// window Monday 20:00 Europe/Berlin`. The `Open` condition's reason
    /// gives the same as an identifier (`OutsideWindow`, `NoCapacity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When `openNow` next changes according to the schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_change_time: Option<Time>,
    /// GPUs leased to borrowers now.
    #[serde(default)]
    pub leased_now: i32,
    /// Leases running now.
    #[serde(default)]
    pub active_leases: i32,
    /// Energy borrowed work used today, in kilowatt-hours.
    #[serde(default)]
    pub energy_used_k_wh: f64,
    /// Signed usage receipts issued to borrowers since the offer was created.
    #[serde(default)]
    pub receipts_issued: i64,
    /// Standard conditions: `Ready` (trust domain found, capacity seen) and
    /// `Open`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::condition::conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Resources seen on matching nodes.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Capacity {
    /// Nodes matching `nodeSelector`.
    pub nodes: i32,
    /// Allocatable `nvidia.com/gpu` summed over those nodes.
    pub gpus: i32,
    /// Allocatable CPU summed over those nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    /// Allocatable memory summed over those nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
}
