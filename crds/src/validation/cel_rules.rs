//! The CEL rules of a schema (`x-kubernetes-validations`), evaluated the way
//! the API server evaluates them: each rule runs with `self` bound to the
//! value at its place in the schema; a rule that mentions `oldSelf` is a
//! transition rule and runs only on update, and only where the old object
//! has a value at the same place (through object properties and map-keyed
//! lists, as Kubernetes correlates them). Values are converted guided by the
//! schema, so a `number` field written as `1` is the CEL double `1.0`.

use std::collections::HashMap;
use std::sync::Arc;

use cel::objects::{Key, Map};
use cel::{Context, Env, Program};
use serde_json::Value;

use super::field_error::{ErrorType, FieldError, child, index};

/// Every rule of a schema, compiled once.
pub struct CelRules {
    env: Arc<Env>,
    programs: HashMap<String, Program>,
}

impl std::fmt::Debug for CelRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CelRules")
            .field("rules", &self.programs.len())
            .finish_non_exhaustive()
    }
}

impl CelRules {
    /// Compiles every rule in `schema`; fails naming the first rule that
    /// does not parse.
    pub fn compile(schema: &Value) -> Result<Self, String> {
        let env = Arc::new(Env::stdlib());
        let mut programs = HashMap::new();
        let mut texts = Vec::new();
        collect_rules(schema, &mut texts);
        for text in texts {
            if programs.contains_key(&text) {
                continue;
            }
            let program = env
                .compile(&text)
                .map_err(|e| format!("CEL rule `{text}` does not compile: {e}"))?;
            programs.insert(text, program);
        }
        Ok(Self { env, programs })
    }

    /// How many distinct rules the schema holds.
    pub fn len(&self) -> usize {
        self.programs.len()
    }

    /// True when the schema holds no rules.
    pub fn is_empty(&self) -> bool {
        self.programs.is_empty()
    }

    /// Evaluates every rule that applies to `value` (and `old`, on update).
    pub fn check(&self, value: &Value, old: Option<&Value>, schema: &Value) -> Vec<FieldError> {
        let mut errors = Vec::new();
        self.walk(value, old, schema, "", &mut errors);
        errors
    }

    fn walk(
        &self,
        value: &Value,
        old: Option<&Value>,
        schema: &Value,
        path: &str,
        out: &mut Vec<FieldError>,
    ) {
        if value.is_null() {
            return;
        }
        let old = old.filter(|o| !o.is_null());
        if let Some(rules) = schema
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
        {
            for rule in rules {
                if let Some(error) = self.evaluate(rule, value, old, schema, path) {
                    out.push(error);
                }
            }
        }
        match value {
            Value::Object(object) => {
                if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                    for (name, property) in properties {
                        if let Some(v) = object.get(name) {
                            let o = old.and_then(|o| o.get(name));
                            self.walk(v, o, property, &child(path, name), out);
                        }
                    }
                } else if let Some(values) =
                    schema.get("additionalProperties").filter(|s| s.is_object())
                {
                    for (name, v) in object {
                        let o = old.and_then(|o| o.get(name));
                        self.walk(v, o, values, &format!("{path}[{name}]"), out);
                    }
                }
            }
            Value::Array(items) => {
                if let Some(item_schema) = schema.get("items") {
                    let keys = map_keys(schema);
                    for (i, item) in items.iter().enumerate() {
                        let o = keys.as_ref().and_then(|keys| correlate(item, old, keys));
                        self.walk(item, o, item_schema, &index(path, i), out);
                    }
                }
            }
            _ => {}
        }
    }

    fn evaluate(
        &self,
        rule: &Value,
        value: &Value,
        old: Option<&Value>,
        schema: &Value,
        path: &str,
    ) -> Option<FieldError> {
        let text = rule.get("rule").and_then(Value::as_str)?;
        let program = self.programs.get(text)?;
        let transition = program.references().has_variable("oldSelf");
        if transition && old.is_none() {
            return None;
        }
        let mut context = Context::with_env(Arc::clone(&self.env));
        context.add_variable_from_value("self", to_cel(value, schema));
        if let Some(old) = old.filter(|_| transition) {
            context.add_variable_from_value("oldSelf", to_cel(old, schema));
        }
        let failure = match program.execute(&context) {
            Ok(cel::Value::Bool(true)) => return None,
            Ok(cel::Value::Bool(false)) => rule
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| format!("failed rule: {text}"), str::to_string),
            Ok(other) => format!("rule `{text}` returned {other:?}, not a bool"),
            Err(e) => format!("rule `{text}` could not be evaluated: {e}"),
        };
        let field_path = rule.get("fieldPath").and_then(Value::as_str).unwrap_or("");
        let target = resolve(value, field_path);
        Some(FieldError::new(
            format!("{path}{field_path}"),
            ErrorType::Invalid,
            Some(Value::String(type_name(target).to_string())),
            failure,
        ))
    }
}

fn collect_rules(schema: &Value, out: &mut Vec<String>) {
    match schema {
        Value::Object(map) => {
            for (key, v) in map {
                if key == "x-kubernetes-validations" {
                    for rule in v.as_array().into_iter().flatten() {
                        if let Some(text) = rule.get("rule").and_then(Value::as_str) {
                            out.push(text.to_string());
                        }
                    }
                } else if key != "default" && key != "enum" && key != "example" {
                    collect_rules(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_rules(i, out)),
        _ => {}
    }
}

/// The `x-kubernetes-list-map-keys` of a map-typed list.
fn map_keys(schema: &Value) -> Option<Vec<String>> {
    if schema.get("x-kubernetes-list-type").and_then(Value::as_str) != Some("map") {
        return None;
    }
    let keys = schema.get("x-kubernetes-list-map-keys")?.as_array()?;
    Some(
        keys.iter()
            .filter_map(|k| k.as_str().map(str::to_string))
            .collect(),
    )
}

/// The old item with the same map keys as `item`.
fn correlate<'a>(item: &Value, old: Option<&'a Value>, keys: &[String]) -> Option<&'a Value> {
    old?.as_array()?
        .iter()
        .find(|o| keys.iter().all(|k| o.get(k) == item.get(k)))
}

/// The value a rule's `fieldPath` (`.a.b`) points at, for the error text.
fn resolve<'a>(value: &'a Value, field_path: &str) -> Option<&'a Value> {
    field_path
        .split('.')
        .filter(|s| !s.is_empty())
        .try_fold(value, |v, name| v.get(name))
}

fn type_name(value: Option<&Value>) -> &'static str {
    match value {
        None | Some(Value::Null) => "null",
        Some(Value::Bool(_)) => "boolean",
        Some(Value::Number(n)) if n.is_f64() => "number",
        Some(Value::Number(_)) => "integer",
        Some(Value::String(_)) => "string",
        Some(Value::Array(_)) => "array",
        Some(Value::Object(_)) => "object",
    }
}

/// JSON to CEL, guided by the schema's declared types.
fn to_cel(value: &Value, schema: &Value) -> cel::Value {
    let declared = schema.get("type").and_then(Value::as_str);
    match value {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => {
            if declared == Some("number") {
                cel::Value::Float(n.as_f64().unwrap_or(f64::NAN))
            } else if let Some(i) = n.as_i64() {
                cel::Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                cel::Value::UInt(u)
            } else {
                cel::Value::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(items) => {
            let item_schema = schema.get("items").unwrap_or(&Value::Null);
            cel::Value::List(Arc::new(
                items.iter().map(|i| to_cel(i, item_schema)).collect(),
            ))
        }
        Value::Object(object) => {
            let properties = schema.get("properties");
            let additional = schema.get("additionalProperties");
            let map: HashMap<Key, cel::Value> = object
                .iter()
                .map(|(k, v)| {
                    let sub = properties
                        .and_then(|p| p.get(k))
                        .or(additional)
                        .unwrap_or(&Value::Null);
                    (Key::String(Arc::new(k.clone())), to_cel(v, sub))
                })
                .collect();
            cel::Value::Map(Map { map: Arc::new(map) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules_schema() -> Value {
        json!({"type": "object", "properties": {"spec": {
            "type": "object",
            "x-kubernetes-validations": [
                {"rule": "self.min <= size(self.items)", "message": "min must not exceed items", "fieldPath": ".min"},
                {"rule": "self.type == 'a' || !has(self.mu)", "message": "mu applies only to type a", "fieldPath": ".mu"},
                {"rule": "self.self.name != ''", "message": "self.name must not be empty"}
            ],
            "properties": {
                "min": {"type": "integer"},
                "mu": {"type": "number", "x-kubernetes-validations": [{"rule": "self > 0.0", "message": "mu must be positive"}]},
                "type": {"type": "string"},
                "self": {"type": "object", "properties": {"name": {"type": "string"}}},
                "fixed": {"type": "string", "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "fixed is immutable"}]},
                "items": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                    "items": {"type": "object", "properties": {
                        "name": {"type": "string"},
                        "size": {"type": "integer", "x-kubernetes-validations": [{"rule": "self >= oldSelf", "message": "size may only grow"}]}
                    }}}
            }
        }}})
    }

    fn check(new: Value, old: Option<Value>) -> Vec<String> {
        let schema = rules_schema();
        let rules = CelRules::compile(&schema).expect("rules compile");
        rules
            .check(&new, old.as_ref(), &schema)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn passing_rules_report_nothing_and_numbers_follow_the_schema() {
        // `mu: 1` is an integer in JSON but a number in the schema, so
        // `self > 0.0` compares doubles.
        let ok = json!({"spec": {"min": 1, "mu": 1, "type": "a", "self": {"name": "x"}, "items": [{"name": "a", "size": 1}]}});
        assert_eq!(check(ok, None), Vec::<String>::new());
    }

    #[test]
    fn failing_rules_name_the_field_from_field_path() {
        let bad = json!({"spec": {"min": 2, "mu": 0.5, "type": "b", "self": {"name": ""}, "items": [{"name": "a"}]}});
        let errors = check(bad, None);
        assert!(
            errors.contains(
                &"spec.min: Invalid value: \"integer\": min must not exceed items".to_string()
            ),
            "{errors:#?}"
        );
        assert!(
            errors.contains(
                &"spec.mu: Invalid value: \"number\": mu applies only to type a".to_string()
            ),
            "{errors:#?}"
        );
        assert!(
            errors.contains(
                &"spec: Invalid value: \"object\": self.name must not be empty".to_string()
            ),
            "{errors:#?}"
        );
        assert_eq!(errors.len(), 3, "{errors:#?}");
    }

    #[test]
    fn transition_rules_run_only_on_update_and_correlate_map_lists_by_key() {
        let old = json!({"spec": {"min": 1, "type": "a", "self": {"name": "x"}, "fixed": "one", "items": [{"name": "a", "size": 5}, {"name": "b", "size": 1}]}});
        let new = json!({"spec": {"min": 1, "type": "a", "self": {"name": "x"}, "fixed": "two", "items": [{"name": "b", "size": 2}, {"name": "a", "size": 4}, {"name": "c", "size": 0}]}});
        assert_eq!(check(new.clone(), None), Vec::<String>::new());
        let errors = check(new, Some(old));
        assert_eq!(
            errors,
            vec![
                "spec.fixed: Invalid value: \"string\": fixed is immutable".to_string(),
                "spec.items[1].size: Invalid value: \"integer\": size may only grow".to_string(),
            ]
        );
    }
}
