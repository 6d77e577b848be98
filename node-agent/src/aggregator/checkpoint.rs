//! What lets an aggregator that restarts mid-run go on where it stopped
//! (issue 13): after every round, the global model, the strategy's server
//! state, the privacy steps spent and every round's record; while a round
//! runs, its number. A restarted aggregator reads this back, records the
//! round it was in as failed with the reason (its masks, keys and uploads
//! died with the process), and opens the next one, so `rounds.jsonl` and
//! the status board have every round exactly once.
//!
//! Layout under `<party>/checkpoint/`: `checkpoint.json`, and the model and
//! strategy state it names by content digest (`model-<sha256>.safetensors`,
//! `strategy-<sha256>.safetensors`). The JSON is replaced last, by rename,
//! so it always names files that are whole; files it no longer names are
//! removed after.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use modelpub_protocol::tensor::{NamedTensor, TensorSet};
use serde::{Deserialize, Serialize};

use super::strategy::StrategyState;
use crate::round_record::RoundRecord;
use crate::weights_file;

const VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    pub version: u32,
    /// The run it belongs to: a checkpoint of another federation or model
    /// is refused, not silently resumed.
    pub federation: String,
    pub model: String,
    /// Every round recorded so far, in order.
    pub records: Vec<RoundRecord>,
    /// The round that was running, if the process stopped during one.
    pub open_round: Option<u32>,
    pub model_sha256: String,
    pub strategy_sha256: Option<String>,
    /// Differentially private steps taken (successful DP rounds).
    pub privacy_steps: u64,
}

impl Checkpoint {
    pub fn last_round(&self) -> u32 {
        self.records.last().map_or(0, |r| r.round)
    }
}

/// What a restarted aggregator takes up.
pub struct Resumed {
    pub checkpoint: Checkpoint,
    pub global: TensorSet,
    pub strategy_state: StrategyState,
}

pub struct Store {
    dir: PathBuf,
    federation: String,
    model: String,
}

impl Store {
    pub fn new(party_root: &Path, federation: &str, model: &str) -> anyhow::Result<Self> {
        let dir = party_root.join("checkpoint");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Self {
            dir,
            federation: federation.to_string(),
            model: model.to_string(),
        })
    }

    /// The checkpoint of a run that has not closed a round yet.
    pub fn fresh(&self, model_sha256: &str) -> Checkpoint {
        Checkpoint {
            version: VERSION,
            federation: self.federation.clone(),
            model: self.model.clone(),
            records: Vec::new(),
            open_round: None,
            model_sha256: model_sha256.to_string(),
            strategy_sha256: None,
            privacy_steps: 0,
        }
    }

    fn json(&self) -> PathBuf {
        self.dir.join("checkpoint.json")
    }

    /// The saved run, if there is one. Anything unreadable, of another run
    /// or not matching its digests is an error naming the file: the
    /// operator decides whether to move it aside, nothing is thrown away.
    pub fn load(&self) -> anyhow::Result<Option<Resumed>> {
        let path = self.json();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let checkpoint: Checkpoint = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a checkpoint", path.display()))?;
        if checkpoint.version != VERSION {
            bail!(
                "{} has version {}; this aggregator reads version {VERSION}",
                path.display(),
                checkpoint.version
            );
        }
        if checkpoint.federation != self.federation || checkpoint.model != self.model {
            bail!(
                "{} belongs to federation {:?} with model {}, not to this run (federation {:?}, model {}); move {} aside to start over",
                path.display(),
                checkpoint.federation,
                checkpoint.model,
                self.federation,
                self.model,
                self.dir.display()
            );
        }
        let global = self.read_set("model", &checkpoint.model_sha256)?;
        let strategy_state = match &checkpoint.strategy_sha256 {
            Some(sha) => (self.read_set("strategy", sha)?.tensors.iter())
                .map(|t| Ok((t.name.clone(), t.to_f32()?)))
                .collect::<anyhow::Result<_>>()?,
            None => Vec::new(),
        };
        Ok(Some(Resumed {
            checkpoint,
            global,
            strategy_state,
        }))
    }

    fn file(&self, kind: &str, sha: &str) -> PathBuf {
        self.dir.join(format!("{kind}-{sha}.safetensors"))
    }

    fn read_set(&self, kind: &str, sha: &str) -> anyhow::Result<TensorSet> {
        let path = self.file(kind, sha);
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let set = weights_file::decode(&bytes).with_context(|| format!("{}", path.display()))?;
        let got = set.manifest().content_sha256;
        if got != sha {
            bail!(
                "{} holds content {got}, not the {sha} its name and checkpoint.json say",
                path.display()
            );
        }
        Ok(set)
    }

    /// Saves `checkpoint`; `global` is the model it names, `published` a
    /// file already holding it (hard-linked rather than written twice).
    pub fn save(
        &self,
        checkpoint: &mut Checkpoint,
        global: &TensorSet,
        published: &Path,
        strategy_state: &[(String, Vec<f32>)],
    ) -> anyhow::Result<()> {
        let model = self.file("model", &checkpoint.model_sha256);
        if !model.exists() {
            let aside = model.with_extension("tmp");
            let _ = std::fs::remove_file(&aside);
            if std::fs::hard_link(published, &aside).is_err() {
                weights_file::write(global, &aside)?;
            }
            std::fs::rename(&aside, &model)
                .with_context(|| format!("cannot write {}", model.display()))?;
        }
        checkpoint.strategy_sha256 = if strategy_state.is_empty() {
            None
        } else {
            let set = TensorSet::new(
                strategy_state
                    .iter()
                    .map(|(name, v)| NamedTensor::from_f32(name.clone(), vec![v.len() as u64], v))
                    .collect(),
            )?;
            let sha = set.manifest().content_sha256;
            let path = self.file("strategy", &sha);
            if !path.exists() {
                let aside = path.with_extension("tmp");
                weights_file::write(&set, &aside)?;
                std::fs::rename(&aside, &path)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            Some(sha)
        };
        self.mark(checkpoint)?;
        self.remove_unnamed(checkpoint);
        Ok(())
    }

    /// Rewrites checkpoint.json alone (a round opening: the files it names
    /// have not changed).
    pub fn mark(&self, checkpoint: &Checkpoint) -> anyhow::Result<()> {
        let json = self.json();
        let aside = json.with_extension("tmp");
        std::fs::write(&aside, serde_json::to_vec_pretty(checkpoint)?)
            .with_context(|| format!("cannot write {}", aside.display()))?;
        std::fs::rename(&aside, &json).with_context(|| format!("cannot write {}", json.display()))
    }

    /// Model and strategy files of earlier rounds: best effort, a file left
    /// behind only costs disk.
    fn remove_unnamed(&self, checkpoint: &Checkpoint) {
        let keep = [
            Some(self.file("model", &checkpoint.model_sha256)),
            checkpoint
                .strategy_sha256
                .as_ref()
                .map(|s| self.file("strategy", s)),
        ];
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let ours = name.ends_with(".safetensors")
                && (name.starts_with("model-") || name.starts_with("strategy-"));
            if ours && !keep.iter().flatten().any(|k| *k == path) {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// The record of a round the aggregator was running when it stopped.
pub fn interrupted(round: u32, model_sha256: &str, epsilon: Option<f64>) -> RoundRecord {
    RoundRecord {
        round,
        succeeded: false,
        reason: format!(
            "the aggregator restarted during round {round}: the round's uploads and secure-aggregation keys were lost with the process, so no update from it was applied; the next round starts from the model of the last completed round"
        ),
        accuracy: None,
        loss: None,
        train_loss: None,
        participants: 0,
        dropped: 0,
        participant_names: Vec::new(),
        dropped_names: Vec::new(),
        bytes_up: 0,
        bytes_down: 0,
        seconds: 0.0,
        model_sha256: model_sha256.to_string(),
        epsilon,
        secure: false,
        mask_prg: None,
        aggregator_peak_rss_bytes: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: f32) -> TensorSet {
        TensorSet::new(vec![NamedTensor::from_f32("w", vec![3], &[v, v, v])]).unwrap()
    }

    fn checkpoint(store: &Store, global: &TensorSet, rounds: u32) -> Checkpoint {
        let sha = global.manifest().content_sha256;
        let mut c = store.fresh(&sha);
        c.records = (1..=rounds).map(|r| interrupted(r, &sha, None)).collect();
        c.privacy_steps = 2;
        c
    }

    fn published(dir: &Path, global: &TensorSet) -> PathBuf {
        let p = dir.join("global-model.safetensors");
        weights_file::write(global, &p).unwrap();
        p
    }

    #[test]
    fn a_saved_run_is_read_back_whole_and_old_files_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path(), "fed", "mlp").unwrap();
        assert!(store.load().unwrap().is_none());
        let first = set(1.0);
        store
            .save(
                &mut checkpoint(&store, &first, 1),
                &first,
                &published(tmp.path(), &first),
                &[],
            )
            .unwrap();
        let second = set(2.0);
        let adam = vec![("m.0".to_string(), vec![0.5, 0.25, 0.0])];
        store
            .save(
                &mut checkpoint(&store, &second, 2),
                &second,
                &published(tmp.path(), &second),
                &adam,
            )
            .unwrap();
        let back = store.load().unwrap().unwrap();
        assert_eq!(back.checkpoint.last_round(), 2);
        assert_eq!(back.checkpoint.privacy_steps, 2);
        assert_eq!(back.global.manifest(), second.manifest());
        assert_eq!(back.strategy_state, adam);
        let files = std::fs::read_dir(tmp.path().join("checkpoint"))
            .unwrap()
            .count();
        assert_eq!(files, 3, "checkpoint.json, one model, one strategy state");
    }

    #[test]
    fn another_runs_checkpoint_or_an_altered_model_is_refused_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path(), "fed", "mlp").unwrap();
        let global = set(1.0);
        store
            .save(
                &mut checkpoint(&store, &global, 1),
                &global,
                &published(tmp.path(), &global),
                &[],
            )
            .unwrap();
        let other = Store::new(tmp.path(), "another-fed", "mlp").unwrap();
        let e = format!("{:#}", other.load().err().unwrap());
        assert!(e.contains("another-fed") && e.contains("move"), "{e}");

        let model = store.file("model", &global.manifest().content_sha256);
        // A hard link shares the published file's inode: break it first.
        std::fs::remove_file(&model).unwrap();
        weights_file::write(&set(9.0), &model).unwrap();
        let e = format!("{:#}", store.load().err().unwrap());
        assert!(e.contains("holds content"), "{e}");

        std::fs::write(tmp.path().join("checkpoint/checkpoint.json"), "{").unwrap();
        let e = format!("{:#}", store.load().err().unwrap());
        assert!(e.contains("is not a checkpoint"), "{e}");
    }
}
