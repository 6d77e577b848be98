//! Kubernetes manifests as typed objects. `helm template` prints YAML; a
//! misspelt field in it would be silently dropped by the API server's
//! decoder (and by k8s-openapi's, which ignores unknown fields). So each
//! document is decoded into its k8s-openapi type, encoded back, and compared
//! with the original: every field the type does not know shows up as a
//! difference with its path.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Why a manifest is not a well-formed object of a known kind.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("not valid YAML: {0}")]
    Yaml(String),
    #[error("document {index} has no string apiVersion/kind")]
    NoKind { index: usize },
    #[error("{api_version}/{kind} is not a kind this chart is expected to render")]
    UnknownKind { api_version: String, kind: String },
    #[error("{kind} {name}: does not decode as {kind}: {reason}")]
    Decode {
        kind: String,
        name: String,
        reason: String,
    },
    #[error("{kind} {name}: fields the typed object does not keep (misspelt or unknown):\n  {}", .differences.join("\n  "))]
    UnknownFields {
        kind: String,
        name: String,
        differences: Vec<String>,
    },
}

/// Every non-empty document of a multi-document YAML stream, as JSON.
pub fn parse_documents(yaml: &str) -> Result<Vec<Value>, ManifestError> {
    serde_saphyr::from_multiple::<Value>(yaml).map_err(|e| ManifestError::Yaml(e.to_string()))
}

/// A rendered object, decoded into its typed form.
#[derive(Debug, Clone)]
pub enum Object {
    ServiceAccount(ServiceAccount),
    Service(Box<Service>),
    ConfigMap(ConfigMap),
    Deployment(Box<Deployment>),
    ClusterRole(ClusterRole),
    ClusterRoleBinding(ClusterRoleBinding),
    Role(Role),
    RoleBinding(RoleBinding),
    CustomResourceDefinition(Box<CustomResourceDefinition>),
    NetworkPolicy(Box<NetworkPolicy>),
    PodDisruptionBudget(Box<PodDisruptionBudget>),
    /// prometheus-operator's ServiceMonitor: k8s-openapi has no type for
    /// it, so it stays JSON and the suites check its fields by name.
    ServiceMonitor(Value),
    /// prometheus-operator's PodMonitor, likewise kept as JSON.
    PodMonitor(Value),
}

impl Object {
    pub fn kind(&self) -> &'static str {
        match self {
            Object::ServiceAccount(_) => "ServiceAccount",
            Object::Service(_) => "Service",
            Object::ConfigMap(_) => "ConfigMap",
            Object::Deployment(_) => "Deployment",
            Object::ClusterRole(_) => "ClusterRole",
            Object::ClusterRoleBinding(_) => "ClusterRoleBinding",
            Object::Role(_) => "Role",
            Object::RoleBinding(_) => "RoleBinding",
            Object::CustomResourceDefinition(_) => "CustomResourceDefinition",
            Object::NetworkPolicy(_) => "NetworkPolicy",
            Object::PodDisruptionBudget(_) => "PodDisruptionBudget",
            Object::ServiceMonitor(_) => "ServiceMonitor",
            Object::PodMonitor(_) => "PodMonitor",
        }
    }
}

/// A parsed document together with its typed form.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub json: Value,
    pub object: Object,
}

/// Parses a YAML stream and decodes every document strictly (see [`decode`]).
pub fn decode_all(yaml: &str) -> Result<Vec<Rendered>, ManifestError> {
    parse_documents(yaml)?
        .into_iter()
        .enumerate()
        .map(|(index, json)| {
            let object = decode(index, &json)?;
            Ok(Rendered { json, object })
        })
        .collect()
}

/// Decodes one document into the typed object for its apiVersion/kind and
/// fails if anything in it does not survive the round trip.
pub fn decode(index: usize, doc: &Value) -> Result<Object, ManifestError> {
    let api_version = doc.get("apiVersion").and_then(Value::as_str);
    let kind = doc.get("kind").and_then(Value::as_str);
    let (Some(api_version), Some(kind)) = (api_version, kind) else {
        return Err(ManifestError::NoKind { index });
    };
    Ok(match (api_version, kind) {
        ("v1", "ServiceAccount") => Object::ServiceAccount(strict(doc)?),
        ("v1", "Service") => Object::Service(Box::new(strict(doc)?)),
        ("v1", "ConfigMap") => Object::ConfigMap(strict(doc)?),
        ("apps/v1", "Deployment") => Object::Deployment(Box::new(strict(doc)?)),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => Object::ClusterRole(strict(doc)?),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            Object::ClusterRoleBinding(strict(doc)?)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => Object::Role(strict(doc)?),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => Object::RoleBinding(strict(doc)?),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
            Object::CustomResourceDefinition(Box::new(strict(doc)?))
        }
        ("networking.k8s.io/v1", "NetworkPolicy") => Object::NetworkPolicy(Box::new(strict(doc)?)),
        ("policy/v1", "PodDisruptionBudget") => Object::PodDisruptionBudget(Box::new(strict(doc)?)),
        ("monitoring.coreos.com/v1", "ServiceMonitor") => Object::ServiceMonitor(doc.clone()),
        ("monitoring.coreos.com/v1", "PodMonitor") => Object::PodMonitor(doc.clone()),
        _ => {
            return Err(ManifestError::UnknownKind {
                api_version: api_version.to_string(),
                kind: kind.to_string(),
            });
        }
    })
}

/// Decodes `doc` as `T`, encodes it again and requires the result to equal
/// `doc` (explicit nulls aside, which Kubernetes treats as absent).
pub fn strict<T: DeserializeOwned + Serialize>(doc: &Value) -> Result<T, ManifestError> {
    let kind = doc
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("object")
        .to_string();
    let name = doc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>")
        .to_string();
    let typed: T = serde_json::from_value(doc.clone()).map_err(|e| ManifestError::Decode {
        kind: kind.clone(),
        name: name.clone(),
        reason: e.to_string(),
    })?;
    let back = serde_json::to_value(&typed).map_err(|e| ManifestError::Decode {
        kind: kind.clone(),
        name: name.clone(),
        reason: format!("does not encode again: {e}"),
    })?;
    let mut differences = Vec::new();
    diff("", &without_nulls(doc), &back, &mut differences);
    if differences.is_empty() {
        Ok(typed)
    } else {
        Err(ManifestError::UnknownFields {
            kind,
            name,
            differences,
        })
    }
}

fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// Collects every place where `original` and `round_trip` differ, as JSON
/// pointers with what changed.
pub fn diff(path: &str, original: &Value, round_trip: &Value, out: &mut Vec<String>) {
    match (original, round_trip) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, va) in a {
                let p = format!("{path}/{k}");
                match b.get(k) {
                    Some(vb) => diff(&p, va, vb, out),
                    None => out.push(format!("{p}: dropped (unknown field)")),
                }
            }
            for k in b.keys().filter(|k| !a.contains_key(*k)) {
                out.push(format!("{path}/{k}: added by the typed object"));
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (va, vb)) in a.iter().zip(b).enumerate() {
                diff(&format!("{path}/{i}"), va, vb, out);
            }
        }
        (a, b) if a == b => {}
        // JSON schema bounds are f64 in k8s-openapi: `minimum: 0` comes back
        // as 0.0, which is the same number.
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => {}
        (a, b) => out.push(format!("{path}: {a} became {b}")),
    }
}

/// `metadata.labels` of a rendered document (empty when it has none).
pub fn labels(doc: &Value, pointer: &str) -> serde_json::Map<String, Value> {
    doc.pointer(pointer)
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}
