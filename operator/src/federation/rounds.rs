//! A member joining a round this cluster coordinates (`JoinRound`).
//!
//! The member's operator sends the public keys of its participants (one
//! per vault the round places with it). The first registration is kept in
//! a ConfigMap `<fr>-member-<member>` owned by the round; the same keys
//! again change nothing, other keys are refused (a participant key that
//! changes mid-round could be anyone's). The FederationRound controller
//! starts the aggregator once every member holding a vault is registered;
//! until then, and until the aggregator has an external address, the
//! reply says what the round waits for.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use modelpub_agent_config::AggregatorConfig;
use modelpub_agent_config::pod::CONFIG_FILE;
use modelpub_crds::FederationRound;
use modelpub_protocol::identity::PublicIdentity;
use modelpub_protocol::pb;
use tonic::Status;

use super::domain::LocalDomain;
use crate::controllers::federation_round::build::{Round, names};
use crate::error::is_conflict;
use crate::identity::IDENTITY_PUB;
use crate::labels::{self, Component};

/// The key of a registration ConfigMap holding the participants' JSON.
pub const PARTICIPANTS: &str = "participants.json";
/// The label naming the member a registration belongs to.
pub const MEMBER_LABEL: &str = "modelpub.io/member";

/// The registration ConfigMap of `member` for `round`.
pub fn registration_name(round: &str, member: &str) -> String {
    format!("{round}-member-{member}")
}

/// Whether `vault` is held by this cluster (`self_name`).
pub fn is_local(member: Option<&str>, self_name: &str) -> bool {
    member.is_none_or(|m| m == self_name)
}

/// The members (other than `self_name`) holding vaults of `fr`, in the
/// order they first appear.
pub fn remote_members(fr: &FederationRound, self_name: &str) -> Vec<String> {
    let mut seen = BTreeSet::new();
    fr.spec
        .data
        .vaults
        .iter()
        .filter_map(|v| v.member.clone())
        .filter(|m| m != self_name && seen.insert(m.clone()))
        .collect()
}

/// The participants each member registered for `round`, read from the
/// round's ConfigMaps. A registration that does not parse is left out
/// (and so waited for), named in the log.
pub async fn registrations(
    client: &Client,
    namespace: &str,
    round: &str,
) -> Result<BTreeMap<String, Vec<PublicIdentity>>, crate::error::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let selector = labels::federation_round_selector(round);
    let list = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(crate::error::Error::kube(format!(
            "list configmaps {selector} in {namespace}"
        )))?;
    Ok(list
        .items
        .iter()
        .filter_map(|cm| {
            let member = cm.labels().get(MEMBER_LABEL)?.clone();
            let json = cm.data.as_ref()?.get(PARTICIPANTS)?;
            match serde_json::from_str::<Vec<PublicIdentity>>(json) {
                Ok(p) => Some((member, p)),
                Err(e) => {
                    tracing::warn!(configmap = %cm.name_any(), "registration does not parse: {e}");
                    None
                }
            }
        })
        .collect())
}

fn registration(
    round: &Round,
    member: &str,
    participants: &[PublicIdentity],
) -> Result<ConfigMap, Status> {
    let json = serde_json::to_string_pretty(participants)
        .map_err(|e| Status::internal(format!("registration: {e}")))?;
    let mut meta = round.child_meta(
        registration_name(&round.name, member),
        Component::MemberRegistration,
    );
    meta.labels
        .get_or_insert_with(Default::default)
        .insert(MEMBER_LABEL.into(), member.into());
    Ok(ConfigMap {
        metadata: meta,
        data: Some(BTreeMap::from([(PARTICIPANTS.to_string(), json)])),
        ..ConfigMap::default()
    })
}

fn kube_status(action: &str, e: kube::Error) -> Status {
    Status::unavailable(format!("{action}: {e}"))
}

/// Registers `member`'s participants of `join.round` and answers with the
/// round as this cluster sees it.
pub async fn join(
    client: &Client,
    domain: &LocalDomain,
    member: &str,
    join: &pb::RoundJoin,
) -> Result<pb::RoundView, Status> {
    let ns = &domain.namespace;
    let here = domain.name();
    let rounds: Api<FederationRound> = Api::namespaced(client.clone(), ns);
    let fr = rounds
        .get_opt(&join.round)
        .await
        .map_err(|e| kube_status(&format!("get FederationRound {ns}/{}", join.round), e))?
        .filter(|fr| fr.spec.trust_domain == domain.trust_domain)
        .ok_or_else(|| {
            Status::not_found(format!(
                "{here} has no FederationRound {:?} in federation {}: the coordinator applies the round first",
                join.round, domain.federation
            ))
        })?;
    if let Some(c) = fr.spec.coordinator.as_deref().filter(|c| *c != here) {
        return Err(Status::failed_precondition(format!(
            "round {} at {here} is coordinated by {c}, not by {here}",
            join.round
        )));
    }
    let expected: BTreeSet<&str> = fr
        .spec
        .data
        .vaults
        .iter()
        .filter(|v| v.member.as_deref() == Some(member))
        .map(|v| v.name.as_str())
        .collect();
    let offered: BTreeSet<&str> = join.participants.iter().map(|p| p.name.as_str()).collect();
    if expected.is_empty() {
        return Err(Status::permission_denied(format!(
            "round {} at {here} places no vault with {member}",
            join.round
        )));
    }
    if expected != offered {
        return Err(Status::permission_denied(format!(
            "round {} at {here} places vaults {expected:?} with {member}; its join names {offered:?}",
            join.round
        )));
    }
    let mut participants = Vec::new();
    for p in &join.participants {
        let id = PublicIdentity {
            name: p.name.clone(),
            public_key: p.public_key.clone(),
        };
        id.verifying_key()
            .map_err(|e| Status::invalid_argument(format!("participant {}: {e}", p.name)))?;
        participants.push(id);
    }
    participants.sort_by(|a, b| a.name.cmp(&b.name));

    let round = Round::new(&fr).map_err(|e| Status::internal(e.to_string()))?;
    let registered = registrations(client, ns, &round.name)
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    match registered.get(member) {
        Some(before) if *before == participants => {}
        Some(_) => {
            return Err(Status::permission_denied(format!(
                "{member} already registered other participant keys for round {} at {here}; \
                 keys cannot change during a round (delete and re-create the round to start over)",
                round.name
            )));
        }
        None => {
            let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
            let cm = registration(&round, member, &participants)?;
            match cms.create(&PostParams::default(), &cm).await {
                Ok(_) => {
                    tracing::info!(round = %round.name, member, "member registered its participants")
                }
                // Registered by a concurrent call: the next call compares.
                Err(e) if is_conflict(&e) => {}
                Err(e) => {
                    return Err(kube_status(
                        &format!("create ConfigMap {ns}/{}", cm.name_any()),
                        e,
                    ));
                }
            }
        }
    }
    view(client, &fr, here).await
}

/// The round as this cluster sees it: ready once the aggregator is
/// configured (every member registered) and has an external address.
async fn view(client: &Client, fr: &FederationRound, here: &str) -> Result<pb::RoundView, Status> {
    let ns = fr.namespace().unwrap_or_default();
    let name = fr.name_any();
    let status = fr.status.clone().unwrap_or_default();
    let round_status_json = serde_json::to_string(&status)
        .map_err(|e| Status::internal(format!("status of {name}: {e}")))?;
    let waiting = |message: String| pb::RoundView {
        ready: false,
        message,
        round_status_json: round_status_json.clone(),
        ..pb::RoundView::default()
    };
    let Some(endpoint) = status.aggregator_endpoint.clone() else {
        return Ok(waiting(status.message.clone().unwrap_or_else(|| {
            format!("the aggregator of {name} at {here} has no external address yet")
        })));
    };
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let selector = labels::federation_round_selector(&name);
    let config_name = names::aggregator_config(&name);
    let config = cms
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| kube_status(&format!("list configmaps {selector} in {ns}"), e))?
        .items
        .into_iter()
        .find(|cm| cm.name_any() == config_name)
        .and_then(|cm| cm.data?.remove(CONFIG_FILE));
    let Some(config) = config else {
        return Ok(waiting(status.message.clone().unwrap_or_else(|| {
            format!("the aggregator of {name} at {here} is not configured yet")
        })));
    };
    let config: AggregatorConfig = serde_json::from_str(&config)
        .map_err(|e| Status::internal(format!("ConfigMap {ns}/{config_name}: {e}")))?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let aggregator_secret = names::aggregator(&name);
    let aggregator: PublicIdentity = secrets
        .get_opt(&aggregator_secret)
        .await
        .map_err(|e| kube_status(&format!("get Secret {ns}/{aggregator_secret}"), e))?
        .and_then(|s| s.data?.remove(IDENTITY_PUB))
        .and_then(|b| serde_json::from_slice(&b.0).ok())
        .ok_or_else(|| {
            Status::unavailable(format!(
                "Secret {ns}/{aggregator_secret} has no identity yet"
            ))
        })?;
    let key = |p: &PublicIdentity| pb::PartyKey {
        name: p.name.clone(),
        public_key: p.public_key.clone(),
    };
    Ok(pb::RoundView {
        ready: true,
        message: format!("the aggregator of {name} runs at {here}"),
        aggregator_url: endpoint,
        aggregator_server_name: names::aggregator_host(&name, &ns),
        aggregator: Some(key(&aggregator)),
        roster: config.roster.iter().map(key).collect(),
        round_status_json,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeSet;

    use serde_json::{Value, json};

    use super::*;
    use crate::controllers::federation_round::build::fixtures::round_fixture;
    use crate::federation::domain::fixture;
    use crate::rbac::Grant;
    use crate::testing;

    const FR: &str = "/apis/modelpub.io/v1alpha1/namespaces/ns/federationrounds/mnist";
    const CMS: &str = "/api/v1/namespaces/ns/configmaps";

    /// The fixture round in namespace `ns` of trust domain `fed`, with
    /// hospital-b's vault held by member `clinic`.
    fn round() -> FederationRound {
        let mut fr = round_fixture();
        fr.metadata.namespace = Some("ns".into());
        fr.spec.trust_domain = "fed".into();
        fr.spec.data.vaults[1].member = Some("clinic".into());
        fr
    }

    fn join(keys: &[(&str, &str)]) -> pb::RoundJoin {
        pb::RoundJoin {
            round: "mnist".into(),
            participants: keys
                .iter()
                .map(|(n, k)| pb::PartyKey {
                    name: n.to_string(),
                    public_key: k.to_string(),
                })
                .collect(),
            to: "hospital-a".into(),
        }
    }

    fn list(items: Vec<Value>) -> Value {
        json!({"kind": "ConfigMapList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items})
    }

    fn key() -> String {
        modelpub_protocol::identity::Identity::generate("hospital-b")
            .unwrap()
            .public()
            .public_key
    }

    /// A first join is stored as the member's registration; the round has
    /// no external address yet, so the reply says so and is not ready.
    pub(crate) async fn first_join_is_registered() -> BTreeSet<Grant> {
        let (ctx, mut api) = testing::context();
        let domain = fixture("hospital-a", "fed");
        let k = key();
        let client = ctx.client.clone();
        let task = tokio::spawn(async move {
            super::join(&client, &domain, "clinic", &join(&[("hospital-b", &k)])).await
        });
        api.expect("GET", FR).await.respond(200, &round());
        api.expect("GET", CMS).await.respond(200, &list(vec![]));
        let created = api.expect("POST", CMS).await;
        assert_eq!(created.body["metadata"]["name"], "mnist-member-clinic");
        assert_eq!(created.body["metadata"]["labels"][MEMBER_LABEL], "clinic");
        assert_eq!(
            created.body["metadata"]["ownerReferences"][0]["name"],
            "mnist"
        );
        let stored = created.body.clone();
        created.respond(201, &stored);
        let (view, seen) = api.finish(task).await;
        let view = view.unwrap();
        assert!(!view.ready);
        assert!(view.message.contains("no external address"), "{view:?}");
        seen
    }

    #[tokio::test]
    async fn a_first_join_is_registered_and_waits_for_the_address() {
        first_join_is_registered().await;
    }

    #[tokio::test]
    async fn other_keys_or_other_vaults_are_refused() {
        let (ctx, mut api) = testing::context();
        let domain = fixture("hospital-a", "fed");
        let client = ctx.client.clone();
        let task = tokio::spawn(async move {
            let wrong_vault =
                super::join(&client, &domain, "clinic", &join(&[("hospital-c", &key())])).await;
            let other_keys =
                super::join(&client, &domain, "clinic", &join(&[("hospital-b", &key())])).await;
            (wrong_vault, other_keys)
        });
        api.expect("GET", FR).await.respond(200, &round());
        api.expect("GET", FR).await.respond(200, &round());
        let registered = serde_json::to_string(&[PublicIdentity {
            name: "hospital-b".into(),
            public_key: key(),
        }])
        .unwrap();
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "mnist-member-clinic", "namespace": "ns", "labels": {MEMBER_LABEL: "clinic"}},
            "data": {PARTICIPANTS: registered}});
        api.expect("GET", CMS).await.respond(200, &list(vec![cm]));
        let ((wrong_vault, other_keys), _) = api.finish(task).await;
        let wrong_vault = wrong_vault.unwrap_err();
        assert_eq!(wrong_vault.code(), tonic::Code::PermissionDenied);
        assert!(
            wrong_vault.message().contains("hospital-b"),
            "{wrong_vault:?}"
        );
        let other_keys = other_keys.unwrap_err();
        assert_eq!(other_keys.code(), tonic::Code::PermissionDenied);
        assert!(
            other_keys
                .message()
                .contains("already registered other participant keys"),
            "{other_keys:?}"
        );
    }

    #[test]
    fn remote_members_and_locality() {
        let mut fr = round();
        fr.spec.data.vaults[2].member = Some("clinic".into());
        fr.spec.data.vaults[0].member = Some("hospital-a".into());
        assert_eq!(remote_members(&fr, "hospital-a"), ["clinic"]);
        assert!(is_local(None, "a") && is_local(Some("a"), "a") && !is_local(Some("b"), "a"));
    }

    pub(crate) async fn exercised() -> BTreeSet<Grant> {
        first_join_is_registered().await
    }
}
