//! The Prometheus metric families of the two roles. Names follow Prometheus
//! conventions (`modelpub_` prefix, units in names, `_total` for counters);
//! prometheus-client adds the unit and `_total` suffixes itself, so families
//! are registered by their stem.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::round_record::RoundRecord;

type FloatGauge = Gauge<f64, AtomicU64>;
type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FederationLabels {
    federation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)] // label values are lower case on the wire
enum Outcome {
    completed,
    failed,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    federation: String,
    outcome: Outcome,
}

/// Where a participant of the current round is.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ParticipantState {
    joined,
    uploaded,
    dropped,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    federation: String,
    state: ParticipantState,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartyLabels {
    federation: String,
    party: String,
}

/// Round durations span a fraction of a second (digits on loopback) to
/// many minutes (large models across institutions): 0.1 s .. ~27 min.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.1, 2.0, 15))
}

/// The aggregator's metrics for one federation.
pub struct AggregatorMetrics {
    federation: String,
    rounds: Family<OutcomeLabels, Counter>,
    round_duration: HistogramFamily<FederationLabels>,
    round_current: Family<FederationLabels, Gauge>,
    participants: Family<StateLabels, Gauge>,
    accuracy: Family<FederationLabels, FloatGauge>,
    loss: Family<FederationLabels, FloatGauge>,
    update_bytes: Family<FederationLabels, Counter>,
    dropouts: Family<FederationLabels, Counter>,
    epsilon: Family<FederationLabels, FloatGauge>,
}

impl AggregatorMetrics {
    /// Registers the families in `registry`. The counters and the current
    /// round start at zero (creating a series is `drop(get_or_create)`) so rates and increases have a series from the
    /// first scrape on, before any round has finished.
    pub fn new(federation: &str, registry: &mut Registry) -> Self {
        let m = Self {
            federation: federation.to_string(),
            rounds: Family::default(),
            round_duration: Family::new_with_constructor(duration_histogram),
            round_current: Family::default(),
            participants: Family::default(),
            accuracy: Family::default(),
            loss: Family::default(),
            update_bytes: Family::default(),
            dropouts: Family::default(),
            epsilon: Family::default(),
        };
        registry.register(
            "modelpub_rounds",
            "Federated rounds finished, by outcome",
            m.rounds.clone(),
        );
        registry.register_with_unit(
            "modelpub_round_duration",
            "Wall time of a round, from plan to result",
            Unit::Seconds,
            m.round_duration.clone(),
        );
        registry.register(
            "modelpub_round_current",
            "The round in progress, or the last one once the run is over",
            m.round_current.clone(),
        );
        registry.register(
            "modelpub_participants",
            "Participants of the current round, by state",
            m.participants.clone(),
        );
        registry.register(
            "modelpub_round_accuracy_ratio",
            "Test-set accuracy of the global model after the last finished round (0..1)",
            m.accuracy.clone(),
        );
        registry.register(
            "modelpub_round_loss",
            "Test-set loss of the global model after the last finished round",
            m.loss.clone(),
        );
        registry.register_with_unit(
            "modelpub_update",
            "Bytes of participant updates received",
            Unit::Bytes,
            m.update_bytes.clone(),
        );
        registry.register(
            "modelpub_dropouts",
            "Participants that dropped out of a round",
            m.dropouts.clone(),
        );
        registry.register(
            "modelpub_privacy_epsilon_spent",
            "Differential-privacy budget spent so far (epsilon at the run's delta)",
            m.epsilon.clone(),
        );
        for outcome in [Outcome::completed, Outcome::failed] {
            drop(m.rounds.get_or_create(&m.outcome(outcome)));
        }
        drop(m.update_bytes.get_or_create(&m.labels()));
        drop(m.dropouts.get_or_create(&m.labels()));
        drop(m.round_current.get_or_create(&m.labels()));
        for state in [
            ParticipantState::joined,
            ParticipantState::uploaded,
            ParticipantState::dropped,
        ] {
            drop(m.participants.get_or_create(&m.state(state)));
        }
        m
    }

    fn labels(&self) -> FederationLabels {
        FederationLabels {
            federation: self.federation.clone(),
        }
    }

    fn outcome(&self, outcome: Outcome) -> OutcomeLabels {
        OutcomeLabels {
            federation: self.federation.clone(),
            outcome,
        }
    }

    fn state(&self, state: ParticipantState) -> StateLabels {
        StateLabels {
            federation: self.federation.clone(),
            state,
        }
    }

    fn set_participants(&self, state: ParticipantState, n: usize) {
        self.participants
            .get_or_create(&self.state(state))
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// A round was planned with `planned` participants.
    pub fn round_opened(&self, round: u32, planned: usize) {
        self.round_current
            .get_or_create(&self.labels())
            .set(i64::from(round));
        self.set_participants(ParticipantState::joined, planned);
        self.set_participants(ParticipantState::uploaded, 0);
        self.set_participants(ParticipantState::dropped, 0);
    }

    /// An update was verified and added to the round.
    pub fn update_accepted(&self, bytes: u64) {
        self.update_bytes
            .get_or_create(&self.labels())
            .inc_by(bytes);
        self.participants
            .get_or_create(&self.state(ParticipantState::uploaded))
            .inc();
    }

    /// A round closed; `record` is what the aggregator wrote to rounds.jsonl.
    pub fn round_closed(&self, record: &RoundRecord) {
        let labels = self.labels();
        let outcome = if record.succeeded {
            Outcome::completed
        } else {
            Outcome::failed
        };
        self.rounds.get_or_create(&self.outcome(outcome)).inc();
        self.round_duration
            .get_or_create(&labels)
            .observe(record.seconds);
        self.dropouts
            .get_or_create(&labels)
            .inc_by(record.dropped as u64);
        self.set_participants(ParticipantState::uploaded, record.participants);
        self.set_participants(ParticipantState::dropped, record.dropped);
        if let Some(a) = record.accuracy {
            self.accuracy.get_or_create(&labels).set(a);
        }
        if let Some(l) = record.loss {
            self.loss.get_or_create(&labels).set(l);
        }
        if let Some(e) = record.epsilon {
            self.epsilon.get_or_create(&labels).set(e);
        }
    }
}

/// A participant's metrics: its own rounds, what it sent, how long it trained.
pub struct ParticipantMetrics {
    labels: PartyLabels,
    rounds: Family<PartyLabels, Counter>,
    update_bytes: Family<PartyLabels, Counter>,
    train_duration: HistogramFamily<PartyLabels>,
}

impl ParticipantMetrics {
    pub fn new(federation: &str, party: &str, registry: &mut Registry) -> Self {
        let m = Self {
            labels: PartyLabels {
                federation: federation.to_string(),
                party: party.to_string(),
            },
            rounds: Family::default(),
            update_bytes: Family::default(),
            train_duration: Family::new_with_constructor(duration_histogram),
        };
        registry.register(
            "modelpub_participant_rounds",
            "Rounds this participant sent an update in",
            m.rounds.clone(),
        );
        registry.register_with_unit(
            "modelpub_participant_update",
            "Bytes of updates this participant sent (as the aggregator acknowledged them)",
            Unit::Bytes,
            m.update_bytes.clone(),
        );
        registry.register_with_unit(
            "modelpub_participant_train_duration",
            "Local training time per round",
            Unit::Seconds,
            m.train_duration.clone(),
        );
        drop(m.rounds.get_or_create(&m.labels));
        drop(m.update_bytes.get_or_create(&m.labels));
        m
    }

    pub fn trained(&self, seconds: f64) {
        self.train_duration
            .get_or_create(&self.labels)
            .observe(seconds);
    }

    /// The aggregator acknowledged an update of `bytes`.
    pub fn update_sent(&self, bytes: u64) {
        self.rounds.get_or_create(&self.labels).inc();
        self.update_bytes.get_or_create(&self.labels).inc_by(bytes);
    }
}

/// The registry in the OpenMetrics text format.
pub fn render(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(round: u32, succeeded: bool) -> RoundRecord {
        RoundRecord {
            round,
            succeeded,
            reason: if succeeded {
                String::new()
            } else {
                "too few".into()
            },
            accuracy: Some(0.75),
            loss: Some(0.5),
            train_loss: Some(0.6),
            participants: 2,
            dropped: 1,
            participant_names: vec!["a".into(), "b".into()],
            dropped_names: vec!["c (before uploading its update)".into()],
            bytes_up: 300,
            bytes_down: 900,
            seconds: 1.5,
            model_sha256: "ab".repeat(32),
            epsilon: Some(1.25),
            secure: false,
            mask_prg: None,
            aggregator_peak_rss_bytes: None,
        }
    }

    fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting with `{prefix}` in:\n{text}"))
    }

    #[test]
    fn aggregator_families_render_with_agreed_names_after_a_round() {
        let mut registry = Registry::default();
        let m = AggregatorMetrics::new("fed-a", &mut registry);
        m.round_opened(1, 3);
        m.update_accepted(100);
        m.update_accepted(200);
        m.round_closed(&record(1, true));
        m.round_opened(2, 3);
        m.round_closed(&record(2, false));
        let text = render(&registry).unwrap();
        let f = r#"federation="fed-a""#;
        for (prefix, value) in [
            (
                format!("modelpub_rounds_total{{{f},outcome=\"completed\"}}"),
                "1",
            ),
            (
                format!("modelpub_rounds_total{{{f},outcome=\"failed\"}}"),
                "1",
            ),
            (format!("modelpub_round_duration_seconds_count{{{f}}}"), "2"),
            (format!("modelpub_round_duration_seconds_sum{{{f}}}"), "3.0"),
            (format!("modelpub_round_current{{{f}}}"), "2"),
            (
                format!("modelpub_participants{{{f},state=\"joined\"}}"),
                "3",
            ),
            (
                format!("modelpub_participants{{{f},state=\"uploaded\"}}"),
                "2",
            ),
            (
                format!("modelpub_participants{{{f},state=\"dropped\"}}"),
                "1",
            ),
            (format!("modelpub_round_accuracy_ratio{{{f}}}"), "0.75"),
            (format!("modelpub_round_loss{{{f}}}"), "0.5"),
            (format!("modelpub_update_bytes_total{{{f}}}"), "300"),
            (format!("modelpub_dropouts_total{{{f}}}"), "2"),
            (format!("modelpub_privacy_epsilon_spent{{{f}}}"), "1.25"),
        ] {
            let l = line(&text, &format!("{prefix} "));
            assert_eq!(l, format!("{prefix} {value}"), "in:\n{text}");
        }
        assert!(text.contains("# TYPE modelpub_round_duration_seconds histogram"));
        assert!(text.contains("# UNIT modelpub_round_duration_seconds seconds"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn counters_exist_before_the_first_round_and_no_accuracy_is_invented() {
        let mut registry = Registry::default();
        let _m = AggregatorMetrics::new("f", &mut registry);
        let text = render(&registry).unwrap();
        line(
            &text,
            r#"modelpub_rounds_total{federation="f",outcome="failed"} 0"#,
        );
        line(&text, r#"modelpub_update_bytes_total{federation="f"} 0"#);
        assert!(!text.contains("modelpub_round_accuracy_ratio{"), "{text}");
        assert!(!text.contains("modelpub_privacy_epsilon_spent{"), "{text}");
    }

    #[test]
    fn participant_families_render_with_agreed_names() {
        let mut registry = Registry::default();
        let m = ParticipantMetrics::new("f", "inst-0", &mut registry);
        m.trained(0.25);
        m.update_sent(4096);
        let text = render(&registry).unwrap();
        let l = r#"{federation="f",party="inst-0"}"#;
        line(&text, &format!("modelpub_participant_rounds_total{l} 1"));
        line(
            &text,
            &format!("modelpub_participant_update_bytes_total{l} 4096"),
        );
        line(
            &text,
            &format!("modelpub_participant_train_duration_seconds_count{l} 1"),
        );
    }
}
