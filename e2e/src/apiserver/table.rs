//! `meta.k8s.io/v1` Table responses, which `kubectl get` asks for: custom
//! resources get their CRD's `additionalPrinterColumns` (JSONPath subset:
//! `.a.b`, `.a[0].b`, `.a[?(@.type=="Ready")].status`), or Name and Age when
//! they declare none; built-in kinds get the server's default table (Name,
//! Created At).

use jiff::Timestamp;
use serde_json::{Value, json};

use super::discovery::Resource;

/// Whether an `Accept` header asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept.contains("as=Table")
}

/// One step of the supported JSONPath subset.
enum Step {
    Field(String),
    Index(usize),
    Filter(String, String),
}

fn parse(path: &str) -> Option<Vec<Step>> {
    let mut steps = Vec::new();
    let mut rest = path.trim().trim_start_matches('{').trim_end_matches('}');
    rest = rest.strip_prefix('$').unwrap_or(rest);
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            steps.push(Step::Field(r[..end].to_string()));
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix("[?(@.") {
            let end = r.find(")]")?;
            let (field, value) = r[..end].split_once("==")?;
            let value = value.trim().trim_matches(['"', '\'']).to_string();
            steps.push(Step::Filter(field.trim().to_string(), value));
            rest = &r[end + 2..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            steps.push(Step::Index(r[..end].trim().parse().ok()?));
            rest = &r[end + 1..];
        } else {
            return None;
        }
    }
    Some(steps)
}

fn evaluate<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cursor = object;
    for step in parse(path)? {
        cursor = match step {
            Step::Field(f) => cursor.get(&f)?,
            Step::Index(i) => cursor.get(i)?,
            Step::Filter(f, v) => cursor
                .as_array()?
                .iter()
                .find(|item| item.get(&f).and_then(Value::as_str) == Some(v.as_str()))?,
        };
    }
    Some(cursor)
}

/// `5s`, `3m`, `2h`, `4d`, as kubectl shows ages.
fn human_age(timestamp: &str) -> String {
    let Ok(then) = timestamp.parse::<Timestamp>() else {
        return "<unknown>".into();
    };
    let secs = (Timestamp::now().as_second() - then.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn cell(value: Option<&Value>, kind: &str) -> Value {
    match (value, kind) {
        (None | Some(Value::Null), _) => Value::Null,
        (Some(Value::String(s)), "date") => json!(human_age(s)),
        (Some(v @ (Value::String(_) | Value::Number(_) | Value::Bool(_))), _) => v.clone(),
        (Some(other), _) => json!(other.to_string()),
    }
}

struct Column {
    name: String,
    kind: String,
    description: String,
    priority: i64,
    path: Option<String>,
}

fn columns(resource: &Resource) -> Vec<Column> {
    let name = Column {
        name: "Name".into(),
        kind: "string".into(),
        description: "Name must be unique within a namespace.".into(),
        priority: 0,
        path: None,
    };
    let mut out = vec![name];
    match &resource.custom {
        Some(custom) if !custom.printer_columns.is_empty() => {
            for c in &custom.printer_columns {
                let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                out.push(Column {
                    name: s("name"),
                    kind: s("type"),
                    description: s("description"),
                    priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                    path: Some(s("jsonPath")),
                });
            }
        }
        Some(_) => out.push(Column {
            name: "Age".into(),
            kind: "date".into(),
            description: "CreationTimestamp is a timestamp representing the server time when this object was created.".into(),
            priority: 0,
            path: Some(".metadata.creationTimestamp".into()),
        }),
        None => out.push(Column {
            name: "Created At".into(),
            kind: "date".into(),
            description: "CreationTimestamp is a timestamp representing the server time when this object was created.".into(),
            priority: 0,
            path: Some(".metadata.creationTimestamp".into()),
        }),
    }
    out
}

/// The Table of `objects`; `include` is the `includeObject` parameter.
pub fn table(resource: &Resource, objects: &[Value], rv: u64, include: &str) -> Value {
    let cols = columns(resource);
    let definitions: Vec<Value> = cols
        .iter()
        .map(|c| {
            let format = if c.path.is_none() { "name" } else { "" };
            let kind = if c.kind == "date" { "string" } else { c.kind.as_str() };
            json!({"name": c.name, "type": kind, "format": format, "description": c.description, "priority": c.priority})
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let cells: Vec<Value> = cols
                .iter()
                .map(|c| match &c.path {
                    None => o.pointer("/metadata/name").cloned().unwrap_or(Value::Null),
                    Some(p) => cell(evaluate(o, p), &c.kind),
                })
                .collect();
            let object = match include {
                "None" => Value::Null,
                "Object" => o.clone(),
                _ => json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o.get("metadata").cloned().unwrap_or(json!({})),
                }),
            };
            let mut row = json!({"cells": cells});
            if !object.is_null() {
                row["object"] = object;
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv.to_string()},
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonpath_subset() {
        let o = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}], "n": 3}, "spec": {"v": [{"name": "a"}]}});
        assert_eq!(
            evaluate(&o, ".status.conditions[?(@.type==\"Ready\")].status"),
            Some(&json!("True"))
        );
        assert_eq!(evaluate(&o, ".status.n"), Some(&json!(3)));
        assert_eq!(evaluate(&o, ".spec.v[0].name"), Some(&json!("a")));
        assert_eq!(evaluate(&o, ".status.missing"), None);
    }
}
