//! The configuration files the two roles read (`config.json` in a party
//! directory). `modelpub simulate` writes them; in a cluster the operator
//! renders the same JSON into a ConfigMap.

use std::path::{Path, PathBuf};

use modelpub_protocol::identity::PublicIdentity;
use serde::{Deserialize, Serialize};

use crate::model::ModelConfig;

/// Local training settings the aggregator hands to every participant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingSettings {
    pub local_epochs: u32,
    pub batch_size: u32,
    pub learning_rate: f64,
    pub max_batches_per_epoch: u32,
    pub seed: u64,
}

/// Which server-side strategy aggregates updates, with its knobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "lowercase")]
pub enum StrategyConfig {
    FedAvg,
    FedProx {
        mu: f64,
    },
    FedAdam {
        server_learning_rate: f64,
        beta1: f64,
        beta2: f64,
        tau: f64,
    },
}

impl StrategyConfig {
    pub fn parse(name: &str) -> Result<Self, String> {
        match name {
            "fedavg" => Ok(Self::FedAvg),
            "fedprox" => Ok(Self::FedProx { mu: 0.01 }),
            "fedadam" => Ok(Self::FedAdam {
                server_learning_rate: 0.03,
                beta1: 0.9,
                beta2: 0.99,
                tau: 1e-3,
            }),
            other => Err(format!(
                "unknown strategy `{other}`; choose fedavg, fedprox or fedadam"
            )),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::FedAvg => "fedavg",
            Self::FedProx { .. } => "fedprox",
            Self::FedAdam { .. } => "fedadam",
        }
    }
}

/// A vault and the file holding its key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VaultRef {
    pub dir: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AggregatorConfig {
    pub federation: String,
    /// Where to listen, e.g. "127.0.0.1:0" (0 picks a free port).
    pub listen: String,
    /// Written with the bound address once the server accepts connections.
    pub address_file: PathBuf,
    /// One JSON line per finished round, for whoever watches the run.
    pub rounds_file: PathBuf,
    /// Identities of everyone who may take part.
    pub roster: Vec<PublicIdentity>,
    /// A round needs at least this many updates.
    pub min_participants: u32,
    pub rounds: u32,
    pub round_timeout_secs: u64,
    /// How long to wait for the roster to join before round 1.
    pub join_timeout_secs: u64,
    pub strategy: StrategyConfig,
    pub training: TrainingSettings,
    pub model: ModelConfig,
    pub model_seed: u64,
    /// A held-out set the aggregator evaluates every global model on.
    pub evaluation: Option<VaultRef>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ParticipantConfig {
    pub federation: String,
    /// e.g. "https://127.0.0.1:7443"
    pub aggregator_url: String,
    /// The name on the aggregator's certificate.
    pub aggregator_server_name: String,
    pub aggregator_identity: PublicIdentity,
    pub vault: VaultRef,
    /// Give up if the aggregator cannot be reached within this many seconds.
    pub connect_timeout_secs: u64,
    /// Prefer CUDA when libtorch sees a GPU.
    pub prefer_cuda: bool,
}

pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{} is not valid: {e}", path.display()))
}

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}
