//! Validates custom resources against their CRDs without a cluster, doing
//! what the API server does on create and update: apply schema defaults,
//! check the structural schema (types, required, enums, ranges, patterns,
//! list sizes, unknown fields), then evaluate every CEL rule, with transition
//! rules (`oldSelf`) on updates only. Errors name the field
//! (`spec.rounds: Invalid value: 0: must be greater than or equal to 1`).
//!
//! Behind the `validation` feature: the crds tests and e2e's test API server
//! use it; the operator does not link it.
//!
//! CEL rules are evaluated only when the structural checks pass, since a
//! rule over a wrongly typed value could only add noise to the real error.

mod cel_rules;
mod defaults;
mod field_error;
mod schema;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

pub use cel_rules::CelRules;
pub use field_error::{ErrorType, FieldError};
pub use schema::StructuralSchema;

/// A CRD whose schema could not be used for validation.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("CRD {crd} version {version} has no openAPIV3Schema")]
    NoSchema { crd: String, version: String },
    #[error("CRD {crd} version {version}: {reason}")]
    Compile {
        crd: String,
        version: String,
        reason: String,
    },
    #[error("`{0}` is not a ModelPub kind (TrustDomain, ComputeOffer, FederationRound)")]
    UnknownKind(String),
}

/// An object the API server would reject, with every reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{kind}.{group} {name:?} is invalid: {}", list(.errors))]
pub struct InvalidObject {
    pub kind: String,
    pub group: String,
    pub name: String,
    pub errors: Vec<FieldError>,
}

fn list(errors: &[FieldError]) -> String {
    let texts: Vec<String> = errors.iter().map(ToString::to_string).collect();
    match texts.as_slice() {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    }
}

impl InvalidObject {
    /// True when some error is about the field at `path`.
    pub fn mentions(&self, path: &str) -> bool {
        self.errors.iter().any(|e| e.path == path)
    }
}

/// One served version's compiled schema and rules.
#[derive(Debug)]
struct VersionSchema {
    name: String,
    structural: StructuralSchema,
    rules: CelRules,
}

/// Validates objects of one CRD.
#[derive(Debug)]
pub struct CrdValidator {
    group: String,
    kind: String,
    versions: Vec<VersionSchema>,
}

impl CrdValidator {
    /// Compiles every served version of `crd`.
    pub fn new(crd: &CustomResourceDefinition) -> Result<Self, SchemaError> {
        let crd_name = crd.metadata.name.clone().unwrap_or_default();
        let mut versions = Vec::new();
        for version in crd.spec.versions.iter().filter(|v| v.served) {
            let schema = version
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .ok_or_else(|| SchemaError::NoSchema {
                    crd: crd_name.clone(),
                    version: version.name.clone(),
                })?;
            let compile_error = |reason: String| SchemaError::Compile {
                crd: crd_name.clone(),
                version: version.name.clone(),
                reason,
            };
            let schema = serde_json::to_value(schema).map_err(|e| compile_error(e.to_string()))?;
            versions.push(VersionSchema {
                name: version.name.clone(),
                structural: StructuralSchema::new(&schema).map_err(compile_error)?,
                rules: CelRules::compile(&schema).map_err(compile_error)?,
            });
        }
        Ok(Self {
            group: crd.spec.group.clone(),
            kind: crd.spec.names.kind.clone(),
            versions,
        })
    }

    /// The validator of a ModelPub kind, from the CRDs the Rust types
    /// generate.
    pub fn for_kind(kind: &str) -> Result<Self, SchemaError> {
        let crd =
            crate::crd::for_kind(kind).ok_or_else(|| SchemaError::UnknownKind(kind.to_string()))?;
        Self::new(&crd)
    }

    /// Validators of every ModelPub CRD, in [`crate::ALL`] order.
    pub fn all_modelpub() -> Result<Vec<Self>, SchemaError> {
        crate::crd::all()
            .iter()
            .map(|(_, crd)| Self::new(crd))
            .collect()
    }

    pub fn kind(&self) -> &str {
        &self.kind
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    /// The object's schema by its `apiVersion`, or the error naming it.
    fn version_of(&self, object: &Value) -> Result<&VersionSchema, FieldError> {
        let api_version = object.get("apiVersion").and_then(Value::as_str);
        let Some(api_version) = api_version else {
            return Err(FieldError::new("apiVersion", ErrorType::Required, None, ""));
        };
        let served = |v: &VersionSchema| format!("{}/{}", self.group, v.name);
        self.versions
            .iter()
            .find(|v| served(v) == api_version)
            .ok_or_else(|| {
                let supported: Vec<String> = self
                    .versions
                    .iter()
                    .map(|v| format!("{:?}", served(v)))
                    .collect();
                FieldError::new(
                    "apiVersion",
                    ErrorType::NotSupported,
                    Some(Value::String(api_version.to_string())),
                    format!("supported values: {}", supported.join(", ")),
                )
            })
    }

    fn invalid(&self, object: &Value, errors: Vec<FieldError>) -> InvalidObject {
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        InvalidObject {
            kind: self.kind.clone(),
            group: self.group.clone(),
            name,
            errors,
        }
    }

    /// Fills in schema defaults (and prunes `null` from non-nullable
    /// fields) as the API server does before validating.
    pub fn apply_defaults(&self, object: &mut Value) -> Result<(), InvalidObject> {
        let version = self
            .version_of(object)
            .map_err(|e| self.invalid(object, vec![e]))?;
        let schema = version.structural.openapi().clone();
        defaults::apply(object, &schema);
        Ok(())
    }

    /// Checks `object` as a create (`old` = None) or as an update of `old`.
    /// Defaults are not applied here; see [`admit`](Self::admit).
    pub fn validate(&self, object: &Value, old: Option<&Value>) -> Result<(), InvalidObject> {
        let mut errors = envelope_errors(object, &self.kind);
        let version = match self.version_of(object) {
            Ok(v) => v,
            Err(e) => {
                errors.push(e);
                return Err(self.invalid(object, errors));
            }
        };
        errors.extend(version.structural.check(object));
        if errors.is_empty() {
            errors.extend(
                version
                    .rules
                    .check(object, old, version.structural.openapi()),
            );
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(self.invalid(object, errors))
        }
    }

    /// What the API server does with a create or update: defaults, then
    /// validation. Returns the object as it would be stored.
    pub fn admit(&self, mut object: Value, old: Option<&Value>) -> Result<Value, InvalidObject> {
        self.apply_defaults(&mut object)?;
        self.validate(&object, old)?;
        Ok(object)
    }
}

/// `kind` and `metadata.name` checks every object gets.
fn envelope_errors(object: &Value, kind: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if !object.is_object() {
        errors.push(FieldError::new(
            "",
            ErrorType::Invalid,
            Some(object.clone()),
            "must be an object",
        ));
        return errors;
    }
    match object.get("kind").and_then(Value::as_str) {
        Some(k) if k == kind => {}
        Some(other) => errors.push(FieldError::new(
            "kind",
            ErrorType::Invalid,
            Some(Value::String(other.to_string())),
            format!("must be {kind}"),
        )),
        None => errors.push(FieldError::new("kind", ErrorType::Required, None, "")),
    }
    let has = |field: &str| {
        object
            .pointer(&format!("/metadata/{field}"))
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    };
    if !has("name") && !has("generateName") {
        errors.push(FieldError::new(
            "metadata.name",
            ErrorType::Required,
            None,
            "name or generateName is required",
        ));
    }
    errors
}
