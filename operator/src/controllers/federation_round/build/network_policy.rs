//! Lets only federation traffic into the aggregator: the mutual-TLS gRPC
//! port 7443 from this round's participant pods, and the plain-HTTP
//! metrics and `/status` port 9464 from the namespaces the operator names
//! (`--metrics-from-namespaces`: its own, where it reads `/status`, and
//! Prometheus's), or from any namespace when it names none. Everything
//! else to the aggregator pod is denied.

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use modelpub_agent_config::pod::{FEDERATION_PORT, METRICS_PORT};

use super::{Round, agent, aggregator, names};
use crate::labels::Component;

/// The label every namespace carries with its own name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

fn tcp(port: u16) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(i32::from(port))),
        protocol: Some("TCP".into()),
        ..NetworkPolicyPort::default()
    }
}

/// `spans_clusters`: participants in other clusters connect through the
/// load balancer from addresses no selector can name, so the federation
/// port admits any source (mutual TLS to the pinned CAs and the signed
/// roster decide who gets further).
/// `metrics_from`: namespace names allowed to reach 9464; empty: every
/// namespace. Namespaces are selected by `kubernetes.io/metadata.name`,
/// the label the API server sets on every namespace
/// (https://kubernetes.io/docs/concepts/overview/working-with-objects/namespaces/#automatic-labelling).
pub fn network_policy(
    round: &Round,
    spans_clusters: bool,
    metrics_from: &[String],
) -> NetworkPolicy {
    let participants = NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(agent::selector(round)),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    };
    let metrics_peers = if metrics_from.is_empty() {
        LabelSelector::default()
    } else {
        LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: NAMESPACE_NAME_LABEL.into(),
                operator: "In".into(),
                values: Some(metrics_from.to_vec()),
            }]),
            ..LabelSelector::default()
        }
    };
    let metrics_namespaces = NetworkPolicyPeer {
        namespace_selector: Some(metrics_peers),
        ..NetworkPolicyPeer::default()
    };
    NetworkPolicy {
        metadata: round.child_meta(names::network_policy(&round.name), Component::NetworkPolicy),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(aggregator::selector(round)),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule {
                    from: (!spans_clusters).then(|| vec![participants]),
                    ports: Some(vec![tcp(FEDERATION_PORT)]),
                },
                NetworkPolicyIngressRule {
                    from: Some(vec![metrics_namespaces]),
                    ports: Some(vec![tcp(METRICS_PORT)]),
                },
            ]),
            ..NetworkPolicySpec::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::round_fixture;
    use super::*;
    use crate::labels;

    #[test]
    fn only_participants_reach_the_federation_port() {
        let fr = round_fixture();
        let round = Round::new(&fr).unwrap();
        let np = network_policy(&round, false, &[]);
        assert_eq!(np.metadata.name.as_deref(), Some("mnist-federation"));
        let spec = np.spec.unwrap();
        assert_eq!(spec.policy_types.unwrap(), ["Ingress"]);
        let target = spec.pod_selector.unwrap().match_labels.unwrap();
        assert_eq!(target[labels::COMPONENT], "aggregator");
        assert_eq!(target[labels::FEDERATION_ROUND], "mnist");
        let rules = spec.ingress.unwrap();
        assert_eq!(rules.len(), 2);
        let grpc = &rules[0];
        assert_eq!(
            grpc.ports.as_ref().unwrap()[0].port,
            Some(IntOrString::Int(7443))
        );
        let from = grpc.from.as_ref().unwrap()[0]
            .pod_selector
            .clone()
            .unwrap()
            .match_labels
            .unwrap();
        assert_eq!(from[labels::COMPONENT], "node-agent");
        assert_eq!(from[labels::FEDERATION_ROUND], "mnist");
        assert!(grpc.from.as_ref().unwrap()[0].namespace_selector.is_none());
        let open = network_policy(&round, true, &[])
            .spec
            .unwrap()
            .ingress
            .unwrap();
        assert!(
            open[0].from.is_none(),
            "a round across clusters admits any source on 7443"
        );
        let metrics = &rules[1];
        assert_eq!(
            metrics.ports.as_ref().unwrap()[0].port,
            Some(IntOrString::Int(9464))
        );
        let any = metrics.from.as_ref().unwrap()[0].namespace_selector.clone();
        assert_eq!(
            any,
            Some(LabelSelector::default()),
            "no names: any namespace"
        );
    }

    #[test]
    fn metrics_are_open_only_to_the_named_namespaces() {
        let fr = round_fixture();
        let round = Round::new(&fr).unwrap();
        let named = ["modelpub".to_string(), "monitoring".to_string()];
        let np = network_policy(&round, false, &named);
        let rules = np.spec.unwrap().ingress.unwrap();
        let selector = rules[1].from.as_ref().unwrap()[0]
            .namespace_selector
            .clone()
            .unwrap();
        assert_eq!(
            selector.match_expressions.unwrap(),
            [LabelSelectorRequirement {
                key: "kubernetes.io/metadata.name".into(),
                operator: "In".into(),
                values: Some(named.to_vec()),
            }]
        );
        assert!(selector.match_labels.is_none());
    }
}
