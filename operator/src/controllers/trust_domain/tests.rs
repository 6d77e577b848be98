//! TrustDomain scenarios against a mocked API server: every request the
//! reconcile makes, in order, with its key body content.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::controller::Action;
use modelpub_crds::trust_domain::{Member, SelfIdentity, TrustPolicy};
use modelpub_crds::{TrustDomain, TrustDomainSpec, TrustDomainStatus};
use modelpub_protocol::identity::Identity;
use serde_json::{Value, json};

use super::build::{KeySecret, key_secret};
use super::join_token::JoinToken;
use super::probe::ProbeOutcome;
use super::{PROBE_INTERVAL, reconcile};
use crate::context::Clock;
use crate::error::Error;
use crate::identity::{self, IDENTITY_PUB, SecretData};
use crate::rbac::Grant;
use crate::testing::{self, ApiServerVerifier, FakeProbe};

const TD_PATH: &str = "/apis/modelpub.io/v1alpha1/namespaces/research/trustdomains/fed";
const SECRETS: &str = "/api/v1/namespaces/research/secrets";

/// TrustDomain `research/fed` (generation 3) for cluster `hospital-a`
/// with one member, `hospital-b`, pinned by key and fingerprint.
pub(crate) fn trust_domain() -> TrustDomain {
    let b = Identity::from_secret_bytes("hospital-b", [9; 32]).public();
    let mut td = TrustDomain::new(
        "fed",
        TrustDomainSpec {
            federation: None,
            self_: SelfIdentity {
                name: "hospital-a".into(),
                endpoint: "https://a.example:7443".into(),
            },
            members: vec![Member {
                name: "hospital-b".into(),
                endpoint: Some("https://b.example:7443".into()),
                join_token: None,
                fingerprint: Some(b.fingerprint()),
                public_key: Some(b.public_key),
                ca_bundle: None,
            }],
            policy: TrustPolicy::default(),
        },
    );
    td.metadata = ObjectMeta {
        name: Some("fed".into()),
        namespace: Some("research".into()),
        uid: Some("uid-fed".into()),
        generation: Some(3),
        ..ObjectMeta::default()
    };
    td
}

/// hospital-a's identity and CA Secrets of `td`, newly generated.
fn fresh_key_secrets(td: &TrustDomain) -> (Secret, Secret) {
    let id = key_secret(
        td,
        KeySecret::Identity,
        KeySecret::Identity.generate("hospital-a").unwrap(),
    );
    let ca = key_secret(
        td,
        KeySecret::Ca,
        KeySecret::Ca.generate("hospital-a").unwrap(),
    );
    (id, ca)
}

/// Answers the reconcile's reads of the two key Secrets with `id` and `ca`.
async fn answer_key_secrets(api: &mut ApiServerVerifier, id: &Secret, ca: &Secret) {
    api.expect("GET", &format!("{SECRETS}/fed-identity"))
        .await
        .respond(200, id);
    api.expect("GET", &format!("{SECRETS}/fed-ca"))
        .await
        .respond(200, ca);
}

fn with_finalizer(mut td: TrustDomain) -> TrustDomain {
    td.metadata.finalizers = Some(vec![crate::FINALIZER.into()]);
    td
}

fn status_of(body: &Value) -> TrustDomainStatus {
    serde_json::from_value(body["status"].clone()).expect("a TrustDomain status")
}

fn secret_of(body: &Value) -> Secret {
    serde_json::from_value(body.clone()).expect("a Secret")
}

fn ready(status: &TrustDomainStatus) -> (String, String, String) {
    let c = modelpub_crds::condition::find(&status.conditions, "Ready").expect("Ready condition");
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

/// Expects a GET of Secret `name` and answers 404.
async fn secret_missing(api: &mut ApiServerVerifier, name: &str) {
    api.expect("GET", &format!("{SECRETS}/{name}"))
        .await
        .not_found();
}

/// Expects the POST creating Secret `name`; answers 201 with it.
async fn secret_created(api: &mut ApiServerVerifier, name: &str, keys: &[&str]) -> Secret {
    let ex = api.expect("POST", SECRETS).await;
    let s = secret_of(&ex.body);
    assert_eq!(s.metadata.name.as_deref(), Some(name));
    assert_eq!(s.immutable, Some(true));
    let data = s.data.clone().unwrap_or_default();
    assert_eq!(data.keys().map(String::as_str).collect::<Vec<_>>(), keys);
    let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("TrustDomain", "fed")
    );
    ex.echo(201);
    s
}

/// Expects the server-side apply of the status; answers 200 and returns it.
async fn status_applied(api: &mut ApiServerVerifier) -> TrustDomainStatus {
    let ex = api.expect("PATCH", &format!("{TD_PATH}/status")).await;
    assert!(
        ex.query_has("fieldManager=modelpub-operator"),
        "{:?}",
        ex.query
    );
    assert!(ex.query_has("force=true"), "{:?}", ex.query);
    assert_eq!(ex.body["apiVersion"], "modelpub.io/v1alpha1");
    assert_eq!(ex.body["kind"], "TrustDomain");
    let status = status_of(&ex.body);
    let mut stored = with_finalizer(trust_domain());
    stored.status = Some(status.clone());
    ex.respond(200, &stored);
    status
}

fn public_of(data: &SecretData) -> modelpub_protocol::identity::PublicIdentity {
    serde_json::from_slice(&data[IDENTITY_PUB].0).unwrap()
}

pub(crate) async fn first_reconcile_adds_the_finalizer() -> BTreeSet<Grant> {
    let (ctx, mut api) = testing::context();
    let task = tokio::spawn(reconcile(Arc::new(trust_domain()), ctx));
    let ex = api.expect("PATCH", TD_PATH).await;
    assert_eq!(
        ex.body,
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": ["modelpub.io/cleanup"]},
        ])
    );
    ex.respond(200, &with_finalizer(trust_domain()));
    let (result, seen) = api.finish(task).await;
    assert_eq!(result.unwrap(), Action::await_change());
    seen
}

pub(crate) async fn creates_identity_and_ca_and_publishes_them() -> BTreeSet<Grant> {
    let (ctx, mut api) = testing::context();
    let task = tokio::spawn(reconcile(Arc::new(with_finalizer(trust_domain())), ctx));
    secret_missing(&mut api, "fed-identity").await;
    let id = secret_created(&mut api, "fed-identity", &["identity.key", "identity.pub"]).await;
    let ev = api
        .expect_event("research", "Normal", "IdentityCreated")
        .await;
    assert_eq!(ev["regarding"]["name"], "fed");
    assert_eq!(ev["reportingController"], "modelpub-operator");
    secret_missing(&mut api, "fed-ca").await;
    let ca = secret_created(&mut api, "fed-ca", &["ca.crt", "ca.key"]).await;
    api.expect_event("research", "Normal", "CertificateAuthorityCreated")
        .await;
    let status = status_applied(&mut api).await;
    let (result, seen) = api.finish(task).await;
    assert_eq!(result.unwrap(), Action::requeue(PROBE_INTERVAL));

    let public = public_of(id.data.as_ref().unwrap());
    assert_eq!(public.name, "hospital-a");
    assert_eq!(status.identity_fingerprint, Some(public.fingerprint()));
    assert_eq!(status.public_key, Some(public.public_key.clone()));
    assert_eq!(status.identity_secret_name.as_deref(), Some("fed-identity"));
    let token = JoinToken::parse(status.join_token.as_deref().unwrap()).unwrap();
    let ca_pem = std::str::from_utf8(&ca.data.as_ref().unwrap()["ca.crt"].0).unwrap();
    assert_eq!(token.fingerprint, public.fingerprint());
    assert_eq!(token.endpoint, "https://a.example:7443");
    assert_eq!(
        token.ca_fingerprint,
        identity::certificate_fingerprint("ca", ca_pem).unwrap()
    );
    assert_eq!(status.members.len(), 1);
    assert!(status.members[0].reachable);
    assert_eq!(
        ready(&status),
        (
            "True".into(),
            "Ready".into(),
            "identity issued; the member is reachable".into()
        )
    );
    assert_eq!(status.observed_generation, Some(3));
    seen
}

pub(crate) async fn existing_key_material_is_never_overwritten() -> BTreeSet<Grant> {
    let td = with_finalizer(trust_domain());
    let (id, ca) = fresh_key_secrets(&td);
    let (ctx, mut api) = testing::context();
    let task = tokio::spawn(reconcile(Arc::new(td), ctx));
    answer_key_secrets(&mut api, &id, &ca).await;
    // No POST, no PUT, no PATCH of a Secret: straight to status.
    let status = status_applied(&mut api).await;
    let (result, seen) = api.finish(task).await;
    assert_eq!(result.unwrap(), Action::requeue(PROBE_INTERVAL));
    assert_eq!(
        status.identity_fingerprint,
        Some(public_of(id.data.as_ref().unwrap()).fingerprint())
    );
    seen
}

pub(crate) async fn a_concurrent_creator_wins_and_its_key_is_used() -> BTreeSet<Grant> {
    let td = with_finalizer(trust_domain());
    let theirs = key_secret(
        &td,
        KeySecret::Identity,
        KeySecret::Identity.generate("hospital-a").unwrap(),
    );
    let ca = key_secret(
        &td,
        KeySecret::Ca,
        KeySecret::Ca.generate("hospital-a").unwrap(),
    );
    let (ctx, mut api) = testing::context();
    let task = tokio::spawn(reconcile(Arc::new(td), ctx));
    secret_missing(&mut api, "fed-identity").await;
    api.expect("POST", SECRETS).await.already_exists();
    api.expect("GET", &format!("{SECRETS}/fed-identity"))
        .await
        .respond(200, &theirs);
    api.expect("GET", &format!("{SECRETS}/fed-ca"))
        .await
        .respond(200, &ca);
    let status = status_applied(&mut api).await;
    let (result, seen) = api.finish(task).await;
    assert!(result.is_ok());
    assert_eq!(
        status.identity_fingerprint,
        Some(public_of(theirs.data.as_ref().unwrap()).fingerprint())
    );
    seen
}

pub(crate) async fn unreachable_members_are_reported() -> BTreeSet<Grant> {
    let td = with_finalizer(trust_domain());
    let (id, ca) = fresh_key_secrets(&td);
    let probe = FakeProbe::all_reachable().with(
        "https://b.example:7443",
        ProbeOutcome::unreachable("cannot connect to b.example:7443: connection refused"),
    );
    let (ctx, mut api) =
        testing::context_with(Clock::Fixed(testing::monday_10_utc()), Arc::new(probe));
    let task = tokio::spawn(reconcile(Arc::new(td), ctx));
    answer_key_secrets(&mut api, &id, &ca).await;
    let status = status_applied(&mut api).await;
    let (result, seen) = api.finish(task).await;
    assert!(result.is_ok());
    assert!(!status.members[0].reachable);
    assert_eq!(
        status.members[0].last_probe_time.as_ref().map(|t| t.0),
        Some(testing::monday_10_utc())
    );
    let (s, reason, message) = ready(&status);
    assert_eq!(
        (s.as_str(), reason.as_str()),
        ("False", "MembersUnreachable")
    );
    assert!(message.contains("hospital-b (cannot connect"), "{message}");
    seen
}

/// Members by join token: one from another federation is refused (a
/// Warning Event, `Ready=False`, not probed), one valid token is accepted
/// (a Normal Event, pinned to the token's key and CA).
/// `trust_domain()` plus hospital-c (a token for federation `oncology`)
/// and hospital-d (a valid token), with the key Secrets it finds.
fn with_token_members() -> (TrustDomain, Secret, Secret, Identity, JoinToken) {
    let mut td = with_finalizer(trust_domain());
    let now = testing::monday_10_utc().as_second();
    let c = Identity::from_secret_bytes("hospital-c", [11; 32]);
    let d = Identity::from_secret_bytes("hospital-d", [12; 32]);
    let by_token = |name: &str, token: String| Member {
        name: name.into(),
        endpoint: None,
        join_token: Some(token),
        public_key: None,
        fingerprint: None,
        ca_bundle: None,
    };
    let foreign = super::join_token::tests::issue_for(&c, "oncology", now + 60);
    let good = super::join_token::tests::issue_for(&d, "fed", now + 60);
    td.spec
        .members
        .push(by_token("hospital-c", foreign.encode()));
    td.spec.members.push(by_token("hospital-d", good.encode()));
    let (id, ca) = fresh_key_secrets(&td);
    (td, id, ca, d, good)
}

pub(crate) async fn join_tokens_are_accepted_or_refused_with_events() -> BTreeSet<Grant> {
    join_tokens_judged(with_token_members()).await.1
}

/// The scenario on `fixture` (`with_token_members()`): its status and
/// grants.
async fn join_tokens_judged(
    fixture: (TrustDomain, Secret, Secret, Identity, JoinToken),
) -> (TrustDomainStatus, BTreeSet<Grant>) {
    let (td, id, ca, d, good) = fixture;
    let (ctx, mut api) = testing::context_with(
        Clock::Fixed(testing::monday_10_utc()),
        Arc::new(FakeProbe::all_reachable()),
    );
    let task = tokio::spawn(reconcile(Arc::new(td), ctx));
    answer_key_secrets(&mut api, &id, &ca).await;
    let refused = api
        .expect_event("research", "Warning", "JoinTokenForeignFederation")
        .await;
    let note = refused["note"].as_str().unwrap().to_string();
    assert!(
        note.starts_with("refused member hospital-c: join token is for federation \"oncology\""),
        "{note}"
    );
    let accepted = api
        .expect_event("research", "Normal", "JoinTokenAccepted")
        .await;
    let note = accepted["note"].as_str().unwrap().to_string();
    assert!(note.contains(&d.public().fingerprint()), "{note}");
    let status = status_applied(&mut api).await;
    let (result, seen) = api.finish(task).await;
    assert!(result.is_ok());
    let c_status = &status.members[1];
    assert!(!c_status.trusted && c_status.last_probe_time.is_none());
    assert_eq!(
        c_status.reason.as_deref(),
        Some("JoinTokenForeignFederation")
    );
    let d_status = &status.members[2];
    assert!(d_status.trusted && d_status.reachable);
    assert_eq!(d_status.fingerprint, Some(d.public().fingerprint()));
    assert_eq!(
        d_status.accepted_token_sha256,
        Some(super::peers::token_sha256(&good.encode()))
    );
    let (s, reason, message) = ready(&status);
    assert_eq!((s.as_str(), reason.as_str()), ("False", "MemberRefused"));
    assert_eq!(
        message,
        "not trusted: hospital-c (JoinTokenForeignFederation)"
    );
    // The status carries our own signed token, for this federation.
    let ours = super::join_token::JoinToken::parse(status.join_token.as_deref().unwrap()).unwrap();
    assert_eq!(
        (ours.federation.as_str(), ours.name.as_str()),
        ("fed", "hospital-a")
    );
    (status, seen)
}

/// The next reconcile with the same tokens: the verdicts are unchanged, so
/// no Event and no status write (the reconcile runs every minute).
#[tokio::test]
async fn unchanged_verdicts_are_not_announced_again() {
    let fixture = with_token_members();
    let (mut td, id, ca, _, _) = fixture.clone();
    let (status, _) = join_tokens_judged(fixture).await;
    td.status = Some(status);
    let (ctx, mut api) = testing::context_with(
        Clock::Fixed(testing::monday_10_utc()),
        Arc::new(FakeProbe::all_reachable()),
    );
    let task = tokio::spawn(reconcile(Arc::new(td), ctx));
    answer_key_secrets(&mut api, &id, &ca).await;
    // finish() fails on any further request: an Event or a status PATCH.
    let (result, _) = api.finish(task).await;
    assert_eq!(result.unwrap(), Action::requeue(PROBE_INTERVAL));
}

pub(crate) async fn deletion_removes_the_secrets_then_the_finalizer() -> BTreeSet<Grant> {
    let mut td = with_finalizer(trust_domain());
    td.metadata.deletion_timestamp = Some(modelpub_crds::condition::Time(testing::monday_10_utc()));
    let (ctx, mut api) = testing::context();
    let task = tokio::spawn(reconcile(Arc::new(td), ctx));
    let ex = api
        .expect("DELETE", &format!("{SECRETS}/fed-identity"))
        .await;
    assert_eq!(ex.body["propagationPolicy"], "Background");
    ex.respond(
        200,
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
    );
    // Already gone: not an error.
    api.expect("DELETE", &format!("{SECRETS}/fed-ca"))
        .await
        .not_found();
    let ev = api
        .expect_event("research", "Normal", "IdentityDeleted")
        .await;
    assert_eq!(ev["note"], "deleted Secret fed-identity");
    let ex = api.expect("PATCH", TD_PATH).await;
    assert_eq!(
        ex.body,
        json!([
            {"op": "test", "path": "/metadata/finalizers/0", "value": "modelpub.io/cleanup"},
            {"op": "remove", "path": "/metadata/finalizers/0"},
        ])
    );
    ex.respond(200, &trust_domain());
    let (result, seen) = api.finish(task).await;
    assert_eq!(result.unwrap(), Action::await_change());
    seen
}

pub(crate) async fn an_invalid_spec_is_explained_in_status_and_events() -> BTreeSet<Grant> {
    let mut td = with_finalizer(trust_domain());
    td.spec.members[0].fingerprint = Some(format!("SHA256:{}", "0".repeat(64)));
    let td = Arc::new(td);
    let (ctx, mut api) = testing::context();
    let mut seen = BTreeSet::new();
    // Twice with the same recorder: the repeated event patches its series.
    for attempt in 0..2 {
        let task = tokio::spawn(reconcile(td.clone(), ctx.clone()));
        let status = status_applied(&mut api).await;
        let (s, reason, message) = ready(&status);
        assert_eq!((s.as_str(), reason.as_str()), ("False", "InvalidSpec"));
        assert!(
            message.starts_with("spec.members[0].fingerprint: does not match publicKey"),
            "{message}"
        );
        if attempt == 0 {
            let ev = api.expect_event("research", "Warning", "InvalidSpec").await;
            assert!(
                ev["note"]
                    .as_str()
                    .unwrap()
                    .contains("spec.members[0].fingerprint"),
                "{ev}"
            );
        } else {
            let ex = api.next().await;
            assert_eq!(ex.method, "PATCH");
            assert!(
                ex.path
                    .starts_with("/apis/events.k8s.io/v1/namespaces/research/events/fed."),
                "{}",
                ex.path
            );
            assert_eq!(ex.body["series"]["count"], 2);
            ex.echo(200);
        }
        let result = tokio::time::timeout(std::time::Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
        let err = result.unwrap_err();
        assert_eq!(err.reason(), "invalid_spec");
        assert!(matches!(err.root(), Error::InvalidSpec(_)));
    }
    let (_, grants) = api.finish(tokio::spawn(async {})).await;
    seen.extend(grants);
    seen
}

pub(crate) async fn an_api_failure_is_a_warning_and_a_retry() -> BTreeSet<Grant> {
    let (ctx, mut api) = testing::context();
    let task = tokio::spawn(reconcile(
        Arc::new(with_finalizer(trust_domain())),
        ctx.clone(),
    ));
    secret_missing(&mut api, "fed-identity").await;
    api.expect("POST", SECRETS).await.fail(403, "Forbidden");
    let ev = api.expect_event("research", "Warning", "ApiError").await;
    assert!(
        ev["note"]
            .as_str()
            .unwrap()
            .starts_with("create Secret research/fed-identity"),
        "{ev}"
    );
    let metrics = api.metrics_text();
    let (result, seen) = api.finish(task).await;
    let err = result.unwrap_err();
    assert_eq!(err.reason(), "kube_api");
    for line in [
        r#"modelpub_reconcile_runs_total{controller="trustdomain"} 1"#,
        r#"modelpub_reconcile_errors_total{controller="trustdomain",reason="kube_api"} 1"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line} in\n{metrics}"
        );
    }
    let td = Arc::new(trust_domain());
    assert_eq!(
        crate::controllers::error_policy(td.clone(), &err, ctx.clone()),
        Action::requeue(std::time::Duration::from_secs(5))
    );
    assert_eq!(
        crate::controllers::error_policy(td, &err, ctx),
        Action::requeue(std::time::Duration::from_secs(10))
    );
    seen
}

pub(crate) async fn an_identity_for_another_name_is_refused() -> BTreeSet<Grant> {
    let td = with_finalizer(trust_domain());
    let foreign = key_secret(
        &td,
        KeySecret::Identity,
        KeySecret::Identity.generate("hospital-z").unwrap(),
    );
    let ca = key_secret(
        &td,
        KeySecret::Ca,
        KeySecret::Ca.generate("hospital-a").unwrap(),
    );
    let (ctx, mut api) = testing::context();
    let task = tokio::spawn(reconcile(Arc::new(td), ctx));
    api.expect("GET", &format!("{SECRETS}/fed-identity"))
        .await
        .respond(200, &foreign);
    api.expect("GET", &format!("{SECRETS}/fed-ca"))
        .await
        .respond(200, &ca);
    // Never replaced: the reconcile stops and says why.
    let ev = api
        .expect_event("research", "Warning", "IdentityError")
        .await;
    let note = ev["note"].as_str().unwrap();
    assert!(
        note.starts_with("Secret research/fed-identity: holds the identity of \"hospital-z\" but spec.self.name is \"hospital-a\""),
        "{note}"
    );
    let (result, seen) = api.finish(task).await;
    assert_eq!(result.unwrap_err().reason(), "identity");
    seen
}

pub(crate) async fn a_fresh_unchanged_status_is_not_written_again() -> BTreeSet<Grant> {
    let mut td = with_finalizer(trust_domain());
    let (id, ca) = fresh_key_secrets(&td);
    let ca_pem = std::str::from_utf8(&ca.data.as_ref().unwrap()["ca.crt"].0).unwrap();
    // Written 10 s ago by the reconcile whose write triggered this one.
    let ten_s_ago = modelpub_crds::condition::Time(
        testing::monday_10_utc() - jiff::SignedDuration::from_secs(10),
    );
    let ca_fingerprint = identity::certificate_fingerprint("ca", ca_pem).unwrap();
    let me = identity::identity_from_data("id", id.data.as_ref().unwrap()).unwrap();
    let token = super::status::join_token(
        None,
        &me,
        &super::join_token::TokenFacts {
            federation: "fed",
            endpoint: "https://a.example:7443",
            ca_certificate: ca_pem,
            ca_fingerprint: &ca_fingerprint,
            expires: 0,
        },
        ten_s_ago.0.as_second(),
    );
    let facts = super::status::Issued {
        public: public_of(id.data.as_ref().unwrap()),
        ca_fingerprint,
        identity_secret_name: "fed-identity".into(),
        join_token: token,
    };
    let b = trust_domain().spec.members[0].clone();
    let peer = match super::peers::resolve(&b, "fed", None, 0) {
        super::peers::Trust::Trusted(p) => p,
        super::peers::Trust::Refused(r) => panic!("{}", r.error),
    };
    let probes = vec![super::status::Observed::Probed(
        peer,
        ProbeOutcome::reachable("connected"),
    )];
    td.status = Some(super::status::issued(&td, &facts, &probes, ten_s_ago));
    let (ctx, mut api) = testing::context();
    let task = tokio::spawn(reconcile(Arc::new(td), ctx));
    answer_key_secrets(&mut api, &id, &ca).await;
    // No status PATCH: finish() fails on any further request.
    let (result, seen) = api.finish(task).await;
    assert_eq!(result.unwrap(), Action::requeue(PROBE_INTERVAL));
    seen
}

/// Every grant the TrustDomain scenarios exercise.
pub(crate) async fn exercised() -> BTreeSet<Grant> {
    let mut all = BTreeSet::new();
    all.extend(first_reconcile_adds_the_finalizer().await);
    all.extend(creates_identity_and_ca_and_publishes_them().await);
    all.extend(existing_key_material_is_never_overwritten().await);
    all.extend(a_concurrent_creator_wins_and_its_key_is_used().await);
    all.extend(unreachable_members_are_reported().await);
    all.extend(join_tokens_are_accepted_or_refused_with_events().await);
    all.extend(deletion_removes_the_secrets_then_the_finalizer().await);
    all.extend(an_invalid_spec_is_explained_in_status_and_events().await);
    all.extend(an_api_failure_is_a_warning_and_a_retry().await);
    all.extend(an_identity_for_another_name_is_refused().await);
    all.extend(a_fresh_unchanged_status_is_not_written_again().await);
    all
}

#[tokio::test]
async fn first_reconcile_only_adds_the_finalizer() {
    first_reconcile_adds_the_finalizer().await;
}

#[tokio::test]
async fn second_reconcile_creates_identity_and_ca_and_publishes_status() {
    creates_identity_and_ca_and_publishes_them().await;
}

#[tokio::test]
async fn existing_secrets_are_read_not_overwritten() {
    existing_key_material_is_never_overwritten().await;
}

#[tokio::test]
async fn already_exists_reads_the_winner() {
    a_concurrent_creator_wins_and_its_key_is_used().await;
}

#[tokio::test]
async fn unreachable_member_makes_ready_false() {
    unreachable_members_are_reported().await;
}

#[tokio::test]
async fn join_tokens_are_judged_per_member() {
    join_tokens_are_accepted_or_refused_with_events().await;
}

#[tokio::test]
async fn deletion_cleans_up() {
    deletion_removes_the_secrets_then_the_finalizer().await;
}

#[tokio::test]
async fn invalid_spec_sets_condition_and_warns() {
    an_invalid_spec_is_explained_in_status_and_events().await;
}

#[tokio::test]
async fn api_failure_warns_and_backs_off() {
    an_api_failure_is_a_warning_and_a_retry().await;
}

#[tokio::test]
async fn foreign_identity_is_refused_not_replaced() {
    an_identity_for_another_name_is_refused().await;
}

#[tokio::test]
async fn fresh_status_is_not_rewritten() {
    a_fresh_unchanged_status_is_not_written_again().await;
}
