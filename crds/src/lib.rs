//! ModelPub's custom resources: TrustDomain, ComputeOffer and
//! FederationRound, group `modelpub.io`, version `v1alpha1`.
//!
//! The types derive their CRDs with kube-derive and schemars: every field's
//! doc comment becomes its description (what `kubectl explain` prints),
//! defaults and ranges live in the schema, and CEL rules
//! (`x-kubernetes-validations`) check immutability and cross-field
//! constraints. `crdgen` writes the YAML; the `validation` feature adds a
//! validator that applies those schemas the way the API server does.
#![forbid(unsafe_code)]

pub mod compute_offer;
pub mod condition;
pub mod crd;
pub mod federation_round;
pub mod trust_domain;
#[cfg(feature = "validation")]
pub mod validation;

pub use compute_offer::{ComputeOffer, ComputeOfferSpec, ComputeOfferStatus};
/// How many refused clients a status keeps (`refusedPeers` maxItems).
pub const STATUS_REFUSED_KEPT: usize = 20;

pub use federation_round::{FederationRound, FederationRoundSpec, FederationRoundStatus, Phase};
pub use trust_domain::{TrustDomain, TrustDomainSpec, TrustDomainStatus};

/// The API group of every ModelPub resource.
pub const GROUP: &str = "modelpub.io";
/// The API version served now.
pub const VERSION: &str = "v1alpha1";
/// `kubectl get modelpub` lists every ModelPub resource.
pub const CATEGORY: &str = "modelpub";

/// A ModelPub resource kind with the names kubectl knows it by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceNames {
    pub kind: &'static str,
    pub plural: &'static str,
    pub short_name: &'static str,
}

pub const TRUST_DOMAIN: ResourceNames = ResourceNames {
    kind: "TrustDomain",
    plural: "trustdomains",
    short_name: "td",
};
pub const COMPUTE_OFFER: ResourceNames = ResourceNames {
    kind: "ComputeOffer",
    plural: "computeoffers",
    short_name: "co",
};
pub const FEDERATION_ROUND: ResourceNames = ResourceNames {
    kind: "FederationRound",
    plural: "federationrounds",
    short_name: "fr",
};

pub const ALL: [ResourceNames; 3] = [TRUST_DOMAIN, COMPUTE_OFFER, FEDERATION_ROUND];

impl ResourceNames {
    /// `apiVersion` as written in a manifest.
    pub fn api_version() -> String {
        format!("{GROUP}/{VERSION}")
    }

    /// The CRD's `metadata.name`, e.g. `federationrounds.modelpub.io`.
    pub fn crd_name(&self) -> String {
        format!("{}.{GROUP}", self.plural)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kubernetes_conventions() {
        assert_eq!(ResourceNames::api_version(), "modelpub.io/v1alpha1");
        assert_eq!(FEDERATION_ROUND.crd_name(), "federationrounds.modelpub.io");
        for r in ALL {
            assert_eq!(r.plural, format!("{}s", r.kind.to_lowercase()));
        }
    }
}
