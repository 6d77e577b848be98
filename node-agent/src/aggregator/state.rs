//! The aggregator's shared state: who joined, the round in progress, the
//! global model, and the results so far. The driver moves it from round to
//! round; the gRPC handlers read it and add updates to it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use modelpub_protocol::pb;
use modelpub_protocol::secagg::{self, MaskPrg};
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
    /// The mask PRGs it runs at hardware speed, as it advertised them.
    pub fast_mask_prgs: Vec<MaskPrg>,
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
    /// How many updates the round needs to count: the minimum number of
    /// participants, and for a secure round at least its threshold.
    pub quorum: usize,
    /// When the quorum was in: the straggler clock starts here, never
    /// earlier, so a cutoff cannot fail a round that waiting would save.
    pub quorum_at: Option<Instant>,
    /// The unmasked mean update of a secure round.
    pub secure_mean: Option<super::strategy::MeanUpdate>,
    /// Present when the round uses secure aggregation.
    pub secure: Option<SecureRound>,
}

impl OpenRound {
    /// Records an accepted update.
    pub fn mark_uploaded(&mut self, sender: String) {
        self.uploaded.insert(sender);
        if self.quorum_at.is_none() && self.uploaded.len() >= self.quorum {
            self.quorum_at = Some(Instant::now());
        }
    }

    /// Whether every participant expected to upload has, or is gone.
    pub fn all_in(&self, presence: &super::presence::Presence) -> bool {
        let expected: &[String] = match &self.secure {
            Some(s) => &s.u2,
            None => &self.plan.participants,
        };
        expected
            .iter()
            .all(|p| self.uploaded.contains(p) || presence.gone(p))
    }
}

/// Where a secure round is: each stage closes when everyone expected has
/// taken part, or at its deadline, and who missed it has dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    AdvertiseKeys,
    ShareKeys,
    MaskedInput,
    Unmask,
    Closed,
}

pub struct SecureRound {
    pub stage: Stage,
    /// `None` once the driver took it out to finish the round.
    pub server: Option<secagg::Server>,
    /// Stage 1 messages as their owners signed them, forwarded verbatim.
    pub advertisements: BTreeMap<String, pb::SignedEnvelope>,
    pub u1: Vec<String>,
    pub shared: BTreeSet<String>,
    pub u2: Vec<String>,
    pub survivors: Vec<String>,
    pub dropped: Vec<String>,
    pub revealed: BTreeSet<String>,
    /// Why the round cannot complete, once known.
    pub failure: Option<String>,
}

impl SecureRound {
    pub fn new(server: secagg::Server) -> Self {
        Self {
            stage: Stage::AdvertiseKeys,
            server: Some(server),
            advertisements: BTreeMap::new(),
            u1: Vec::new(),
            shared: BTreeSet::new(),
            u2: Vec::new(),
            survivors: Vec::new(),
            dropped: Vec::new(),
            revealed: BTreeSet::new(),
            failure: None,
        }
    }

    pub fn server(&mut self) -> Result<&mut secagg::Server, secagg::SecAggError> {
        self.server
            .as_mut()
            .ok_or_else(|| secagg::SecAggError::InvalidParams("the round is closed".into()))
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
    /// Open connections per party: a party with none left is not waited for.
    pub presence: super::presence::Presence,
}

impl State {
    pub fn new(global: Arc<GlobalModel>) -> Self {
        Self {
            joined: BTreeMap::new(),
            phase: Phase::Joining,
            global,
            results: BTreeMap::new(),
            told_finished: BTreeSet::new(),
            presence: Default::default(),
        }
    }

    pub fn open_round(&mut self) -> Option<&mut OpenRound> {
        match &mut self.phase {
            Phase::Open(r) => Some(r),
            _ => None,
        }
    }

    /// For a participant joining now: the last round it cannot take part
    /// in. It can still enter an open round that has not moved past its
    /// first stage; a secure round whose keys are settled goes on without it.
    pub fn last_round_to_skip(&self) -> u32 {
        let last_closed = self.results.keys().next_back().copied().unwrap_or(0);
        match &self.phase {
            Phase::Open(r) => match &r.secure {
                Some(s) if s.stage > Stage::AdvertiseKeys => r.plan.round,
                _ => r.plan.round - 1,
            },
            _ => last_closed,
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
