//! A prometheus-operator PodMonitor turned into what Prometheus scrapes, as
//! the operator's config generator does
//! (https://prometheus-operator.dev/docs/api-reference/api/#monitoring.coreos.com/v1.PodMonitor):
//! the pods its `selector` and `namespaceSelector` pick, at the container
//! port each endpoint names, with the discovery labels
//! (`__meta_kubernetes_namespace`, `__meta_kubernetes_pod_label_*`) its
//! `relabelings` read, and the `namespace`/`pod`/`container` target labels
//! the generated config adds. Here the targets go to a `file_sd` file, so
//! a real Prometheus scrapes the local cluster's pods exactly as
//! prometheus-operator would have it scrape a real cluster's.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

/// A PodMonitor field this translation does not know.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PodMonitorError {
    #[error("PodMonitor {0}: unsupported")]
    Unsupported(String),
}

/// One `relabel_configs` entry (replace action, `;`-joined sources).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relabel {
    pub source_labels: Vec<String>,
    pub target_label: String,
}

/// The scrape job of the PodMonitor's first endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct ScrapeJob {
    pub path: String,
    pub port_name: String,
    pub relabelings: Vec<Relabel>,
}

/// Prometheus' label-name sanitising of Kubernetes label keys.
fn sanitise(key: &str) -> String {
    key.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

/// The scrape job of `pm`'s first endpoint.
pub fn scrape_job(pm: &Value) -> Result<ScrapeJob, PodMonitorError> {
    let endpoint = &pm["spec"]["podMetricsEndpoints"][0];
    let port_name = endpoint["port"]
        .as_str()
        .ok_or_else(|| PodMonitorError::Unsupported("endpoint without a named port".into()))?;
    let mut relabelings = Vec::new();
    for r in endpoint["relabelings"].as_array().into_iter().flatten() {
        if r.get("action").is_some_and(|a| a != "replace") {
            return Err(PodMonitorError::Unsupported(format!("relabeling {r}")));
        }
        relabelings.push(Relabel {
            source_labels: strings(&r["sourceLabels"]),
            target_label: r["targetLabel"].as_str().unwrap_or_default().to_string(),
        });
    }
    Ok(ScrapeJob {
        path: endpoint["path"].as_str().unwrap_or("/metrics").to_string(),
        port_name: port_name.to_string(),
        relabelings,
    })
}

fn namespace_selected(pm: &Value, namespace: &str) -> bool {
    let selector = &pm["spec"]["namespaceSelector"];
    if selector["any"] == json!(true) {
        return true;
    }
    let names = strings(&selector["matchNames"]);
    if names.is_empty() {
        // prometheus-operator: no namespaceSelector is the PodMonitor's own.
        return pm["metadata"]["namespace"].as_str() == Some(namespace);
    }
    names.iter().any(|n| n == namespace)
}

fn labels_selected(pm: &Value, labels: &BTreeMap<String, String>) -> Result<bool, PodMonitorError> {
    let selector = &pm["spec"]["selector"];
    for (k, v) in selector["matchLabels"].as_object().into_iter().flatten() {
        if labels.get(k).map(String::as_str) != v.as_str() {
            return Ok(false);
        }
    }
    for e in selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let key = e["key"].as_str().unwrap_or_default();
        let values = strings(&e["values"]);
        let have = labels.get(key);
        let ok = match e["operator"].as_str() {
            Some("In") => have.is_some_and(|h| values.contains(h)),
            Some("NotIn") => have.is_none_or(|h| !values.contains(h)),
            Some("Exists") => have.is_some(),
            Some("DoesNotExist") => have.is_none(),
            _ => return Err(PodMonitorError::Unsupported(format!("matchExpression {e}"))),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `file_sd` target groups: one per running pod `pm` selects that has an IP
/// and a container port named as the endpoint's.
pub fn targets(pm: &Value, pods: &[Pod]) -> Result<Vec<Value>, PodMonitorError> {
    let job = scrape_job(pm)?;
    let mut groups = Vec::new();
    for pod in pods {
        let meta = &pod.metadata;
        let namespace = meta.namespace.as_deref().unwrap_or_default();
        let labels = meta.labels.clone().unwrap_or_default();
        if !namespace_selected(pm, namespace) || !labels_selected(pm, &labels)? {
            continue;
        }
        let status = pod.status.as_ref();
        let (Some(ip), Some("Running")) = (
            status.and_then(|s| s.pod_ip.as_deref()),
            status.and_then(|s| s.phase.as_deref()),
        ) else {
            continue;
        };
        let containers = pod
            .spec
            .as_ref()
            .map(|s| s.containers.as_slice())
            .unwrap_or_default();
        for container in containers {
            let Some(port) = container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(job.port_name.as_str()))
            else {
                continue;
            };
            let mut group_labels = serde_json::Map::new();
            group_labels.insert("__meta_kubernetes_namespace".into(), json!(namespace));
            group_labels.insert(
                "__meta_kubernetes_pod_name".into(),
                json!(meta.name.clone().unwrap_or_default()),
            );
            for (k, v) in &labels {
                group_labels.insert(
                    format!("__meta_kubernetes_pod_label_{}", sanitise(k)),
                    json!(v),
                );
            }
            group_labels.insert("__metrics_path__".into(), json!(job.path));
            groups.push(json!({
                "targets": [format!("{ip}:{}", port.container_port)],
                "labels": group_labels,
            }));
        }
    }
    Ok(groups)
}

/// The `relabel_configs` of the job: the target labels prometheus-operator
/// adds to every PodMonitor target, then the PodMonitor's own.
pub fn relabel_configs(job: &ScrapeJob) -> Vec<Relabel> {
    let mut all = vec![
        Relabel {
            source_labels: vec!["__meta_kubernetes_namespace".into()],
            target_label: "namespace".into(),
        },
        Relabel {
            source_labels: vec!["__meta_kubernetes_pod_name".into()],
            target_label: "pod".into(),
        },
    ];
    all.extend(job.relabelings.iter().cloned());
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, labels: Value, port: &str, ip: Option<&str>) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": ns, "labels": labels},
            "spec": {"containers": [{"name": "c", "ports": [{"name": port, "containerPort": 9464}]}]},
            "status": {"phase": "Running", "podIP": ip},
        }))
        .unwrap()
    }

    fn monitor() -> Value {
        json!({"metadata": {"namespace": "ops"}, "spec": {
            "selector": {"matchLabels": {"app": "x"},
                "matchExpressions": [{"key": "role", "operator": "In", "values": ["a"]}]},
            "namespaceSelector": {"matchNames": ["lab"]},
            "podMetricsEndpoints": [{"port": "metrics", "path": "/metrics",
                "relabelings": [{"sourceLabels": ["__meta_kubernetes_pod_label_role"], "targetLabel": "role"}]}]}})
    }

    #[test]
    fn selects_by_labels_namespace_and_port_name() {
        let pm = monitor();
        let pods = [
            pod(
                "lab",
                json!({"app": "x", "role": "a"}),
                "metrics",
                Some("10.0.0.1"),
            ),
            pod(
                "lab",
                json!({"app": "x", "role": "b"}),
                "metrics",
                Some("10.0.0.2"),
            ),
            pod(
                "other",
                json!({"app": "x", "role": "a"}),
                "metrics",
                Some("10.0.0.3"),
            ),
            pod(
                "lab",
                json!({"app": "x", "role": "a"}),
                "http",
                Some("10.0.0.4"),
            ),
            pod("lab", json!({"app": "x", "role": "a"}), "metrics", None),
        ];
        let groups = targets(&pm, &pods).unwrap();
        assert_eq!(groups.len(), 1, "{groups:?}");
        assert_eq!(groups[0]["targets"], json!(["10.0.0.1:9464"]));
        assert_eq!(groups[0]["labels"]["__meta_kubernetes_pod_label_role"], "a");
        let job = scrape_job(&pm).unwrap();
        let relabels = relabel_configs(&job);
        assert_eq!(relabels[0].target_label, "namespace");
        assert_eq!(relabels[2].target_label, "role");
    }

    #[test]
    fn unknown_selectors_are_refused_not_ignored() {
        let mut pm = monitor();
        pm["spec"]["selector"]["matchExpressions"][0]["operator"] = json!("Gt");
        let pods = [pod(
            "lab",
            json!({"app": "x", "role": "a"}),
            "metrics",
            Some("10.0.0.1"),
        )];
        assert!(targets(&pm, &pods).is_err());
    }
}
