//! The aggregator: a one-replica Deployment (Recreate: one aggregator owns
//! a round at a time) and a Service with the mutual-TLS gRPC port 7443
//! ("federation") and the plain-HTTP metrics and `/status` port 9464
//! ("metrics").

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    ContainerPort, HTTPGetAction, PodSpec, PodTemplateSpec, Probe, Service, ServicePort,
    ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use modelpub_agent_config::pod::{FEDERATION_PORT, METRICS_PORT, SECRETS_DIR, VAULT_KEY};

use super::config::evaluation_vault;
use super::pod::{self, Share};
use super::{Round, names};
use crate::labels::{self, Component};

pub const FEDERATION_PORT_NAME: &str = "federation";
pub const METRICS_PORT_NAME: &str = "metrics";

/// Labels that select the round's aggregator pod.
pub fn selector(round: &Round) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::INSTANCE.to_string(), round.name.clone()),
        (labels::FEDERATION_ROUND.to_string(), round.name.clone()),
        (
            labels::COMPONENT.to_string(),
            Component::Aggregator.as_str().to_string(),
        ),
    ])
}

fn http_probe(path: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(METRICS_PORT_NAME.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(10),
        ..Probe::default()
    }
}

/// The aggregator Deployment; `finished` scales it to zero so the
/// aggregator, which exits after its last round, is not restarted into a
/// new run.
pub fn deployment(round: &Round, image: &str, finished: bool) -> Deployment {
    let name = names::aggregator(&round.name);
    let evaluation = evaluation_vault();
    let key_file = format!("{SECRETS_DIR}/{VAULT_KEY}");
    let seal = pod::container(
        "seal-evaluation",
        image,
        pod::seal_args(
            &round.fr.spec,
            Share::Test,
            &key_file,
            &evaluation.dir.to_string_lossy(),
        ),
        pod::base_mounts(),
    );
    let mut main = pod::container(
        "aggregator",
        image,
        pod::role_args("aggregator"),
        pod::base_mounts(),
    );
    main.ports = Some(vec![
        ContainerPort {
            name: Some(FEDERATION_PORT_NAME.into()),
            container_port: i32::from(FEDERATION_PORT),
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        },
        ContainerPort {
            name: Some(METRICS_PORT_NAME.into()),
            container_port: i32::from(METRICS_PORT),
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        },
    ]);
    main.readiness_probe = Some(http_probe("/readyz"));
    main.liveness_probe = Some(Probe {
        initial_delay_seconds: Some(10),
        ..http_probe("/healthz")
    });
    Deployment {
        metadata: round.child_meta(name.clone(), Component::Aggregator),
        spec: Some(DeploymentSpec {
            replicas: Some(if finished { 0 } else { 1 }),
            selector: LabelSelector {
                match_labels: Some(selector(round)),
                ..LabelSelector::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".into()),
                ..DeploymentStrategy::default()
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(round.labels(Component::Aggregator)),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    automount_service_account_token: Some(false),
                    security_context: Some(pod::pod_security()),
                    init_containers: Some(vec![seal]),
                    containers: vec![main],
                    volumes: Some(pod::base_volumes(
                        &name,
                        &names::aggregator_config(&round.name),
                    )),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

pub fn service(round: &Round) -> Service {
    let port = |name: &str, number: u16| ServicePort {
        name: Some(name.into()),
        port: i32::from(number),
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    };
    Service {
        metadata: round.child_meta(names::aggregator(&round.name), Component::Aggregator),
        spec: Some(ServiceSpec {
            selector: Some(selector(round)),
            ports: Some(vec![
                port(FEDERATION_PORT_NAME, FEDERATION_PORT),
                port(METRICS_PORT_NAME, METRICS_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The aggregator's LoadBalancer Service for participants in other
/// clusters: the mutual-TLS gRPC port only (metrics and `/status` stay
/// inside the cluster).
pub fn external_service(round: &Round) -> Service {
    Service {
        metadata: round.child_meta(
            names::aggregator_external(&round.name),
            Component::Aggregator,
        ),
        spec: Some(ServiceSpec {
            type_: Some("LoadBalancer".into()),
            selector: Some(selector(round)),
            ports: Some(vec![ServicePort {
                name: Some(FEDERATION_PORT_NAME.into()),
                port: i32::from(FEDERATION_PORT),
                target_port: Some(IntOrString::String(FEDERATION_PORT_NAME.into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// `https://<address>:7443` of a LoadBalancer Service once the cloud (or
/// the cluster's load-balancer controller) has given it an address.
pub fn external_url(service: &Service) -> Option<String> {
    let ingress = service
        .status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?
        .first()?;
    let host = ingress.hostname.clone().or_else(|| ingress.ip.clone())?;
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    Some(format!("https://{host}:{FEDERATION_PORT}"))
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::round_fixture;
    use super::*;

    #[test]
    fn deployment_runs_one_restricted_aggregator_with_an_evaluation_vault() {
        let fr = round_fixture();
        let round = Round::new(&fr).unwrap();
        let d = deployment(&round, "img:1", false);
        let stopped = deployment(&round, "img:1", true);
        assert_eq!(stopped.spec.unwrap().replicas, Some(0));
        assert_eq!(d.metadata.name.as_deref(), Some("mnist-aggregator"));
        let spec = d.spec.unwrap();
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(spec.strategy.unwrap().type_.as_deref(), Some("Recreate"));
        let template_labels = spec.template.metadata.unwrap().labels.unwrap();
        for (k, v) in spec.selector.match_labels.unwrap() {
            assert_eq!(
                template_labels[&k], v,
                "the selector must match the template"
            );
        }
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.security_context.unwrap().run_as_non_root, Some(true));
        let seal = &pod.init_containers.unwrap()[0];
        assert_eq!(
            seal.args.clone().unwrap(),
            [
                "vault",
                "seal",
                "--dataset",
                "digits",
                "--seed",
                "42",
                "--key-file",
                "/etc/modelpub/secrets/vault.key",
                "--out",
                "/var/lib/modelpub/evaluation",
                "--split",
                "test"
            ]
        );
        let main = &pod.containers[0];
        assert_eq!(main.image.as_deref(), Some("img:1"));
        assert_eq!(main.args.clone().unwrap()[0], "aggregator");
        assert_eq!(
            main.security_context
                .as_ref()
                .unwrap()
                .read_only_root_filesystem,
            Some(true)
        );
        let ports: Vec<_> = main
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| (p.name.clone().unwrap(), p.container_port))
            .collect();
        assert_eq!(
            ports,
            [
                ("federation".to_string(), 7443),
                ("metrics".to_string(), 9464)
            ]
        );
        let volumes = pod.volumes.unwrap();
        assert!(volumes.iter().any(|v| {
            v.secret
                .as_ref()
                .is_some_and(|s| s.secret_name.as_deref() == Some("mnist-aggregator"))
        }));
        assert!(volumes.iter().any(|v| {
            v.config_map
                .as_ref()
                .is_some_and(|c| c.name == "mnist-aggregator-config")
        }));
    }

    #[test]
    fn external_service_is_a_load_balancer_for_grpc_only() {
        use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, ServiceStatus};
        let fr = round_fixture();
        let round = Round::new(&fr).unwrap();
        let mut s = external_service(&round);
        assert_eq!(
            s.metadata.name.as_deref(),
            Some("mnist-aggregator-external")
        );
        let spec = s.spec.clone().unwrap();
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(spec.ports.unwrap().len(), 1);
        assert_eq!(external_url(&s), None);
        s.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(vec![LoadBalancerIngress {
                    ip: Some("203.0.113.7".into()),
                    ..LoadBalancerIngress::default()
                }]),
            }),
            ..ServiceStatus::default()
        });
        assert_eq!(
            external_url(&s).as_deref(),
            Some("https://203.0.113.7:7443")
        );
    }

    #[test]
    fn service_exposes_federation_and_metrics() {
        let fr = round_fixture();
        let round = Round::new(&fr).unwrap();
        let s = service(&round);
        assert_eq!(s.metadata.name.as_deref(), Some("mnist-aggregator"));
        let spec = s.spec.unwrap();
        assert_eq!(spec.selector.unwrap(), selector(&round));
        let ports: Vec<_> = spec
            .ports
            .unwrap()
            .into_iter()
            .map(|p| (p.name.unwrap(), p.port))
            .collect();
        assert_eq!(
            ports,
            [
                ("federation".to_string(), 7443),
                ("metrics".to_string(), 9464)
            ]
        );
    }
}
