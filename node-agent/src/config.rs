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
    /// Secure aggregation (SecAgg+): the aggregator learns only the sum.
    #[serde(default)]
    pub secure_aggregation: Option<SecureSettings>,
    /// Client-level differential privacy with a budget.
    #[serde(default)]
    pub privacy: Option<PrivacySettings>,
    /// Wire encoding of plain updates: "none", "f16" or "int8".
    #[serde(default = "no_compression")]
    pub compression: String,
}

fn no_compression() -> String {
    "none".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecureSettings {
    /// Each coordinate of an update is clipped to [-clip, clip] before
    /// quantisation into Z_2^32.
    pub clip: f32,
    /// k: neighbours per participant (default O(log n)).
    pub neighbours: Option<u32>,
    /// t: shares needed to reconstruct a secret, also the fewest survivors
    /// a round can complete with (default: a majority of k).
    pub threshold: Option<u32>,
    /// How long the key and unmasking stages wait for stragglers.
    pub stage_timeout_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrivacySettings {
    /// Updates are clipped to this L2 norm.
    pub clip_norm: f64,
    /// Noise standard deviation of the sum, over the clip norm.
    pub noise_multiplier: f64,
    /// Training stops before (epsilon, delta) would be exceeded.
    pub epsilon: f64,
    pub delta: f64,
}

/// Where a participant is made to fail, for testing dropout tolerance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultStage {
    AfterDownload,
    AfterAdvertise,
    AfterShare,
    AfterUpload,
    DuringUnmask,
}

impl FaultStage {
    pub const PLAIN: [FaultStage; 2] = [FaultStage::AfterDownload, FaultStage::AfterUpload];
    pub const SECURE: [FaultStage; 4] = [
        FaultStage::AfterAdvertise,
        FaultStage::AfterShare,
        FaultStage::AfterUpload,
        FaultStage::DuringUnmask,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultStage::AfterDownload => "after downloading the model",
            FaultStage::AfterAdvertise => "after advertising keys",
            FaultStage::AfterShare => "after sharing keys",
            FaultStage::AfterUpload => "after uploading its update",
            FaultStage::DuringUnmask => "during unmasking",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    pub round: u32,
    pub stage: FaultStage,
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
    /// The other participants' identities, to check the key advertisements
    /// the aggregator forwards in secure rounds.
    #[serde(default)]
    pub roster: Vec<PublicIdentity>,
    /// Injected failures (`simulate --dropout`): the process exits there.
    #[serde(default)]
    pub faults: Vec<Fault>,
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
