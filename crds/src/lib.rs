//! ModelPub's custom resources: TrustDomain, ComputeOffer and
//! FederationRound, group `modelpub.io`, version `v1alpha1`.
//!
//! The Rust types (kube-derive + schemars) and the CRD generator arrive with
//! the operator; what is fixed already is the API identity every other part
//! names.
#![forbid(unsafe_code)]

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
