//! Services on loopback: every Service gets the address
//! [`service_ip`]`(salt, namespace, name)` (what [`super::translate`] hands
//! pods for `<svc>.<ns>.svc`), and the kubelet listens there on each of
//! the Service's ports and forwards each connection to a ready pod behind
//! it (selector match, `Ready` condition, `podIP`), at the target port
//! (a number or a container port name). Bytes are copied as they are, so
//! TLS ends at the pod and the client verifies the Service's name.
//!
//! The kubelet also plays the API server's cluster-IP allocator: it
//! records that address in `spec.clusterIP` of every Service that has none
//! (headless `None` and ExternalName Services are left alone), so clients
//! that connect to a Service's cluster IP, as the operator does for an
//! aggregator's `/status`, reach it here as they would on a cluster.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::network::service_ip;
use super::workloads::{changes, settle};

type Backends = Arc<RwLock<Vec<SocketAddr>>>;

struct Listener {
    backends: Backends,
    task: JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct ServiceProxies {
    client: Client,
    salt: u64,
    listeners: HashMap<(String, String, u16), Listener>,
}

/// Whether `pod` is a ready endpoint: running, Ready, with an address.
pub fn ready_address(pod: &Pod) -> Option<Ipv4Addr> {
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Running") || pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if !ready {
        return None;
    }
    status.pod_ip.as_deref()?.parse().ok()
}

fn selects(selector: &BTreeMap<String, String>, pod: &Pod) -> bool {
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The pod port a Service port forwards to.
pub fn target_port(port: &ServicePort, pod: &Pod) -> Option<u16> {
    match &port.target_port {
        None => u16::try_from(port.port).ok(),
        Some(IntOrString::Int(n)) => u16::try_from(*n).ok(),
        Some(IntOrString::String(name)) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

/// The ready backends of each port of `service`.
pub fn endpoints(service: &Service, pods: &[Pod]) -> Vec<(u16, Vec<SocketAddr>)> {
    let ns = service.metadata.namespace.as_deref().unwrap_or("default");
    let Some(spec) = &service.spec else {
        return Vec::new();
    };
    let selector = spec.selector.clone().unwrap_or_default();
    let members: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns) && selects(&selector, p))
        .collect();
    spec.ports
        .iter()
        .flatten()
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .filter_map(|port| {
            let number = u16::try_from(port.port).ok()?;
            let backends = members
                .iter()
                .filter_map(|pod| {
                    let ip = ready_address(pod)?;
                    Some(SocketAddr::V4(SocketAddrV4::new(
                        ip,
                        target_port(port, pod)?,
                    )))
                })
                .collect();
            Some((number, backends))
        })
        .collect()
}

impl ServiceProxies {
    pub fn new(client: Client, salt: u64) -> Self {
        Self {
            client,
            salt,
            listeners: HashMap::new(),
        }
    }

    pub async fn run(mut self, resync: Duration) {
        let mut events = futures::stream::select(
            changes(Api::<Service>::all(self.client.clone())),
            changes(Api::<Pod>::all(self.client.clone())),
        );
        loop {
            self.reconcile().await;
            settle(&mut events, resync).await;
        }
    }

    async fn reconcile(&mut self) {
        let services: Api<Service> = Api::all(self.client.clone());
        let pods: Api<Pod> = Api::all(self.client.clone());
        let (Ok(services), Ok(pods)) = (
            services.list(&ListParams::default()).await,
            pods.list(&ListParams::default()).await,
        ) else {
            return;
        };
        for s in &services.items {
            self.allocate_cluster_ip(s).await;
            self.publish_load_balancer(s).await;
        }
        let mut wanted = BTreeMap::new();
        for s in &services.items {
            let ns = s
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into());
            let name = s.metadata.name.clone().unwrap_or_default();
            for (port, backends) in endpoints(s, &pods.items) {
                wanted.insert((ns.clone(), name.clone(), port), backends);
            }
        }
        self.listeners.retain(|k, _| wanted.contains_key(k));
        for ((ns, name, port), backends) in wanted {
            let key = (ns.clone(), name.clone(), port);
            if let Some(l) = self.listeners.get(&key) {
                if let Ok(mut b) = l.backends.write() {
                    *b = backends;
                }
                continue;
            }
            let ip = service_ip(self.salt, &ns, &name);
            match TcpListener::bind((ip, port)).await {
                Ok(listener) => {
                    let shared: Backends = Arc::new(RwLock::new(backends));
                    let task = tokio::spawn(proxy(listener, shared.clone()));
                    self.listeners.insert(
                        key,
                        Listener {
                            backends: shared,
                            task,
                        },
                    );
                }
                Err(e) => tracing::warn!("kubelet: Service {ns}/{name} on {ip}:{port}: {e}"),
            }
        }
    }
}

impl ServiceProxies {
    async fn allocate_cluster_ip(&self, service: &Service) {
        let spec = service.spec.clone().unwrap_or_default();
        let unset = spec.cluster_ip.as_deref().is_none_or(str::is_empty);
        if !unset || spec.type_.as_deref() == Some("ExternalName") {
            return;
        }
        let (Some(ns), Some(name)) = (&service.metadata.namespace, &service.metadata.name) else {
            return;
        };
        let ip = service_ip(self.salt, ns, name).to_string();
        let patch = serde_json::json!({"spec": {"clusterIP": ip, "clusterIPs": [ip]}});
        let api: Api<Service> = Api::namespaced(self.client.clone(), ns);
        if let Err(e) = api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::warn!("kubelet: cluster IP of Service {ns}/{name}: {e}");
        }
    }
}

impl ServiceProxies {
    /// Plays the cloud's load-balancer controller for `type:
    /// LoadBalancer`: "the actual creation of the load balancer happens
    /// asynchronously, and information about the provisioned balancer is
    /// published in the Service's `.status.loadBalancer` field"
    /// (https://kubernetes.io/docs/concepts/services-networking/service/#loadbalancer).
    /// The address published is the Service's own loopback address, where
    /// this kubelet already proxies every port: reachable from any process
    /// on the machine, so from another test cluster's pods as from another
    /// network's.
    async fn publish_load_balancer(&self, service: &Service) {
        let spec = service.spec.clone().unwrap_or_default();
        if spec.type_.as_deref() != Some("LoadBalancer") {
            return;
        }
        let published = service
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .is_some_and(|i| !i.is_empty());
        let (Some(ns), Some(name)) = (&service.metadata.namespace, &service.metadata.name) else {
            return;
        };
        if published {
            return;
        }
        let ip = service_ip(self.salt, ns, name).to_string();
        let patch = serde_json::json!({"status": {"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"}]}}});
        let api: Api<Service> = Api::namespaced(self.client.clone(), ns);
        if let Err(e) = api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::warn!("kubelet: load-balancer address of Service {ns}/{name}: {e}");
        }
    }
}

/// Accepts connections and splices each to a backend (round robin); with
/// no ready backend the connection is closed, as a cluster refuses it.
async fn proxy(listener: TcpListener, backends: Backends) {
    let mut next = 0usize;
    while let Ok((mut inbound, _)) = listener.accept().await {
        let target = backends.read().ok().and_then(|b| {
            (!b.is_empty()).then(|| {
                next = next.wrapping_add(1);
                b[next % b.len()]
            })
        });
        let Some(target) = target else { continue };
        tokio::spawn(async move {
            if let Ok(mut outbound) = TcpStream::connect(target).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ip: &str, ready: bool) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "lab", "labels": {"app": "agg"}},
            "spec": {"containers": [{"name": "c", "ports": [{"name": "federation", "containerPort": 7443}]}]},
            "status": {"phase": "Running", "podIP": ip,
                       "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        }))
        .unwrap()
    }

    #[test]
    fn endpoints_are_ready_selected_pods_at_the_target_port() {
        let service: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "agg", "namespace": "lab"},
            "spec": {"selector": {"app": "agg"}, "ports": [
                {"name": "federation", "port": 7443, "targetPort": "federation"},
                {"name": "other", "port": 80, "targetPort": 8080},
                {"name": "plain", "port": 81}
            ]}
        }))
        .unwrap();
        let mut elsewhere = pod("x", "127.9.0.9", true);
        elsewhere.metadata.namespace = Some("other".into());
        let pods = vec![
            pod("a", "127.9.0.1", true),
            pod("b", "127.9.0.2", false),
            elsewhere,
        ];
        let e = endpoints(&service, &pods);
        assert_eq!(
            e,
            vec![
                (7443, vec!["127.9.0.1:7443".parse().unwrap()]),
                (80, vec!["127.9.0.1:8080".parse().unwrap()]),
                (81, vec!["127.9.0.1:81".parse().unwrap()]),
            ]
        );
    }
}
