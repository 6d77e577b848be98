//! The node-agent's configuration contract: the JSON each role reads
//! (`config.json` in a party directory), the model architecture as data,
//! and the file layout of a node-agent pod.
//!
//! Plain serde types with no libtorch, so the operator can render the same
//! configs the node-agent reads without linking the node-agent.
#![forbid(unsafe_code)]

pub mod model;
pub mod names;
pub mod pod;
pub mod roles;

pub use model::{BYTE_VOCAB, DataShape, MAX_PARAMETERS, ModelConfig, ModelConfigError};
pub use roles::{
    AggregatorConfig, DEFAULT_KEEPALIVE_SECS, Fault, FaultStage, ParticipantConfig,
    PrivacySettings, SecureSettings, StrategyConfig, TrainingSettings, VaultRef,
};
