//! The configuration files the two roles read (`config.json` in a party
//! directory). `modelpub simulate` writes them; in a cluster the operator
//! renders the same JSON into a ConfigMap. The types live in
//! `modelpub-agent-config` so the operator shares them without libtorch.

use std::path::Path;

use serde::Serialize;

pub use modelpub_agent_config::roles::{
    AggregatorConfig, Fault, FaultStage, ParticipantConfig, PrivacySettings, SecureSettings,
    StrategyConfig, TrainingSettings, VaultRef,
};

pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{} is not valid: {e}", path.display()))
}

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}
