//! Evaluates each new global model on the aggregator's held-out set, off the
//! async runtime (libtorch work blocks).

use std::sync::Arc;

use super::state::GlobalModel;
use anyhow::Context;

use crate::config::VaultRef;
use crate::data::{Dataset, decode_dataset};
use crate::model::{Model, ModelConfig};
use crate::train;
use crate::vault::{Vault, VaultKey};

pub struct Evaluator {
    data: Arc<Dataset>,
    config: ModelConfig,
}

pub struct Score {
    pub accuracy: f64,
    pub loss: f64,
}

impl Evaluator {
    pub fn open(vault: &VaultRef, config: ModelConfig) -> anyhow::Result<Self> {
        let key = VaultKey::load(&vault.key_file)?;
        let vault = Vault::open(&vault.dir, key)?;
        let data =
            decode_dataset(&vault.get("dataset")?).context("the evaluation vault's data set")?;
        Ok(Self {
            data: Arc::new(data),
            config,
        })
    }

    /// Scores a global model, shared rather than copied.
    pub async fn score(&self, global: Arc<GlobalModel>) -> anyhow::Result<Score> {
        let data = self.data.clone();
        let config = self.config.clone();
        tokio::task::spawn_blocking(move || {
            let mut model = Model::new(&config, tch::Device::Cpu, 0)?;
            model.load_weights(&global.set)?;
            let eval = train::evaluate(&model, &data)?;
            Ok(Score {
                accuracy: eval.accuracy,
                loss: eval.loss,
            })
        })
        .await?
    }
}
