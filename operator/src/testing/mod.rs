//! Scenario tests against a mocked API server (tower-test), in the style of
//! kube-rs' controller-rs: a reconcile runs as a task against a
//! [`kube::Client`] whose transport is a [`tower_test::mock`] pair, and the
//! test plays the API server, expecting each request in order.
//!
//! ```text
//! let (ctx, mut api) = testing::context();
//! let task = tokio::spawn(reconcile(Arc::new(obj), ctx.clone()));
//! api.expect("PATCH", "/apis/modelpub.io/v1alpha1/namespaces/ns/trustdomains/a")
//!     .await
//!     .respond(200, &patched);
//! let (result, seen) = api.finish(task).await;
//! ```
//!
//! Every request is classified into the RBAC grant it needs
//! ([`crate::rbac::classify`]) and must be covered by
//! [`crate::rbac::REQUIRED`]; [`ApiServerVerifier::finish`] returns the
//! grants seen so a test can check that every required grant is exercised.

pub mod link;
pub mod probe;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use jiff::Timestamp;
use kube::Client;
use kube::client::Body;
use prometheus_client::registry::Registry;
use serde::Serialize;
use serde_json::Value;

use crate::context::{Clock, Config, Context};
use crate::controllers::federation_round::progress::FixedStatus;
use crate::controllers::trust_domain::probe::MemberProbe;
use crate::error::Backoff;
use crate::events::Events;
use crate::rbac::{self, Grant};
use crate::telemetry::Metrics;

pub use link::FakeLink;
pub use probe::FakeProbe;

/// How long a test waits for the next request before failing.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Monday 2 March 2026, 10:00:00 UTC: the fixed "now" of scenario tests.
pub fn monday_10_utc() -> Timestamp {
    "2026-03-02T10:00:00Z".parse().expect("valid timestamp")
}

/// A context around a mocked API server, with the fixed clock
/// [`monday_10_utc`], a probe that finds every member reachable, and a
/// backoff starting at 5 s.
pub fn context() -> (Arc<Context>, ApiServerVerifier) {
    context_with(
        Clock::Fixed(monday_10_utc()),
        Arc::new(FakeProbe::all_reachable()),
    )
}

/// [`context`] with a chosen clock and member probe.
pub fn context_with(
    clock: Clock,
    prober: Arc<dyn MemberProbe>,
) -> (Arc<Context>, ApiServerVerifier) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let mut registry = Registry::default();
    let ctx = Context {
        events: Events::new(client.clone(), Some("modelpub-operator-0".into())),
        client,
        metrics: Metrics::new(&mut registry),
        config: Config::default(),
        // Exact delays, so scenarios can assert the requeue.
        backoff: Backoff::exact(Duration::from_secs(5), Duration::from_secs(300)),
        clock,
        prober,
        aggregator_status: Arc::new(FixedStatus(Err("no aggregator in this test".into()))),
        peering: Arc::new(crate::federation::client::NetworkLink::default()),
        refusals: Arc::default(),
    };
    (
        Arc::new(ctx),
        ApiServerVerifier {
            handle,
            seen: BTreeSet::new(),
            registry,
        },
    )
}

/// Plays the API server: hands out the client's requests one by one.
pub struct ApiServerVerifier {
    handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
    seen: BTreeSet<Grant>,
    registry: Registry,
}

/// One request the client made, waiting for its response.
pub struct Exchange {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// The JSON body (`Value::Null` when empty).
    pub body: Value,
    pub grant: Grant,
    send: tower_test::mock::SendResponse<Response<Body>>,
}

impl ApiServerVerifier {
    /// The next request, whatever it is. Panics when none comes within 10 s
    /// or when RBAC's REQUIRED does not grant it.
    pub async fn next(&mut self) -> Exchange {
        let (request, send) = tokio::time::timeout(REQUEST_TIMEOUT, self.handle.next_request())
            .await
            .expect("timed out waiting for the next API request")
            .expect("the client was dropped before making the expected request");
        let method = request.method().to_string();
        let path = request.uri().path().to_string();
        let query = request.uri().query().map(str::to_string);
        let bytes = request
            .into_body()
            .collect_bytes()
            .await
            .expect("request body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("request body is JSON")
        };
        let grant =
            rbac::classify(&method, &path, query.as_deref()).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            rbac::is_allowed(&grant),
            "request {method} {path} needs `{grant}`, which rbac::REQUIRED does not grant"
        );
        self.seen.insert(grant.clone());
        Exchange {
            method,
            path,
            query,
            body,
            grant,
            send,
        }
    }

    /// The next request, asserting its method and path (without query).
    pub async fn expect(&mut self, method: &str, path: &str) -> Exchange {
        let ex = self.next().await;
        assert_eq!(
            (ex.method.as_str(), ex.path.as_str()),
            (method, path),
            "unexpected request (query {:?}, body {})",
            ex.query,
            ex.body
        );
        ex
    }

    /// Expects the event recorder's POST of an event on an object in
    /// `namespace`, asserting its type (`Normal`/`Warning`) and reason;
    /// answers 201 and returns the event body.
    pub async fn expect_event(&mut self, namespace: &str, type_: &str, reason: &str) -> Value {
        let ex = self
            .expect(
                "POST",
                &format!("/apis/events.k8s.io/v1/namespaces/{namespace}/events"),
            )
            .await;
        assert_eq!(ex.body["type"], type_, "event {}", ex.body);
        assert_eq!(ex.body["reason"], reason, "event {}", ex.body);
        let body = ex.body.clone();
        ex.echo(201);
        body
    }

    /// The context's metrics as Prometheus text, to assert on
    /// `modelpub_reconcile_*` series.
    pub fn metrics_text(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("metrics encode");
        text
    }

    /// Every grant exercised so far (for scenarios that never finish, such
    /// as a running controller or election).
    pub fn seen(&self) -> &BTreeSet<Grant> {
        &self.seen
    }

    /// Waits for the reconcile `task` to end, asserts the client made no
    /// request beyond those answered, and returns the task's result and
    /// every grant the scenario exercised.
    pub async fn finish<T>(mut self, task: tokio::task::JoinHandle<T>) -> (T, BTreeSet<Grant>) {
        let out = tokio::time::timeout(REQUEST_TIMEOUT, task)
            .await
            .expect("the reconcile did not finish")
            .expect("the reconcile panicked");
        if let Ok(Some((request, _))) =
            tokio::time::timeout(Duration::from_millis(50), self.handle.next_request()).await
        {
            panic!(
                "unexpected extra request {} {}",
                request.method(),
                request.uri()
            );
        }
        (out, self.seen)
    }
}

impl Exchange {
    /// True when the query string has `key=value` (URL-encoded as sent).
    pub fn query_has(&self, pair: &str) -> bool {
        self.query
            .as_deref()
            .is_some_and(|q| q.split('&').any(|kv| kv == pair))
    }

    /// Answers with `status` and `body` as JSON.
    pub fn respond(self, status: u16, body: &impl Serialize) {
        let bytes = serde_json::to_vec(body).expect("serializable response");
        let response = Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(bytes))
            .expect("valid response");
        self.send.send_response(response);
    }

    /// Answers `status` with the request's own body (what a create or an
    /// apply would store, near enough for the client).
    pub fn echo(self, status: u16) {
        let body = self.body.clone();
        self.respond(status, &body);
    }

    /// Leaves the request unanswered for as long as the returned value
    /// lives (a watch that has nothing to report yet).
    pub fn hold(self) -> Held {
        Held {
            _pending: self.send,
        }
    }

    /// Answers 404 NotFound with a Kubernetes Status.
    pub fn not_found(self) {
        let body = status_body(404, "NotFound", &format!("{} not found", self.path));
        self.respond(404, &body);
    }

    /// Answers 409 AlreadyExists with a Kubernetes Status.
    pub fn already_exists(self) {
        let body = status_body(
            409,
            "AlreadyExists",
            &format!("{} already exists", self.path),
        );
        self.respond(409, &body);
    }

    /// Answers `code` with a failure Status (e.g. 500, 403).
    pub fn fail(self, code: u16, reason: &str) {
        let body = status_body(code, reason, "injected failure");
        self.respond(code, &body);
    }
}

/// An unanswered request; see [`Exchange::hold`].
pub struct Held {
    _pending: tower_test::mock::SendResponse<Response<Body>>,
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}
