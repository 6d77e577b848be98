//! Conversion between the two Event APIs, which share one store as on a
//! real cluster: `events.k8s.io/v1` Events are kept in their `v1` form and
//! converted on the way in and out (field renames per the upstream
//! conversion: `regarding` is `involvedObject`, `note` is `message`, ...).
//! Every other resource is stored as written.

use serde_json::{Map, Value};

use super::discovery::Resource;

/// (events.k8s.io/v1 field, v1 field).
const RENAMES: [(&str, &str); 7] = [
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn is_new_event(resource: &Resource) -> bool {
    resource.group == "events.k8s.io" && resource.plural == "events"
}

fn rename(object: &Value, from_new: bool) -> Value {
    let Some(map) = object.as_object() else {
        return object.clone();
    };
    let mut out = Map::new();
    for (k, v) in map {
        let renamed = RENAMES.iter().find_map(|(new, old)| {
            if from_new && k == new {
                Some(*old)
            } else if !from_new && k == old {
                Some(*new)
            } else {
                None
            }
        });
        out.insert(renamed.unwrap_or(k).to_string(), v.clone());
    }
    Value::Object(out)
}

/// The stored form of an object written through `resource`.
pub fn to_storage(resource: &Resource, object: Value) -> Value {
    if !is_new_event(resource) {
        return object;
    }
    let mut out = rename(&object, true);
    if out.get("source").is_none()
        && let Some(component) = out.get("reportingComponent").cloned()
    {
        out["source"] = serde_json::json!({"component": component});
    }
    out["apiVersion"] = Value::String("v1".into());
    out
}

/// A stored object as `resource` shows it, with its apiVersion and kind.
pub fn from_storage(resource: &Resource, object: Value) -> Value {
    let mut out = if is_new_event(resource) {
        rename(&object, false)
    } else {
        object
    };
    if let Some(map) = out.as_object_mut() {
        map.insert("apiVersion".into(), Value::String(resource.api_version()));
        map.insert("kind".into(), Value::String(resource.kind.clone()));
    }
    out
}
