//! The aggregator's `GET /status` JSON: where the run is and every round so
//! far. The operator polls it to fill a FederationRound's status, so the
//! shape is a contract (field names, phase and outcome spellings).

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::round_record::RoundRecord;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StatusPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoundOutcome {
    Completed,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundStatus {
    pub round: u32,
    pub accuracy: Option<f64>,
    pub loss: Option<f64>,
    pub participants: usize,
    pub dropped: usize,
    pub update_bytes: u64,
    pub epsilon_spent: Option<f64>,
    pub duration_secs: f64,
    pub outcome: RoundOutcome,
    pub reason: Option<String>,
}

impl From<&RoundRecord> for RoundStatus {
    fn from(r: &RoundRecord) -> Self {
        Self {
            round: r.round,
            accuracy: r.accuracy,
            loss: r.loss,
            participants: r.participants,
            dropped: r.dropped,
            update_bytes: r.bytes_up,
            epsilon_spent: r.epsilon,
            duration_secs: r.seconds,
            outcome: if r.succeeded {
                RoundOutcome::Completed
            } else {
                RoundOutcome::Failed
            },
            reason: (!r.reason.is_empty()).then(|| r.reason.clone()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FederationStatus {
    pub federation: String,
    pub phase: StatusPhase,
    pub message: String,
    pub current_round: u32,
    pub total_rounds: u32,
    /// sha256 (hex) of the current global model.
    pub model_digest: String,
    pub rounds: Vec<RoundStatus>,
    /// Clients refused in the TLS handshake (their certificate chains to no
    /// CA of this round), newest first, at most [`REFUSED_KEPT`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<RefusedClient>,
}

/// How many refused clients `/status` keeps.
pub const REFUSED_KEPT: usize = 20;

/// A client the aggregator's TLS handshake refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefusedClient {
    /// The common name of the certificate it presented.
    pub name: String,
    pub certificate_sha256: String,
    pub address: String,
    /// Why, as the TLS library put it.
    pub reason: String,
    pub unix_secs: i64,
}

/// The status as the driver moves it, read by the HTTP handler.
pub struct StatusBoard(Mutex<FederationStatus>);

impl StatusBoard {
    pub fn new(federation: &str, total_rounds: u32, model_digest: &str) -> Self {
        Self(Mutex::new(FederationStatus {
            federation: federation.to_string(),
            phase: StatusPhase::Pending,
            message: "waiting for participants to join".into(),
            current_round: 0,
            total_rounds,
            model_digest: model_digest.to_string(),
            rounds: Vec::new(),
            refused: Vec::new(),
        }))
    }

    /// A copy of the status now. A poisoned lock still holds the last
    /// consistent status (every update is a few field writes), so it is read.
    pub fn snapshot(&self) -> FederationStatus {
        match self.0.lock() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn update(&self, f: impl FnOnce(&mut FederationStatus)) {
        match self.0.lock() {
            Ok(mut s) => f(&mut s),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// A client refused in the handshake; the same certificate again
    /// moves to the front.
    pub fn refused(&self, client: RefusedClient) {
        self.update(|s| {
            s.refused
                .retain(|r| r.certificate_sha256 != client.certificate_sha256);
            s.refused.insert(0, client);
            s.refused.truncate(REFUSED_KEPT);
        });
    }

    pub fn round_opened(&self, round: u32) {
        self.update(|s| {
            s.phase = StatusPhase::Running;
            s.current_round = round;
            s.message = format!("round {round} of {} in progress", s.total_rounds);
        });
    }

    pub fn round_closed(&self, record: &RoundRecord) {
        self.update(|s| {
            s.model_digest = record.model_sha256.clone();
            s.rounds.push(RoundStatus::from(record));
        });
    }

    /// The run is over: it succeeded when it ended normally with at least
    /// one completed round.
    pub fn finished(&self, outcome: Result<&str, &str>) {
        self.update(|s| {
            let completed = s
                .rounds
                .iter()
                .any(|r| r.outcome == RoundOutcome::Completed);
            (s.phase, s.message) = match outcome {
                Ok(summary) if completed => (StatusPhase::Succeeded, summary.to_string()),
                Ok(summary) => (StatusPhase::Failed, summary.to_string()),
                Err(reason) => (StatusPhase::Failed, reason.to_string()),
            };
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn record(round: u32, succeeded: bool) -> RoundRecord {
        RoundRecord {
            round,
            succeeded,
            reason: if succeeded {
                String::new()
            } else {
                "only 1 of 3 updates arrived".into()
            },
            accuracy: Some(0.9),
            loss: Some(0.3),
            train_loss: None,
            participants: 3,
            dropped: 0,
            participant_names: vec![],
            dropped_names: vec![],
            bytes_up: 12345,
            bytes_down: 1,
            seconds: 1.2,
            model_sha256: "cd".repeat(32),
            epsilon: None,
            secure: true,
            mask_prg: Some(modelpub_protocol::secagg::MaskPrg::Aes128Ctr),
            aggregator_peak_rss_bytes: Some(300 << 20),
        }
    }

    #[test]
    fn status_json_has_the_agreed_shape() {
        let board = StatusBoard::new("fed", 10, &"00".repeat(32));
        assert_eq!(board.snapshot().phase, StatusPhase::Pending);
        board.round_opened(1);
        board.round_closed(&record(1, true));
        board.round_opened(2);
        board.round_closed(&record(2, false));
        board.round_opened(3);
        let json = serde_json::to_value(board.snapshot()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "federation": "fed",
                "phase": "Running",
                "message": "round 3 of 10 in progress",
                "current_round": 3,
                "total_rounds": 10,
                "model_digest": "cd".repeat(32),
                "rounds": [
                    { "round": 1, "accuracy": 0.9, "loss": 0.3, "participants": 3, "dropped": 0,
                      "update_bytes": 12345, "epsilon_spent": null, "duration_secs": 1.2,
                      "outcome": "completed", "reason": null },
                    { "round": 2, "accuracy": 0.9, "loss": 0.3, "participants": 3, "dropped": 0,
                      "update_bytes": 12345, "epsilon_spent": null, "duration_secs": 1.2,
                      "outcome": "failed", "reason": "only 1 of 3 updates arrived" }
                ]
            })
        );
    }

    #[test]
    fn a_run_without_a_completed_round_is_failed() {
        let board = StatusBoard::new("fed", 1, "");
        board.round_opened(1);
        board.round_closed(&record(1, false));
        board.finished(Ok("0 of 1 rounds completed"));
        let s = board.snapshot();
        assert_eq!(s.phase, StatusPhase::Failed);
        assert_eq!(s.message, "0 of 1 rounds completed");

        let board = StatusBoard::new("fed", 1, "");
        board.round_opened(1);
        board.round_closed(&record(1, true));
        board.finished(Ok("1 of 1 rounds completed"));
        assert_eq!(board.snapshot().phase, StatusPhase::Succeeded);

        let board = StatusBoard::new("fed", 1, "");
        board.finished(Err("run aborted: only 1 of 3 participants joined"));
        let s = board.snapshot();
        assert_eq!(s.phase, StatusPhase::Failed);
        assert!(s.message.contains("joined"));
    }
}
