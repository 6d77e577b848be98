//! The ModelPub Kubernetes operator: reconciles TrustDomain, ComputeOffer
//! and FederationRound into identities, node-agent pods and status.
//!
//! Each controller is a pipeline dereference → validate → build (pure) →
//! apply (server-side apply, orphans deleted) → status, wrapped in a
//! finalizer. Nothing here links libtorch: training happens in the
//! node-agent pods the operator creates.
#![forbid(unsafe_code)]

pub use modelpub_crds::{ALL as RESOURCES, ResourceNames};

pub mod apply;
pub mod context;
pub mod controllers;
pub mod error;
pub mod events;
pub mod federation;
pub mod identity;
pub mod labels;
pub mod leader;
pub mod quantity;
pub mod rbac;
pub mod scope;
pub mod telemetry;
#[cfg(test)]
pub mod testing;

/// Field manager for every server-side apply the operator makes, so one
/// owner holds the fields it sets and a second writer is visible.
pub const FIELD_MANAGER: &str = "modelpub-operator";

/// The finalizer every ModelPub controller puts on the resources it
/// reconciles, so their cleanup runs before they disappear.
pub const FINALIZER: &str = "modelpub.io/cleanup";

#[cfg(test)]
mod tests {
    #[test]
    fn operator_manages_every_modelpub_resource() {
        let kinds: Vec<_> = super::RESOURCES.iter().map(|r| r.kind).collect();
        assert_eq!(kinds, ["TrustDomain", "ComputeOffer", "FederationRound"]);
    }
}
