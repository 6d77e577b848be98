//! The controllers a real control plane runs for deletion, as one loop:
//! - garbage collection: an object whose owners (ownerReferences by uid)
//!   are all gone is deleted; dangling references are dropped while some
//!   owner remains;
//! - propagation policies: an owner deleted with `Foreground` keeps its
//!   `foregroundDeletion` finalizer until its dependents are gone; with
//!   `Orphan` its dependents lose their reference to it, then its `orphan`
//!   finalizer is removed;
//! - namespace deletion: a Terminating namespace's content is deleted, then
//!   the namespace;
//! - custom resources whose CRD was deleted are removed.
//!
//! It runs after writes that may need it (and once a second), so, as on a
//! real cluster, collection is asynchronous: tests wait for it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;

use super::ServerState;
use super::handlers::{Propagation, delete_stored, finish_if_released};
use super::store::{StoreKey, resource_version};

pub async fn run(state: Arc<ServerState>, mut stopped: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = state.gc.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stopped.changed() => return,
        }
        // Each pass acts on a snapshot; repeat until nothing is left to do.
        for _ in 0..100 {
            if !pass(&state) {
                break;
            }
        }
    }
}

fn str_at<'a>(o: &'a Value, pointer: &str) -> &'a str {
    o.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn deleting(o: &Value) -> bool {
    o.pointer("/metadata/deletionTimestamp").is_some()
}

fn has_finalizer(o: &Value, f: &str) -> bool {
    o.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|fs| fs.iter().any(|x| x.as_str() == Some(f)))
}

fn owner_uids(o: &Value) -> Vec<String> {
    o.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Rewrites an object's metadata field; a lost race is retried next pass.
fn rewrite(state: &ServerState, key: &StoreKey, o: &Value, edit: impl FnOnce(&mut Value)) -> bool {
    let mut new = o.clone();
    edit(&mut new);
    let ns = str_at(o, "/metadata/namespace");
    let name = str_at(o, "/metadata/name");
    match state
        .store
        .update(key, ns, name, new, resource_version(o).unwrap_or(0))
    {
        Ok(updated) => {
            finish_if_released(state, key, updated);
            true
        }
        Err(_) => false,
    }
}

fn delete(state: &ServerState, key: &StoreKey, o: &Value) -> bool {
    !deleting(o) && delete_stored(state, key, o, Propagation::Background).is_ok()
}

/// One round over a snapshot; true when it changed something.
fn pass(state: &ServerState) -> bool {
    let all = state.store.all();
    let by_uid: HashMap<&str, &Value> = all
        .iter()
        .map(|(_, o)| (str_at(o, "/metadata/uid"), o))
        .collect();
    let mut dependents: HashMap<String, usize> = HashMap::new();
    for (_, o) in &all {
        for uid in owner_uids(o) {
            *dependents.entry(uid).or_default() += 1;
        }
    }
    let served: HashSet<(String, String)> = state
        .resources()
        .into_iter()
        .map(|r| r.store_key())
        .collect();
    let terminating: HashSet<&str> = all
        .iter()
        .filter(|(k, o)| k.0.is_empty() && k.1 == "namespaces" && deleting(o))
        .map(|(_, o)| str_at(o, "/metadata/name"))
        .collect();
    let mut changed = false;
    for (key, o) in &all {
        let ns = str_at(o, "/metadata/namespace");
        let uid = str_at(o, "/metadata/uid");
        // Custom resources of a deleted CRD.
        if !served.contains(key) {
            changed |= state
                .store
                .remove(key, ns, str_at(o, "/metadata/name"), None)
                .is_ok();
            continue;
        }
        // Content of a terminating namespace.
        if !ns.is_empty() && terminating.contains(ns) {
            changed |= delete(state, key, o);
            continue;
        }
        // Namespaces whose content is gone.
        if key.0.is_empty() && key.1 == "namespaces" && deleting(o) {
            let name = str_at(o, "/metadata/name");
            let empty = !all
                .iter()
                .any(|(_, x)| str_at(x, "/metadata/namespace") == name);
            if empty {
                changed |= rewrite(state, key, o, |n| {
                    n["spec"]["finalizers"] = json!([]);
                });
            }
            continue;
        }
        // Owners being deleted in the foreground or orphaning.
        if deleting(o) && dependents.get(uid).copied().unwrap_or(0) == 0 {
            for f in ["foregroundDeletion", "orphan"] {
                if has_finalizer(o, f) {
                    changed |= rewrite(state, key, o, |n| {
                        if let Some(fs) = n["metadata"]["finalizers"].as_array_mut() {
                            fs.retain(|x| x.as_str() != Some(f));
                        }
                    });
                    break;
                }
            }
        }
        let owners = owner_uids(o);
        if owners.is_empty() {
            continue;
        }
        let live: Vec<&&Value> = owners
            .iter()
            .filter_map(|u| by_uid.get(u.as_str()))
            .collect();
        let orphaning: Vec<String> = live
            .iter()
            .filter(|owner| deleting(owner) && has_finalizer(owner, "orphan"))
            .map(|owner| str_at(owner, "/metadata/uid").to_string())
            .collect();
        if live.is_empty() {
            changed |= delete(state, key, o);
        } else if !orphaning.is_empty() || live.len() < owners.len() {
            let keep: Vec<String> = live
                .iter()
                .map(|owner| str_at(owner, "/metadata/uid").to_string())
                .filter(|u| !orphaning.contains(u))
                .collect();
            changed |= rewrite(state, key, o, |n| {
                if let Some(refs) = n["metadata"]["ownerReferences"].as_array_mut() {
                    refs.retain(|r| {
                        r.get("uid")
                            .and_then(Value::as_str)
                            .is_some_and(|u| keep.iter().any(|k| k == u))
                    });
                }
                if n["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(Vec::is_empty)
                    && let Some(meta) = n["metadata"].as_object_mut()
                {
                    meta.remove("ownerReferences");
                }
            });
        } else if live
            .iter()
            .any(|owner| deleting(owner) && has_finalizer(owner, "foregroundDeletion"))
        {
            changed |= delete(state, key, o);
        }
    }
    changed
}
