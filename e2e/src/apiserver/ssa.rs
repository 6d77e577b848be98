//! Server-side apply and the `managedFields` bookkeeping behind it.
//!
//! Field sets are sets of leaf paths. A path step is a field name, or, in a
//! list the schema declares `x-kubernetes-list-type: map`, the item with
//! given values of its `x-kubernetes-list-map-keys` (`k:{"type":"Ready"}`
//! in `FieldsV1`). Such lists merge by key, so two managers each own their
//! own items (conditions of different types); every other list is atomic,
//! as for `x-kubernetes-list-type: atomic`, which is what the real server
//! does for a CRD list without a list type. Built-in kinds are served
//! without their schemas, so their lists are atomic here too (the real
//! server merges e.g. a Pod's containers by name). Each manager's set is
//! stored in `metadata.managedFields` as `FieldsV1`. What this gives, as
//! documented for the real server
//! (https://kubernetes.io/docs/reference/using-api/server-side-apply/):
//! - an apply sets the fields in the applied configuration and takes
//!   ownership of them;
//! - re-applying without a field removes it, unless another manager owns it;
//!   re-applying without an item of a map list removes the item, unless
//!   another manager owns one of its fields;
//! - applying a different value to a field another manager owns is a 409
//!   conflict, unless `force=true`, which takes the field over;
//! - an update (PUT/PATCH) that changes a field takes it from other managers.
//!
//! Merge strategy of lists:
//! https://kubernetes.io/docs/reference/using-api/server-side-apply/#merge-strategy

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Field(String),
    /// An item of a map-keyed list, named by its key fields as a JSON
    /// object with sorted names, as in `FieldsV1` (`{"type":"Ready"}`).
    Item(String),
}

type Path = Vec<Step>;

impl Step {
    fn field(&self) -> Option<&str> {
        match self {
            Step::Field(name) => Some(name),
            Step::Item(_) => None,
        }
    }
}

/// The structural schema beside a value, where the resource has one.
#[derive(Debug, Clone, Copy)]
struct Schema<'a>(Option<&'a Value>);

impl<'a> Schema<'a> {
    fn field(self, name: &str) -> Schema<'a> {
        Schema(self.0.and_then(|s| {
            s.get("properties")
                .and_then(|p| p.get(name))
                .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))
        }))
    }

    fn items(self) -> Schema<'a> {
        Schema(self.0.and_then(|s| s.get("items")))
    }

    /// The key fields of a map-keyed list.
    fn map_keys(self) -> Option<Vec<&'a str>> {
        let s = self.0?;
        if s.get("x-kubernetes-list-type").and_then(Value::as_str) != Some("map") {
            return None;
        }
        let keys: Vec<&str> = s
            .get("x-kubernetes-list-map-keys")?
            .as_array()?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        (!keys.is_empty()).then_some(keys)
    }
}

/// The key of one list item (`{"type":"Ready"}`), or None when the item
/// lacks a key field (the list is then handled as atomic: the schema's
/// `required` makes the validator refuse it anyway).
fn item_key(item: &Value, keys: &[&str]) -> Option<String> {
    let mut names: Vec<&str> = keys.to_vec();
    names.sort_unstable();
    let mut fields = Vec::new();
    for name in names {
        let value = item.get(name)?;
        fields.push(format!("{}:{value}", Value::String(name.to_string())));
    }
    Some(format!("{{{}}}", fields.join(",")))
}

/// The keys of every item of a map-keyed list, or None to treat it as atomic.
fn item_keys(list: &[Value], schema: Schema<'_>) -> Option<Vec<String>> {
    let keys = schema.map_keys()?;
    list.iter().map(|item| item_key(item, &keys)).collect()
}

fn item_matches(item: &Value, key: &str) -> bool {
    match serde_json::from_str::<Map<String, Value>>(key) {
        Ok(fields) => fields.iter().all(|(n, v)| item.get(n) == Some(v)),
        Err(_) => false,
    }
}

/// A path as the real server words it in a conflict:
/// `.status.conditions[type="Ready"].status`.
fn display(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Field(name) => {
                out.push('.');
                out.push_str(name);
            }
            Step::Item(key) => {
                let fields: Vec<String> = serde_json::from_str::<Map<String, Value>>(key)
                    .map(|m| m.iter().map(|(n, v)| format!("{n}={v}")).collect())
                    .unwrap_or_default();
                out.push_str(&format!("[{}]", fields.join(",")));
            }
        }
    }
    out
}

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
fn tracked(path: &[Step], subresource: Option<&str>, has_status: bool) -> bool {
    let Some(first) = path.first().and_then(Step::field) else {
        return false;
    };
    match first {
        "apiVersion" | "kind" => false,
        "metadata" => {
            subresource.is_none()
                && matches!(
                    path.get(1).and_then(Step::field),
                    Some("labels" | "annotations" | "finalizers" | "ownerReferences")
                )
        }
        "status" if has_status => subresource == Some("status"),
        _ => subresource.is_none() || !has_status,
    }
}

fn collect(value: &Value, schema: Schema<'_>, prefix: &mut Path, out: &mut BTreeSet<Path>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                prefix.push(Step::Field(k.clone()));
                collect(v, schema.field(k), prefix, out);
                prefix.pop();
            }
        }
        // An empty keyed list names no item, so it owns nothing: applying
        // `[]` drops the manager's own items and leaves the others'.
        Value::Array(list) if list.is_empty() && schema.map_keys().is_some() => {}
        Value::Array(list) if item_keys(list, schema).is_some() => {
            let keys = item_keys(list, schema).unwrap_or_default();
            for (item, key) in list.iter().zip(keys) {
                prefix.push(Step::Item(key));
                collect(item, schema.items(), prefix, out);
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
fn leaves(
    value: &Value,
    schema: Schema<'_>,
    subresource: Option<&str>,
    has_status: bool,
) -> BTreeSet<Path> {
    let mut all = BTreeSet::new();
    collect(value, schema, &mut Vec::new(), &mut all);
    all.into_iter()
        .filter(|p| tracked(p, subresource, has_status))
        .collect()
}

fn get<'a>(value: &'a Value, path: &[Step]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, step| match step {
        Step::Field(k) => v.get(k),
        Step::Item(key) => v.as_array()?.iter().find(|item| item_matches(item, key)),
    })
}

/// Removes the field at `path`; an item of a keyed list goes with its last
/// field.
fn remove_path(value: &mut Value, path: &[Step]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    match first {
        Step::Field(k) => {
            let Some(map) = value.as_object_mut() else {
                return;
            };
            if rest.is_empty() {
                map.remove(k);
            } else if let Some(child) = map.get_mut(k) {
                remove_path(child, rest);
            }
        }
        Step::Item(key) => {
            let Some(list) = value.as_array_mut() else {
                return;
            };
            let Some(at) = list.iter().position(|item| item_matches(item, key)) else {
                return;
            };
            let emptied = match list.get_mut(at) {
                Some(item) if !rest.is_empty() => {
                    remove_path(item, rest);
                    item.as_object().is_some_and(Map::is_empty)
                }
                _ => true,
            };
            if emptied {
                list.remove(at);
            }
        }
    }
}

/// Deep merge where objects merge, keyed lists merge item by item, and
/// anything else replaces.
fn overlay(target: &mut Value, config: &Value, schema: Schema<'_>) {
    if let (Some(t), Value::Object(c)) = (target.as_object_mut(), config) {
        for (k, v) in c {
            overlay(
                t.entry(k.clone()).or_insert(Value::Null),
                v,
                schema.field(k),
            );
        }
        return;
    }
    if let (Some(t), Value::Array(c)) = (target.as_array_mut(), config)
        && item_keys(t, schema).is_some()
        && let Some(keys) = item_keys(c, schema)
    {
        for (item, key) in c.iter().zip(keys) {
            match t.iter_mut().find(|live| item_matches(live, &key)) {
                Some(live) => overlay(live, item, schema.items()),
                None => t.push(item.clone()),
            }
        }
        return;
    }
    *target = config.clone();
}

fn encode(fields: &BTreeSet<Path>) -> Value {
    let mut root = Map::new();
    for path in fields {
        let mut cursor = &mut root;
        for step in path {
            let name = match step {
                Step::Field(k) => format!("f:{k}"),
                Step::Item(key) => format!("k:{key}"),
            };
            let slot = cursor
                .entry(name)
                .or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(next) = slot else { break };
            if matches!(step, Step::Item(_)) {
                // The item itself is owned as well as its fields, as the
                // real server records it.
                next.insert(".".into(), json!({}));
            }
            cursor = next;
        }
    }
    Value::Object(root)
}

fn decode(value: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
    let Some(map) = value.as_object() else {
        return;
    };
    let named: Vec<(Step, &Value)> = map
        .iter()
        .filter_map(|(k, v)| {
            if let Some(name) = k.strip_prefix("f:") {
                Some((Step::Field(name.to_string()), v))
            } else {
                k.strip_prefix("k:")
                    .map(|key| (Step::Item(key.to_string()), v))
            }
        })
        .collect();
    if named.is_empty() {
        if !prefix.is_empty() {
            out.insert(prefix.clone());
        }
        return;
    }
    for (step, v) in named {
        prefix.push(step);
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
fn overlaps(a: &[Step], b: &[Step]) -> bool {
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
    /// The version's `openAPIV3Schema` (custom resources), for the list
    /// types; None: every list is atomic.
    pub schema: Option<&'a Value>,
}

/// The object after applying `config` over `live` (None: create).
pub fn apply(
    live: Option<&Value>,
    config: &Value,
    req: &ApplyRequest<'_>,
) -> Result<Value, Vec<FieldConflict>> {
    let schema = Schema(req.schema);
    let applied = leaves(config, schema, req.subresource, req.has_status);
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
                        field: display(path),
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
    for path in leaves(config, schema, None, false).difference(&applied) {
        remove_path(&mut trimmed, path);
    }
    overlay(&mut result, &trimmed, schema);

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
    let schema = Schema(req.schema);
    let before = leaves(old_obj, schema, req.subresource, req.has_status);
    let after = leaves(new, schema, req.subresource, req.has_status);
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
            schema: None,
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

    /// A status schema with `conditions` map-keyed by `type`, as the CRDs
    /// of this project declare it.
    fn conditions_schema() -> Value {
        json!({"type": "object", "properties": {"status": {"type": "object", "properties": {
            "conditions": {"type": "array", "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
                "items": {"type": "object", "properties": {
                    "type": {"type": "string"}, "status": {"type": "string"}}}},
            "phase": {"type": "string"}}}}})
    }

    fn status_req<'a>(manager: &'a str, schema: &'a Value) -> ApplyRequest<'a> {
        ApplyRequest {
            subresource: Some("status"),
            schema: Some(schema),
            ..req(manager, false)
        }
    }

    fn conditions(live: &Value) -> Vec<(String, String)> {
        live["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    c["type"].as_str().unwrap_or("").to_string(),
                    c["status"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    fn with_conditions(list: Value) -> Value {
        json!({"apiVersion": "modelpub.io/v1alpha1", "kind": "FederationRound", "metadata": {"name": "r"}, "status": {"conditions": list}})
    }

    #[test]
    fn managers_of_different_conditions_merge_by_type() {
        let schema = conditions_schema();
        let base = json!({"apiVersion": "modelpub.io/v1alpha1", "kind": "FederationRound", "metadata": {"name": "r"}, "spec": {}});
        let live = apply(None, &base, &req("kubectl", false)).unwrap();
        let ready = with_conditions(json!([{"type": "Ready", "status": "True"}]));
        let live = apply(Some(&live), &ready, &status_req("operator", &schema)).unwrap();
        let audited = with_conditions(json!([{"type": "Audited", "status": "False"}]));
        let live = apply(Some(&live), &audited, &status_req("auditor", &schema)).unwrap();
        assert_eq!(
            conditions(&live),
            [
                ("Ready".into(), "True".into()),
                ("Audited".into(), "False".into())
            ],
            "an apply of one condition must not clobber another manager's"
        );
        let fields: Vec<&Value> = live["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["manager"] == "operator")
            .map(|m| &m["fieldsV1"])
            .collect();
        assert_eq!(
            fields,
            [
                &json!({"f:status": {"f:conditions": {"k:{\"type\":\"Ready\"}": {".": {}, "f:type": {}, "f:status": {}}}}})
            ]
        );

        // Re-applying without its condition removes only the manager's own.
        let none = with_conditions(json!([]));
        let live = apply(Some(&live), &none, &status_req("operator", &schema)).unwrap();
        assert_eq!(conditions(&live), [("Audited".into(), "False".into())]);
    }

    #[test]
    fn a_condition_another_manager_owns_conflicts_by_key() {
        let schema = conditions_schema();
        let ready = with_conditions(json!([{"type": "Ready", "status": "True"}]));
        let live = apply(None, &ready, &status_req("operator", &schema)).unwrap();
        let flipped = with_conditions(json!([{"type": "Ready", "status": "False"}]));
        let err = apply(Some(&live), &flipped, &status_req("auditor", &schema)).unwrap_err();
        assert_eq!(
            err,
            vec![FieldConflict {
                manager: "operator".into(),
                field: ".status.conditions[type=\"Ready\"].status".into()
            }]
        );
        // The same value is shared ownership, not a conflict.
        let same = apply(Some(&live), &ready, &status_req("auditor", &schema)).unwrap();
        assert_eq!(conditions(&same), [("Ready".into(), "True".into())]);
    }

    #[test]
    fn an_update_of_one_condition_takes_only_that_one() {
        let schema = conditions_schema();
        let both = with_conditions(
            json!([{"type": "Ready", "status": "True"}, {"type": "Audited", "status": "True"}]),
        );
        let live = apply(None, &both, &status_req("operator", &schema)).unwrap();
        let mut edited = live.clone();
        edited["status"]["conditions"][1]["status"] = json!("False");
        record_update(
            Some(&live),
            &mut edited,
            "kubectl-edit",
            &status_req("kubectl-edit", &schema),
        );
        let owners: Vec<(String, Value)> = edited["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["manager"].as_str().unwrap().to_string(),
                    m["fieldsV1"].clone(),
                )
            })
            .collect();
        assert_eq!(
            owners,
            [
                (
                    "operator".to_string(),
                    json!({"f:status": {"f:conditions": {
                    "k:{\"type\":\"Audited\"}": {".": {}, "f:type": {}},
                    "k:{\"type\":\"Ready\"}": {".": {}, "f:type": {}, "f:status": {}}}}})
                ),
                (
                    "kubectl-edit".to_string(),
                    json!({"f:status": {"f:conditions": {
                    "k:{\"type\":\"Audited\"}": {".": {}, "f:status": {}}}}})
                ),
            ]
        );
    }

    #[test]
    fn a_list_without_a_map_type_stays_atomic() {
        let schema = conditions_schema();
        let a = json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "x"}, "spec": {"items": [{"type": "a"}]}});
        let live = apply(
            None,
            &a,
            &ApplyRequest {
                schema: Some(&schema),
                ..req("one", false)
            },
        )
        .unwrap();
        let b = json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "x"}, "spec": {"items": [{"type": "b"}]}});
        let err = apply(
            Some(&live),
            &b,
            &ApplyRequest {
                schema: Some(&schema),
                ..req("two", false)
            },
        )
        .unwrap_err();
        assert_eq!(err[0].field, ".spec.items");
    }
}
