//! The kubelet's Node: registered with this machine's CPUs and memory as
//! capacity and allocatable, no GPUs, Ready, address 127.0.0.1, so the
//! operator's ComputeOffer sees what this "cluster" can run.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};

use super::status::now;

/// Node capacity: CPUs and memory as Kubernetes quantities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capacity {
    pub cpu: String,
    pub memory: String,
}

impl Capacity {
    /// This machine's CPUs and `MemTotal` (in Ki, as a kubelet reports it).
    pub fn of_this_machine() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mem_ki = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| mem_total_ki(&m))
            .unwrap_or(1024 * 1024);
        Self {
            cpu: cpus.to_string(),
            memory: format!("{mem_ki}Ki"),
        }
    }
}

/// `MemTotal` of a `/proc/meminfo` text, in KiB.
pub fn mem_total_ki(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The Node object (status included).
pub fn node(name: &str, capacity: &Capacity) -> Node {
    let resources = BTreeMap::from([
        ("cpu".to_string(), Quantity(capacity.cpu.clone())),
        ("memory".to_string(), Quantity(capacity.memory.clone())),
        ("pods".to_string(), Quantity("110".into())),
    ]);
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([
                ("kubernetes.io/hostname".to_string(), name.to_string()),
                ("kubernetes.io/os".to_string(), "linux".to_string()),
                (
                    "modelpub.io/process-kubelet".to_string(),
                    "true".to_string(),
                ),
            ])),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(NodeStatus {
            capacity: Some(resources.clone()),
            allocatable: Some(resources),
            addresses: Some(vec![NodeAddress {
                type_: "InternalIP".into(),
                address: "127.0.0.1".into(),
            }]),
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: Some("KubeletReady".into()),
                message: Some("process kubelet is posting ready status".into()),
                last_heartbeat_time: Some(now()),
                last_transition_time: Some(now()),
            }]),
            ..NodeStatus::default()
        }),
    }
}

/// Creates the Node (or keeps the existing one) and writes its status.
pub async fn register(client: Client, name: &str, capacity: &Capacity) -> Result<(), kube::Error> {
    let api: Api<Node> = Api::all(client);
    let desired = node(name, capacity);
    if api.get_opt(name).await?.is_none() {
        api.create(&PostParams::default(), &desired).await?;
    }
    let patch = serde_json::json!({ "status": desired.status });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_has_cpu_memory_and_no_gpus() {
        assert_eq!(
            mem_total_ki("MemTotal:       16318404 kB\nMemFree: 1 kB\n"),
            Some(16318404)
        );
        assert_eq!(mem_total_ki("nothing"), None);
        let n = node(
            "process-node",
            &Capacity {
                cpu: "2".into(),
                memory: "1024Ki".into(),
            },
        );
        let alloc = n.status.unwrap().allocatable.unwrap();
        assert_eq!(alloc["cpu"].0, "2");
        assert_eq!(alloc["memory"].0, "1024Ki");
        assert!(!alloc.contains_key("nvidia.com/gpu"));
        let here = Capacity::of_this_machine();
        assert!(here.cpu.parse::<u32>().unwrap() >= 1);
        assert!(here.memory.ends_with("Ki"));
    }
}
