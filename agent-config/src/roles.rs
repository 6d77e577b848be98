//! The configuration files the two roles read (`config.json` in a party
//! directory). `modelpub simulate` writes them; in a cluster the operator
//! renders the same JSON into a ConfigMap.

use std::path::PathBuf;

use modelpub_protocol::identity::PublicIdentity;
use modelpub_protocol::secagg::MaskPrg;
use modelpub_protocol::secagg::neighbourhood::Tolerance;
use serde::{Deserialize, Serialize};

use crate::model::{DataShape, ModelConfig};

/// Local training settings the aggregator hands to every participant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingSettings {
    pub local_epochs: u32,
    pub batch_size: u32,
    pub learning_rate: f64,
    pub max_batches_per_epoch: u32,
    pub seed: u64,
}

impl TrainingSettings {
    /// The node-agent's defaults for a data set (the same numbers as its
    /// `train::default_train_config`, which a node-agent test checks), so
    /// a FederationRound that leaves them out trains as `simulate` does.
    pub fn defaults_for(data: DataShape, seed: u64) -> Self {
        match data {
            DataShape::Tabular { .. } => Self {
                local_epochs: 1,
                batch_size: 32,
                learning_rate: 0.05,
                max_batches_per_epoch: 0,
                seed,
            },
            DataShape::Text => Self {
                local_epochs: 1,
                batch_size: 32,
                learning_rate: 0.02,
                max_batches_per_epoch: 30,
                seed,
            },
        }
    }
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
    /// FedProx's proximal weight when none is given.
    pub const DEFAULT_MU: f64 = 0.01;
    /// FedAdam's knobs when none are given: server learning rate, beta1,
    /// beta2, tau.
    pub const DEFAULT_FEDADAM: (f64, f64, f64, f64) = (0.03, 0.9, 0.99, 1e-3);

    pub fn parse(name: &str) -> Result<Self, String> {
        let (server_learning_rate, beta1, beta2, tau) = Self::DEFAULT_FEDADAM;
        match name {
            "fedavg" => Ok(Self::FedAvg),
            "fedprox" => Ok(Self::FedProx {
                mu: Self::DEFAULT_MU,
            }),
            "fedadam" => Ok(Self::FedAdam {
                server_learning_rate,
                beta1,
                beta2,
                tau,
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VaultRef {
    pub dir: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Before planning a round, how long to wait for joined participants
    /// whose connections have all closed to come back (a restarted process
    /// or pod). Past it they sit the round out; 0 plans at once.
    #[serde(default)]
    pub rejoin_grace_secs: u64,
    /// How often the aggregator pings each connection (HTTP/2 keepalive)
    /// and how long it waits for the answer: a peer that answers neither,
    /// its node powered off or its network split, is gone after about
    /// twice this instead of at the stage timeout. 0 turns pings off.
    #[serde(default = "default_keepalive_secs")]
    pub keepalive_secs: u64,
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
    /// HOST:PORT for /metrics, /healthz, /readyz and /status (plain HTTP,
    /// apart from the mutual-TLS gRPC port); none when absent.
    #[serde(default)]
    pub metrics_listen: Option<String>,
    /// After the run, keep serving `/status` and `/metrics` until SIGTERM
    /// instead of exiting: in a Deployment an exit would restart the run,
    /// and the operator reads the final rounds from `/status`.
    #[serde(default)]
    pub linger_after_run: bool,
    /// PEM CA certificates of other clusters whose participants take part
    /// (their trust domains' CAs, pinned from their join tokens): client
    /// certificates chaining to one of them are admitted besides those from
    /// this party's own `ca.crt`. Empty in a round held in one cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peer_client_cas: Vec<String>,
}

/// The aggregator's keepalive when its configuration names none: a silent
/// peer is gone within about 40 s, while a CPU-bound participant (which
/// trains off the thread that answers pings) is never mistaken for one.
pub const DEFAULT_KEEPALIVE_SECS: u64 = 20;

fn default_keepalive_secs() -> u64 {
    DEFAULT_KEEPALIVE_SECS
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
    /// The mask PRG; absent means AES-128-CTR when every participant of a
    /// round (and the aggregator) has AES instructions, else ChaCha20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_prg: Option<MaskPrg>,
    /// The fractions of a round's roster that may drop out (between
    /// sharing keys and unmasking) and collude with the aggregator, which
    /// k and t are derived for when not set (docs/secagg.md); absent means
    /// 30 % and 5 %.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerated_dropout: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerated_corruption: Option<f64>,
}

impl SecureSettings {
    /// The tolerance k and t are derived for.
    pub fn tolerance(&self) -> Tolerance {
        Tolerance {
            dropout: self.tolerated_dropout.unwrap_or(Tolerance::DEFAULT.dropout),
            corruption: (self.tolerated_corruption).unwrap_or(Tolerance::DEFAULT.corruption),
        }
    }
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParticipantConfig {
    pub federation: String,
    /// e.g. "https://127.0.0.1:7443"
    pub aggregator_url: String,
    /// The name on the aggregator's certificate.
    pub aggregator_server_name: String,
    /// PEM CA the aggregator's certificate must chain to when it is not
    /// this party's own `ca.crt`: the coordinating cluster's CA, pinned
    /// from its join token, for a participant whose aggregator runs in
    /// another cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregator_ca: Option<String>,
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
    /// HOST:PORT for /metrics, /healthz and /readyz; none when absent.
    #[serde(default)]
    pub metrics_listen: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(name: &str) -> PublicIdentity {
        PublicIdentity {
            name: name.into(),
            public_key: "ab".repeat(32),
        }
    }

    #[test]
    fn strategies_parse_by_name_and_reject_others() {
        assert_eq!(
            StrategyConfig::parse("fedavg").unwrap(),
            StrategyConfig::FedAvg
        );
        assert_eq!(
            StrategyConfig::parse("fedprox").unwrap(),
            StrategyConfig::FedProx { mu: 0.01 }
        );
        assert_eq!(StrategyConfig::parse("fedadam").unwrap().name(), "fedadam");
        let err = StrategyConfig::parse("sgd").unwrap_err();
        assert!(err.contains("`sgd`"), "{err}");
    }

    #[test]
    fn strategy_json_is_tagged_by_name() {
        let json = serde_json::to_value(StrategyConfig::FedProx { mu: 0.5 }).unwrap();
        assert_eq!(json, serde_json::json!({"name": "fedprox", "mu": 0.5}));
    }

    #[test]
    fn participant_config_defaults_optional_fields() {
        let json = serde_json::json!({
            "federation": "f",
            "aggregator_url": "https://a:7443",
            "aggregator_server_name": "a",
            "aggregator_identity": identity("aggregator"),
            "vault": {"dir": "/v", "key_file": "/k"},
            "connect_timeout_secs": 30,
            "prefer_cuda": false
        });
        let config: ParticipantConfig = serde_json::from_value(json).unwrap();
        assert!(config.roster.is_empty());
        assert!(config.faults.is_empty());
        assert_eq!(config.metrics_listen, None);
        assert_eq!(config.aggregator_ca, None);
        let back: ParticipantConfig =
            serde_json::from_str(&serde_json::to_string(&config).unwrap()).unwrap();
        assert_eq!(back, config);
    }

    #[test]
    fn aggregator_config_round_trips_and_defaults_compression() {
        let config = AggregatorConfig {
            federation: "f".into(),
            listen: "0.0.0.0:7443".into(),
            address_file: "/p/address".into(),
            rounds_file: "/p/rounds.jsonl".into(),
            roster: vec![identity("a"), identity("b")],
            min_participants: 2,
            rounds: 3,
            round_timeout_secs: 60,
            join_timeout_secs: 120,
            rejoin_grace_secs: 0,
            keepalive_secs: DEFAULT_KEEPALIVE_SECS,
            strategy: StrategyConfig::FedAvg,
            training: TrainingSettings {
                local_epochs: 1,
                batch_size: 32,
                learning_rate: 0.05,
                max_batches_per_epoch: 0,
                seed: 42,
            },
            model: ModelConfig::Mlp {
                inputs: 64,
                hidden: vec![64],
                classes: 10,
            },
            model_seed: 42,
            evaluation: None,
            secure_aggregation: Some(SecureSettings {
                clip: 4.0,
                neighbours: None,
                threshold: Some(2),
                stage_timeout_secs: 60,
                mask_prg: Some(MaskPrg::Aes128Ctr),
                tolerated_dropout: Some(0.2),
                tolerated_corruption: None,
            }),
            privacy: None,
            compression: "none".into(),
            metrics_listen: Some("0.0.0.0:9464".into()),
            linger_after_run: true,
            peer_client_cas: Vec::new(),
        };
        let text = serde_json::to_string(&config).unwrap();
        let back: AggregatorConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(back, config);

        let mut value = serde_json::to_value(&config).unwrap();
        let object = value.as_object_mut().unwrap();
        object.remove("compression");
        object.remove("metrics_listen");
        object.remove("secure_aggregation");
        let old: AggregatorConfig = serde_json::from_value(value).unwrap();
        assert_eq!(old.compression, "none");
        assert_eq!(old.metrics_listen, None);
        assert_eq!(old.secure_aggregation, None);
        assert!(old.peer_client_cas.is_empty());
    }

    #[test]
    fn fault_stages_use_kebab_case() {
        let json = serde_json::to_string(&Fault {
            round: 2,
            stage: FaultStage::DuringUnmask,
        })
        .unwrap();
        assert_eq!(json, r#"{"round":2,"stage":"during-unmask"}"#);
    }
}
