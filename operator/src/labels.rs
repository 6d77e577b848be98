//! The labels on every object the operator creates, and the selectors that
//! find them again (to delete orphans, to watch owned children).
//!
//! Every child carries the `app.kubernetes.io/*` recommended labels, the
//! trust domain it belongs to and, for a FederationRound's children, the
//! round.

use std::collections::BTreeMap;

pub const NAME: &str = "app.kubernetes.io/name";
pub const PART_OF: &str = "app.kubernetes.io/part-of";
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const INSTANCE: &str = "app.kubernetes.io/instance";
pub const COMPONENT: &str = "app.kubernetes.io/component";
pub const TRUST_DOMAIN: &str = "modelpub.io/trust-domain";
pub const FEDERATION_ROUND: &str = "modelpub.io/federation-round";

/// Value of `app.kubernetes.io/name` and `app.kubernetes.io/part-of`.
pub const APP: &str = "modelpub";
/// Value of `app.kubernetes.io/managed-by`.
pub const MANAGER: &str = crate::FIELD_MANAGER;

/// What a child is, the value of `app.kubernetes.io/component`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Aggregator,
    NodeAgent,
    Identity,
    Certificates,
    NetworkPolicy,
    /// A member's participants registered for a round this cluster
    /// coordinates.
    MemberRegistration,
}

impl Component {
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Aggregator => "aggregator",
            Component::NodeAgent => "node-agent",
            Component::Identity => "identity",
            Component::Certificates => "certificates",
            Component::NetworkPolicy => "network-policy",
            Component::MemberRegistration => "member-registration",
        }
    }
}

/// Labels of a TrustDomain's child (`instance` = the TrustDomain's name).
pub fn trust_domain_child(trust_domain: &str, component: Component) -> BTreeMap<String, String> {
    let mut l = common(trust_domain, component);
    l.insert(TRUST_DOMAIN.into(), trust_domain.into());
    l
}

/// Labels of a FederationRound's child (`instance` = the round's name).
pub fn federation_round_child(
    round: &str,
    trust_domain: &str,
    component: Component,
) -> BTreeMap<String, String> {
    let mut l = common(round, component);
    l.insert(TRUST_DOMAIN.into(), trust_domain.into());
    l.insert(FEDERATION_ROUND.into(), round.into());
    l
}

fn common(instance: &str, component: Component) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME.into(), APP.into()),
        (PART_OF.into(), APP.into()),
        (MANAGED_BY.into(), MANAGER.into()),
        (INSTANCE.into(), instance.into()),
        (COMPONENT.into(), component.as_str().into()),
    ])
}

/// Selects everything the operator manages (for watching owned children
/// without watching every Secret in the cluster).
pub fn managed_selector() -> String {
    format!("{MANAGED_BY}={MANAGER}")
}

/// Selects every child of one FederationRound (to find orphans).
pub fn federation_round_selector(round: &str) -> String {
    format!("{MANAGED_BY}={MANAGER},{FEDERATION_ROUND}={round}")
}

/// Selects every child of one TrustDomain that is not a round's child.
pub fn trust_domain_selector(trust_domain: &str) -> String {
    format!("{MANAGED_BY}={MANAGER},{TRUST_DOMAIN}={trust_domain},!{FEDERATION_ROUND}")
}

/// A `key=value,...` selector from a label map (e.g. a ComputeOffer's
/// `nodeSelector`), in key order. `None` for an empty map.
pub fn selector_from_map(labels: &BTreeMap<String, String>) -> Option<String> {
    if labels.is_empty() {
        return None;
    }
    let parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    Some(parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_carry_the_recommended_labels() {
        let l = federation_round_child("fr1", "td1", Component::NodeAgent);
        assert_eq!(l[NAME], "modelpub");
        assert_eq!(l[PART_OF], "modelpub");
        assert_eq!(l[MANAGED_BY], "modelpub-operator");
        assert_eq!(l[INSTANCE], "fr1");
        assert_eq!(l[COMPONENT], "node-agent");
        assert_eq!(l[TRUST_DOMAIN], "td1");
        assert_eq!(l[FEDERATION_ROUND], "fr1");
        let t = trust_domain_child("td1", Component::Identity);
        assert_eq!(t[INSTANCE], "td1");
        assert!(!t.contains_key(FEDERATION_ROUND));
    }

    #[test]
    fn selectors() {
        assert_eq!(
            federation_round_selector("fr1"),
            "app.kubernetes.io/managed-by=modelpub-operator,modelpub.io/federation-round=fr1"
        );
        let m = BTreeMap::from([("b".to_string(), "2".to_string()), ("a".into(), "1".into())]);
        assert_eq!(selector_from_map(&m).as_deref(), Some("a=1,b=2"));
        assert_eq!(selector_from_map(&BTreeMap::new()), None);
    }
}
