//! The desired children of a FederationRound, as pure functions of the
//! round and the parties' public identities: one ConfigMap per party, the
//! aggregator Deployment and Service, one Job per vault and the
//! NetworkPolicy. The party Secrets (key material) are planned here too but
//! created only when missing, never re-applied ([`secrets`]).

pub mod agent;
pub mod aggregator;
pub mod config;
pub mod network_policy;
pub mod pod;
pub mod secrets;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use modelpub_agent_config::pod::CONFIG_FILE;
use modelpub_crds::FederationRound;
use modelpub_crds::federation_round::VaultSpec;
use modelpub_protocol::identity::PublicIdentity;

use crate::error::{Error, FieldError, SpecErrors};
use crate::labels::{self, Component};

/// Names of a round's children, all derived from the round's name.
pub mod names {
    /// The aggregator's Deployment, Service, Secret and identity name.
    pub fn aggregator(round: &str) -> String {
        format!("{round}-aggregator")
    }
    pub fn aggregator_config(round: &str) -> String {
        format!("{round}-aggregator-config")
    }
    /// The Job and Secret of the participant on vault `vault`.
    pub fn agent(round: &str, vault: &str) -> String {
        format!("{round}-agent-{vault}")
    }
    pub fn agent_config(round: &str, vault: &str) -> String {
        format!("{round}-agent-{vault}-config")
    }
    pub fn network_policy(round: &str) -> String {
        format!("{round}-federation")
    }
    /// The LoadBalancer Service participants in other clusters reach the
    /// aggregator through (gRPC port only).
    pub fn aggregator_external(round: &str) -> String {
        format!("{round}-aggregator-external")
    }
    /// The in-cluster DNS name the aggregator's certificate is issued for
    /// and participants verify.
    pub fn aggregator_host(round: &str, namespace: &str) -> String {
        format!("{}.{namespace}.svc", aggregator(round))
    }
}

/// Who the round is, resolved once: name, namespace, trust domain, owner
/// reference. Building needs a round read from the API server (with a
/// namespace and uid).
#[derive(Debug, Clone)]
pub struct Round<'a> {
    pub fr: &'a FederationRound,
    pub name: String,
    pub namespace: String,
    pub owner: OwnerReference,
    /// This cluster's name in the federation (`spec.self.name` of the
    /// trust domain), once known: vaults of other members and a remote
    /// coordinator are told apart by it. `None` treats every vault as
    /// local and the aggregator as ours.
    pub here: Option<String>,
}

impl<'a> Round<'a> {
    pub fn new(fr: &'a FederationRound) -> Result<Self, Error> {
        let name = fr.name_any();
        let namespace = fr.namespace().ok_or_else(|| {
            Error::InvalidSpec(SpecErrors(vec![FieldError::new(
                "metadata.namespace",
                "a FederationRound is namespaced; this one has no namespace",
            )]))
        })?;
        let mut owner = fr.controller_owner_ref(&()).ok_or_else(|| {
            Error::InvalidSpec(SpecErrors(vec![FieldError::new(
                "metadata.uid",
                "the FederationRound has no uid yet (not read from the API server)",
            )]))
        })?;
        owner.block_owner_deletion = Some(true);
        Ok(Self {
            fr,
            name,
            namespace,
            owner,
            here: None,
        })
    }

    /// The same round as seen from member `here`.
    pub fn at(mut self, here: &str) -> Self {
        self.here = Some(here.to_string());
        self
    }

    /// Whether this cluster holds `vault`.
    pub fn is_local(&self, vault: &VaultSpec) -> bool {
        self.here
            .as_deref()
            .is_none_or(|h| crate::federation::rounds::is_local(vault.member.as_deref(), h))
    }

    /// The vaults this cluster holds, in `spec.data.vaults` order.
    pub fn local_vaults(&self) -> impl Iterator<Item = &'a VaultSpec> + '_ {
        self.fr.spec.data.vaults.iter().filter(|v| self.is_local(v))
    }

    /// The member running the aggregator when it is not this cluster.
    pub fn remote_coordinator(&self) -> Option<&'a str> {
        let here = self.here.as_deref()?;
        self.fr.spec.coordinator.as_deref().filter(|c| *c != here)
    }

    /// Whether some vault is held by another member.
    pub fn spans_clusters(&self) -> bool {
        self.fr.spec.data.vaults.iter().any(|v| !self.is_local(v))
    }

    /// Metadata of a child: name, namespace, the round's labels for
    /// `component`, and the round as controlling owner.
    pub fn child_meta(&self, name: String, component: Component) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels(component)),
            owner_references: Some(vec![self.owner.clone()]),
            ..ObjectMeta::default()
        }
    }

    pub fn labels(&self, component: Component) -> BTreeMap<String, String> {
        labels::federation_round_child(&self.name, &self.fr.spec.trust_domain, component)
    }

    /// The aggregator's gRPC URL, `https://<fr>-aggregator.<ns>.svc:7443`.
    pub fn aggregator_url(&self) -> String {
        format!(
            "https://{}:{}",
            names::aggregator_host(&self.name, &self.namespace),
            modelpub_agent_config::pod::FEDERATION_PORT
        )
    }
}

/// The public identities of the round's parties, read from (or generated
/// into) their Secrets, or registered by the members holding the other
/// vaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Identities {
    pub aggregator: PublicIdentity,
    /// One per `spec.data.vaults` entry, in the same order.
    pub agents: Vec<PublicIdentity>,
}

/// Where this cluster's participants find the aggregator.
#[derive(Debug, Clone, PartialEq)]
pub enum AggregatorAt {
    /// In this cluster, behind its Service.
    Here,
    /// In the coordinator's cluster: its external URL, the name on its
    /// certificate and the coordinator's CA (pinned from its join token).
    Remote {
        url: String,
        server_name: String,
        ca_pem: String,
    },
}

/// Everything the round asks for besides its Secrets. The applier handles
/// each field; nothing is optional, so a new kind of child is a compile
/// error there until it is applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Children {
    pub config_maps: Vec<ConfigMap>,
    pub deployment: Deployment,
    pub service: Service,
    pub jobs: Vec<Job>,
    pub network_policy: NetworkPolicy,
    /// The aggregator's LoadBalancer Service, for a round with vaults in
    /// other clusters.
    pub external_service: Option<Service>,
}

/// Builds the round's children. `image` is the node-agent image
/// (`spec.image` or the operator's default); `finished` once the run is
/// over (the aggregator is scaled to zero); `peer_cas` the CAs pinned for
/// the members holding the other vaults (their participants' client
/// certificates chain to them); `metrics_from` the namespaces admitted to
/// the metrics port (empty: all).
pub fn children(
    round: &Round,
    identities: &Identities,
    image: &str,
    finished: bool,
    peer_cas: &[String],
    metrics_from: &[String],
) -> Result<Children, Error> {
    let mut aggregator_config = config::aggregator(round, identities)?;
    aggregator_config.peer_client_cas = peer_cas.to_vec();
    let mut config_maps = vec![config_map(
        round,
        names::aggregator_config(&round.name),
        Component::Aggregator,
        &aggregator_config,
    )?];
    let (participant_maps, jobs) = participants(round, identities, &AggregatorAt::Here, image)?;
    config_maps.extend(participant_maps);
    let spans = round.spans_clusters();
    Ok(Children {
        config_maps,
        deployment: aggregator::deployment(round, image, finished),
        service: aggregator::service(round),
        jobs,
        network_policy: network_policy::network_policy(round, spans, metrics_from),
        external_service: spans.then(|| aggregator::external_service(round)),
    })
}

/// The ConfigMaps and Jobs of this cluster's participants.
pub fn participants(
    round: &Round,
    identities: &Identities,
    at: &AggregatorAt,
    image: &str,
) -> Result<(Vec<ConfigMap>, Vec<Job>), Error> {
    let mut config_maps = Vec::new();
    let mut jobs = Vec::new();
    for vault in round.local_vaults() {
        let participant = config::participant(round, identities, vault, at)?;
        config_maps.push(config_map(
            round,
            names::agent_config(&round.name, &vault.name),
            Component::NodeAgent,
            &participant,
        )?);
        jobs.push(agent::job(round, vault, image));
    }
    Ok((config_maps, jobs))
}

fn config_map<T: serde::Serialize>(
    round: &Round,
    name: String,
    component: Component,
    config: &T,
) -> Result<ConfigMap, Error> {
    let json = serde_json::to_string_pretty(config)
        .map_err(|e| Error::identity(format!("ConfigMap {}/{name}", round.namespace), e))?;
    Ok(ConfigMap {
        metadata: round.child_meta(name, component),
        data: Some(BTreeMap::from([(CONFIG_FILE.to_string(), json)])),
        ..ConfigMap::default()
    })
}

#[cfg(test)]
pub(crate) mod fixtures;

#[cfg(test)]
mod tests {
    use super::fixtures::{identities, round_fixture};
    use super::*;

    #[test]
    fn children_cover_every_vault_and_are_owned_by_the_round() {
        let fr = round_fixture();
        let round = Round::new(&fr).unwrap();
        let children = children(&round, &identities(&fr), "img:1", false, &[], &[]).unwrap();
        let cm_names: Vec<_> = children
            .config_maps
            .iter()
            .map(|c| c.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(
            cm_names,
            [
                "mnist-aggregator-config",
                "mnist-agent-hospital-a-config",
                "mnist-agent-hospital-b-config",
                "mnist-agent-hospital-c-config"
            ]
        );
        let job_names: Vec<_> = children
            .jobs
            .iter()
            .map(|j| j.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(
            job_names,
            [
                "mnist-agent-hospital-a",
                "mnist-agent-hospital-b",
                "mnist-agent-hospital-c"
            ]
        );
        for meta in children
            .config_maps
            .iter()
            .map(|c| &c.metadata)
            .chain(children.jobs.iter().map(|j| &j.metadata))
            .chain([
                &children.deployment.metadata,
                &children.service.metadata,
                &children.network_policy.metadata,
            ])
        {
            let owner = &meta.owner_references.as_ref().unwrap()[0];
            assert_eq!(owner.kind, "FederationRound");
            assert_eq!(owner.name, "mnist");
            assert_eq!(owner.controller, Some(true));
            assert_eq!(owner.block_owner_deletion, Some(true));
            assert_eq!(meta.namespace.as_deref(), Some("lab"));
            let labels = meta.labels.as_ref().unwrap();
            assert_eq!(labels[labels::FEDERATION_ROUND], "mnist");
            assert_eq!(labels[labels::TRUST_DOMAIN], "hospitals");
        }
        let cm = &children.config_maps[0];
        let json: serde_json::Value =
            serde_json::from_str(&cm.data.as_ref().unwrap()["config.json"]).unwrap();
        assert_eq!(json["metrics_listen"], "0.0.0.0:9464");
    }

    #[test]
    fn a_round_without_uid_or_namespace_is_refused() {
        let mut fr = round_fixture();
        fr.metadata.uid = None;
        let err = Round::new(&fr).unwrap_err().to_string();
        assert!(err.contains("metadata.uid"), "{err}");
        fr.metadata.namespace = None;
        let err = Round::new(&fr).unwrap_err().to_string();
        assert!(err.contains("metadata.namespace"), "{err}");
        let fr = round_fixture();
        assert_eq!(
            Round::new(&fr).unwrap().aggregator_url(),
            "https://mnist-aggregator.lab.svc:7443"
        );
    }
}
