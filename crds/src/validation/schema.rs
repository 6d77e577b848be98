//! Structural validation of an object against a CRD's `openAPIV3Schema`:
//! types, required fields, enums, ranges, lengths, patterns and list sizes
//! (checked by the `jsonschema` crate after translating OpenAPI's
//! `nullable` and `x-kubernetes-int-or-string` into plain JSON Schema);
//! then what only Kubernetes knows: fields the schema does not know (what
//! `kubectl --validate=strict` reports) and duplicates in lists typed `set`
//! or `map` (`x-kubernetes-list-type`).

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::paths::LocationSegment;
use jsonschema::{Draft, ValidationError};
use serde_json::{Map, Value};

use super::defaults::is_nullable;
use super::field_error::{ErrorType, FieldError, child, index};

/// Fields every Kubernetes object has that a CRD schema leaves out.
const OBJECT_ENVELOPE: [&str; 3] = ["apiVersion", "kind", "metadata"];

/// A compiled CRD version schema.
pub struct StructuralSchema {
    schema: Value,
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for StructuralSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StructuralSchema").finish_non_exhaustive()
    }
}

impl StructuralSchema {
    /// Compiles an `openAPIV3Schema`. OpenAPI 3.0 schemas use draft 4's
    /// boolean `exclusiveMinimum`/`exclusiveMaximum`, so draft 4 it is.
    pub fn new(schema: &Value) -> Result<Self, String> {
        let translated = to_json_schema(schema);
        let validator = jsonschema::options()
            .with_draft(Draft::Draft4)
            .should_validate_formats(true)
            .should_ignore_unknown_formats(true)
            .build(&translated)
            .map_err(|e| e.to_string())?;
        Ok(Self {
            schema: schema.clone(),
            validator,
        })
    }

    /// The schema as given (OpenAPI form).
    pub fn openapi(&self) -> &Value {
        &self.schema
    }

    /// Every structural problem with `object`, unknown fields included.
    pub fn check(&self, object: &Value) -> Vec<FieldError> {
        let mut errors: Vec<FieldError> = self
            .validator
            .iter_errors(object)
            .map(|e| to_field_error(&e))
            .collect();
        kubernetes_rules(object, &self.schema, "", true, &mut errors);
        errors.dedup();
        errors
    }
}

/// Rewrites the OpenAPI extensions JSON Schema does not know into their
/// JSON Schema meaning.
fn to_json_schema(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            let mut out: Map<String, Value> = map
                .iter()
                .map(|(k, v)| {
                    let v = match k.as_str() {
                        // Keys whose values are schemas or maps of schemas.
                        "properties" => map_values(v, to_json_schema),
                        "items" | "additionalProperties" | "not" => to_json_schema(v),
                        "allOf" | "anyOf" | "oneOf" => map_array(v, to_json_schema),
                        _ => v.clone(),
                    };
                    (k.clone(), v)
                })
                .collect();
            if out.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
                out.insert("type".into(), serde_json::json!(["integer", "string"]));
            }
            if is_nullable(schema) {
                if let Some(ty) = out.get("type").cloned() {
                    let mut types = match ty {
                        Value::Array(types) => types,
                        single => vec![single],
                    };
                    types.push(Value::String("null".into()));
                    out.insert("type".into(), Value::Array(types));
                }
                if let Some(Value::Array(options)) = out.get_mut("enum") {
                    options.push(Value::Null);
                }
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

fn map_values(v: &Value, f: fn(&Value) -> Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), f(v))).collect()),
        other => other.clone(),
    }
}

fn map_array(v: &Value, f: fn(&Value) -> Value) -> Value {
    match v {
        Value::Array(a) => Value::Array(a.iter().map(f).collect()),
        other => other.clone(),
    }
}

fn to_field_error(e: &ValidationError<'_>) -> FieldError {
    let mut path = String::new();
    for segment in e.instance_path().segments() {
        path = match segment {
            LocationSegment::Property(name) => child(&path, &name),
            LocationSegment::Index(i) => index(&path, i),
        };
    }
    let value = Some(e.instance().clone().into_owned());
    let invalid =
        |detail: String| FieldError::new(&path, ErrorType::Invalid, value.clone(), detail);
    match e.kind() {
        ValidationErrorKind::Required { property } => {
            let name = property
                .as_str()
                .map_or_else(|| property.to_string(), str::to_string);
            FieldError::new(child(&path, &name), ErrorType::Required, None, "")
        }
        ValidationErrorKind::Type { kind } => {
            invalid(format!("must be of type {}", type_names(kind)))
        }
        ValidationErrorKind::Enum { options } => {
            let supported: Vec<String> = options
                .as_array()
                .into_iter()
                .flatten()
                .filter(|o| !o.is_null())
                .map(Value::to_string)
                .collect();
            FieldError::new(
                &path,
                ErrorType::NotSupported,
                value.clone(),
                format!("supported values: {}", supported.join(", ")),
            )
        }
        ValidationErrorKind::Minimum { limit } => invalid(format!(
            "must be greater than or equal to {}",
            number(limit)
        )),
        ValidationErrorKind::Maximum { limit } => {
            invalid(format!("must be less than or equal to {}", number(limit)))
        }
        ValidationErrorKind::ExclusiveMinimum { limit } => {
            invalid(format!("must be greater than {}", number(limit)))
        }
        ValidationErrorKind::ExclusiveMaximum { limit } => {
            invalid(format!("must be less than {}", number(limit)))
        }
        ValidationErrorKind::MinLength { limit } => {
            invalid(format!("must be at least {limit} characters long"))
        }
        ValidationErrorKind::MaxLength { limit } => {
            invalid(format!("may not be longer than {limit} characters"))
        }
        ValidationErrorKind::Pattern { pattern } => invalid(format!("should match '{pattern}'")),
        ValidationErrorKind::MinItems { limit } => {
            invalid(format!("must have at least {limit} items"))
        }
        ValidationErrorKind::MaxItems { limit } => {
            let count = e.instance().as_array().map_or(0, Vec::len);
            FieldError::new(
                &path,
                ErrorType::TooMany,
                Some(Value::from(count)),
                format!("must have at most {limit} items"),
            )
        }
        ValidationErrorKind::Format { format } => invalid(format!("must be a valid {format}")),
        _ => invalid(e.masked().to_string()),
    }
}

fn type_names(kind: &TypeKind) -> String {
    match kind {
        TypeKind::Single(t) => t.to_string(),
        TypeKind::Multiple(set) => set
            .iter()
            .map(|t| t.to_string())
            .filter(|t| t != "null")
            .collect::<Vec<_>>()
            .join(" or "),
    }
}

/// `1.0` reads as `1`: schemas store integer bounds as floats.
fn number(limit: &Value) -> String {
    match limit.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        _ => limit.to_string(),
    }
}

/// Unknown fields and list duplicates, walking value and schema together.
fn kubernetes_rules(
    value: &Value,
    schema: &Value,
    path: &str,
    root: bool,
    out: &mut Vec<FieldError>,
) {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return;
    }
    match value {
        Value::Object(object) => {
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (name, v) in object {
                    match properties.get(name) {
                        Some(property) => {
                            kubernetes_rules(v, property, &child(path, name), false, out)
                        }
                        None if root && OBJECT_ENVELOPE.contains(&name.as_str()) => {}
                        None => out.push(FieldError::new(
                            child(path, name),
                            ErrorType::Unknown,
                            None,
                            "the field is not in the schema",
                        )),
                    }
                }
            } else if let Some(values) =
                schema.get("additionalProperties").filter(|s| s.is_object())
            {
                for (name, v) in object {
                    kubernetes_rules(v, values, &format!("{path}[{name}]"), false, out);
                }
            }
        }
        Value::Array(items) => {
            duplicates(items, schema, path, out);
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    kubernetes_rules(item, item_schema, &index(path, i), false, out);
                }
            }
        }
        _ => {}
    }
}

/// A `set` list holds each value once; a `map` list holds each key tuple
/// once. The later item is the one reported, as the API server does.
fn duplicates(items: &[Value], schema: &Value, path: &str, out: &mut Vec<FieldError>) {
    let identity = |item: &Value| -> Option<Value> {
        match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => Some(item.clone()),
            Some("map") => {
                let keys = schema.get("x-kubernetes-list-map-keys")?.as_array()?;
                let tuple: Map<String, Value> = keys
                    .iter()
                    .filter_map(Value::as_str)
                    .filter_map(|k| item.get(k).map(|v| (k.to_string(), v.clone())))
                    .collect();
                Some(Value::Object(tuple))
            }
            _ => None,
        }
    };
    let mut seen: Vec<Value> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Some(id) = identity(item) else { return };
        if seen.contains(&id) {
            out.push(FieldError::new(
                index(path, i),
                ErrorType::Duplicate,
                Some(id),
                "",
            ));
        } else {
            seen.push(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> StructuralSchema {
        StructuralSchema::new(&json!({
            "type": "object",
            "required": ["spec"],
            "properties": {"spec": {"type": "object", "required": ["name"], "properties": {
                "name": {"type": "string", "pattern": "^[a-z]+$"},
                "rate": {"type": "number", "minimum": 0.0, "exclusiveMinimum": true, "nullable": true},
                "mode": {"type": "string", "enum": ["a", "b"]},
                "qty": {"x-kubernetes-int-or-string": true},
                "list": {"type": "array", "maxItems": 1, "items": {"type": "integer", "minimum": 1.0}},
                "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
                "named": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                          "items": {"type": "object", "properties": {"name": {"type": "string"}, "v": {"type": "integer"}}}}
            }}}
        }))
        .expect("schema compiles")
    }

    fn messages(object: Value) -> Vec<String> {
        schema()
            .check(&object)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn accepts_a_valid_object_with_envelope_fields() {
        let ok = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "n"},
                        "spec": {"name": "ok", "rate": null, "qty": "1Gi", "list": [1]}});
        assert_eq!(messages(ok), Vec::<String>::new());
    }

    #[test]
    fn names_the_field_in_each_kind_of_error() {
        let errors = messages(
            json!({"spec": {"rate": 0, "mode": "c", "qty": true, "list": [0, 2], "typo": 1,
                "tags": ["a", "b", "a"],
                "named": [{"name": "x", "v": 1}, {"name": "y"}, {"name": "x", "v": 2}]}}),
        );
        let expected = [
            "spec.name: Required value",
            "spec.rate: Invalid value: 0: must be greater than 0",
            "spec.mode: Unsupported value: \"c\": supported values: \"a\", \"b\"",
            "spec.qty: Invalid value: true: must be of type integer or string",
            "spec.list: Too many: 2: must have at most 1 items",
            "spec.list[0]: Invalid value: 0: must be greater than or equal to 1",
            "spec.typo: Unknown field: the field is not in the schema",
            "spec.tags[2]: Duplicate value: \"a\"",
            "spec.named[2]: Duplicate value: {\"name\":\"x\"}",
        ];
        for e in expected {
            assert!(
                errors.iter().any(|m| m == e),
                "missing `{e}` in {errors:#?}"
            );
        }
        assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    }
}
