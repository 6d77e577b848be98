//! The non-apply patch types: JSON merge patch (RFC 7386), JSON patch
//! (RFC 6902) and strategic merge patch for built-in kinds. The strategic
//! patch is a merge patch that also merges the keyed lists the project's
//! objects use (containers, env, ports, volumes, volumeMounts, conditions,
//! ownerReferences by their merge keys; finalizers as a set) and drops the
//! `$setElementOrder`/`$retainKeys` directives kubectl sends.

use serde_json::{Map, Value};

/// RFC 7386: objects merge, `null` deletes, anything else replaces.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target) = target else {
        return;
    };
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// The merge key of a list field in the built-in kinds, if it has one.
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    let has = |k: &str| items.iter().all(|i| i.get(k).is_some());
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "ports" if has("containerPort") => Some("containerPort"),
        "ports" => Some("port"),
        "conditions" => Some("type"),
        "ownerReferences" => Some("uid"),
        _ => None,
    }
}

/// Strategic merge patch, as described in the module docs.
pub fn strategic(target: &mut Value, patch: &Value) {
    strategic_field(target, patch, "");
}

fn strategic_field(target: &mut Value, patch: &Value, field: &str) {
    match patch {
        Value::Object(p) => {
            if p.get("$patch").and_then(Value::as_str) == Some("replace") {
                let mut clean = patch.clone();
                if let Some(o) = clean.as_object_mut() {
                    o.remove("$patch");
                }
                *target = clean;
                return;
            }
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let Value::Object(t) = target else { return };
            for (key, value) in p {
                if key.starts_with('$') {
                    continue;
                }
                if value.is_null() {
                    t.remove(key);
                } else {
                    let slot = t.entry(key.clone()).or_insert(Value::Null);
                    strategic_field(slot, value, key);
                }
            }
        }
        Value::Array(items) => {
            if field == "finalizers" {
                let mut merged = target.as_array().cloned().unwrap_or_default();
                for item in items {
                    if !merged.contains(item) {
                        merged.push(item.clone());
                    }
                }
                *target = Value::Array(merged);
                return;
            }
            if let (Some(key), Some(existing)) = (merge_key(field, items), target.as_array_mut()) {
                {
                    for item in items {
                        let wanted = item.get(key);
                        let deleting = item.get("$patch").and_then(Value::as_str) == Some("delete");
                        let pos = existing.iter().position(|e| e.get(key) == wanted);
                        match (pos, deleting) {
                            (Some(i), true) => {
                                existing.remove(i);
                            }
                            (Some(i), false) => strategic_field(&mut existing[i], item, ""),
                            (None, true) => {}
                            (None, false) => {
                                let mut fresh = Value::Null;
                                strategic_field(&mut fresh, item, "");
                                existing.push(fresh);
                            }
                        }
                    }
                }
                return;
            }
            *target = patch.clone();
        }
        other => *target = other.clone(),
    }
}

/// Why a JSON patch could not be applied.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPatchError(pub String);

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// Splits a JSON pointer into its parent pointer and last token.
fn parent_and_last(path: &str) -> Result<(String, String), JsonPatchError> {
    let cut = path
        .rfind('/')
        .ok_or_else(|| JsonPatchError(format!("invalid JSON pointer {path:?}")))?;
    Ok((path[..cut].to_string(), unescape(&path[cut + 1..])))
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), JsonPatchError> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, last) = parent_and_last(path)?;
    match doc.pointer_mut(&parent) {
        Some(Value::Object(map)) => {
            map.insert(last, value);
            Ok(())
        }
        Some(Value::Array(items)) => {
            let index = if last == "-" {
                items.len()
            } else {
                last.parse::<usize>()
                    .ok()
                    .filter(|i| *i <= items.len())
                    .ok_or_else(|| JsonPatchError(format!("invalid array index in {path:?}")))?
            };
            items.insert(index, value);
            Ok(())
        }
        _ => Err(JsonPatchError(format!("doc is missing path: {parent:?}"))),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, JsonPatchError> {
    let (parent, last) = parent_and_last(path)?;
    let missing = || JsonPatchError(format!("doc is missing path: {path:?}"));
    match doc.pointer_mut(&parent) {
        Some(Value::Object(map)) => map.remove(&last).ok_or_else(missing),
        Some(Value::Array(items)) => {
            let i = last
                .parse::<usize>()
                .ok()
                .filter(|i| *i < items.len())
                .ok_or_else(missing)?;
            Ok(items.remove(i))
        }
        _ => Err(missing()),
    }
}

/// RFC 6902: add, remove, replace, move, copy and test, all or nothing.
pub fn json_patch(doc: &Value, operations: &Value) -> Result<Value, JsonPatchError> {
    let ops = operations
        .as_array()
        .ok_or_else(|| JsonPatchError("a JSON patch must be an array of operations".into()))?;
    let mut out = doc.clone();
    for op in ops {
        let field = |name: &str| {
            op.get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| JsonPatchError(format!("operation {op} has no {name:?}")))
        };
        let path = field("path")?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| JsonPatchError(format!("operation {op} has no \"value\"")))
        };
        match field("op")? {
            "add" => add(&mut out, path, value()?)?,
            "remove" => {
                remove(&mut out, path)?;
            }
            "replace" => {
                remove(&mut out, path)?;
                add(&mut out, path, value()?)?;
            }
            "move" => {
                let moved = remove(&mut out, field("from")?)?;
                add(&mut out, path, moved)?;
            }
            "copy" => {
                let copied = out
                    .pointer(field("from")?)
                    .cloned()
                    .ok_or_else(|| JsonPatchError(format!("doc is missing path: {op}")))?;
                add(&mut out, path, copied)?;
            }
            "test" => {
                // As the API server's JSON patch library: a missing value
                // tests equal to null (kube's finalizer helper relies on it).
                if out.pointer(path).unwrap_or(&Value::Null) != &value()? {
                    return Err(JsonPatchError(format!(
                        "testing value {path} failed: test failed"
                    )));
                }
            }
            other => {
                return Err(JsonPatchError(format!("unexpected kind: {other}")));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge(&mut doc, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}}));
    }

    #[test]
    fn json_patch_follows_rfc_6902() {
        let doc = json!({"foo": ["bar", "baz"]});
        let out = json_patch(
            &doc,
            &json!([{"op": "add", "path": "/foo/1", "value": "qux"},
                    {"op": "remove", "path": "/foo/0"},
                    {"op": "test", "path": "/foo/0", "value": "qux"}]),
        )
        .unwrap();
        assert_eq!(out, json!({"foo": ["qux", "baz"]}));
        assert!(json_patch(&doc, &json!([{"op": "test", "path": "/foo/0", "value": 1}])).is_err());
        assert!(json_patch(&doc, &json!([{"op": "remove", "path": "/nope"}])).is_err());
        let missing_is_null =
            json!([{"op": "test", "path": "/metadata/finalizers", "value": null}]);
        assert!(json_patch(&json!({"metadata": {}}), &missing_is_null).is_ok());
    }

    #[test]
    fn strategic_patch_merges_containers_by_name() {
        let mut pod = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}});
        strategic(
            &mut pod,
            &json!({"spec": {"containers": [{"name": "b", "image": "z"}],
            "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}]}}),
        );
        assert_eq!(pod["spec"]["containers"][1]["image"], "z");
        assert_eq!(pod["spec"]["containers"][0]["image"], "x");
    }
}
