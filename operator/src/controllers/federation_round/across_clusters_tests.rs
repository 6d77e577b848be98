//! FederationRound scenarios of a round across clusters, against a mocked
//! API server and a canned federation link: this cluster (`hospital-hq`)
//! as a member whose round `clinic` coordinates, and as the coordinator
//! waiting for `clinic` to join.

use std::sync::Arc;

use kube::runtime::controller::Action;
use modelpub_crds::{FederationRound, FederationRoundStatus, Phase, TrustDomain};
use modelpub_protocol::pb;
use serde_json::{Value, json};

use super::build::{Round, secrets};
use super::tests::{
    CONFIG_MAPS, JOBS, NS, SECRETS, TD_PATH, list, round, status_applied, trust_domain,
};
use super::{POLL_INTERVAL, reconcile};
use crate::context::Context;
use crate::identity::{self, SecretData};
use crate::testing::{self, ApiServerVerifier, FakeLink};

/// The member `clinic`, pinned by key and CA.
struct Clinic {
    key: String,
    ca_pem: String,
}

fn clinic() -> Clinic {
    let ca = identity::generate_ca_data("hospitals").unwrap();
    Clinic {
        key: modelpub_protocol::identity::Identity::generate("clinic")
            .unwrap()
            .public()
            .public_key,
        ca_pem: String::from_utf8(ca["ca.crt"].0.clone()).unwrap(),
    }
}

fn domain_with(clinic: &Clinic) -> TrustDomain {
    let mut td = trust_domain();
    td.spec.members = vec![
        serde_json::from_value(json!({
            "name": "clinic", "endpoint": "https://clinic.example:7450",
            "publicKey": clinic.key, "caBundle": clinic.ca_pem
        }))
        .unwrap(),
    ];
    td
}

/// The fixture round with hospital-b's vault held by `clinic`, every vault
/// naming its member.
fn across(coordinator: Option<&str>) -> FederationRound {
    let mut fr = round();
    fr.spec.data.vaults[0].member = Some("hospital-hq".into());
    fr.spec.data.vaults[1].member = Some("clinic".into());
    fr.spec.data.vaults[2].member = Some("hospital-hq".into());
    fr.spec.coordinator = coordinator.map(str::to_string);
    fr
}

fn context_with_link(link: Arc<FakeLink>) -> (Arc<Context>, ApiServerVerifier) {
    let (ctx, api) = testing::context();
    let mut ctx = Arc::try_unwrap(ctx)
        .ok()
        .expect("the test holds the only context");
    ctx.peering = link;
    (Arc::new(ctx), api)
}

fn secret_value(name: &str, data: &SecretData) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret",
           "metadata": {"name": name, "namespace": NS},
           "data": serde_json::to_value(data).unwrap()})
}

/// Answers the reads of this cluster's party Secrets (all already issued)
/// and of the trust domain's identity and CA.
async fn secrets_read(
    api: &mut ApiServerVerifier,
    fr: &FederationRound,
    td: &TrustDomain,
    ca: &SecretData,
) {
    let round = Round::new(fr).unwrap().at(&td.spec.self_.name);
    let stored: Vec<Value> = secrets::planned(&round)
        .iter()
        .map(|p| {
            serde_json::to_value(secrets::secret(
                &round,
                p,
                secrets::generate(p, "ca", ca).unwrap(),
            ))
            .unwrap()
        })
        .collect();
    api.expect("GET", SECRETS)
        .await
        .respond(200, &list("SecretList", stored));
    let id = identity::generate_identity_data("hospital-hq").unwrap();
    api.expect("GET", &format!("{SECRETS}/hospitals-identity"))
        .await
        .respond(200, &secret_value("hospitals-identity", &id));
    api.expect("GET", &format!("{SECRETS}/hospitals-ca"))
        .await
        .respond(200, &secret_value("hospitals-ca", ca));
}

fn key(name: &str) -> pb::PartyKey {
    pb::PartyKey {
        name: name.into(),
        public_key: modelpub_protocol::identity::Identity::generate(name)
            .unwrap()
            .public()
            .public_key,
    }
}

#[tokio::test]
async fn a_member_registers_its_participants_runs_them_against_the_coordinator_and_mirrors_it() {
    let c = clinic();
    let td = domain_with(&c);
    let fr = across(Some("clinic"));
    let theirs = FederationRoundStatus {
        phase: Phase::Running,
        message: Some("round 2 of 5 in progress".into()),
        current_round: 2,
        total_rounds: 5,
        accuracy: Some(0.81),
        aggregator_endpoint: Some("https://203.0.113.7:7443".into()),
        ..FederationRoundStatus::default()
    };
    let link = Arc::new(FakeLink::answering(Ok(pb::RoundView {
        ready: true,
        message: "the aggregator of mnist runs at clinic".into(),
        aggregator_url: "https://203.0.113.7:7443".into(),
        aggregator_server_name: "mnist-aggregator.lab.svc".into(),
        aggregator: Some(key("mnist-aggregator")),
        roster: vec![key("hospital-a"), key("hospital-b"), key("hospital-c")],
        round_status_json: serde_json::to_string(&theirs).unwrap(),
    })));
    let (ctx, mut api) = context_with_link(link.clone());
    let task = tokio::spawn(reconcile(Arc::new(fr.clone()), ctx));
    api.expect("GET", TD_PATH).await.respond(200, &td);
    let ca = identity::generate_ca_data("hospitals").unwrap();
    secrets_read(&mut api, &fr, &td, &ca).await;
    // Only this cluster's vaults: no aggregator, no Service, no policy.
    for vault in ["hospital-a", "hospital-c"] {
        let ex = api
            .expect(
                "PATCH",
                &format!("{CONFIG_MAPS}/mnist-agent-{vault}-config"),
            )
            .await;
        let config: Value =
            serde_json::from_str(ex.body["data"]["config.json"].as_str().unwrap()).unwrap();
        assert_eq!(config["aggregator_url"], "https://203.0.113.7:7443");
        assert_eq!(config["aggregator_server_name"], "mnist-aggregator.lab.svc");
        assert_eq!(
            config["aggregator_ca"],
            c.ca_pem.as_str(),
            "the coordinator's pinned CA"
        );
        assert_eq!(config["roster"].as_array().unwrap().len(), 3);
        ex.echo(200);
    }
    for vault in ["hospital-a", "hospital-c"] {
        api.expect("PATCH", &format!("{JOBS}/mnist-agent-{vault}"))
            .await
            .echo(200);
    }
    let status = status_applied(&mut api).await;
    assert_eq!(status.phase, Phase::Running);
    assert_eq!(status.coordinator.as_deref(), Some("clinic"));
    assert_eq!(status.accuracy, Some(0.81));
    assert_eq!(
        status.aggregator_endpoint, None,
        "the address is the coordinator's business"
    );
    assert_eq!(
        status.message.as_deref(),
        Some("coordinated by clinic: round 2 of 5 in progress")
    );
    api.expect_event(NS, "Normal", "RoundsStarted").await;
    let (result, _) = api.finish(task).await;
    assert_eq!(result.unwrap(), Action::requeue(POLL_INTERVAL));
    let joins = link.joins.lock().unwrap().clone();
    assert_eq!(joins.len(), 1);
    let (to, join) = &joins[0];
    assert_eq!(
        (to.as_str(), join.to.as_str(), join.round.as_str()),
        ("clinic", "clinic", "mnist")
    );
    let names: Vec<&str> = join.participants.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["hospital-a", "hospital-c"]);
}

#[tokio::test]
async fn a_member_whose_coordinator_is_unreachable_waits_and_says_why() {
    let c = clinic();
    let td = domain_with(&c);
    let fr = across(Some("clinic"));
    let link = Arc::new(FakeLink::answering(Err(
        "cannot reach the federation endpoint of clinic at clinic.example:7450".into(),
    )));
    let (ctx, mut api) = context_with_link(link);
    let task = tokio::spawn(reconcile(Arc::new(fr.clone()), ctx));
    api.expect("GET", TD_PATH).await.respond(200, &td);
    let ca = identity::generate_ca_data("hospitals").unwrap();
    secrets_read(&mut api, &fr, &td, &ca).await;
    let status = status_applied(&mut api).await;
    assert_eq!(status.phase, Phase::Pending);
    assert_eq!(status.coordinator.as_deref(), Some("clinic"));
    assert!(
        status
            .message
            .as_deref()
            .unwrap()
            .contains("cannot reach the federation endpoint of clinic"),
        "{status:?}"
    );
    let progressing = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Progressing")
        .unwrap();
    assert_eq!(progressing.reason, "CoordinatorUnreachable");
    let (result, _) = api.finish(task).await;
    assert_eq!(result.unwrap(), Action::requeue(POLL_INTERVAL));
}

#[tokio::test]
async fn the_coordinator_waits_for_members_with_its_aggregator_address_published() {
    let c = clinic();
    let td = domain_with(&c);
    let fr = across(None);
    let (ctx, mut api) = context_with_link(Arc::new(FakeLink::answering(Err("unused".into()))));
    let task = tokio::spawn(reconcile(Arc::new(fr.clone()), ctx));
    api.expect("GET", TD_PATH).await.respond(200, &td);
    let ca = identity::generate_ca_data("hospitals").unwrap();
    secrets_read(&mut api, &fr, &td, &ca).await;
    // No member has registered yet.
    api.expect("GET", CONFIG_MAPS)
        .await
        .respond(200, &list("ConfigMapList", vec![]));
    let ex = api
        .expect(
            "PATCH",
            "/api/v1/namespaces/lab/services/mnist-aggregator-external",
        )
        .await;
    assert_eq!(ex.body["spec"]["type"], "LoadBalancer");
    let mut stored = ex.body.clone();
    stored["status"] = json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}});
    ex.respond(200, &stored);
    let status = status_applied(&mut api).await;
    assert_eq!(status.phase, Phase::Pending);
    assert_eq!(
        status.aggregator_endpoint.as_deref(),
        Some("https://203.0.113.7:7443")
    );
    assert!(
        status
            .message
            .as_deref()
            .unwrap()
            .starts_with("waiting for clinic to join"),
        "{status:?}"
    );
    let (result, _) = api.finish(task).await;
    assert_eq!(result.unwrap(), Action::requeue(POLL_INTERVAL));
}
