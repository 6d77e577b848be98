//! The ComputeOffer controller: is the GPU time this cluster lends really
//! there, and is the offer open now?
//!
//! Pipeline per reconcile (inside the `modelpub.io/cleanup` finalizer):
//! validate ([`validate`]: windows, time zones, quantities; an invalid spec
//! closes the offer naming the field) → dereference the TrustDomain it
//! lends to (missing: closed, `TrustDomainNotFound`, retried with backoff)
//! → list the Nodes matching `nodeSelector` and sum their allocatable
//! `nvidia.com/gpu`, CPU and memory ([`capacity`]) → evaluate the schedule
//! now ([`schedule`]) → status ([`status`]) → requeue when the schedule
//! next flips, and at least every 5 minutes to see node changes. A Normal
//! Event marks each opening and closing. Cleanup withdraws the offer (there
//! is nothing to delete; leases are released by their borrowers' rounds).

pub mod capacity;
pub mod schedule;
pub mod status;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::Event;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use modelpub_crds::{ComputeOffer, TrustDomain};

use crate::apply;
use crate::context::Context;
use crate::controllers::{drive, reconcile_with_finalizer};
use crate::error::Error;
use crate::labels::selector_from_map;
use crate::scope::api_in;

/// The `controller` label of this controller's metrics.
pub const CONTROLLER: &str = "computeoffer";

/// Nodes are not watched: capacity is looked at again this often.
pub const CAPACITY_REFRESH: Duration = Duration::from_secs(300);

/// The controller: ComputeOffers in `namespace` (every namespace for `None`), reconciled again when
/// the TrustDomain they name changes (or appears). Its status is a pure
/// function of spec, nodes and the clock's schedule position, so writing
/// it again unchanged is a no-op that triggers nothing.
pub fn controller(client: Client, namespace: Option<&str>) -> Controller<ComputeOffer> {
    let controller = Controller::new(
        api_in::<ComputeOffer>(&client, namespace),
        watcher::Config::default(),
    );
    let offers = controller.store();
    controller.watches(
        api_in::<TrustDomain>(&client, namespace),
        watcher::Config::default(),
        move |td| offers_of(&td, &offers.state()),
    )
}

/// The offers (among `offers`) that lend to `td`: same namespace, naming
/// it in `spec.trustDomain`.
pub fn offers_of(td: &TrustDomain, offers: &[Arc<ComputeOffer>]) -> Vec<ObjectRef<ComputeOffer>> {
    offers
        .iter()
        .filter(|co| co.spec.trust_domain == td.name_any() && co.namespace() == td.namespace())
        .map(|co| ObjectRef::from_obj(co.as_ref()))
        .collect()
}

/// Runs the controller, one per watched namespace, until its watches end.
pub async fn run(ctx: Arc<Context>) {
    let each = ctx.config.scope.namespaces().into_iter().map(|ns| {
        let controller = controller(ctx.client.clone(), ns.as_deref());
        drive(CONTROLLER, controller, reconcile, ctx.clone())
    });
    futures::future::join_all(each).await;
}

/// One reconcile of `co`.
pub async fn reconcile(co: Arc<ComputeOffer>, ctx: Arc<Context>) -> Result<Action, Error> {
    let inner = ctx.clone();
    reconcile_with_finalizer(CONTROLLER, co, &ctx, move |event| async move {
        match event {
            Event::Apply(co) => apply(&co, &inner).await,
            Event::Cleanup(co) => cleanup(&co, &inner).await,
        }
    })
    .await
}

/// How long until the next look: when the schedule flips (at least 1 s
/// away), but never later than [`CAPACITY_REFRESH`].
pub fn requeue_after(next_change: Option<Timestamp>, now: Timestamp) -> Duration {
    next_change
        .map(|t| {
            let secs = t.duration_since(now).as_secs().max(1);
            Duration::from_secs(u64::try_from(secs).unwrap_or(1))
        })
        .unwrap_or(CAPACITY_REFRESH)
        .min(CAPACITY_REFRESH)
}

async fn apply(co: &ComputeOffer, ctx: &Context) -> Result<Action, Error> {
    let ns = co.namespace().unwrap_or_default();
    let name = co.name_any();
    let offers: Api<ComputeOffer> = Api::namespaced(ctx.client.clone(), &ns);
    let valid = match validate::validate(&co.spec) {
        Ok(v) => v,
        Err(errors) => {
            let status = status::invalid(co, &errors, ctx.clock.now_time());
            apply::apply_status(&offers, Some(&ns), &name, &status).await?;
            return Err(Error::InvalidSpec(errors));
        }
    };

    let tds: Api<TrustDomain> = Api::namespaced(ctx.client.clone(), &ns);
    if apply::get_opt(&tds, Some(&ns), &co.spec.trust_domain)
        .await?
        .is_none()
    {
        let message = format!("TrustDomain {ns}/{} not found", co.spec.trust_domain);
        let status = status::not_ready(
            co,
            "TrustDomainNotFound",
            message.clone(),
            ctx.clock.now_time(),
        );
        apply::apply_status(&offers, Some(&ns), &name, &status).await?;
        return Err(Error::MissingReference(message));
    }

    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let params = match selector_from_map(&co.spec.resources.node_selector) {
        Some(selector) => ListParams::default().labels(&selector),
        None => ListParams::default(),
    };
    let listed = nodes
        .list(&params)
        .await
        .map_err(Error::kube("list Nodes"))?;
    let seen = capacity::capacity(&listed.items);

    let now = ctx.clock.now();
    let schedule = schedule::open_now(&valid.windows, now);
    let status = status::observed(co, &valid, &seen, &schedule, ctx.clock.now_time());
    apply::apply_status(&offers, Some(&ns), &name, &status).await?;
    if let Some(before) = &co.status
        && before.open_now != status.open_now
    {
        let (reason, note) = if status.open_now {
            (
                "OfferOpened",
                "offer is open: inside a window with capacity".to_string(),
            )
        } else {
            ("OfferClosed", status.reason.clone().unwrap_or_default())
        };
        ctx.events.normal(co, reason, "EvaluateOffer", note).await;
    }
    Ok(Action::requeue(requeue_after(schedule.next_change, now)))
}

async fn cleanup(co: &ComputeOffer, ctx: &Context) -> Result<Action, Error> {
    ctx.events
        .normal(
            co,
            "OfferWithdrawn",
            "WithdrawOffer",
            format!(
                "offer to trust domain {} withdrawn: no new leases",
                co.spec.trust_domain
            ),
        )
        .await;
    Ok(Action::await_change())
}

#[cfg(test)]
pub(crate) mod tests;
