//! `report.json` and the per-round table `modelpub simulate` ends with.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::round_record::RoundRecord;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub config: serde_json::Value,
    pub rounds: Vec<RoundRecord>,
    pub local_only: Vec<LocalOnly>,
    #[serde(rename = "final")]
    pub final_: Final,
    pub institutions: Vec<InstitutionSummary>,
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalOnly {
    pub institution: String,
    /// After the same number of local epochs as a participant of the whole run.
    pub accuracy: f64,
    pub loss: f64,
    /// Evaluated after each round's worth of epochs.
    pub curve: Vec<CurvePoint>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    pub round: u32,
    pub accuracy: f64,
    pub loss: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Final {
    pub accuracy: Option<f64>,
    pub loss: Option<f64>,
    pub model_sha256: String,
    pub rounds_completed: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstitutionSummary {
    pub institution: String,
    pub examples: usize,
    /// What this institution's share looks like ("labels 0,1,2,3", "roles: ...").
    pub holds: String,
}

fn opt(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into())
}

/// The table a person reads at the end of a run.
pub fn table(report: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>5}  {:>8}  {:>8}  {:>12}  {:>7}  {:>10}  {:>10}  {:>7}",
        "round", "accuracy", "loss", "participants", "dropped", "up KiB", "down KiB", "seconds"
    );
    for r in &report.rounds {
        let _ = writeln!(
            s,
            "{:>5}  {:>8}  {:>8}  {:>12}  {:>7}  {:>10.1}  {:>10.1}  {:>7.2}{}",
            r.round,
            opt(r.accuracy),
            opt(r.loss),
            r.participants,
            r.dropped,
            r.bytes_up as f64 / 1024.0,
            r.bytes_down as f64 / 1024.0,
            r.seconds,
            if r.succeeded {
                String::new()
            } else {
                format!("  FAILED: {}", r.reason)
            }
        );
        if !r.dropped_names.is_empty() {
            let _ = writeln!(s, "       dropped: {}", r.dropped_names.join(", "));
        }
    }
    if !report.local_only.is_empty() {
        let _ = writeln!(s, "\nlocal only (each institution alone, same epochs):");
        for l in &report.local_only {
            let _ = writeln!(
                s,
                "  {:<10} accuracy {:.4}  loss {:.4}",
                l.institution, l.accuracy, l.loss
            );
        }
    }
    let f = &report.final_;
    let _ = writeln!(
        s,
        "\nfederated: accuracy {}  loss {}  ({} rounds completed)\nmodel sha256 {}",
        opt(f.accuracy),
        opt(f.loss),
        f.rounds_completed,
        f.model_sha256
    );
    s
}
