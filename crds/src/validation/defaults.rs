//! Defaulting as the API server does it for structural schemas: first
//! `null` is pruned from fields that are not `nullable`, then every absent
//! property whose schema has a `default` gets a copy of it, recursively
//! through objects, maps and list items (defaults inside a default are
//! applied too).

use serde_json::{Map, Value};

/// Applies the schema's defaults to `value` in place.
pub fn apply(value: &mut Value, schema: &Value) {
    match value {
        Value::Object(object) => apply_object(object, schema),
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    apply(item, item_schema);
                }
            }
        }
        _ => {}
    }
}

fn apply_object(object: &mut Map<String, Value>, schema: &Value) {
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            if object.get(name).is_some_and(Value::is_null) && !is_nullable(property) {
                object.remove(name);
            }
            if !object.contains_key(name)
                && let Some(default) = property.get("default")
            {
                object.insert(name.clone(), default.clone());
            }
            if let Some(child) = object.get_mut(name) {
                apply(child, property);
            }
        }
    } else if let Some(values) = schema.get("additionalProperties").filter(|s| s.is_object()) {
        let nullable = is_nullable(values);
        object.retain(|_, v| nullable || !v.is_null());
        for child in object.values_mut() {
            apply(child, values);
        }
    }
}

pub(crate) fn is_nullable(schema: &Value) -> bool {
    schema.get("nullable").and_then(Value::as_bool) == Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fills_absent_fields_prunes_nulls_and_recurses_into_items() {
        let schema = json!({
            "type": "object",
            "properties": {
                "a": {"type": "integer", "default": 3},
                "b": {"type": "object", "default": {}, "properties": {
                    "c": {"type": "string", "default": "x"}
                }},
                "n": {"type": "string", "nullable": true},
                "list": {"type": "array", "items": {"type": "object", "properties": {
                    "d": {"type": "boolean", "default": true}
                }}}
            }
        });
        let mut value = json!({"a": null, "n": null, "list": [{}, {"d": false}]});
        apply(&mut value, &schema);
        assert_eq!(
            value,
            json!({"a": 3, "b": {"c": "x"}, "n": null, "list": [{"d": true}, {"d": false}]})
        );
    }
}
