//! The local cluster: the test-only API server and the process kubelet,
//! wired so that pods reach the API server as their ServiceAccount.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kube::Client;

use super::ClusterError;
use crate::apiserver::ApiServer;
use crate::kubelet::credentials::ApiAccess;
use crate::kubelet::{Kubelet, KubeletConfig};

pub struct LocalCluster {
    pub server: ApiServer,
    pub kubelet: Kubelet,
    pub client: Client,
    pub kubeconfig: PathBuf,
}

impl LocalCluster {
    pub async fn start(work_dir: &Path) -> Result<Self, ClusterError> {
        let local = |e: &dyn std::fmt::Display| ClusterError::Local(e.to_string());
        let server = ApiServer::start().await.map_err(|e| local(&e))?;
        let kubeconfig = work_dir.join("admin.kubeconfig");
        server
            .write_kubeconfig(&kubeconfig, &server.admin_token())
            .map_err(|e| local(&e))?;
        let client = server
            .client(&server.admin_token())
            .await
            .map_err(|e| local(&e))?;
        let bin_dir = crate::modelpub_bin()
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| ClusterError::Local("the modelpub binary has no folder".into()))?;
        let data_dir = crate::helm::repo_root().join("data");
        let mut config = KubeletConfig::new(&work_dir.join("node"), &bin_dir, &data_dir);
        let state = server.state().clone();
        config.api_access = Some(ApiAccess {
            server: server.url().to_string(),
            ca_pem: server.ca_pem().to_string(),
            token_for: Arc::new(move |ns, name| state.tokens.issue_service_account(ns, name)),
        });
        let kubelet = Kubelet::start(client.clone(), config)
            .await
            .map_err(|e| local(&e))?;
        Ok(Self {
            server,
            kubelet,
            client,
            kubeconfig,
        })
    }

    pub async fn shutdown(self) {
        self.kubelet.shutdown().await;
        drop(self.server);
    }
}
