//! Round parameters every party must agree on (they travel in the signed
//! RoundPlan), and the defaults for the neighbourhood size and threshold.

use super::error::SecAggError;
use super::neighbourhood::{self, Tolerance};
use super::prg::MaskPrg;

/// Upper bound on a neighbourhood: Shamir sharing over GF(2^8) has only 255
/// distinct non-zero evaluation points, and a participant's shares go to its
/// k neighbours plus itself.
pub const MAX_NEIGHBOURS: usize = 254;

/// Upper bound on the vector length: the ChaCha20 block counter is 32 bits
/// (16 words per block), so this keeps every mask well inside one keystream.
pub const MAX_VECTOR_LEN: usize = u32::MAX as usize;

/// The parameters of one SecAgg+ round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub round: u32,
    pub federation: String,
    /// Sorted and unique; a participant's index is its position here.
    pub participants: Vec<String>,
    /// k: the degree of the neighbour graph. Even (a circulant graph has
    /// ±k/2 neighbours on the ring) or `n - 1` (the complete graph).
    pub neighbours: usize,
    /// t: how many of the k + 1 holders of a participant's shares (its k
    /// neighbours and itself) must reveal a share to reconstruct one of its
    /// secrets. Must be a strict majority of k + 1.
    pub threshold: usize,
    pub graph_seed: [u8; 32],
    /// Number of `u32` coordinates every participant contributes.
    pub vector_len: usize,
    /// The stream cipher that expands every mask seed.
    pub prg: MaskPrg,
}

impl Params {
    /// Builds parameters with k and t derived for this roster size at the
    /// default tolerance (`neighbourhood::choose`, `Tolerance::DEFAULT`) and
    /// the fastest PRG of this machine (AES-128-CTR where it has AES
    /// instructions, else ChaCha20). The roster may come in any order; it is
    /// sorted here.
    pub fn new(
        round: u32,
        federation: impl Into<String>,
        mut participants: Vec<String>,
        graph_seed: [u8; 32],
        vector_len: usize,
    ) -> Result<Self, SecAggError> {
        participants.sort();
        let chosen = neighbourhood::choose(participants.len(), Tolerance::DEFAULT)?;
        let params = Params {
            round,
            federation: federation.into(),
            participants,
            neighbours: chosen.neighbours,
            threshold: chosen.threshold,
            graph_seed,
            vector_len,
            prg: MaskPrg::fastest_for(std::iter::empty()),
        };
        params.validate()?;
        Ok(params)
    }

    /// t = ⌊(k+1)/2⌋ + 1, the smallest strict majority of the k + 1 holders
    /// of a participant's shares (its k neighbours and itself, as in
    /// Bonawitz et al., where each client shares among all of U1 including
    /// itself). n = 3: k = 2, 3 holders, t = 2, so the round survives one
    /// dropout; n = 100: k = 56, 57 holders, t = 29.
    ///
    /// A majority is the least that stops a server from collecting one
    /// secret's shares from one half of the holders and the other secret's
    /// shares from the other half. Two thirds (Bonawitz et al.'s
    /// choice against an active server colluding with up to a third of the
    /// clients) cannot survive the 30 % dropout the round must tolerate, so a
    /// deployment facing an active server raises `threshold` explicitly and
    /// accepts lower dropout tolerance.
    pub fn default_threshold(k: usize) -> usize {
        let holders = k + 1;
        holders / 2 + 1
    }

    pub fn n(&self) -> usize {
        self.participants.len()
    }

    pub fn validate(&self) -> Result<(), SecAggError> {
        let bad = |why: String| Err(SecAggError::InvalidParams(why));
        let n = self.participants.len();
        if n < 2 {
            return bad(format!(
                "{n} participants; secure aggregation needs at least 2"
            ));
        }
        if let Some(w) = self.participants.windows(2).find(|w| w[0] >= w[1]) {
            return bad(format!(
                "participants must be sorted and unique ({:?} then {:?})",
                w[0], w[1]
            ));
        }
        if self.participants.iter().any(String::is_empty) {
            return bad("a participant name is empty".into());
        }
        let k = self.neighbours;
        if k == 0 || k > n - 1 || k > MAX_NEIGHBOURS {
            return bad(format!(
                "k = {k} neighbours; must be in 1..={}",
                (n - 1).min(MAX_NEIGHBOURS)
            ));
        }
        if k % 2 == 1 && k != n - 1 {
            return bad(format!(
                "k = {k} must be even unless it is n - 1 = {}",
                n - 1
            ));
        }
        let t = self.threshold;
        let holders = k + 1;
        if t <= holders / 2 || t > holders {
            return bad(format!(
                "threshold {t} must be a strict majority of the k + 1 = {holders} share \
                 holders ({}..={holders})",
                holders / 2 + 1
            ));
        }
        if self.vector_len == 0 || self.vector_len > MAX_VECTOR_LEN {
            return bad(format!(
                "vector length {} must be in 1..={MAX_VECTOR_LEN}",
                self.vector_len
            ));
        }
        Ok(())
    }

    pub(crate) fn index_of(&self, who: &str) -> Result<usize, SecAggError> {
        self.participants
            .binary_search_by(|p| p.as_str().cmp(who))
            .map_err(|_| SecAggError::UnknownParticipant { who: who.into() })
    }

    pub(crate) fn check_range(&self, offset: usize, len: usize) -> Result<(), SecAggError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.vector_len => Ok(()),
            _ => Err(SecAggError::OutOfRange {
                offset,
                len,
                vector_len: self.vector_len,
            }),
        }
    }
}
