//! What the cluster's Nodes actually offer: allocatable `nvidia.com/gpu`,
//! CPU and memory summed over the schedulable nodes (cordoned nodes run no
//! new work, so they lend nothing). Pure.

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use modelpub_crds::compute_offer::Capacity;

use crate::quantity::{cpu_quantity, memory_quantity, parse_milli};

/// The extended resource the NVIDIA device plugin advertises.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// Capacity of `nodes`, with the exact CPU and memory sums.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub capacity: Capacity,
    pub cpu_milli: i128,
    pub memory_milli: i128,
    /// Matching nodes left out because they are cordoned.
    pub cordoned: i32,
}

pub fn capacity(nodes: &[Node]) -> Seen {
    let mut seen = Seen {
        capacity: Capacity::default(),
        cpu_milli: 0,
        memory_milli: 0,
        cordoned: 0,
    };
    for node in nodes {
        if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
            seen.cordoned += 1;
            continue;
        }
        seen.capacity.nodes += 1;
        let allocatable = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
        // The API server only stores valid quantities; a missing resource is 0.
        let milli = |key: &str| {
            allocatable
                .and_then(|a| a.get(key))
                .and_then(|q| parse_milli(&q.0).ok())
                .unwrap_or(0)
        };
        let gpus = i32::try_from(milli(GPU_RESOURCE) / 1000).unwrap_or(i32::MAX);
        seen.capacity.gpus = seen.capacity.gpus.saturating_add(gpus);
        seen.cpu_milli += milli("cpu");
        seen.memory_milli += milli("memory");
    }
    seen.capacity.cpu = Some(Quantity(cpu_quantity(seen.cpu_milli)));
    seen.capacity.memory = Some(Quantity(memory_quantity(seen.memory_milli)));
    seen
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::compute_offer::tests::node;

    #[test]
    fn sums_allocatable_over_schedulable_nodes() {
        let mut cordoned = node("n3", 8, "16", "64Gi");
        cordoned.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
            unschedulable: Some(true),
            ..Default::default()
        });
        let nodes = [
            node("n1", 2, "7500m", "31Gi"),
            node("n2", 0, "8", "33Gi"),
            cordoned,
        ];
        let seen = capacity(&nodes);
        assert_eq!(seen.capacity.nodes, 2);
        assert_eq!(seen.capacity.gpus, 2);
        assert_eq!(seen.capacity.cpu, Some(Quantity("15500m".into())));
        assert_eq!(seen.capacity.memory, Some(Quantity("64Gi".into())));
        assert_eq!(seen.cordoned, 1);
    }

    #[test]
    fn no_nodes_no_capacity() {
        let seen = capacity(&[]);
        assert_eq!((seen.capacity.nodes, seen.capacity.gpus), (0, 0));
        assert_eq!(seen.capacity.cpu, Some(Quantity("0".into())));
    }
}
