//! The Secrets and ConfigMaps a pod refers to, flattened to key -> bytes
//! (Secret `data` and `stringData`; ConfigMap `data` and `binaryData`), and
//! the names a pod needs fetched before it can start.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};

pub type Keys = BTreeMap<String, Vec<u8>>;

#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub secrets: BTreeMap<String, Keys>,
    pub config_maps: BTreeMap<String, Keys>,
}

impl Sources {
    pub fn add_secret(&mut self, name: &str, secret: &Secret) {
        let mut keys: Keys = secret
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect();
        // stringData is write-only on a real API server (merged into data);
        // honour it in case a server stores it as sent.
        for (k, v) in secret.string_data.iter().flatten() {
            keys.insert(k.clone(), v.clone().into_bytes());
        }
        self.secrets.insert(name.to_string(), keys);
    }

    pub fn add_config_map(&mut self, name: &str, cm: &ConfigMap) {
        let mut keys: Keys = cm
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
            .collect();
        for (k, v) in cm.binary_data.iter().flatten() {
            keys.insert(k.clone(), v.0.clone());
        }
        self.config_maps.insert(name.to_string(), keys);
    }
}

/// Secret and ConfigMap names a pod reads, each with whether it is
/// optional everywhere it is used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Referenced {
    pub secrets: BTreeMap<String, bool>,
    pub config_maps: BTreeMap<String, bool>,
}

fn note(map: &mut BTreeMap<String, bool>, name: &str, optional: Option<bool>) {
    let optional = optional.unwrap_or(false);
    map.entry(name.to_string())
        .and_modify(|o| *o = *o && optional)
        .or_insert(optional);
}

/// Every Secret and ConfigMap named by the pod's volumes and containers.
pub fn referenced(pod: &Pod) -> Referenced {
    let mut r = Referenced::default();
    let Some(spec) = &pod.spec else { return r };
    for v in spec.volumes.iter().flatten() {
        if let Some(s) = &v.secret
            && let Some(name) = &s.secret_name
        {
            note(&mut r.secrets, name, s.optional);
        }
        if let Some(c) = &v.config_map {
            note(&mut r.config_maps, &c.name, c.optional);
        }
    }
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers);
    for c in containers {
        for e in c.env.iter().flatten() {
            let Some(from) = &e.value_from else { continue };
            if let Some(s) = &from.secret_key_ref {
                note(&mut r.secrets, &s.name, s.optional);
            }
            if let Some(c) = &from.config_map_key_ref {
                note(&mut r.config_maps, &c.name, c.optional);
            }
        }
        for f in c.env_from.iter().flatten() {
            if let Some(s) = &f.secret_ref {
                note(&mut r.secrets, &s.name, s.optional);
            }
            if let Some(c) = &f.config_map_ref {
                note(&mut r.config_maps, &c.name, c.optional);
            }
        }
    }
    r
}
