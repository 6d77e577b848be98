//! The OpenAPI v3 documents kubectl reads: `/openapi/v3` (one entry per
//! group/version) and `/openapi/v3/<api|apis/group>/<version>`, listing each
//! served resource's operations with their `x-kubernetes-group-version-kind`
//! and query parameters. kubectl looks for `fieldValidation` on the PATCH
//! operation to decide that the server validates fields itself
//! (`--validate=strict`); without these documents it refuses to apply.
//! Schemas are not served (`kubectl explain` is out of scope).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use serde_json::{Map, Value, json};

use super::discovery::Resource;

fn group_versions(resources: &[Resource]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for r in resources {
        let gv = (r.group.clone(), r.version.clone());
        if !out.contains(&gv) {
            out.push(gv);
        }
    }
    out
}

fn prefix(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn query(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
}

fn operation(r: &Resource, action: &str, params: &[&str]) -> Value {
    json!({
        "operationId": format!("{action}{}", r.kind),
        "parameters": params.iter().map(|p| query(p)).collect::<Vec<_>>(),
        "responses": {"200": {"description": "OK"}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
    })
}

/// The document for one group/version, or None when not served.
pub fn group_version(resources: &[Resource], group: &str, version: &str) -> Option<Value> {
    let here: Vec<&Resource> = resources
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if here.is_empty() {
        return None;
    }
    let base = format!("/{}", prefix(group, version));
    let write = ["dryRun", "fieldManager", "fieldValidation", "pretty"];
    let patch = [
        "dryRun",
        "fieldManager",
        "fieldValidation",
        "force",
        "pretty",
    ];
    let mut paths = Map::new();
    for r in here {
        let scope = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("{base}/{}", r.plural)
        };
        let read = ["labelSelector", "fieldSelector", "resourceVersion", "watch"];
        paths.insert(
            scope.clone(),
            json!({"get": operation(r, "list", &read), "post": operation(r, "post", &write)}),
        );
        paths.insert(
            format!("{scope}/{{name}}"),
            json!({
                "get": operation(r, "get", &["pretty"]),
                "put": operation(r, "put", &write),
                "patch": operation(r, "patch", &patch),
                "delete": operation(r, "delete", &["dryRun", "propagationPolicy"]),
            }),
        );
        if r.status {
            paths.insert(
                format!("{scope}/{{name}}/status"),
                json!({
                    "get": operation(r, "get", &["pretty"]),
                    "put": operation(r, "put", &write),
                    "patch": operation(r, "patch", &patch),
                }),
            );
        }
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.35.0"},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

/// `/openapi/v3`: where each group/version's document is, with a hash of
/// its content so clients can cache it.
pub fn root(resources: &[Resource]) -> Value {
    let mut paths = Map::new();
    for (group, version) in group_versions(resources) {
        let doc = group_version(resources, &group, &version).unwrap_or(Value::Null);
        let mut hasher = DefaultHasher::new();
        doc.to_string().hash(&mut hasher);
        let p = prefix(&group, &version);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={:016X}", hasher.finish())}),
        );
    }
    json!({"paths": paths})
}
