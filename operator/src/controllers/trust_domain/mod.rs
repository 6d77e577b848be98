//! The TrustDomain controller: this cluster's federation identity.
//!
//! Pipeline per reconcile (inside the `modelpub.io/cleanup` finalizer):
//! validate the spec ([`validate`]; an invalid spec sets `Ready=False`
//! naming the field, and fails the reconcile so a Warning Event explains
//! it) → dereference the key Secrets `<td>-identity` and `<td>-ca`,
//! creating each only when missing ([`build`]; a POST that tolerates
//! AlreadyExists, never an apply: key material is never overwritten) →
//! probe every member ([`probe`]) → status ([`status`]: fingerprint, public
//! key, join token, members, `Ready`) → requeue in 60 s to probe again.
//! Cleanup deletes the two Secrets.

pub mod build;
pub mod join_token;
pub mod peers;
pub mod probe;
pub mod status;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::Event;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use modelpub_crds::TrustDomain;

use self::build::KeySecret;
use self::peers::Trust;
use crate::apply::{self, Created, describe};
use crate::context::Context;
use crate::controllers::{drive, reconcile_with_finalizer};
use crate::error::Error;
use crate::federation::domain::LocalDomain;
use crate::identity::{self, CA_CRT, SecretData};
use crate::labels;
use crate::scope::api_in;

/// The `controller` label of this controller's metrics.
pub const CONTROLLER: &str = "trustdomain";

/// How often members are probed again while nothing changes.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(60);

/// The controller: TrustDomains in `namespace` (every namespace for
/// `None`), and the Secrets they own (only those the operator manages, not
/// every Secret).
pub fn controller(client: Client, namespace: Option<&str>) -> Controller<TrustDomain> {
    Controller::new(
        api_in::<TrustDomain>(&client, namespace),
        watcher::Config::default(),
    )
    .owns(
        api_in::<Secret>(&client, namespace),
        watcher::Config::default().labels(&labels::managed_selector()),
    )
}

/// Runs the controller, one per watched namespace, until its watches end.
pub async fn run(ctx: Arc<Context>) {
    let each = ctx.config.scope.namespaces().into_iter().map(|ns| {
        let controller = controller(ctx.client.clone(), ns.as_deref());
        drive(CONTROLLER, controller, reconcile, ctx.clone())
    });
    futures::future::join_all(each).await;
}

/// One reconcile of `td`.
pub async fn reconcile(td: Arc<TrustDomain>, ctx: Arc<Context>) -> Result<Action, Error> {
    let inner = ctx.clone();
    reconcile_with_finalizer(CONTROLLER, td, &ctx, move |event| async move {
        match event {
            Event::Apply(td) => apply(&td, &inner).await,
            Event::Cleanup(td) => cleanup(&td, &inner).await,
        }
    })
    .await
}

async fn apply(td: &TrustDomain, ctx: &Context) -> Result<Action, Error> {
    let ns = td.namespace().unwrap_or_default();
    let name = td.name_any();
    let tds: Api<TrustDomain> = Api::namespaced(ctx.client.clone(), &ns);
    if let Err(errors) = validate::validate(&name, &td.spec) {
        let status = status::invalid(td, &errors, ctx.clock.now_time());
        apply::apply_status(&tds, Some(&ns), &name, &status).await?;
        return Err(Error::InvalidSpec(errors));
    }

    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let identity_data = ensure_key_secret(td, KeySecret::Identity, &secrets, ctx).await?;
    let ca_data = ensure_key_secret(td, KeySecret::Ca, &secrets, ctx).await?;

    let identity_name = build::identity_secret_name(&name);
    let identity_what = describe::<Secret>(Some(&ns), &identity_name);
    let identity = identity::identity_from_data(&identity_what, &identity_data)?;
    if identity.name() != td.spec.self_.name {
        return Err(Error::identity(
            identity_what,
            format!(
                "holds the identity of {:?} but spec.self.name is {:?}; delete the Secret to issue a new identity",
                identity.name(),
                td.spec.self_.name
            ),
        ));
    }
    let ca_what = describe::<Secret>(Some(&ns), &build::ca_secret_name(&name));
    let ca_pem = ca_data
        .get(CA_CRT)
        .and_then(|b| std::str::from_utf8(&b.0).ok())
        .ok_or_else(|| Error::identity(&ca_what, format!("has no UTF-8 `{CA_CRT}`")))?;
    let federation = td.federation_name();
    let now = ctx.clock.now().as_second();
    let ca_fingerprint = identity::certificate_fingerprint(&ca_what, ca_pem)?;
    let facts = join_token::TokenFacts {
        federation: &federation,
        endpoint: &td.spec.self_.endpoint,
        ca_certificate: ca_pem,
        ca_fingerprint: &ca_fingerprint,
        expires: 0,
    };
    let previous = td.status.as_ref();
    let issued = status::Issued {
        public: identity.public(),
        join_token: status::join_token(
            previous.and_then(|s| s.join_token.as_deref()),
            &identity,
            &facts,
            now,
        ),
        ca_fingerprint,
        identity_secret_name: identity_name,
    };

    let verdicts: Vec<Trust> = td
        .spec
        .members
        .iter()
        .map(|m| {
            let before = previous.and_then(|s| s.members.iter().find(|p| p.name == m.name));
            peers::resolve(m, &federation, before, now)
        })
        .collect();
    announce_verdicts(td, &verdicts, ctx).await;
    let us = LocalDomain::from_parts(
        td,
        (&identity_what, &identity_data),
        (&ca_what, &ca_data),
        now,
    )?;
    let us = &us;
    let probes = futures::future::join_all(verdicts.into_iter().map(|v| async move {
        match v {
            Trust::Trusted(peer) => {
                let outcome = ctx.prober.probe(us, &peer).await;
                status::Observed::Probed(peer, outcome)
            }
            Trust::Refused(r) => status::Observed::Refused(r),
        }
    }))
    .await;

    let mut status = status::issued(td, &issued, &probes, ctx.clock.now_time());
    status.refused_peers = ctx.refusals.of(&ns, &name);
    // Our own status write triggers the next reconcile at once; writing
    // only what changed (or probe times gone stale) ends that chain.
    if status::needs_write(td.status.as_ref(), &status, ctx.clock.now(), PROBE_INTERVAL) {
        apply::apply_status(&tds, Some(&ns), &name, &status).await?;
    }
    Ok(Action::requeue(PROBE_INTERVAL))
}

/// A Warning Event for each member whose join token is newly refused (or
/// refused for a new reason), a Normal one for each newly accepted token.
/// Unchanged verdicts say nothing: the reconcile runs every minute.
async fn announce_verdicts(td: &TrustDomain, verdicts: &[Trust], ctx: &Context) {
    let previous = td
        .status
        .as_ref()
        .map(|s| s.members.as_slice())
        .unwrap_or(&[]);
    for verdict in verdicts {
        let before = previous.iter().find(|p| p.name == verdict.name());
        match verdict {
            Trust::Refused(r) => {
                let message = r.error.to_string();
                if before.is_some_and(|b| !b.trusted && b.message.as_deref() == Some(&message)) {
                    continue;
                }
                ctx.events
                    .warning(
                        td,
                        r.error.reason(),
                        "AcceptJoinToken",
                        format!("refused member {}: {message}", r.name),
                    )
                    .await;
            }
            Trust::Trusted(p) if p.reason == peers::TOKEN_ACCEPTED => {
                if before.is_some_and(|b| b.accepted_token_sha256 == p.accepted_token_sha256) {
                    continue;
                }
                ctx.events
                    .normal(
                        td,
                        peers::TOKEN_ACCEPTED,
                        "AcceptJoinToken",
                        format!(
                            "trusting member {} by its join token, pinned to {}",
                            p.name,
                            p.fingerprint.as_deref().unwrap_or("?")
                        ),
                    )
                    .await;
            }
            Trust::Trusted(_) => {}
        }
    }
}

/// The data of `kind`'s Secret: read when it exists, otherwise generated,
/// created (tolerating a concurrent creator) and announced with an Event.
async fn ensure_key_secret(
    td: &TrustDomain,
    kind: KeySecret,
    secrets: &Api<Secret>,
    ctx: &Context,
) -> Result<SecretData, Error> {
    let ns = td.namespace();
    let name = kind.name(&td.name_any());
    if let Some(existing) = apply::get_opt(secrets, ns.as_deref(), &name).await? {
        return Ok(existing.data.unwrap_or_default());
    }
    let secret = build::key_secret(td, kind, kind.generate(&td.spec.self_.name)?);
    match apply::create_if_missing(secrets, &secret).await? {
        Created::Created(_) => {
            ctx.events
                .normal(
                    td,
                    kind.created_reason(),
                    "CreateSecret",
                    format!("created Secret {name} for {}", td.spec.self_.name),
                )
                .await;
            Ok(secret.data.unwrap_or_default())
        }
        Created::Existed(existing) => Ok(existing.data.unwrap_or_default()),
    }
}

async fn cleanup(td: &TrustDomain, ctx: &Context) -> Result<Action, Error> {
    let ns = td.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let mut deleted = Vec::new();
    for kind in KeySecret::ALL {
        let name = kind.name(&td.name_any());
        if apply::delete_if_exists(&secrets, Some(&ns), &name).await? {
            deleted.push(name);
        }
    }
    if !deleted.is_empty() {
        ctx.events
            .normal(
                td,
                "IdentityDeleted",
                "DeleteSecret",
                format!("deleted Secret {}", deleted.join(", ")),
            )
            .await;
    }
    Ok(Action::await_change())
}

#[cfg(test)]
pub(crate) mod tests;
