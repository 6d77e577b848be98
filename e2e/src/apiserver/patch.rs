//! The non-apply patch types: JSON merge patch (RFC 7386) and JSON patch
//! (RFC 6902), both by the `json-patch` crate, and strategic merge patch for built-in kinds. The strategic
//! patch is a merge patch that also merges the keyed lists the project's
//! objects use (containers, env, ports, volumes, volumeMounts, conditions,
//! ownerReferences by their merge keys; finalizers as a set) and drops the
//! `$setElementOrder`/`$retainKeys` directives kubectl sends.

use json_patch::PatchOperation;
use serde_json::{Map, Value};

/// RFC 7386: objects merge, `null` deletes, anything else replaces.
pub fn merge(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
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

/// RFC 6902 (the `json-patch` crate): add, remove, replace, move, copy and
/// test, all or nothing. One difference, as the API server's JSON patch
/// library (evanphx/json-patch) has it: a `test` of a missing value
/// against `null` passes (kube's finalizer helper relies on it).
pub fn json_patch(doc: &Value, operations: &Value) -> Result<Value, JsonPatchError> {
    if !operations.is_array() {
        return Err(JsonPatchError(
            "a JSON patch must be an array of operations".into(),
        ));
    }
    let patch: json_patch::Patch = serde_json::from_value(operations.clone())
        .map_err(|e| JsonPatchError(format!("not an RFC 6902 operation list: {e}")))?;
    // Applied to a copy, one operation at a time, so the missing-is-null
    // test sees the document as the earlier operations left it; an error
    // discards the copy.
    let mut out = doc.clone();
    for op in &patch.0 {
        if let PatchOperation::Test(test) = op
            && test.value.is_null()
            && test.path.resolve(&out).is_err()
        {
            continue;
        }
        json_patch::patch_unsafe(&mut out, std::slice::from_ref(op))
            .map_err(|e| JsonPatchError(e.to_string()))?;
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
