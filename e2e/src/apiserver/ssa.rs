//! Server-side apply and the `managedFields` bookkeeping behind it.
//!
//! Field sets are sets of leaf paths (`spec.rounds`); lists are atomic, as
//! for `x-kubernetes-list-type: atomic` (a simplification: the real server
//! also tracks keyed list items). Each manager's set is stored in
//! `metadata.managedFields` as `FieldsV1`. What this gives, as documented for
//! the real server:
//! - an apply sets the fields in the applied configuration and takes
//!   ownership of them;
//! - re-applying without a field removes it, unless another manager owns it;
//! - applying a different value to a field another manager owns is a 409
//!   conflict, unless `force=true`, which takes the field over;
//! - an update (PUT/PATCH) that changes a field takes it from other managers.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

type Path = Vec<String>;

/// One entry of `metadata.managedFields`.
#[derive(Debug, Clone, PartialEq)]
struct Manager {
    manager: String,
    operation: String,
    api_version: String,
    subresource: Option<String>,
    time: String,
    fields: BTreeSet<Path>,
}

/// Whether the field at `path` is tracked for this (sub)resource.
fn tracked(path: &[String], subresource: Option<&str>, has_status: bool) -> bool {
    let Some(first) = path.first() else {
        return false;
    };
    match first.as_str() {
        "apiVersion" | "kind" => false,
        "metadata" => {
            subresource.is_none()
                && matches!(
                    path.get(1).map(String::as_str),
                    Some("labels" | "annotations" | "finalizers" | "ownerReferences")
                )
        }
        "status" if has_status => subresource == Some("status"),
        _ => subresource.is_none() || !has_status,
    }
}

fn collect(value: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                prefix.push(k.clone());
                collect(v, prefix, out);
                prefix.pop();
            }
        }
        _ => {
            if !prefix.is_empty() {
                out.insert(prefix.clone());
            }
        }
    }
}

/// The tracked leaf paths of `value`.
fn leaves(value: &Value, subresource: Option<&str>, has_status: bool) -> BTreeSet<Path> {
    let mut all = BTreeSet::new();
    collect(value, &mut Vec::new(), &mut all);
    all.into_iter()
        .filter(|p| tracked(p, subresource, has_status))
        .collect()
}

fn get<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, k| v.get(k))
}

fn remove_path(value: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cursor = value;
    for k in parents {
        match cursor.get_mut(k) {
            Some(next) => cursor = next,
            None => return,
        }
    }
    if let Some(map) = cursor.as_object_mut() {
        map.remove(last);
    }
}

/// Deep merge where objects merge and anything else replaces.
fn overlay(target: &mut Value, config: &Value) {
    match (target.as_object_mut(), config) {
        (Some(t), Value::Object(c)) => {
            for (k, v) in c {
                overlay(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        _ => *target = config.clone(),
    }
}

fn encode(fields: &BTreeSet<Path>) -> Value {
    let mut root = Map::new();
    for path in fields {
        let mut cursor = &mut root;
        for k in path {
            let slot = cursor
                .entry(format!("f:{k}"))
                .or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(next) = slot else { break };
            cursor = next;
        }
    }
    Value::Object(root)
}

fn decode(value: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
    let Some(map) = value.as_object() else {
        return;
    };
    let named: Vec<(&String, &Value)> = map.iter().filter(|(k, _)| k.starts_with("f:")).collect();
    if named.is_empty() {
        if !prefix.is_empty() {
            out.insert(prefix.clone());
        }
        return;
    }
    for (k, v) in named {
        prefix.push(k[2..].to_string());
        decode(v, prefix, out);
        prefix.pop();
    }
}

fn read_managers(object: &Value) -> Vec<Manager> {
    let entries = object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    entries
        .iter()
        .map(|e| {
            let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let mut fields = BTreeSet::new();
            if let Some(f) = e.get("fieldsV1") {
                decode(f, &mut Vec::new(), &mut fields);
            }
            Manager {
                manager: s("manager"),
                operation: s("operation"),
                api_version: s("apiVersion"),
                subresource: e
                    .get("subresource")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                time: s("time"),
                fields,
            }
        })
        .collect()
}

fn write_managers(object: &mut Value, managers: &[Manager]) {
    let entries: Vec<Value> = managers
        .iter()
        .filter(|m| !m.fields.is_empty())
        .map(|m| {
            let mut e = json!({
                "manager": m.manager,
                "operation": m.operation,
                "apiVersion": m.api_version,
                "time": m.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": encode(&m.fields),
            });
            if let Some(sub) = &m.subresource {
                e["subresource"] = json!(sub);
            }
            e
        })
        .collect();
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        if entries.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(entries));
        }
    }
}

/// Paths overlap when one is a prefix of the other.
fn overlaps(a: &[String], b: &[String]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// One field another manager owns with a different value.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldConflict {
    pub manager: String,
    pub field: String,
}

/// Who is applying, and how.
#[derive(Debug, Clone)]
pub struct ApplyRequest<'a> {
    pub manager: &'a str,
    pub force: bool,
    pub subresource: Option<&'a str>,
    pub has_status: bool,
    pub api_version: &'a str,
    pub now: &'a str,
}

/// The object after applying `config` over `live` (None: create).
pub fn apply(
    live: Option<&Value>,
    config: &Value,
    req: &ApplyRequest<'_>,
) -> Result<Value, Vec<FieldConflict>> {
    let applied = leaves(config, req.subresource, req.has_status);
    let empty = json!({});
    let live_obj = live.unwrap_or(&empty);
    let mut managers = read_managers(live_obj);
    let is_me = |m: &Manager| {
        m.manager == req.manager
            && m.operation == "Apply"
            && m.subresource.as_deref() == req.subresource
    };

    let mut conflicts = Vec::new();
    for m in managers
        .iter()
        .filter(|m| !is_me(m) && m.manager != req.manager)
    {
        for owned in &m.fields {
            for path in applied.iter().filter(|p| overlaps(p, owned)) {
                if get(live_obj, path) != get(config, path) {
                    conflicts.push(FieldConflict {
                        manager: m.manager.clone(),
                        field: format!(".{}", path.join(".")),
                    });
                }
            }
        }
    }
    conflicts.dedup();
    if !conflicts.is_empty() && !req.force {
        return Err(conflicts);
    }

    let mut result = live.cloned().unwrap_or_else(|| {
        json!({"apiVersion": config.get("apiVersion"), "kind": config.get("kind"), "metadata": {}})
    });
    let previous: BTreeSet<Path> = managers
        .iter()
        .filter(|m| is_me(m))
        .flat_map(|m| m.fields.clone())
        .collect();
    for dropped in previous.difference(&applied) {
        let owned_elsewhere = managers
            .iter()
            .filter(|m| !is_me(m))
            .any(|m| m.fields.iter().any(|f| overlaps(f, dropped)));
        if !owned_elsewhere {
            remove_path(&mut result, dropped);
        }
    }
    let mut trimmed = config.clone();
    for path in leaves(config, None, false).difference(&applied) {
        remove_path(&mut trimmed, path);
    }
    overlay(&mut result, &trimmed);

    if req.force {
        for m in managers.iter_mut().filter(|m| !is_me(m)) {
            m.fields.retain(|f| {
                !applied
                    .iter()
                    .any(|p| overlaps(p, f) && get(live_obj, p) != get(config, p))
            });
        }
    }
    managers.retain(|m| !is_me(m));
    managers.push(Manager {
        manager: req.manager.to_string(),
        operation: "Apply".into(),
        api_version: req.api_version.to_string(),
        subresource: req.subresource.map(str::to_string),
        time: req.now.to_string(),
        fields: applied,
    });
    write_managers(&mut result, &managers);
    Ok(result)
}

/// Records an update (create, PUT, non-apply PATCH) by `manager`: it takes
/// the fields it changed from everyone else.
pub fn record_update(old: Option<&Value>, new: &mut Value, manager: &str, req: &ApplyRequest<'_>) {
    let empty = json!({});
    let old_obj = old.unwrap_or(&empty);
    let before = leaves(old_obj, req.subresource, req.has_status);
    let after = leaves(new, req.subresource, req.has_status);
    let changed: BTreeSet<Path> = after
        .iter()
        .filter(|p| get(old_obj, p) != get(new, p))
        .chain(before.difference(&after))
        .cloned()
        .collect();
    let mut managers = read_managers(old_obj);
    if changed.is_empty() {
        write_managers(new, &managers);
        return;
    }
    for m in managers.iter_mut() {
        m.fields.retain(|f| !changed.iter().any(|c| overlaps(c, f)));
    }
    let is_me = |m: &Manager| {
        m.manager == manager
            && m.operation == "Update"
            && m.subresource.as_deref() == req.subresource
    };
    let mut mine: BTreeSet<Path> = managers
        .iter()
        .filter(|m| is_me(m))
        .flat_map(|m| m.fields.clone())
        .collect();
    mine.extend(changed.intersection(&after).cloned());
    managers.retain(|m| !is_me(m));
    managers.push(Manager {
        manager: manager.to_string(),
        operation: "Update".into(),
        api_version: req.api_version.to_string(),
        subresource: req.subresource.map(str::to_string),
        time: req.now.to_string(),
        fields: mine,
    });
    write_managers(new, &managers);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(manager: &str, force: bool) -> ApplyRequest<'_> {
        ApplyRequest {
            manager,
            force,
            subresource: None,
            has_status: true,
            api_version: "v1",
            now: "2026-01-01T00:00:00Z",
        }
    }

    #[test]
    fn reapplying_without_a_field_removes_it() {
        let first = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}});
        let live = apply(None, &first, &req("me", false)).unwrap();
        let second = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}});
        let live = apply(Some(&live), &second, &req("me", false)).unwrap();
        assert_eq!(live["data"], json!({"a": "1"}));
        assert_eq!(
            live["metadata"]["managedFields"][0]["fieldsV1"],
            json!({"f:data": {"f:a": {}}})
        );
    }

    #[test]
    fn another_managers_field_conflicts_unless_forced() {
        let a = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}});
        let live = apply(None, &a, &req("one", false)).unwrap();
        let b = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "2"}});
        let err = apply(Some(&live), &b, &req("two", false)).unwrap_err();
        assert_eq!(
            err,
            vec![FieldConflict {
                manager: "one".into(),
                field: ".data.a".into()
            }]
        );
        let live = apply(Some(&live), &b, &req("two", true)).unwrap();
        assert_eq!(live["data"]["a"], "2");
        let managers = live["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(
            managers.len(),
            1,
            "the forced field moved to `two`: {managers:?}"
        );
    }
}
