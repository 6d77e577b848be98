//! The committed CRD YAML must be what the Rust types generate today, in
//! both places it is committed (crds/generated and the Helm chart).

use std::path::Path;

use modelpub_crds::crd;

#[test]
fn committed_crd_yaml_matches_the_rust_types() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut stale = Vec::new();
    for (names, definition) in crd::all() {
        let expected = crd::to_yaml(&definition).expect("CRD serializes to YAML");
        for dir in ["crds/generated", "charts/modelpub/crds"] {
            let path = root.join(dir).join(crd::file_name(&names));
            match std::fs::read_to_string(&path) {
                Ok(text) if text == expected => {}
                Ok(_) => stale.push(format!("{dir}/{} differs", crd::file_name(&names))),
                Err(e) => stale.push(format!("{dir}/{} unreadable: {e}", crd::file_name(&names))),
            }
        }
    }
    assert!(
        stale.is_empty(),
        "committed CRD YAML is stale ({}); regenerate with `cargo run -p modelpub-crds --bin crdgen`",
        stale.join("; ")
    );
}

#[test]
fn every_crd_is_named_as_the_constants_say() {
    for (names, definition) in crd::all() {
        assert_eq!(
            definition.metadata.name.as_deref(),
            Some(names.crd_name().as_str())
        );
        assert_eq!(definition.spec.group, modelpub_crds::GROUP);
        assert_eq!(definition.spec.names.kind, names.kind);
        assert_eq!(definition.spec.names.plural, names.plural);
        assert_eq!(
            definition.spec.names.short_names.as_deref(),
            Some([names.short_name.to_string()].as_slice())
        );
        assert_eq!(
            definition.spec.names.categories.as_deref(),
            Some([modelpub_crds::CATEGORY.to_string()].as_slice())
        );
        let version = &definition.spec.versions[0];
        assert_eq!(version.name, modelpub_crds::VERSION);
        assert!(
            version
                .subresources
                .as_ref()
                .is_some_and(|s| s.status.is_some())
        );
    }
}

/// `kubectl explain` prints descriptions; a field without one teaches
/// nothing. Walks every schema and names the fields that lack one.
#[test]
fn every_field_has_a_description() {
    fn walk(schema: &serde_json::Value, path: &str, missing: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
            for (name, child) in props {
                let child_path = format!("{path}.{name}");
                if child
                    .get("description")
                    .and_then(|d| d.as_str())
                    .is_none_or(str::is_empty)
                {
                    missing.push(child_path.clone());
                }
                walk(child, &child_path, missing);
            }
        }
        if let Some(items) = schema.get("items") {
            walk(items, &format!("{path}[]"), missing);
        }
    }
    let mut missing = Vec::new();
    for (names, definition) in crd::all() {
        let schema = serde_json::to_value(
            definition.spec.versions[0]
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref()),
        )
        .expect("schema to JSON");
        walk(&schema, names.kind, &mut missing);
    }
    assert!(
        missing.is_empty(),
        "fields without a description: {missing:?}"
    );
}

/// Every list in every schema has `maxItems`: an unbounded list lets one
/// object grow towards etcd's size limit, and the API server cannot
/// estimate the cost of CEL rules over it.
#[test]
fn every_list_is_bounded() {
    fn walk(node: &serde_json::Value, path: &str, unbounded: &mut Vec<String>) {
        match node {
            serde_json::Value::Object(map) => {
                if map.get("type").and_then(|t| t.as_str()) == Some("array")
                    && !map.contains_key("maxItems")
                {
                    unbounded.push(path.to_string());
                }
                for (k, v) in map {
                    let next = if k == "properties" || k == "items" {
                        path.to_string()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(v, &next, unbounded);
                }
            }
            serde_json::Value::Array(items) => {
                for v in items {
                    walk(v, path, unbounded);
                }
            }
            _ => {}
        }
    }
    let mut unbounded = Vec::new();
    for (names, definition) in crd::all() {
        for version in &definition.spec.versions {
            let schema = serde_json::to_value(
                version
                    .schema
                    .as_ref()
                    .and_then(|s| s.open_api_v3_schema.as_ref())
                    .expect("a schema"),
            )
            .unwrap();
            walk(&schema, names.kind, &mut unbounded);
        }
    }
    assert!(
        unbounded.is_empty(),
        "lists without maxItems: {unbounded:?}"
    );
}
