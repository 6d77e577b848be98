//! A test-only Kubernetes API server (never shipped in the chart or the
//! images): the suites start it when no kubeconfig is given, since CI
//! machines have no cluster. It serves, over TLS with bearer tokens and RBAC,
//! the built-in kinds the operator, the chart and kubectl use and the custom
//! resources of the CRDs registered with it, following the API conventions
//! for each verb (see [`handlers`]). Paths it does not serve answer like a
//! real server's unknown resource.
//!
//! ```no_run
//! # async fn demo() -> Result<(), modelpub_e2e::apiserver::StartError> {
//! let server = modelpub_e2e::apiserver::ApiServer::start().await?;
//! let path = std::env::temp_dir().join("kubeconfig");
//! server.write_kubeconfig(&path, &server.admin_token()).expect("write kubeconfig");
//! # Ok(()) }
//! ```

pub mod auth;
pub mod convert;
pub mod crds;
pub mod discovery;
pub mod gc;
pub mod handlers;
pub mod install;
pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod rbac;
pub mod selectors;
pub mod ssa;
pub mod status;
pub mod store;
pub mod table;
pub mod tls;
pub mod token_request;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};

use base64::Engine;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use discovery::Resource;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot make the serving certificate: {0}")]
    Certificate(String),
    #[error("cannot listen on 127.0.0.1: {0}")]
    Listen(#[from] std::io::Error),
}

/// Why a client for the server could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("client: {0}")]
    Client(#[from] kube::Error),
}

/// Everything a request handler needs.
pub struct ServerState {
    pub store: store::Store,
    pub tokens: auth::Tokens,
    resources: RwLock<Vec<Resource>>,
    /// `127.0.0.1:<port>`, as `/api` reports it.
    pub address: String,
    /// Wakes the garbage collector after deletions and owner changes.
    pub gc: Notify,
}

impl ServerState {
    /// A snapshot of the served resources.
    pub fn resources(&self) -> Vec<Resource> {
        self.resources
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the resources of one (group, plural) with `served`.
    pub fn set_resources(&self, group: &str, plural: &str, served: Vec<Resource>) {
        let mut all = self.resources.write().unwrap_or_else(|e| e.into_inner());
        all.retain(|r| !(r.group == group && r.plural == plural));
        all.extend(served);
    }
}

/// A running server; stops when dropped.
pub struct ApiServer {
    url: String,
    ca_pem: String,
    admin_token: String,
    state: Arc<ServerState>,
    shutdown: watch::Sender<bool>,
}

impl ApiServer {
    /// Starts a server on `https://127.0.0.1:<free port>` on the current
    /// tokio runtime, with the namespaces a new cluster has.
    pub async fn start() -> Result<Self, StartError> {
        let certs = tls::ServingCert::generate().map_err(StartError::Certificate)?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let local: SocketAddr = listener.local_addr()?;
        let state = Arc::new(ServerState {
            store: store::Store::new(),
            tokens: auth::Tokens::default(),
            resources: RwLock::new(discovery::builtins()),
            address: local.to_string(),
            gc: Notify::new(),
        });
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            handlers::bootstrap_namespace(&state, ns);
        }
        let admin_token = state.tokens.issue_admin();
        let acceptor = certs.acceptor().map_err(StartError::Certificate)?;
        let (shutdown, stopped) = watch::channel(false);
        tokio::spawn(gc::run(state.clone(), stopped.clone()));
        tokio::spawn(serve(listener, acceptor, state.clone(), stopped));
        Ok(Self {
            url: format!("https://{local}"),
            ca_pem: certs.ca_pem,
            admin_token,
            state,
            shutdown,
        })
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The CA that signed the serving certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A token for `admin` (group `system:masters`: RBAC never denies it).
    pub fn admin_token(&self) -> String {
        self.admin_token.clone()
    }

    /// A token for `system:serviceaccount:<namespace>:<name>`, authorized by
    /// whatever Roles and ClusterRoles are bound to that ServiceAccount.
    pub fn service_account_token(&self, namespace: &str, name: &str) -> String {
        self.state.tokens.issue_service_account(namespace, name)
    }

    /// The kubeconfig YAML for this server with `token` as the user.
    pub fn kubeconfig(&self, token: &str) -> String {
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        let doc = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "e2e", "cluster": {"server": self.url, "certificate-authority-data": ca}}],
            "users": [{"name": "e2e", "user": {"token": token}}],
            "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "e2e", "namespace": "default"}}],
            "current-context": "e2e",
        });
        // JSON is YAML; every kubeconfig reader accepts it.
        serde_json::to_string_pretty(&doc).unwrap_or_default()
    }

    /// Writes [`kubeconfig`](Self::kubeconfig) to `path`.
    pub fn write_kubeconfig(&self, path: &Path, token: &str) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig(token))
    }

    /// A kube client for this server acting with `token`.
    pub async fn client(&self, token: &str) -> Result<kube::Client, ClientError> {
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&self.kubeconfig(token))?;
        let options = kube::config::KubeConfigOptions::default();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// The shared state, for in-process checks.
    pub fn state(&self) -> &Arc<ServerState> {
        &self.state
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        // Receivers gone means everything already stopped.
        let _ = self.shutdown.send(true);
    }
}

async fn serve(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    state: Arc<ServerState>,
    mut stopped: watch::Receiver<bool>,
) {
    let app = axum::Router::new()
        .fallback(handlers::handle)
        .with_state(state);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopped.changed() => return,
        };
        let Ok((tcp, _)) = accepted else { continue };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let mut stop = stopped.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = TowerToHyperService::new(app);
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(tls), service);
            tokio::select! {
                _ = conn => {}
                _ = stop.changed() => {}
            }
        });
    }
}
