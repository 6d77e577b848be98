//! Shared setup of the training-epoch benchmark (criterion bench and the
//! timing example), so both measure exactly the same work.

use std::path::PathBuf;

use modelpub_node_agent::data::{
    Dataset, TextCorpus, load_digits, load_shakespeare, split_train_test,
};
use modelpub_node_agent::model::{Model, ModelConfig};
use modelpub_node_agent::train::{PreparedData, TrainConfig, default_train_config, train_prepared};

/// Batches of one char-transformer "epoch" in the benchmark: a fixed
/// number, so the measurement does not depend on the corpus size.
pub const CHAR_BATCHES: usize = 10;

pub fn threads_from_env() -> i32 {
    std::env::var("MODELPUB_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(1)
}

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data")
}

/// A model, its data as tensors, and the config of one epoch.
pub struct Workload {
    pub model: Model,
    pub data: PreparedData,
    pub cfg: TrainConfig,
}

impl Workload {
    /// The default digits MLP on the digits train split (80 %, seed 42),
    /// default batch size, all batches.
    pub fn digits() -> Self {
        let ds = Dataset::Tabular(load_digits(&data_dir()).expect("digits"));
        let (train, _) = split_train_test(&ds, 0.2, 42).expect("split");
        Self::new(&train, 0)
    }

    /// The default char transformer on Tiny Shakespeare, [`CHAR_BATCHES`]
    /// batches of the default size.
    pub fn shakespeare() -> Self {
        let corpus: TextCorpus =
            load_shakespeare(&data_dir().join("tinyshakespeare.txt")).expect("shakespeare");
        Self::new(&Dataset::Text(corpus), CHAR_BATCHES)
    }

    fn new(ds: &Dataset, max_batches: usize) -> Self {
        let model = Model::new(&ModelConfig::default_for(ds), tch::Device::Cpu, 0).expect("model");
        let data = PreparedData::new(&model, ds).expect("data");
        let cfg = TrainConfig {
            local_epochs: 1,
            max_batches_per_epoch: max_batches,
            ..default_train_config(ds)
        };
        Self { model, data, cfg }
    }

    /// One epoch; the seed changes the batch order like a new round would.
    pub fn epoch(&mut self, seed: u64) {
        let cfg = TrainConfig {
            seed,
            ..self.cfg.clone()
        };
        train_prepared(&mut self.model, &self.data, &cfg, &mut |_, _| {}).expect("train");
    }
}
