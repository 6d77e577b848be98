//! Where a party (aggregator or institution) keeps its things on disk.
//!
//! One directory per party, the same layout in `modelpub simulate` and in a
//! pod (where `--config` and `--secrets` copy the read-only ConfigMap and
//! Secret mounts into it; see [`crate::pod_mode`]):
//!
//! ```text
//! <party>/identity.key  identity.pub   Ed25519 identity
//! <party>/tls/ca.crt tls.crt tls.key   mutual-TLS material from the federation CA
//! <party>/audit.log                    hash-chained, signed audit log
//! <party>/vault/  <party>/vault.key    Personal Vault and its key
//! <party>/config.json                  the role's configuration
//! <party>/agent.log                    the process's own log
//! ```

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct PartyDir {
    root: PathBuf,
}

impl PartyDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn tls(&self) -> PathBuf {
        self.root.join("tls")
    }
    pub fn vault(&self) -> PathBuf {
        self.root.join("vault")
    }
    pub fn vault_key(&self) -> PathBuf {
        self.root.join("vault.key")
    }
    pub fn config(&self) -> PathBuf {
        self.root.join("config.json")
    }
    pub fn log(&self) -> PathBuf {
        self.root.join("agent.log")
    }
}
