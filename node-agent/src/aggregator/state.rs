//! The aggregator's shared state: who joined, the round in progress, the
//! global model, and the results so far. The driver moves it from round to
//! round; the gRPC handlers read it and add updates to it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use modelpub_protocol::pb;
use modelpub_protocol::tensor::TensorSet;

use super::accumulator::RoundSum;

/// A published global model: what participants download.
pub struct GlobalModel {
    pub set: TensorSet,
    pub manifest: pb::TensorManifest,
}

impl GlobalModel {
    pub fn new(set: TensorSet) -> Arc<Self> {
        let manifest = set.manifest();
        Arc::new(Self { set, manifest })
    }

    pub fn digest(&self) -> &str {
        &self.manifest.content_sha256
    }
}

pub struct Joined {
    pub num_examples: u64,
    pub device: String,
}

pub struct OpenRound {
    pub plan: pb::RoundPlan,
    pub sum: RoundSum,
    pub uploaded: BTreeSet<String>,
    /// Uploads being received now: one stream per participant per round.
    pub receiving: BTreeSet<String>,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// (examples, mean local training loss) per update.
    pub train_losses: Vec<(u64, f64)>,
    pub started: Instant,
}

impl OpenRound {
    pub fn all_in(&self) -> bool {
        self.plan
            .participants
            .iter()
            .all(|p| self.uploaded.contains(p))
    }
}

pub enum Phase {
    Joining,
    Open(Box<OpenRound>),
    /// Between rounds: the last round is closed, the next not yet planned.
    Closed,
    Finished(pb::FederationFinished),
}

pub struct State {
    pub joined: BTreeMap<String, Joined>,
    pub phase: Phase,
    pub global: Arc<GlobalModel>,
    pub results: BTreeMap<u32, pb::RoundResult>,
    /// Who has been told the run is over, so the server can stop once all know.
    pub told_finished: BTreeSet<String>,
}

impl State {
    pub fn new(global: Arc<GlobalModel>) -> Self {
        Self {
            joined: BTreeMap::new(),
            phase: Phase::Joining,
            global,
            results: BTreeMap::new(),
            told_finished: BTreeSet::new(),
        }
    }

    pub fn open_round(&mut self) -> Option<&mut OpenRound> {
        match &mut self.phase {
            Phase::Open(r) => Some(r),
            _ => None,
        }
    }

    /// The round number messages must carry now, if a round is open.
    pub fn open_round_number(&self) -> Option<u32> {
        match &self.phase {
            Phase::Open(r) => Some(r.plan.round),
            _ => None,
        }
    }
}
