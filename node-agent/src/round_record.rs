//! One finished round as the aggregator records it (`rounds.jsonl`, one JSON
//! object per line) and as `modelpub simulate` reports it.

use modelpub_protocol::secagg::MaskPrg;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    pub round: u32,
    pub succeeded: bool,
    /// Why the round failed; empty when it succeeded.
    pub reason: String,
    /// Test-set accuracy and loss of the global model after this round.
    pub accuracy: Option<f64>,
    pub loss: Option<f64>,
    /// Example-weighted mean of the participants' local training loss.
    pub train_loss: Option<f64>,
    pub participants: usize,
    pub dropped: usize,
    pub participant_names: Vec<String>,
    pub dropped_names: Vec<String>,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub seconds: f64,
    pub model_sha256: String,
    /// Privacy spent so far (ε at the run's δ), when DP is on.
    #[serde(default)]
    pub epsilon: Option<f64>,
    /// Whether the aggregator saw only the masked sum.
    #[serde(default)]
    pub secure: bool,
    /// The PRG that expanded the round's masks, when secure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_prg: Option<MaskPrg>,
    /// The aggregator's peak resident memory so far (Linux `VmHWM`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregator_peak_rss_bytes: Option<u64>,
}

impl RoundRecord {
    /// What participants are told of the round (`GetRoundResult`).
    pub fn result(&self) -> modelpub_protocol::pb::RoundResult {
        let mut metrics = std::collections::BTreeMap::new();
        for (name, value) in [
            ("accuracy", self.accuracy),
            ("loss", self.loss),
            ("train_loss", self.train_loss),
        ] {
            if let Some(v) = value {
                metrics.insert(name.to_string(), v);
            }
        }
        modelpub_protocol::pb::RoundResult {
            round: self.round,
            succeeded: self.succeeded,
            reason: self.reason.clone(),
            model_sha256: self.model_sha256.clone(),
            participants: self.participant_names.clone(),
            // `dropped_names` say when: "inst-2 (before the upload)".
            dropped: (self.dropped_names.iter())
                .map(|d| d.split(" (").next().unwrap_or(d).to_string())
                .collect(),
            bytes_up: self.bytes_up,
            bytes_down: self.bytes_down,
            seconds: self.seconds,
            metrics: metrics.into_iter().collect(),
        }
    }

    pub fn read_all(path: &std::path::Path) -> std::io::Result<Vec<RoundRecord>> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        // A line being written while we read is incomplete: skip it, it will
        // be whole on the next read.
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }
}
