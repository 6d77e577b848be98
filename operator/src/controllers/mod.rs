//! The controllers, and what they share: the reconcile wrapper (metrics,
//! finalizer, Warning Event on failure, backoff reset), the error policy
//! (per-object exponential backoff) and [`run_all`].

pub mod compute_offer;
pub mod federation_round;
pub mod trust_domain;

use std::fmt::Debug;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{self, finalizer};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::FINALIZER;
use crate::apply::Object;
use crate::context::Context;
use crate::error::Error;

/// `namespace/name`, the backoff key of an object.
pub fn object_key<K: Resource>(obj: &K) -> String {
    format!(
        "{}/{}",
        obj.meta().namespace.as_deref().unwrap_or(""),
        obj.meta().name.as_deref().unwrap_or("")
    )
}

/// Runs one reconcile of `obj` the way every ModelPub controller does:
/// counts it in `modelpub_reconcile_*{controller}`, runs `reconcile`
/// inside the `modelpub.io/cleanup` finalizer (`Event::Apply` normally,
/// `Event::Cleanup` once the object is being deleted; adding the finalizer
/// is a reconcile of its own), and on failure counts the error reason and
/// publishes a Warning Event naming the cause. A success resets the
/// object's backoff.
pub async fn reconcile_with_finalizer<K, Fut>(
    controller: &'static str,
    obj: Arc<K>,
    ctx: &Context,
    reconcile: impl FnOnce(finalizer::Event<K>) -> Fut,
) -> Result<Action, Error>
where
    K: Object + kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    Fut: Future<Output = Result<Action, Error>>,
{
    let run = ctx.metrics.reconcile_started(controller);
    let namespace = obj.namespace().unwrap_or_default();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    let key = object_key(obj.as_ref());
    let result = finalizer(&api, FINALIZER, obj.clone(), reconcile)
        .await
        .map_err(Error::from);
    match &result {
        Ok(_) => ctx.backoff.succeeded(&key),
        Err(e) => {
            run.failed(e.reason());
            let cause = e.root().to_string();
            tracing::warn!(controller, object = %key, reason = e.reason(), "reconcile failed: {cause}");
            ctx.events
                .warning(obj.as_ref(), e.event_reason(), "Reconcile", cause)
                .await;
        }
    }
    result
}

/// Runs `controller` with `reconcile` until its watches end, registering
/// its metric families first; per-object failures are already counted,
/// logged as Events and requeued by [`error_policy`], so here they are
/// only traced.
pub async fn drive<K, Fut>(
    name: &'static str,
    controller: Controller<K>,
    reconcile: impl FnMut(Arc<K>, Arc<Context>) -> Fut,
    ctx: Arc<Context>,
) where
    K: Clone + Resource + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Debug + Unpin + Eq + Hash + Clone,
    Fut: Future<Output = Result<Action, Error>> + Send + 'static,
{
    ctx.metrics.register_controller(name);
    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!("{name} controller: {e}");
            }
        })
        .await;
}

/// Error policy of every controller: retry after the object's next
/// exponential backoff delay (5 s doubling to 5 min).
pub fn error_policy<K: Resource>(obj: Arc<K>, _error: &Error, ctx: Arc<Context>) -> Action {
    Action::requeue(ctx.backoff.failed(&object_key(obj.as_ref())))
}

/// Runs every controller until one of them stops (they run until their
/// watch streams end, i.e. for the life of the process). Dropping the
/// returned future stops them all: the leader gate does that when the
/// lease is lost.
pub async fn run_all(ctx: Arc<Context>) {
    tokio::join!(
        trust_domain::run(ctx.clone()),
        compute_offer::run(ctx.clone()),
        federation_round::run(ctx.clone()),
    );
}

#[cfg(test)]
pub(crate) mod tests {
    //! The controllers' watches against the mocked API: what each lists and
    //! watches, so those grants are checked like every reconcile request.

    use std::collections::BTreeSet;
    use std::time::Duration;

    use futures::StreamExt;
    use serde_json::json;

    use super::{compute_offer, error_policy, federation_round, trust_domain};
    use crate::rbac::Grant;
    use crate::testing;

    /// Runs both controllers against the mocked API until each expected
    /// (method, path, verb) was seen: initial LISTs answered empty, WATCHes
    /// left open. Returns the grants exercised.
    pub(crate) async fn exercised() -> BTreeSet<Grant> {
        let (ctx, mut api) = testing::context();
        let td = trust_domain::controller(ctx.client.clone(), None)
            .run(trust_domain::reconcile, error_policy, ctx.clone())
            .for_each(|_| async {});
        let co = compute_offer::controller(ctx.client.clone(), None)
            .run(compute_offer::reconcile, error_policy, ctx.clone())
            .for_each(|_| async {});
        let fr = federation_round::controller(ctx.client.clone(), None)
            .run(federation_round::reconcile, error_policy, ctx.clone())
            .for_each(|_| async {});
        let running = tokio::spawn(async move { tokio::join!(td, co, fr) });
        let expected: BTreeSet<(String, String)> = [
            "list /apis/modelpub.io/v1alpha1/trustdomains",
            "watch /apis/modelpub.io/v1alpha1/trustdomains",
            "list /apis/modelpub.io/v1alpha1/computeoffers",
            "watch /apis/modelpub.io/v1alpha1/computeoffers",
            "list /apis/modelpub.io/v1alpha1/federationrounds",
            "watch /apis/modelpub.io/v1alpha1/federationrounds",
            "list /api/v1/secrets",
            "watch /api/v1/secrets",
            "list /apis/apps/v1/deployments",
            "watch /apis/apps/v1/deployments",
            "list /apis/batch/v1/jobs",
            "watch /apis/batch/v1/jobs",
        ]
        .iter()
        .map(|s| {
            let (verb, path) = s.split_once(' ').unwrap();
            (verb.to_string(), path.to_string())
        })
        .collect();
        let mut seen = BTreeSet::new();
        let mut held = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !expected.is_subset(&seen) {
            assert!(tokio::time::Instant::now() < deadline, "saw only {seen:?}");
            let ex = api.next().await;
            let owned = [
                "/api/v1/secrets",
                "/apis/apps/v1/deployments",
                "/apis/batch/v1/jobs",
            ];
            if owned.contains(&ex.path.as_str()) {
                assert!(
                    ex.query_has(
                        "labelSelector=app.kubernetes.io%2Fmanaged-by%3Dmodelpub-operator"
                    ),
                    "owned children are watched by label only: {} {:?}",
                    ex.path,
                    ex.query
                );
            }
            seen.insert((ex.grant.verb.clone(), ex.path.clone()));
            if ex.grant.verb == "list" {
                ex.respond(
                    200,
                    &json!({"metadata": {"resourceVersion": "1"}, "items": []}),
                );
            } else {
                held.push(ex.hold());
            }
        }
        running.abort();
        api.seen().clone()
    }

    #[tokio::test]
    async fn controllers_list_and_watch_what_they_reconcile() {
        let grants = exercised().await;
        let verbs: BTreeSet<String> = grants.iter().map(|g| format!("{g}")).collect();
        assert!(verbs.contains("watch core/secrets"), "{verbs:?}");
        assert!(
            verbs.contains("list modelpub.io/computeoffers"),
            "{verbs:?}"
        );
    }
}
