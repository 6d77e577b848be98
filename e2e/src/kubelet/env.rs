//! A container's environment: `env` (literal values with `$(VAR)`
//! expansion, `fieldRef`, `secretKeyRef`, `configMapKeyRef`) and `envFrom`,
//! as the kubelet resolves them, then translated for a local process.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Container, Pod};

use super::sources::Sources;
use super::translate::Translator;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("env {var}: {kind} `{name}` not found")]
    MissingObject {
        var: String,
        kind: &'static str,
        name: String,
    },
    #[error("env {var}: key `{key}` not found in {kind} `{name}`")]
    MissingKey {
        var: String,
        kind: &'static str,
        name: String,
        key: String,
    },
    #[error(
        "env {var}: fieldRef `{field}` is not supported (use metadata.name, metadata.namespace, metadata.uid, metadata.labels['k'], metadata.annotations['k'], spec.nodeName, spec.serviceAccountName, status.podIP, status.hostIP)"
    )]
    UnsupportedField { var: String, field: String },
    #[error("env {var}: resourceFieldRef is not supported by the process kubelet")]
    UnsupportedResourceField { var: String },
    #[error("env {var}: value of {kind} `{name}` key `{key}` is not UTF-8")]
    NotUtf8 {
        var: String,
        kind: &'static str,
        name: String,
        key: String,
    },
    #[error("envFrom: {kind} `{name}` not found")]
    MissingEnvFrom { kind: &'static str, name: String },
}

/// The value of a `fieldRef`.
pub fn field_value(pod: &Pod, pod_ip: Ipv4Addr, field: &str) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let bracketed = |prefix: &str| {
        field
            .strip_prefix(prefix)?
            .strip_prefix("['")?
            .strip_suffix("']")
            .map(str::to_string)
    };
    if let Some(k) = bracketed("metadata.labels") {
        return Some(meta.labels.as_ref()?.get(&k).cloned().unwrap_or_default());
    }
    if let Some(k) = bracketed("metadata.annotations") {
        return Some(
            meta.annotations
                .as_ref()?
                .get(&k)
                .cloned()
                .unwrap_or_default(),
        );
    }
    Some(match field {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into()),
        "status.podIP" => pod_ip.to_string(),
        "status.hostIP" => Ipv4Addr::LOCALHOST.to_string(),
        _ => return None,
    })
}

/// `$(VAR)` replaced by earlier variables, `$$` by `$`; unknown references
/// stay as written (Kubernetes semantics).
pub fn expand(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match vars.get(name) {
                Some(v) => out.push_str(v),
                None => out.push_str(&rest[i..i + 2 + end + 1]),
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn utf8(
    bytes: &[u8],
    var: &str,
    kind: &'static str,
    name: &str,
    key: &str,
) -> Result<String, EnvError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| EnvError::NotUtf8 {
        var: var.into(),
        kind,
        name: name.into(),
        key: key.into(),
    })
}

/// The container's variables in order of definition (later ones win),
/// before translation.
pub fn resolve(
    pod: &Pod,
    container: &Container,
    pod_ip: Ipv4Addr,
    sources: &Sources,
) -> Result<BTreeMap<String, String>, EnvError> {
    let mut vars = BTreeMap::new();
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (kind, name, optional, keys) = if let Some(s) = &from.secret_ref {
            ("Secret", &s.name, s.optional, sources.secrets.get(&s.name))
        } else if let Some(c) = &from.config_map_ref {
            (
                "ConfigMap",
                &c.name,
                c.optional,
                sources.config_maps.get(&c.name),
            )
        } else {
            continue;
        };
        match keys {
            Some(keys) => {
                for (k, v) in keys {
                    vars.insert(format!("{prefix}{k}"), utf8(v, k, kind, name, k)?);
                }
            }
            None if optional == Some(true) => {}
            None => {
                return Err(EnvError::MissingEnvFrom {
                    kind,
                    name: name.clone(),
                });
            }
        }
    }
    for e in container.env.iter().flatten() {
        let var = &e.name;
        let value = match &e.value_from {
            None => Some(expand(e.value.as_deref().unwrap_or(""), &vars)),
            Some(from) => {
                if let Some(f) = &from.field_ref {
                    Some(field_value(pod, pod_ip, &f.field_path).ok_or_else(|| {
                        EnvError::UnsupportedField {
                            var: var.clone(),
                            field: f.field_path.clone(),
                        }
                    })?)
                } else if let Some(s) = &from.secret_key_ref {
                    key_ref(
                        var,
                        "Secret",
                        &s.name,
                        &s.key,
                        s.optional,
                        sources.secrets.get(&s.name),
                    )?
                } else if let Some(c) = &from.config_map_key_ref {
                    key_ref(
                        var,
                        "ConfigMap",
                        &c.name,
                        &c.key,
                        c.optional,
                        sources.config_maps.get(&c.name),
                    )?
                } else if from.resource_field_ref.is_some() {
                    return Err(EnvError::UnsupportedResourceField { var: var.clone() });
                } else {
                    Some(String::new())
                }
            }
        };
        if let Some(value) = value {
            vars.insert(var.clone(), value);
        }
    }
    Ok(vars)
}

fn key_ref(
    var: &str,
    kind: &'static str,
    name: &str,
    key: &str,
    optional: Option<bool>,
    keys: Option<&super::sources::Keys>,
) -> Result<Option<String>, EnvError> {
    let optional = optional == Some(true);
    let Some(keys) = keys else {
        return if optional {
            Ok(None)
        } else {
            Err(EnvError::MissingObject {
                var: var.into(),
                kind,
                name: name.into(),
            })
        };
    };
    match keys.get(key) {
        Some(v) => utf8(v, var, kind, name, key).map(Some),
        None if optional => Ok(None),
        None => Err(EnvError::MissingKey {
            var: var.into(),
            kind,
            name: name.into(),
            key: key.into(),
        }),
    }
}

/// The resolved variables with their values translated for the process.
pub fn translated(vars: &BTreeMap<String, String>, t: &Translator) -> BTreeMap<String, String> {
    vars.iter().map(|(k, v)| (k.clone(), t.string(v))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};

    fn pod_and_container() -> (Pod, Container) {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "lab", "uid": "u1", "labels": {"app": "x"}},
            "spec": {"nodeName": "process-node", "containers": []}
        }))
        .unwrap();
        let container: Container = serde_json::from_value(serde_json::json!({
            "name": "c",
            "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
            "env": [
                {"name": "A", "value": "a"},
                {"name": "B", "value": "$(A)-$(NOPE)-$$(A)"},
                {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "s", "key": "absent", "optional": true}}},
                {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "mode"}}}
            ]
        }))
        .unwrap();
        (pod, container)
    }

    fn sources() -> Sources {
        let mut s = Sources::default();
        s.add_secret(
            "s",
            &Secret {
                data: Some([("k".to_string(), ByteString(b"secret".to_vec()))].into()),
                ..Secret::default()
            },
        );
        s.add_config_map(
            "cm",
            &ConfigMap {
                data: Some([("mode".to_string(), "fast".to_string())].into()),
                ..ConfigMap::default()
            },
        );
        s
    }

    #[test]
    fn values_fields_and_references_resolve() {
        let (pod, c) = pod_and_container();
        let ip = Ipv4Addr::new(127, 9, 0, 1);
        let vars = resolve(&pod, &c, ip, &sources()).unwrap();
        assert_eq!(vars["A"], "a");
        assert_eq!(vars["B"], "a-$(NOPE)-$(A)");
        assert_eq!(vars["NAME"], "p");
        assert_eq!(vars["NS"], "lab");
        assert_eq!(vars["IP"], "127.9.0.1");
        assert_eq!(vars["APP"], "x");
        assert_eq!(vars["KEY"], "secret");
        assert_eq!(vars["MODE"], "fast");
        assert_eq!(vars["CM_mode"], "fast");
        assert!(!vars.contains_key("OPT"), "optional and absent: unset");
    }

    #[test]
    fn missing_references_are_named() {
        let (pod, c) = pod_and_container();
        let mut s = sources();
        s.secrets.clear();
        let e = resolve(&pod, &c, Ipv4Addr::LOCALHOST, &s).unwrap_err();
        assert_eq!(e.to_string(), "env KEY: Secret `s` not found");
        let mut s = sources();
        s.secrets.get_mut("s").unwrap().clear();
        let e = resolve(&pod, &c, Ipv4Addr::LOCALHOST, &s).unwrap_err();
        assert_eq!(e.to_string(), "env KEY: key `k` not found in Secret `s`");
        let mut s = sources();
        s.config_maps.clear();
        let e = resolve(&pod, &c, Ipv4Addr::LOCALHOST, &s).unwrap_err();
        assert_eq!(e.to_string(), "envFrom: ConfigMap `cm` not found");
    }

    #[test]
    fn unsupported_fields_are_refused() {
        let (pod, _) = pod_and_container();
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "c",
            "env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "status.phase"}}}]
        }))
        .unwrap();
        let e = resolve(&pod, &c, Ipv4Addr::LOCALHOST, &Sources::default()).unwrap_err();
        assert!(matches!(e, EnvError::UnsupportedField { .. }), "{e}");
    }

    #[test]
    fn expansion_edge_cases() {
        let vars = BTreeMap::from([("X".to_string(), "1".to_string())]);
        assert_eq!(expand("$(X)$(X)", &vars), "11");
        assert_eq!(expand("$X $( $", &vars), "$X $( $");
        assert_eq!(expand("a$$b", &vars), "a$b");
    }
}
