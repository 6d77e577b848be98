//! In-cluster API credentials for pods that ask for them.
//!
//! A real kubelet mounts the pod's ServiceAccount token, the cluster CA and
//! the namespace at `/var/run/secrets/kubernetes.io/serviceaccount` and sets
//! `KUBERNETES_SERVICE_HOST`/`_PORT`. A local process cannot have that fixed
//! path, so this kubelet writes the same three files into the pod directory
//! plus a kubeconfig naming them, and points `KUBECONFIG` at it: kube-rs
//! and client-go read `KUBECONFIG` before falling back to the in-cluster
//! files, so the process authenticates exactly as the ServiceAccount, with
//! the RBAC its Roles give it, as it would in a cluster.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::PodSpec;

/// Mints the token of ServiceAccount `(namespace, name)`.
pub type TokenSource = Arc<dyn Fn(&str, &str) -> String + Send + Sync>;

/// What pods need to reach the API server as their ServiceAccount.
#[derive(Clone)]
pub struct ApiAccess {
    /// `https://127.0.0.1:<port>`
    pub server: String,
    pub ca_pem: String,
    pub token_for: TokenSource,
}

impl fmt::Debug for ApiAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiAccess")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// Whether the pod gets a token: unless it (or its spec) opts out with
/// `automountServiceAccountToken: false`, as on a real cluster.
pub fn wanted(spec: &PodSpec) -> bool {
    spec.automount_service_account_token != Some(false)
}

/// The pod's ServiceAccount (`default` when the spec names none).
pub fn service_account(spec: &PodSpec) -> &str {
    spec.service_account_name
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
}

/// Writes `token`, `ca.crt`, `namespace` and `kubeconfig` under
/// `<pod_root>/serviceaccount` and returns the kubeconfig's path.
pub fn write(
    pod_root: &Path,
    access: &ApiAccess,
    namespace: &str,
    account: &str,
) -> std::io::Result<PathBuf> {
    let dir = pod_root.join("serviceaccount");
    std::fs::create_dir_all(&dir)?;
    let token = (access.token_for)(namespace, account);
    std::fs::write(dir.join("token"), &token)?;
    std::fs::write(dir.join("ca.crt"), &access.ca_pem)?;
    std::fs::write(dir.join("namespace"), namespace)?;
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "in-cluster", "cluster": {
            "server": access.server,
            "certificate-authority": dir.join("ca.crt"),
        }}],
        "users": [{"name": account, "user": {"tokenFile": dir.join("token")}}],
        "contexts": [{"name": "in-cluster", "context": {
            "cluster": "in-cluster", "user": account, "namespace": namespace,
        }}],
        "current-context": "in-cluster",
    });
    let path = dir.join("kubeconfig");
    std::fs::write(&path, serde_json::to_vec_pretty(&kubeconfig)?)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kubeconfig_names_the_token_ca_and_namespace_files() {
        let dir = tempfile::tempdir().unwrap();
        let access = ApiAccess {
            server: "https://127.0.0.1:6443".into(),
            ca_pem: "-----BEGIN CERTIFICATE-----\n".into(),
            token_for: Arc::new(|ns, name| format!("token-{ns}-{name}")),
        };
        let path = write(dir.path(), &access, "modelpub", "modelpub-operator").unwrap();
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let token_file = config["users"][0]["user"]["tokenFile"].as_str().unwrap();
        assert_eq!(
            std::fs::read_to_string(token_file).unwrap(),
            "token-modelpub-modelpub-operator"
        );
        assert_eq!(config["contexts"][0]["context"]["namespace"], "modelpub");
        assert_eq!(
            config["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:6443"
        );
    }

    #[test]
    fn opting_out_and_the_default_account_follow_the_pod_spec() {
        let mut spec = PodSpec::default();
        assert!(wanted(&spec));
        assert_eq!(service_account(&spec), "default");
        spec.automount_service_account_token = Some(false);
        spec.service_account_name = Some("agent".into());
        assert!(!wanted(&spec));
        assert_eq!(service_account(&spec), "agent");
    }
}
