//! The FederationRound controller: reconciles a round into its parties'
//! Secrets and ConfigMaps, the aggregator Deployment and Service, one Job
//! per vault and a NetworkPolicy, and follows the aggregator's `/status`
//! and the participant pods into the round's status.
//!
//! Pipeline per reconcile (inside the `modelpub.io/cleanup` finalizer):
//! dereference the TrustDomain (it must exist and be Ready: its CA issues
//! the parties' certificates) → validate ([`validate`]; an invalid spec
//! fails the run for good, naming the field) → party Secrets, created only
//! when missing ([`build::secrets`]) → build the other children
//! ([`build`], pure) → server-side apply them, delete orphans by label →
//! observe the aggregator and the participant pods ([`progress`]) →
//! status ([`status`], server-side apply on `/status`) → requeue every 5 s
//! while the run is not over. Children are owned by the round, so garbage
//! collection removes them; cleanup deletes them explicitly too and says
//! so in an Event.

pub mod build;
pub mod progress;
pub mod status;
pub mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::Event;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use modelpub_crds::{FederationRound, FederationRoundStatus, Phase, TrustDomain};

use modelpub_protocol::identity::PublicIdentity;

use self::build::{Identities, Round, names, secrets};
use self::progress::{agents, status_url};
use crate::apply::{self, Created, describe};
use crate::context::Context;
use crate::controllers::trust_domain::build::ca_secret_name;
use crate::controllers::{drive, reconcile_with_finalizer};
use crate::error::Error;
use crate::federation::domain::LocalDomain;
use crate::federation::rounds;
use crate::labels;
use crate::scope::api_in;

/// The `controller` label of this controller's metrics.
pub const CONTROLLER: &str = "federationround";

/// How often a running round's progress is polled.
pub const POLL_INTERVAL: Duration = Duration::from_secs(5);

/// The controller: FederationRounds in `namespace` (every namespace for
/// `None`), and the children they own (only those the operator manages).
pub fn controller(client: Client, namespace: Option<&str>) -> Controller<FederationRound> {
    let managed = || watcher::Config::default().labels(&labels::managed_selector());
    Controller::new(
        api_in::<FederationRound>(&client, namespace),
        watcher::Config::default(),
    )
    .owns(api_in::<Job>(&client, namespace), managed())
    .owns(api_in::<Deployment>(&client, namespace), managed())
}

/// Runs the controller, one per watched namespace, until its watches end.
pub async fn run(ctx: Arc<Context>) {
    let each = ctx.config.scope.namespaces().into_iter().map(|ns| {
        let controller = controller(ctx.client.clone(), ns.as_deref());
        drive(CONTROLLER, controller, reconcile, ctx.clone())
    });
    futures::future::join_all(each).await;
}

/// One reconcile of `fr`.
pub async fn reconcile(fr: Arc<FederationRound>, ctx: Arc<Context>) -> Result<Action, Error> {
    let inner = ctx.clone();
    reconcile_with_finalizer(CONTROLLER, fr, &ctx, move |event| async move {
        match event {
            Event::Apply(fr) => apply(&fr, &inner).await,
            Event::Cleanup(fr) => cleanup(&fr, &inner).await,
        }
    })
    .await
}

async fn apply(fr: &FederationRound, ctx: &Context) -> Result<Action, Error> {
    let round = Round::new(fr)?;
    let ns = round.namespace.clone();
    let rounds: Api<FederationRound> = Api::namespaced(ctx.client.clone(), &ns);
    let previous = fr.status.as_ref();
    let generation = fr.metadata.generation;
    let total = fr.spec.rounds;

    // Dereference: the trust domain must exist and be Ready.
    let tds: Api<TrustDomain> = Api::namespaced(ctx.client.clone(), &ns);
    let td = apply::get_opt(&tds, Some(&ns), &fr.spec.trust_domain).await?;
    let td = match validate::trust_domain_ready(fr, td.as_ref()) {
        Ok(td) => td,
        Err(e) => {
            let why = e.to_string();
            let status = status::waiting(previous, generation, total, &why, ctx.clock.now_time());
            apply::apply_status(&rounds, Some(&ns), &round.name, &status).await?;
            return Err(e);
        }
    };
    if let Err(errors) = validate::validate(fr, td) {
        let status = status::rejected(previous, generation, total, &errors, ctx.clock.now_time());
        apply::apply_status(&rounds, Some(&ns), &round.name, &status).await?;
        return Err(Error::InvalidSpec(errors));
    }

    // Consent: a trust domain that requires it runs nothing on its data
    // until someone with rights on the round annotates it. A run already
    // started is not stopped here; withdrawal is deleting the round.
    let started = previous.is_some_and(|s| s.phase != Phase::Pending);
    if let Some(why) = validate::awaiting_consent(fr, td).filter(|_| !started) {
        let status = status::waiting_because(
            previous,
            generation,
            total,
            "AwaitingConsent",
            &why,
            ctx.clock.now_time(),
        );
        apply::apply_status(&rounds, Some(&ns), &round.name, &status).await?;
        return Ok(Action::await_change());
    }

    let round = round.at(&td.spec.self_.name);
    let parties = ensure_secrets(&round, ctx).await?;
    if let Some(coordinator) = round.remote_coordinator() {
        return participate(&round, td, coordinator, parties, ctx).await;
    }
    let finished = previous.is_some_and(|s| s.phase.is_terminal());
    let image = fr
        .spec
        .image
        .clone()
        .unwrap_or_else(|| ctx.config.node_agent_image.clone());

    // Vaults of other members: their operators register the participants'
    // keys over the federation endpoint; the aggregator starts once all
    // have, with the members' pinned CAs admitted beside ours.
    let mut peer_cas = Vec::new();
    let mut registrations = Vec::new();
    let roster = if round.spans_clusters() {
        let domain = LocalDomain::load(&ctx.client, td, ctx.clock.now().as_second()).await?;
        let registered = rounds::registrations(&ctx.client, &ns, &round.name).await?;
        let here = domain.name().to_string();
        let members = rounds::remote_members(fr, &here);
        let missing: Vec<&String> = members
            .iter()
            .filter(|m| !registered.contains_key(*m))
            .collect();
        registrations = members
            .iter()
            .map(|m| rounds::registration_name(&round.name, m))
            .collect();
        if !missing.is_empty() && !finished {
            // The address members' participants will need is allocated
            // while the round waits for them.
            let external = build::aggregator::external_service(&round);
            let external = apply::apply(
                &Api::<Service>::namespaced(ctx.client.clone(), &ns),
                &external,
            )
            .await?;
            let names: Vec<&str> = missing.iter().map(|m| m.as_str()).collect();
            let why = format!(
                "waiting for {} to join: each applies this round in its own cluster, and its operator registers its participants here",
                names.join(", ")
            );
            let mut status = status::waiting_because(
                previous,
                generation,
                total,
                "AwaitingMembers",
                &why,
                ctx.clock.now_time(),
            );
            status.aggregator_endpoint = build::aggregator::external_url(&external);
            apply::apply_status(&rounds, Some(&ns), &round.name, &status).await?;
            return Ok(Action::requeue(POLL_INTERVAL));
        }
        for member in &members {
            if let Some(ca) = domain.peer(member).and_then(|p| p.ca_bundle.clone()) {
                peer_cas.push(ca);
            }
        }
        let mut agents = Vec::new();
        for vault in &fr.spec.data.vaults {
            let id = if round.is_local(vault) {
                parties.get(&vault.name).cloned()
            } else {
                vault
                    .member
                    .as_ref()
                    .and_then(|m| registered.get(m))
                    .and_then(|ps| ps.iter().find(|p| p.name == vault.name).cloned())
            };
            agents.push(id.ok_or_else(|| {
                Error::MissingReference(format!(
                    "no identity for vault {} (neither issued here nor registered by its member)",
                    vault.name
                ))
            })?);
        }
        agents
    } else {
        fr.spec
            .data
            .vaults
            .iter()
            .filter_map(|v| parties.get(&v.name).cloned())
            .collect()
    };
    let aggregator = parties
        .get(&build::names::aggregator(&round.name))
        .cloned()
        .ok_or_else(|| {
            Error::MissingReference("the aggregator's identity was not issued".into())
        })?;
    let identities = Identities {
        aggregator,
        agents: roster,
    };
    let children = build::children(
        &round,
        &identities,
        &image,
        finished,
        &peer_cas,
        &ctx.config.metrics_from_namespaces,
    )?;
    let (service, external) = apply_children(&round, children, &registrations, ctx).await?;
    if finished {
        return Ok(Action::await_change());
    }

    // Observe: the participant pods and the aggregator's /status.
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let selector = labels::selector_from_map(&build::agent::selector(&round)).unwrap_or_default();
    let listed = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::kube(format!("list pods {selector} in {ns}")))?;
    let vaults: Vec<String> = round.local_vaults().map(|v| v.name.clone()).collect();
    let agents = agents(&vaults, &listed.items);
    let cluster_ip = service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref());
    let url = status_url(
        &ctx.config.aggregator_status_scheme,
        &round.name,
        &ns,
        cluster_ip,
    );
    let aggregator = ctx.aggregator_status.fetch(url).await;
    let observation = status::Observation {
        generation,
        total_rounds: total,
        min_participants: fr.spec.participants.min,
        aggregator,
        agents: &agents,
        remote_participants: (fr.spec.data.vaults.len() - vaults.len()) as u32,
        now: ctx.clock.now_time(),
    };
    let mut status = status::observe(previous, &observation);
    status.aggregator_endpoint = external.as_ref().and_then(build::aggregator::external_url);
    apply::apply_status(&rounds, Some(&ns), &round.name, &status).await?;
    announce_transition(fr, previous, &status, ctx).await;
    Ok(if status.phase.is_terminal() {
        Action::await_change()
    } else {
        Action::requeue(POLL_INTERVAL)
    })
}

/// A round another member coordinates: this cluster's copy is its consent.
/// Registers our participants with the coordinator (over its federation
/// endpoint, both sides pinned), runs their Jobs against its aggregator
/// once it is ready, and mirrors its view of the round into our status.
async fn participate(
    round: &Round<'_>,
    td: &TrustDomain,
    coordinator: &str,
    parties: BTreeMap<String, PublicIdentity>,
    ctx: &Context,
) -> Result<Action, Error> {
    let fr = round.fr;
    let ns = &round.namespace;
    let rounds_api: Api<FederationRound> = Api::namespaced(ctx.client.clone(), ns);
    let previous = fr.status.as_ref();
    let generation = fr.metadata.generation;
    let total = fr.spec.rounds;
    let now = ctx.clock.now_time();
    let wait = |reason: &str, why: String| {
        let mut status =
            status::waiting_because(previous, generation, total, reason, &why, now.clone());
        status.coordinator = Some(coordinator.to_string());
        status
    };
    let domain = LocalDomain::load(&ctx.client, td, ctx.clock.now().as_second()).await?;
    let Some(peer) = domain.peer(coordinator) else {
        let status = wait(
            "CoordinatorNotTrusted",
            format!(
                "coordinator {coordinator} is not a trusted member of {}: its join token was refused",
                domain.federation
            ),
        );
        apply::apply_status(&rounds_api, Some(ns), &round.name, &status).await?;
        return Ok(Action::requeue(POLL_INTERVAL));
    };
    let join = modelpub_protocol::pb::RoundJoin {
        round: round.name.clone(),
        participants: round
            .local_vaults()
            .filter_map(|v| parties.get(&v.name))
            .map(|p| modelpub_protocol::pb::PartyKey {
                name: p.name.clone(),
                public_key: p.public_key.clone(),
            })
            .collect(),
        to: coordinator.to_string(),
    };
    let view = match ctx.peering.join_round(&domain, peer, join).await {
        Ok(view) => view,
        Err(why) => {
            let status = wait("CoordinatorUnreachable", why);
            apply::apply_status(&rounds_api, Some(ns), &round.name, &status).await?;
            return Ok(Action::requeue(POLL_INTERVAL));
        }
    };
    let mirrored: FederationRoundStatus =
        serde_json::from_str(&view.round_status_json).unwrap_or_default();
    if !view.ready {
        let status = wait(
            "AwaitingCoordinator",
            format!("{coordinator}: {}", view.message),
        );
        apply::apply_status(&rounds_api, Some(ns), &round.name, &status).await?;
        return Ok(Action::requeue(POLL_INTERVAL));
    }
    let key = |k: Option<&modelpub_protocol::pb::PartyKey>| {
        k.map(|k| PublicIdentity {
            name: k.name.clone(),
            public_key: k.public_key.clone(),
        })
    };
    let aggregator = key(view.aggregator.as_ref()).ok_or_else(|| {
        Error::MissingReference(format!("{coordinator} named no aggregator identity"))
    })?;
    let identities = Identities {
        aggregator,
        agents: view.roster.iter().filter_map(|k| key(Some(k))).collect(),
    };
    let at = build::AggregatorAt::Remote {
        url: view.aggregator_url.clone(),
        server_name: view.aggregator_server_name.clone(),
        ca_pem: peer.ca_bundle.clone().unwrap_or_default(),
    };
    let image = fr
        .spec
        .image
        .clone()
        .unwrap_or_else(|| ctx.config.node_agent_image.clone());
    let (config_maps, jobs) = build::participants(round, &identities, &at, &image)?;
    let cm_api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let job_api: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    for cm in &config_maps {
        apply::apply(&cm_api, cm).await?;
    }
    for job in &jobs {
        apply::apply(&job_api, job).await?;
    }
    let status = mirror(mirrored, coordinator, generation);
    apply::apply_status(&rounds_api, Some(ns), &round.name, &status).await?;
    announce_transition(fr, previous, &status, ctx).await;
    Ok(if status.phase.is_terminal() {
        Action::await_change()
    } else {
        Action::requeue(POLL_INTERVAL)
    })
}

/// Our status as the coordinator reports the round: its phase, rounds and
/// accuracy, our generation, and who coordinates.
fn mirror(
    mut theirs: FederationRoundStatus,
    coordinator: &str,
    generation: Option<i64>,
) -> FederationRoundStatus {
    theirs.coordinator = Some(coordinator.to_string());
    theirs.aggregator_endpoint = None;
    theirs.observed_generation = generation;
    for c in &mut theirs.conditions {
        c.observed_generation = generation;
    }
    theirs.message = theirs
        .message
        .map(|m| format!("coordinated by {coordinator}: {m}"));
    theirs
}

/// A Normal Event when the run starts, and one (Warning on failure) when
/// it ends.
async fn announce_transition(
    fr: &FederationRound,
    previous: Option<&FederationRoundStatus>,
    now: &FederationRoundStatus,
    ctx: &Context,
) {
    let before = previous.map(|s| s.phase).unwrap_or_default();
    if before == now.phase {
        return;
    }
    let message = now.message.clone().unwrap_or_default();
    use modelpub_crds::Phase;
    match now.phase {
        Phase::Running => {
            ctx.events
                .normal(fr, "RoundsStarted", "Observe", message)
                .await
        }
        Phase::Succeeded => ctx.events.normal(fr, "Succeeded", "Observe", message).await,
        Phase::Failed => ctx.events.warning(fr, "Failed", "Observe", message).await,
        Phase::Pending => {}
    }
}

/// Reads the public identities of this cluster's parties (keyed by party
/// name: the aggregator's, then each local vault's) from their Secrets,
/// creating the missing ones (identity and certificate from the trust
/// domain's CA) and deleting Secrets of parties the round no longer has.
async fn ensure_secrets(
    round: &Round<'_>,
    ctx: &Context,
) -> Result<BTreeMap<String, PublicIdentity>, Error> {
    let ns = &round.namespace;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let selector = labels::federation_round_selector(&round.name);
    let existing: BTreeMap<String, Secret> = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::kube(format!("list secrets {selector} in {ns}")))?
        .items
        .into_iter()
        .map(|s| (s.name_any(), s))
        .collect();
    let plan = secrets::planned(round);
    // The CA is read only when some party still needs its certificate.
    let ca = if plan.iter().any(|p| !existing.contains_key(&p.name)) {
        Some(read_ca(round, &api).await?)
    } else {
        None
    };
    let mut publics = BTreeMap::new();
    let mut issued = Vec::new();
    for party in &plan {
        let secret = match (existing.get(&party.name), &ca) {
            (Some(s), _) => s.clone(),
            (None, Some((ca_what, ca_data))) => {
                let data = secrets::generate(party, ca_what, ca_data)?;
                let secret = secrets::secret(round, party, data);
                match apply::create_if_missing(&api, &secret).await? {
                    Created::Created(_) => {
                        issued.push(party.party.clone());
                        secret
                    }
                    Created::Existed(winner) => winner,
                }
            }
            (None, None) => {
                return Err(Error::identity(
                    describe::<Secret>(Some(ns), &party.name),
                    "missing, and the trust domain's CA was not read",
                ));
            }
        };
        publics.insert(
            party.party.clone(),
            secrets::public_identity(round, party, &secret)?,
        );
    }
    if !issued.is_empty() {
        ctx.events
            .normal(
                round.fr,
                "IdentitiesIssued",
                "CreateSecret",
                format!(
                    "issued identities and certificates for {} from the trust domain's CA",
                    issued.join(", ")
                ),
            )
            .await;
    }
    let keep: BTreeSet<String> = plan.iter().map(|p| p.name.clone()).collect();
    for orphan in existing.keys().filter(|n| !keep.contains(*n)) {
        apply::delete_if_exists(&api, Some(ns), orphan).await?;
    }
    Ok(publics)
}

/// The trust domain's CA Secret (`<td>-ca`), named in errors.
async fn read_ca(
    round: &Round<'_>,
    api: &Api<Secret>,
) -> Result<(String, crate::identity::SecretData), Error> {
    let ns = &round.namespace;
    let name = ca_secret_name(&round.fr.spec.trust_domain);
    let what = describe::<Secret>(Some(ns), &name);
    let data = apply::get_opt(api, Some(ns), &name)
        .await?
        .and_then(|s| s.data)
        .ok_or_else(|| {
            Error::MissingReference(format!("{what} (the trust domain's CA) does not exist yet"))
        })?;
    Ok((what, data))
}

/// Server-side applies every child and deletes Jobs and ConfigMaps the
/// round no longer asks for (members' registrations, `keep`, stay);
/// returns the aggregator Service and the external one as stored.
async fn apply_children(
    round: &Round<'_>,
    children: build::Children,
    keep: &[String],
    ctx: &Context,
) -> Result<(Service, Option<Service>), Error> {
    let ns = &round.namespace;
    let client = &ctx.client;
    let build::Children {
        config_maps,
        deployment,
        service,
        jobs,
        network_policy,
        external_service,
    } = children;
    let cm_api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let job_api: Api<Job> = Api::namespaced(client.clone(), ns);
    let svc_api: Api<Service> = Api::namespaced(client.clone(), ns);
    let mut keep_cms: BTreeSet<String> = config_maps.iter().map(|c| c.name_any()).collect();
    keep_cms.extend(keep.iter().cloned());
    let keep_jobs: BTreeSet<String> = jobs.iter().map(|j| j.name_any()).collect();
    for cm in &config_maps {
        apply::apply(&cm_api, cm).await?;
    }
    // Kept: the API server's answer carries the allocated cluster IP.
    let service = apply::apply(&svc_api, &service).await?;
    let external = match &external_service {
        Some(s) => Some(apply::apply(&svc_api, s).await?),
        None => None,
    };
    apply::apply(
        &Api::<Deployment>::namespaced(client.clone(), ns),
        &deployment,
    )
    .await?;
    for job in &jobs {
        apply::apply(&job_api, job).await?;
    }
    apply::apply(
        &Api::<NetworkPolicy>::namespaced(client.clone(), ns),
        &network_policy,
    )
    .await?;
    let selector = labels::federation_round_selector(&round.name);
    apply::delete_orphans(&job_api, Some(ns), &selector, &keep_jobs).await?;
    apply::delete_orphans(&cm_api, Some(ns), &selector, &keep_cms).await?;
    Ok((service, external))
}

/// Deletes every child (garbage collection would too, but only after the
/// round is gone; deleting now stops training at once) and records it.
async fn cleanup(fr: &FederationRound, ctx: &Context) -> Result<Action, Error> {
    let ns = fr.namespace().unwrap_or_default();
    let name = fr.name_any();
    let client = &ctx.client;
    let mut deleted = Vec::new();
    let mut note = |kind: &str, gone: bool, n: String| {
        if gone {
            deleted.push(format!("{kind} {n}"));
        }
    };
    let ns_ = Some(ns.as_str());
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let secrets_api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    for vault in &fr.spec.data.vaults {
        let job = names::agent(&name, &vault.name);
        note("Job", apply::delete_if_exists(&jobs, ns_, &job).await?, job);
    }
    let deployment = names::aggregator(&name);
    let gone = apply::delete_if_exists(
        &Api::<Deployment>::namespaced(client.clone(), &ns),
        ns_,
        &deployment,
    )
    .await?;
    note("Deployment", gone, deployment.clone());
    let gone = apply::delete_if_exists(
        &Api::<Service>::namespaced(client.clone(), &ns),
        ns_,
        &deployment,
    )
    .await?;
    note("Service", gone, deployment.clone());
    // Only a round naming members' vaults can have had an external Service.
    if fr.spec.data.vaults.iter().any(|v| v.member.is_some()) {
        let external = names::aggregator_external(&name);
        let gone = apply::delete_if_exists(
            &Api::<Service>::namespaced(client.clone(), &ns),
            ns_,
            &external,
        )
        .await?;
        note("Service", gone, external);
    }
    let policy = names::network_policy(&name);
    let gone = apply::delete_if_exists(
        &Api::<NetworkPolicy>::namespaced(client.clone(), &ns),
        ns_,
        &policy,
    )
    .await?;
    note("NetworkPolicy", gone, policy);
    let mut config_maps = vec![names::aggregator_config(&name)];
    let mut party_secrets = vec![deployment];
    for vault in &fr.spec.data.vaults {
        config_maps.push(names::agent_config(&name, &vault.name));
        party_secrets.push(names::agent(&name, &vault.name));
        if let Some(member) = &vault.member {
            let registration = rounds::registration_name(&name, member);
            if !config_maps.contains(&registration) {
                config_maps.push(registration);
            }
        }
    }
    for cm in config_maps {
        let gone = apply::delete_if_exists(&cms, ns_, &cm).await?;
        note("ConfigMap", gone, cm);
    }
    for secret in party_secrets {
        let gone = apply::delete_if_exists(&secrets_api, ns_, &secret).await?;
        note("Secret", gone, secret);
    }
    if !deleted.is_empty() {
        ctx.events
            .normal(
                fr,
                "ChildrenDeleted",
                "Cleanup",
                format!("deleted {}", deleted.join(", ")),
            )
            .await;
    }
    Ok(Action::await_change())
}

#[cfg(test)]
pub(crate) mod tests;

#[cfg(test)]
mod across_clusters_tests;
