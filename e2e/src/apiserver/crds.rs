//! CustomResourceDefinitions: checking one as the server does on create and
//! update, marking it Established, and serving its custom resources (one
//! [`Resource`] per served version, with the CRD's validator).

use std::sync::Arc;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use modelpub_crds::validation::CrdValidator;
use serde_json::{Value, json};

use super::discovery::{Custom, Resource};
use super::status::{ApiError, Cause};

fn invalid(name: &str, field: &str, message: String) -> ApiError {
    ApiError::invalid(
        "CustomResourceDefinition",
        "apiextensions.k8s.io",
        name,
        vec![Cause {
            reason: "FieldValueInvalid".into(),
            message,
            field: field.into(),
        }],
    )
}

/// The resources a CRD serves, or the 422 the server would answer.
pub fn resources_of(object: &Value) -> Result<Vec<Resource>, ApiError> {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let crd: CustomResourceDefinition = serde_json::from_value(object.clone())
        .map_err(|e| invalid(&name, "spec", format!("Invalid value: \"object\": {e}")))?;
    let spec = &crd.spec;
    let expected = format!("{}.{}", spec.names.plural, spec.group);
    if name != expected {
        return Err(invalid(
            &name,
            "metadata.name",
            format!("Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    let validator = CrdValidator::new(&crd).map_err(|e| {
        invalid(
            &name,
            "spec.versions[0].schema.openAPIV3Schema",
            format!("Invalid value: \"object\": {e}"),
        )
    })?;
    let validator = Arc::new(validator);
    let mut served = Vec::new();
    for version in spec.versions.iter().filter(|v| v.served) {
        let printer_columns = version
            .additional_printer_columns
            .iter()
            .flatten()
            .filter_map(|c| serde_json::to_value(c).ok())
            .collect();
        // One validator knows every version; each Resource shares it.
        let custom = Custom {
            validator: validator.clone(),
            printer_columns,
            schema: version
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .and_then(|s| serde_json::to_value(s).ok()),
        };
        served.push(Resource {
            group: spec.group.clone(),
            version: version.name.clone(),
            plural: spec.names.plural.clone(),
            singular: spec
                .names
                .singular
                .clone()
                .unwrap_or_else(|| spec.names.kind.to_lowercase()),
            kind: spec.names.kind.clone(),
            namespaced: spec.scope == "Namespaced",
            short_names: spec.names.short_names.clone().unwrap_or_default(),
            categories: spec.names.categories.clone().unwrap_or_default(),
            status: version
                .subresources
                .as_ref()
                .is_some_and(|s| s.status.is_some()),
            custom: Some(Arc::new(custom)),
        });
    }
    Ok(served)
}

/// The status the apiextensions controllers set on an accepted CRD.
pub fn established_status(object: &Value, now: &str) -> Value {
    let condition = |kind: &str, reason: &str, message: &str| json!({"type": kind, "status": "True", "lastTransitionTime": now, "reason": reason, "message": message});
    let storage: Vec<Value> = object
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                .filter_map(|v| v.get("name").cloned())
                .collect()
        })
        .unwrap_or_default();
    json!({
        "acceptedNames": object.pointer("/spec/names").cloned().unwrap_or(json!({})),
        "conditions": [
            condition("NamesAccepted", "NoConflicts", "no conflicts found"),
            condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "storedVersions": storage,
    })
}
