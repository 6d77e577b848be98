//! Writing children and status: server-side apply under one field manager
//! ([`crate::FIELD_MANAGER`], forced: the operator owns what it builds),
//! create-only for key material that must never be overwritten, and
//! deletion of orphans (children a spec no longer asks for) by label.
//!
//! Every function names the object in its error, e.g.
//! `apply Deployment ns/fr-aggregator: ...`.

use std::collections::BTreeSet;
use std::fmt::Debug;

use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::FIELD_MANAGER;
use crate::error::{Error, is_conflict, is_not_found};

/// Bound for objects this module reads and writes (every k8s-openapi type
/// and every ModelPub custom resource).
pub trait Object:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug + Send + Sync + 'static
{
}

impl<K> Object for K where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + Debug
        + Send
        + Sync
        + 'static
{
}

/// `Kind ns/name` (or `Kind name` when cluster-scoped), for messages.
pub fn describe<K: Object>(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{} {ns}/{name}", K::kind(&())),
        None => format!("{} {name}", K::kind(&())),
    }
}

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Server-side applies `obj` (it must carry `metadata.name`; its namespace
/// is the `api`'s). Forced, so the operator takes back any field another
/// manager changed. Returns the object as stored.
pub async fn apply<K: Object>(api: &Api<K>, obj: &K) -> Result<K, Error> {
    let name = obj.name_any();
    let what = describe::<K>(obj.namespace().as_deref(), &name);
    api.patch(&name, &apply_params(), &Patch::Apply(obj))
        .await
        .map_err(Error::kube(format!("apply {what}")))
}

/// Server-side applies `status` to the `/status` subresource of `name`:
/// the body is `{apiVersion, kind, status}` so the operator owns exactly
/// the status fields it sets.
pub async fn apply_status<K: Object, S: Serialize>(
    api: &Api<K>,
    namespace: Option<&str>,
    name: &str,
    status: &S,
) -> Result<K, Error> {
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(name, &apply_params(), &Patch::Apply(&body))
        .await
        .map_err(Error::kube(format!(
            "apply status of {}",
            describe::<K>(namespace, name)
        )))
}

/// What [`create_if_missing`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Created<K> {
    /// We created it now.
    Created(K),
    /// It was there already (possibly created by a concurrent reconcile);
    /// this is what is stored, untouched.
    Existed(K),
}

impl<K> Created<K> {
    pub fn into_inner(self) -> K {
        match self {
            Created::Created(k) | Created::Existed(k) => k,
        }
    }

    pub fn was_created(&self) -> bool {
        matches!(self, Created::Created(_))
    }
}

/// Creates `obj` with a POST unless an object of that name exists; never
/// changes an existing one (key material must not be overwritten). A 409
/// from a concurrent creator reads the winner back.
pub async fn create_if_missing<K: Object>(api: &Api<K>, obj: &K) -> Result<Created<K>, Error> {
    let name = obj.name_any();
    let what = describe::<K>(obj.namespace().as_deref(), &name);
    match api.create(&PostParams::default(), obj).await {
        Ok(created) => Ok(Created::Created(created)),
        Err(e) if is_conflict(&e) => api
            .get(&name)
            .await
            .map(Created::Existed)
            .map_err(Error::kube(format!("get {what} after AlreadyExists"))),
        Err(e) => Err(Error::kube(format!("create {what}"))(e)),
    }
}

/// Reads `name`, `None` when it does not exist.
pub async fn get_opt<K: Object>(
    api: &Api<K>,
    namespace: Option<&str>,
    name: &str,
) -> Result<Option<K>, Error> {
    api.get_opt(name).await.map_err(Error::kube(format!(
        "get {}",
        describe::<K>(namespace, name)
    )))
}

/// Deletes `name` (background propagation, so a Job's pods go too).
/// Returns false when it was already gone.
pub async fn delete_if_exists<K: Object>(
    api: &Api<K>,
    namespace: Option<&str>,
    name: &str,
) -> Result<bool, Error> {
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(Error::kube(format!(
            "delete {}",
            describe::<K>(namespace, name)
        ))(e)),
    }
}

/// Lists the objects matching `selector` and deletes those whose name is
/// not in `keep`: children an earlier spec asked for and this one does
/// not. Returns the names deleted, sorted.
pub async fn delete_orphans<K: Object>(
    api: &Api<K>,
    namespace: Option<&str>,
    selector: &str,
    keep: &BTreeSet<String>,
) -> Result<Vec<String>, Error> {
    let listed = api
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(Error::kube(format!(
            "list {} {selector} in {}",
            K::plural(&()),
            namespace.unwrap_or("all namespaces")
        )))?;
    let mut orphans: Vec<String> = listed
        .items
        .iter()
        .map(ResourceExt::name_any)
        .filter(|n| !keep.contains(n))
        .collect();
    orphans.sort();
    for name in &orphans {
        delete_if_exists(api, namespace, name).await?;
    }
    Ok(orphans)
}
