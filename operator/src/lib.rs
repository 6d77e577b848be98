//! The ModelPub Kubernetes operator: reconciles TrustDomain, ComputeOffer
//! and FederationRound into identities, node-agent pods and status.
//!
//! Each controller will be a pipeline dereference → validate → build (pure)
//! → apply → status. Nothing here links libtorch: training happens in the
//! node-agent pods the operator creates.
#![forbid(unsafe_code)]

pub use modelpub_crds::{ALL as RESOURCES, ResourceNames};

/// Field manager for every server-side apply the operator makes, so one
/// owner holds the fields it sets and a second writer is visible.
pub const FIELD_MANAGER: &str = "modelpub-operator";

#[cfg(test)]
mod tests {
    #[test]
    fn operator_manages_every_modelpub_resource() {
        let kinds: Vec<_> = super::RESOURCES.iter().map(|r| r.kind).collect();
        assert_eq!(kinds, ["TrustDomain", "ComputeOffer", "FederationRound"]);
    }
}
