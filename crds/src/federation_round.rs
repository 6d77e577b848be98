//! `FederationRound` (`fr`): one federated training run of one or more
//! rounds across the vaults of a trust domain's members. The spec maps onto
//! the node-agent's aggregator and participant configs; the status mirrors
//! the aggregator's `/status` endpoint.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::{Condition, Time};

/// A federated training run: which model, on whose data, for how many
/// rounds, and with which protections. The spec is fixed once created;
/// create a new FederationRound to change it.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "modelpub.io",
    version = "v1alpha1",
    kind = "FederationRound",
    doc = "FederationRound (fr): a federated training run of one or more rounds across the vaults of a trust domain's members.",
    plural = "federationrounds",
    shortname = "fr",
    category = "modelpub",
    namespaced,
    status = "FederationRoundStatus",
    printcolumn = r#"{"name":"Phase","type":"string","description":"Pending, Running, Succeeded or Failed","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Round","type":"string","description":"Rounds finished / rounds asked for","jsonPath":".status.roundLabel"}"#,
    printcolumn = r#"{"name":"Accuracy","type":"number","description":"Accuracy of the last global model","jsonPath":".status.accuracy"}"#,
    printcolumn = r#"{"name":"TrustDomain","type":"string","priority":1,"description":"The trust domain the run belongs to","jsonPath":".spec.trustDomain"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.compression == 'none' || !self.secureAggregation.enabled").message("compression must be none when secureAggregation.enabled is true: masked updates cannot be quantised").field_path(".compression"),
    validation = Rule::new("self.participants.min <= size(self.data.vaults)").message("participants.min must not exceed the number of vaults in data.vaults").field_path(".participants.min"),
    validation = Rule::new("!has(self.secureAggregation.threshold) || self.secureAggregation.threshold <= size(self.data.vaults)").message("secureAggregation.threshold must not exceed the number of vaults in data.vaults").field_path(".secureAggregation.threshold"),
    validation = Rule::new("(self.data.dataset == 'shakespeare') == (self.model.architecture == 'char-transformer')").message("model.architecture must be char-transformer for text (shakespeare) and mlp for tables (digits, csv)").field_path(".model.architecture"),
    validation = Rule::new("has(self.localEpochs) == has(oldSelf.localEpochs)").message("localEpochs is immutable").field_path(".localEpochs"),
    validation = Rule::new("has(self.learningRate) == has(oldSelf.learningRate)").message("learningRate is immutable").field_path(".learningRate"),
    validation = Rule::new("has(self.batchSize) == has(oldSelf.batchSize)").message("batchSize is immutable").field_path(".batchSize"),
    validation = Rule::new("has(self.maxBatchesPerEpoch) == has(oldSelf.maxBatchesPerEpoch)").message("maxBatchesPerEpoch is immutable").field_path(".maxBatchesPerEpoch"),
    validation = Rule::new("has(self.image) == has(oldSelf.image)").message("image is immutable").field_path(".image")
)]
pub struct FederationRoundSpec {
    /// Name of the TrustDomain (same namespace) whose members take part.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("trustDomain is immutable"))]
    pub trust_domain: String,
    /// The trust domain member whose cluster runs the aggregator (its
    /// `spec.self.name`). Absent, or this cluster's own name, means here.
    /// A round spanning clusters is applied in every member's cluster
    /// with the same name and spec: each cluster runs the participants of
    /// its own vaults, and its copy is its consent; the coordinator runs
    /// the aggregator once every member holding a vault has joined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    #[x_kube(validation = Rule::new("self == oldSelf").message("coordinator is immutable"))]
    pub coordinator: Option<String>,
    /// The model every participant trains.
    #[x_kube(validation = Rule::new("self == oldSelf").message("model is immutable"))]
    pub model: ModelSpec,
    /// The data set and the vaults that hold it.
    #[x_kube(validation = Rule::new("self == oldSelf").message("data is immutable"))]
    pub data: DataSpec,
    /// Federated rounds to run.
    #[serde(default = "default_rounds")]
    #[schemars(range(min = 1, max = 10000))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("rounds is immutable"))]
    #[schemars(extend("format" = "int32"))]
    pub rounds: u32,
    /// Local epochs each participant trains per round. Absent means the
    /// node-agent's default for the data set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("localEpochs is immutable"))]
    #[schemars(extend("format" = "int32"))]
    pub local_epochs: Option<u32>,
    /// Local learning rate. Absent means the node-agent's default for the
    /// data set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 10.0), extend("exclusiveMinimum" = true))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("learningRate is immutable"))]
    pub learning_rate: Option<f64>,
    /// Local mini-batch size. Absent means the node-agent's default for the
    /// data set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65536))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("batchSize is immutable"))]
    #[schemars(extend("format" = "int32"))]
    pub batch_size: Option<u32>,
    /// Cap on mini-batches per local epoch, 0 for none. Absent means the
    /// node-agent's default for the data set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000000))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("maxBatchesPerEpoch is immutable"))]
    #[schemars(extend("format" = "int32"))]
    pub max_batches_per_epoch: Option<u32>,
    /// How the aggregator combines updates.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("strategy is immutable"))]
    pub strategy: Strategy,
    /// SecAgg+: the aggregator learns only the sum of the updates, and a
    /// round survives participants dropping out.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("secureAggregation is immutable"))]
    pub secure_aggregation: SecureAggregation,
    /// Client-level differential privacy with a budget the run stops
    /// before exceeding.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("differentialPrivacy is immutable"))]
    pub differential_privacy: DifferentialPrivacy,
    /// Wire encoding of plain (not securely aggregated) updates.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("compression is immutable"))]
    pub compression: Compression,
    /// Who must take part, and how long to wait for them.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("participants is immutable"))]
    pub participants: Participants,
    /// Resources of each participant's training pod.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("resources is immutable"))]
    pub resources: AgentResources,
    /// Node-agent image for this run, overriding the operator's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("image is immutable"))]
    pub image: Option<String>,
}

fn default_rounds() -> u32 {
    10
}

/// The model architecture and its starting point. Input and output sizes
/// follow from the data set.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelSpec {
    /// `mlp` (tables: digits, csv) or `char-transformer` (text: shakespeare).
    pub architecture: Architecture,
    /// Hidden layer widths of an `mlp`.
    #[serde(default = "default_hidden")]
    #[schemars(length(min = 1, max = 16), inner(range(min = 1, max = 65536)))]
    pub hidden_sizes: Vec<i64>,
    /// Shape of a `char-transformer`.
    #[serde(default)]
    pub transformer: TransformerShape,
    /// Seed of the initial weights, so every participant starts from the
    /// same model.
    #[serde(default = "default_seed")]
    #[schemars(range(min = 0))]
    pub init_seed: i64,
    /// SPDX identifier of the licence the trained model is published under;
    /// the TrustDomain's `policy.allowedModelLicences` must allow it.
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9.+\-]+$"))]
    pub licence: String,
}

/// A model family, as the node-agent names it.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Architecture {
    /// Linear+ReLU hidden layers, then a linear layer to class logits.
    Mlp,
    /// A small GPT-style decoder over bytes.
    CharTransformer,
}

impl Architecture {
    /// The `family` tag of the node-agent's model config.
    pub fn family(self) -> &'static str {
        match self {
            Architecture::Mlp => "mlp",
            Architecture::CharTransformer => "char-transformer",
        }
    }
}

fn default_hidden() -> Vec<i64> {
    vec![64]
}

fn default_seed() -> i64 {
    42
}

/// Sizes of a `char-transformer` (vocabulary is always the 256 bytes).
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.embed % self.heads == 0").message("transformer.embed must be a multiple of transformer.heads").field_path(".embed"))]
pub struct TransformerShape {
    /// Bytes of context the model sees.
    #[serde(default = "default_context")]
    #[schemars(range(min = 1, max = 4096))]
    pub context: i64,
    /// Embedding width.
    #[serde(default = "default_embed")]
    #[schemars(range(min = 1, max = 8192))]
    pub embed: i64,
    /// Attention heads per layer.
    #[serde(default = "default_heads")]
    #[schemars(range(min = 1, max = 128))]
    pub heads: i64,
    /// Decoder layers.
    #[serde(default = "default_layers")]
    #[schemars(range(min = 1, max = 128))]
    pub layers: i64,
}

impl Default for TransformerShape {
    fn default() -> Self {
        Self {
            context: default_context(),
            embed: default_embed(),
            heads: default_heads(),
            layers: default_layers(),
        }
    }
}

fn default_context() -> i64 {
    64
}
fn default_embed() -> i64 {
    64
}
fn default_heads() -> i64 {
    4
}
fn default_layers() -> i64 {
    2
}

/// The data set and where each participant's share lives.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.dataset != 'csv' || self.vaults.all(v, has(v.path))").message("every vault needs a path to its CSV file when dataset is csv").field_path(".vaults"),
    validation = Rule::new("!has(self.partition) || self.dataset != 'csv'").message("partition applies only to the built-in data sets (digits, shakespeare)").field_path(".partition")
)]
pub struct DataSpec {
    /// `digits` and `shakespeare` are the built-in data sets, dealt across
    /// the vaults by `partition`; `csv` reads each vault's own file.
    pub dataset: DatasetKind,
    /// How a built-in data set is dealt across vaults: `label` (whole
    /// classes), `role` (whole speakers), `iid` or `dirichlet:ALPHA`.
    /// Absent means `label` for tables and `role` for text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(label|role|iid|dirichlet:([0-9]+\.?[0-9]*|\.[0-9]+))$"))]
    pub partition: Option<String>,
    /// The column holding the label, for `csv` (default: the last column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub csv_label_column: Option<String>,
    /// The class of the data, which the TrustDomain's
    /// `policy.dataClasses` must allow for federated training.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub data_class: String,
    /// One vault per participant. Names are unique.
    #[schemars(length(min = 1, max = 1000))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub vaults: Vec<VaultSpec>,
}

/// A built-in or user-supplied data set.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DatasetKind {
    /// 8x8 handwritten digits, ten classes (tabular).
    Digits,
    /// Tiny Shakespeare, next-byte prediction (text).
    Shakespeare,
    /// A CSV table per vault, numeric features and a label column.
    Csv,
}

/// One participant's encrypted data vault.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VaultSpec {
    /// The participant's name, a DNS label; it names its pod and identity.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// The TrustDomain member that hosts this vault. Absent means this
    /// cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub member: Option<String>,
    /// The Secret key holding the vault's encryption key.
    pub key_secret_ref: SecretKeyRef,
    /// A PersistentVolumeClaim holding the vault. Absent means the vault is
    /// built from the participant's share of a built-in data set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub volume_claim_name: Option<String>,
    /// Path inside the claim: the vault directory, or the CSV file for
    /// `dataset: csv`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub path: Option<String>,
}

/// A key in a Secret of the same namespace.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key within the Secret.
    #[serde(default = "default_vault_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_vault_key() -> String {
    "vault.key".to_string()
}

/// The server-side aggregation strategy and its knobs. Knobs of other
/// strategies are rejected.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.mu) || self.type == 'fedprox'").message("mu applies only to type fedprox").field_path(".mu"),
    validation = Rule::new("self.type == 'fedadam' || !(has(self.serverLearningRate) || has(self.beta1) || has(self.beta2) || has(self.tau))").message("serverLearningRate, beta1, beta2 and tau apply only to type fedadam").field_path(".type")
)]
pub struct Strategy {
    /// `fedavg`, `fedprox` (local proximal term) or `fedadam` (server-side
    /// Adam).
    #[serde(rename = "type", default)]
    pub type_: StrategyType,
    /// FedProx proximal weight (default 0.01).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub mu: Option<f64>,
    /// FedAdam server learning rate (default 0.03).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 10.0), extend("exclusiveMinimum" = true))]
    pub server_learning_rate: Option<f64>,
    /// FedAdam first-moment decay (default 0.9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0), extend("exclusiveMaximum" = true))]
    pub beta1: Option<f64>,
    /// FedAdam second-moment decay (default 0.99).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0), extend("exclusiveMaximum" = true))]
    pub beta2: Option<f64>,
    /// FedAdam adaptivity (default 0.001).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0), extend("exclusiveMinimum" = true))]
    pub tau: Option<f64>,
}

/// A server-side aggregation strategy.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StrategyType {
    /// Weighted average of the updates.
    #[default]
    FedAvg,
    /// FedAvg with a proximal term that keeps local models near the global one.
    FedProx,
    /// Adam on the server over the averaged update.
    FedAdam,
}

impl StrategyType {
    /// The node-agent's strategy name.
    pub fn name(self) -> &'static str {
        match self {
            StrategyType::FedAvg => "fedavg",
            StrategyType::FedProx => "fedprox",
            StrategyType::FedAdam => "fedadam",
        }
    }
}

/// Secure aggregation (SecAgg+) settings.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.threshold) || !has(self.neighbours) || self.threshold <= self.neighbours").message("threshold must not exceed neighbours").field_path(".threshold"))]
pub struct SecureAggregation {
    /// Mask updates so the aggregator sees only their sum.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Shares needed to reconstruct a secret: the fewest survivors a round
    /// completes with. Absent means a majority of `neighbours`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 10000))]
    #[schemars(extend("format" = "int32"))]
    pub threshold: Option<u32>,
    /// Neighbours each participant shares masks with. Absent means the
    /// fewest that keep a round private and complete at 30 % dropout and
    /// 5 % corruption (docs/secagg.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    #[schemars(extend("format" = "int32"))]
    pub neighbours: Option<u32>,
    /// Every coordinate of an update is clipped to [-clip, clip] before
    /// quantisation.
    #[serde(default = "default_clip")]
    #[schemars(range(min = 0.0, max = 1000000.0), extend("exclusiveMinimum" = true))]
    pub clip: f64,
    /// How long the key and unmasking stages wait for stragglers.
    #[serde(default = "default_stage_timeout")]
    #[schemars(range(min = 1, max = 3600))]
    #[schemars(extend("format" = "int32"))]
    pub stage_timeout_seconds: u32,
    /// The stream cipher that expands masks. `auto` picks AES-128-CTR when
    /// every participant (and the aggregator) has AES instructions, else
    /// ChaCha20.
    #[serde(default)]
    pub mask_prg: MaskPrgChoice,
    /// Fraction of a round's participants that may drop out between sharing
    /// keys and unmasking; absent neighbours and threshold are derived for
    /// it (absent: 0.3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0), extend("exclusiveMaximum" = true))]
    pub tolerated_dropout: Option<f64>,
    /// Fraction of a round's participants that may collude with the
    /// aggregator; absent neighbours and threshold are derived for it
    /// (absent: 0.05).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0), extend("exclusiveMaximum" = true))]
    pub tolerated_corruption: Option<f64>,
}

/// The secure-aggregation mask PRG.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MaskPrgChoice {
    /// AES-128-CTR where every party has AES instructions, else ChaCha20.
    #[default]
    #[serde(rename = "auto")]
    Auto,
    /// AES-128 in CTR mode (NIST SP 800-38A).
    #[serde(rename = "aes-128-ctr")]
    Aes128Ctr,
    /// ChaCha20 (RFC 8439).
    #[serde(rename = "chacha20")]
    ChaCha20,
}

impl Default for SecureAggregation {
    fn default() -> Self {
        Self {
            enabled: true,
            threshold: None,
            neighbours: None,
            clip: default_clip(),
            stage_timeout_seconds: default_stage_timeout(),
            mask_prg: MaskPrgChoice::Auto,
            tolerated_dropout: None,
            tolerated_corruption: None,
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_clip() -> f64 {
    4.0
}
fn default_stage_timeout() -> u32 {
    60
}

/// Client-level differential privacy (DP-FedAvg with an accountant).
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!self.enabled || has(self.epsilon)").message("epsilon is required when differentialPrivacy.enabled is true").field_path(".epsilon"))]
pub struct DifferentialPrivacy {
    /// Add calibrated noise to the aggregate and account for the budget.
    #[serde(default)]
    pub enabled: bool,
    /// The privacy budget epsilon; training stops before it would be
    /// exceeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1000.0), extend("exclusiveMinimum" = true))]
    pub epsilon: Option<f64>,
    /// The privacy parameter delta.
    #[serde(default = "default_delta")]
    #[schemars(range(min = 0.0, max = 1.0), extend("exclusiveMinimum" = true, "exclusiveMaximum" = true))]
    pub delta: f64,
    /// Updates are clipped to this L2 norm.
    #[serde(default = "default_clip_norm")]
    #[schemars(range(min = 0.0, max = 1000000.0), extend("exclusiveMinimum" = true))]
    pub clip_norm: f64,
    /// Noise standard deviation over the clip norm. Absent means the
    /// smallest that fits every round in the budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1000.0), extend("exclusiveMinimum" = true))]
    pub noise_multiplier: Option<f64>,
}

impl Default for DifferentialPrivacy {
    fn default() -> Self {
        Self {
            enabled: false,
            epsilon: None,
            delta: default_delta(),
            clip_norm: default_clip_norm(),
            noise_multiplier: None,
        }
    }
}

fn default_delta() -> f64 {
    1e-5
}
fn default_clip_norm() -> f64 {
    1.0
}

/// Wire encoding of plain updates.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// 32-bit floats.
    #[default]
    None,
    /// 16-bit floats (half the bytes).
    F16,
    /// 8-bit quantisation with a per-tensor scale (a quarter of the bytes).
    Int8,
}

impl Compression {
    /// The node-agent's compression name.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::F16 => "f16",
            Compression::Int8 => "int8",
        }
    }
}

/// Gang rules: a round starts only when `min` participants are ready; one
/// that does not answer in time counts as dropped.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Participants {
    /// A round completes with at least this many updates.
    #[serde(default = "default_min")]
    #[schemars(range(min = 1, max = 10000))]
    #[schemars(extend("format" = "int32"))]
    pub min: u32,
    /// Fraction of the vaults asked to train each round.
    #[serde(default = "default_fraction")]
    #[schemars(range(min = 0.0, max = 1.0), extend("exclusiveMinimum" = true))]
    pub fraction: f64,
    /// A round fails if its updates have not arrived after this many seconds.
    #[serde(default = "default_round_timeout")]
    #[schemars(range(min = 1, max = 86400))]
    #[schemars(extend("format" = "int32"))]
    pub round_timeout_seconds: u32,
    /// How long to wait for every participant to join before round 1.
    #[serde(default = "default_join_timeout")]
    #[schemars(range(min = 1, max = 86400))]
    #[schemars(extend("format" = "int32"))]
    pub join_timeout_seconds: u32,
}

impl Default for Participants {
    fn default() -> Self {
        Self {
            min: default_min(),
            fraction: default_fraction(),
            round_timeout_seconds: default_round_timeout(),
            join_timeout_seconds: default_join_timeout(),
        }
    }
}

fn default_min() -> u32 {
    1
}
fn default_fraction() -> f64 {
    1.0
}
fn default_round_timeout() -> u32 {
    120
}
fn default_join_timeout() -> u32 {
    300
}

/// Resources of each participant (agent) pod.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AgentResources {
    /// GPUs (`nvidia.com/gpu`) per participant; 0 trains on CPU.
    #[serde(default)]
    #[schemars(range(min = 0, max = 64))]
    #[schemars(extend("format" = "int32"))]
    pub gpus: u32,
    /// CPU request and limit per participant, e.g. `2` or `500m`; libtorch
    /// trains with as many threads (rounded up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    /// Memory request and limit per participant, e.g. `4Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
}

/// How many finished rounds `status.rounds` keeps (its `maxItems`).
pub const STATUS_ROUNDS_KEPT: usize = 50;

/// Where the run is, filled from the aggregator's `/status`.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FederationRoundStatus {
    /// `Pending`, `Running`, `Succeeded` or `Failed`.
    #[serde(default)]
    pub phase: Phase,
    /// Why the run is in this phase, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The round in progress, or the last one finished.
    #[serde(default)]
    #[schemars(extend("format" = "int32"))]
    pub current_round: u32,
    /// `spec.rounds`, copied so the status reads on its own.
    #[serde(default)]
    #[schemars(extend("format" = "int32"))]
    pub total_rounds: u32,
    /// `currentRound/totalRounds`, e.g. `3/10`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round_label: Option<String>,
    /// Accuracy (0..1) of the last global model on the held-out set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// Loss of the last global model on the held-out set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// Differential privacy budget spent so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epsilon_spent: Option<f64>,
    /// The last finished rounds (at most [`STATUS_ROUNDS_KEPT`]), oldest
    /// first. A run of thousands of rounds would otherwise outgrow the
    /// object-size limit of etcd; the whole history is in the aggregator's
    /// `rounds.jsonl` and its metrics.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["round".into()]))]
    pub rounds: Vec<RoundStatus>,
    /// Where participants in other clusters reach the aggregator
    /// (`https://<load-balancer address>:7443`), once its Service has an
    /// external address; set only on the coordinator of a round with
    /// vaults in other clusters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregator_endpoint: Option<String>,
    /// The member whose cluster runs the aggregator, when it is not this
    /// one: this status then mirrors what that member reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinator: Option<String>,
    /// Clients the aggregator refused in its TLS handshake (their
    /// certificate chains to no CA of the round: never peered, or re-keyed),
    /// newest first, at most 20; each is also in the aggregator's audit log.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub refused_peers: Vec<crate::trust_domain::RefusedPeer>,
    /// SHA-256 (hex) of the latest global model's weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_digest: Option<String>,
    /// When the first round started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the run succeeded or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Standard conditions: `Accepted`, `Progressing`, `Complete`, `Failed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::condition::conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl FederationRoundStatus {
    /// The `x/y` text of the Round printer column.
    pub fn round_label(current: u32, total: u32) -> String {
        format!("{current}/{total}")
    }
}

/// The phase of a run.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for consent, participants or the first round.
    #[default]
    Pending,
    /// Rounds are running.
    Running,
    /// Every round finished.
    Succeeded,
    /// The run stopped: too few participants, budget spent early, or an error.
    Failed,
}

impl Phase {
    /// True once the run can change no more.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// One finished round, as the aggregator reports it.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RoundStatus {
    /// Round number, from 1.
    #[schemars(extend("format" = "int32"))]
    pub round: u32,
    /// `Completed` or `Failed`.
    pub outcome: RoundOutcome,
    /// Accuracy (0..1) of the global model after this round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// Loss of the global model after this round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// Updates aggregated.
    #[serde(default)]
    #[schemars(extend("format" = "int32"))]
    pub participants: u32,
    /// Participants that dropped out or timed out.
    #[serde(default)]
    #[schemars(extend("format" = "int32"))]
    pub dropped: u32,
    /// Bytes of updates received.
    #[serde(default)]
    #[schemars(extend("format" = "int64"))]
    pub update_bytes: u64,
    /// Cumulative differential privacy budget spent after this round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epsilon_spent: Option<f64>,
    /// Wall-clock seconds the round took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    /// Why a failed round failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// How a round ended.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoundOutcome {
    Completed,
    Failed,
}
