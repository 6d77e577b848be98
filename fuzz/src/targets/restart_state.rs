//! What a restarted aggregator reads back from its party directory: the
//! replay journal (`replay.jsonl`) and `checkpoint/checkpoint.json`.

use modelpub_node_agent::aggregator::checkpoint::Store;
use modelpub_protocol::replay::ReplayGuard;
use modelpub_protocol::tensor::{NamedTensor, TensorSet};

use crate::Target;

pub struct ReplayJournal {
    dir: tempfile::TempDir,
    seed: Vec<u8>,
}

impl ReplayJournal {
    pub fn new() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let journal = dir.path().join("replay.jsonl");
        let guard = ReplayGuard::persistent(&journal)?;
        guard.check_and_record("inst-0", 1_700_000_000_000_000)?;
        guard.check_and_record("inst-1", 1_700_000_000_000_001)?;
        drop(guard);
        let seed = std::fs::read(&journal)?;
        Ok(Self { dir, seed })
    }
}

impl Target for ReplayJournal {
    fn name(&self) -> &'static str {
        "replay-journal"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        vec![self.seed.clone()]
    }

    fn run(&mut self, input: &[u8]) -> Result<(), String> {
        let journal = self.dir.path().join("replay.jsonl");
        std::fs::write(&journal, input).map_err(|e| e.to_string())?;
        ReplayGuard::persistent(&journal)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

pub struct Checkpoints {
    dir: tempfile::TempDir,
    store: Store,
    seed: Vec<u8>,
}

impl Checkpoints {
    pub fn new() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let store = Store::new(dir.path(), "fuzz", "mlp")?;
        let global = TensorSet::new(vec![NamedTensor::from_f32("w", vec![2], &[0.5, -1.0])])?;
        let published = dir.path().join("global-model.safetensors");
        modelpub_node_agent::weights_file::write(&global, &published)?;
        let mut checkpoint = store.fresh(&global.manifest().content_sha256);
        checkpoint.open_round = Some(3);
        let adam = [("m.0".to_string(), vec![0.25, 0.0])];
        store.save(&mut checkpoint, &global, &published, &adam)?;
        let seed = std::fs::read(dir.path().join("checkpoint/checkpoint.json"))?;
        Ok(Self { dir, store, seed })
    }
}

impl Target for Checkpoints {
    fn name(&self) -> &'static str {
        "checkpoint"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        vec![self.seed.clone()]
    }

    fn run(&mut self, input: &[u8]) -> Result<(), String> {
        let path = self.dir.path().join("checkpoint/checkpoint.json");
        std::fs::write(&path, input).map_err(|e| e.to_string())?;
        self.store.load().map(|_| ()).map_err(|e| format!("{e:#}"))
    }
}
