//! Lets only federation traffic into the aggregator: the mutual-TLS gRPC
//! port 7443 from this round's participant pods, and the plain-HTTP
//! metrics and `/status` port 9464 from any namespace (the operator and
//! Prometheus run in their own). Everything else to the aggregator pod is
//! denied.

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use modelpub_agent_config::pod::{FEDERATION_PORT, METRICS_PORT};

use super::{Round, agent, aggregator, names};
use crate::labels::Component;

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
pub fn network_policy(round: &Round, spans_clusters: bool) -> NetworkPolicy {
    let participants = NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(agent::selector(round)),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    };
    let any_namespace = NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector::default()),
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
                    from: Some(vec![any_namespace]),
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
        let np = network_policy(&round, false);
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
        let open = network_policy(&round, true).spec.unwrap().ingress.unwrap();
        assert!(
            open[0].from.is_none(),
            "a round across clusters admits any source on 7443"
        );
        let metrics = &rules[1];
        assert_eq!(
            metrics.ports.as_ref().unwrap()[0].port,
            Some(IntOrString::Int(9464))
        );
    }
}
