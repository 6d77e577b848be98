//! docs/crds.md documents every field: each property of a kind's schema
//! must appear in that kind's section of the document, so a field added to
//! the Rust types without documentation fails here.

use std::collections::BTreeSet;
use std::path::Path;

use modelpub_crds::crd;
use serde_json::Value;

fn property_names(schema: &Value, out: &mut BTreeSet<String>) {
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            out.insert(name.clone());
            property_names(child, out);
        }
    }
    if let Some(items) = schema.get("items") {
        property_names(items, out);
    }
}

/// The text between `## <kind>` and the next `## ` heading.
fn section<'a>(doc: &'a str, kind: &str) -> &'a str {
    let start = doc
        .find(&format!("\n## {kind} "))
        .unwrap_or_else(|| panic!("docs/crds.md has no `## {kind}` section"));
    let rest = &doc[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    &rest[..end]
}

#[test]
fn every_field_appears_in_its_kinds_section_of_docs_crds_md() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/crds.md");
    let doc = std::fs::read_to_string(&path).expect("docs/crds.md is readable");
    let mut missing = Vec::new();
    for (names, definition) in crd::all() {
        let schema = serde_json::to_value(
            definition.spec.versions[0]
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref()),
        )
        .expect("schema to JSON");
        let mut fields = BTreeSet::new();
        property_names(&schema, &mut fields);
        let text = section(&doc, names.kind);
        for field in fields {
            if !text.contains(field.as_str()) {
                missing.push(format!("{}: {field}", names.kind));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/crds.md does not document: {missing:?}"
    );
}
