//! The round's status, as pure functions of what was observed: the spec,
//! the previous status, the aggregator's `/status` and the participants.
//! Conditions `Accepted`, `Progressing`, `Complete` and `Failed` carry the
//! generation they describe. A terminal phase never changes again.

use modelpub_crds::condition::{
    ACCEPTED, COMPLETE, Condition, FAILED, PROGRESSING, Time, new_condition, upsert,
};
use modelpub_crds::federation_round::{
    FederationRoundStatus, Phase, RoundOutcome as CrdOutcome, RoundStatus, STATUS_ROUNDS_KEPT,
};

use super::progress::{
    Agent, AgentState, AggregatorPhase, AggregatorStatus, RoundOutcome, RoundReport, alive,
    dropouts,
};
use modelpub_crds::trust_domain::RefusedPeer;

use crate::error::SpecErrors;

/// Everything one reconcile saw of a valid round.
#[derive(Debug, Clone)]
pub struct Observation<'a> {
    pub generation: Option<i64>,
    pub total_rounds: u32,
    pub min_participants: u32,
    /// The aggregator's `/status`, or why there is none (not started,
    /// unreachable).
    pub aggregator: Result<AggregatorStatus, String>,
    pub agents: &'a [Agent],
    /// Participants in other members' clusters: their pods cannot be seen
    /// from here, so they count as alive (the aggregator's report says
    /// when one drops).
    pub remote_participants: u32,
    pub now: Time,
}

fn round_status(r: &RoundReport) -> RoundStatus {
    RoundStatus {
        round: r.round,
        outcome: match r.outcome {
            RoundOutcome::Completed => CrdOutcome::Completed,
            RoundOutcome::Failed => CrdOutcome::Failed,
        },
        accuracy: r.accuracy,
        loss: r.loss,
        participants: r.participants,
        dropped: r.dropped,
        update_bytes: r.update_bytes,
        epsilon_spent: r.epsilon_spent,
        duration_seconds: r.duration_secs,
        reason: r.reason.clone(),
    }
}

/// Why a terminal or waiting phase holds, as (condition reason, message).
struct Verdict {
    phase: Phase,
    reason: &'static str,
    message: String,
}

fn verdict(obs: &Observation, previous: &FederationRoundStatus) -> Verdict {
    let dropped = dropouts(obs.agents);
    let left = alive(obs.agents) as u32 + obs.remote_participants;
    let all = obs.agents.len() as u32 + obs.remote_participants;
    let dropped_note = if dropped.is_empty() {
        String::new()
    } else {
        format!("; dropped: {}", dropped.join(", "))
    };
    match &obs.aggregator {
        Ok(s) if s.phase == AggregatorPhase::Succeeded => Verdict {
            phase: Phase::Succeeded,
            reason: "Succeeded",
            message: format!("{}{dropped_note}", s.message),
        },
        Ok(s) if s.phase == AggregatorPhase::Failed => Verdict {
            phase: Phase::Failed,
            reason: "AggregatorFailed",
            message: format!("{}{dropped_note}", s.message),
        },
        _ if left < obs.min_participants => Verdict {
            phase: Phase::Failed,
            reason: "BelowMinimumParticipants",
            message: format!(
                "only {left} of {all} participants are left, below spec.participants.min ({}){dropped_note}",
                obs.min_participants
            ),
        },
        Ok(s) => Verdict {
            phase: match s.phase {
                AggregatorPhase::Pending => Phase::Pending,
                _ => Phase::Running,
            },
            reason: match s.phase {
                AggregatorPhase::Pending => "WaitingForParticipants",
                _ => "RoundInProgress",
            },
            message: format!("{}{dropped_note}", s.message),
        },
        // Every participant finished but the aggregator does not answer:
        // its final report (the last rounds' results) is worth waiting
        // for, a moment it may be busy or restarting, but not forever.
        Err(why)
            if !obs.agents.is_empty()
                && obs.agents.iter().all(|a| a.state == AgentState::Succeeded)
                && previous.phase == Phase::Running =>
        {
            if final_report_overdue(obs) {
                Verdict {
                    phase: Phase::Succeeded,
                    reason: "Succeeded",
                    message: format!(
                        "every participant finished after round {}/{}; the aggregator gave no \
                         final report ({why}), so later rounds may be missing from status",
                        previous.current_round, obs.total_rounds
                    ),
                }
            } else {
                Verdict {
                    phase: Phase::Running,
                    reason: "AwaitingFinalReport",
                    message: format!(
                        "every participant finished; waiting for the aggregator's final report: {why}"
                    ),
                }
            }
        }
        Err(why) => Verdict {
            // The aggregator may be starting; a run already seen Running
            // stays Running until the aggregator answers again.
            phase: if previous.phase == Phase::Running {
                Phase::Running
            } else {
                Phase::Pending
            },
            reason: "AggregatorUnavailable",
            message: format!("no status from the aggregator yet: {why}{dropped_note}"),
        },
    }
}

/// How long after the last participant finished the aggregator's final
/// report is waited for.
pub const FINAL_REPORT_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether every participant finished more than [`FINAL_REPORT_GRACE`]
/// ago (a participant without a finish time counts as long finished).
fn final_report_overdue(obs: &Observation) -> bool {
    obs.agents.iter().all(|a| {
        a.finished_at.as_ref().is_none_or(|at| {
            obs.now.0.duration_since(at.0).as_secs_f64().max(0.0)
                >= FINAL_REPORT_GRACE.as_secs_f64()
        })
    })
}

fn set_conditions(
    conditions: &mut Vec<Condition>,
    phase: Phase,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) {
    let terminal = phase.is_terminal();
    let c = |t: &str, status: bool, r: &str| {
        new_condition(t, status, r, message, generation, now.clone())
    };
    upsert(
        conditions,
        c(
            ACCEPTED,
            reason != "InvalidSpec",
            if reason == "InvalidSpec" {
                "InvalidSpec"
            } else {
                "Valid"
            },
        ),
    );
    upsert(conditions, c(PROGRESSING, !terminal, reason));
    upsert(conditions, c(COMPLETE, phase == Phase::Succeeded, reason));
    upsert(conditions, c(FAILED, phase == Phase::Failed, reason));
}

/// `refusedPeers[].reason` of a client the aggregator's TLS handshake
/// refused.
pub const TLS_REFUSED: &str = "TlsHandshakeRefused";

/// The status of a valid round after this observation.
pub fn observe(
    previous: Option<&FederationRoundStatus>,
    obs: &Observation,
) -> FederationRoundStatus {
    let previous = previous.cloned().unwrap_or_default();
    if previous.phase.is_terminal() {
        return previous;
    }
    let v = verdict(obs, &previous);
    let mut status = previous.clone();
    status.phase = v.phase;
    status.message = Some(v.message.clone());
    status.total_rounds = obs.total_rounds;
    if let Ok(s) = &obs.aggregator {
        status.current_round = s.current_round;
        let kept_from = s.rounds.len().saturating_sub(STATUS_ROUNDS_KEPT);
        status.rounds = s.rounds[kept_from..].iter().map(round_status).collect();
        if !s.model_digest.is_empty() {
            status.model_digest = Some(s.model_digest.clone());
        }
        let last_completed = s
            .rounds
            .iter()
            .rev()
            .find(|r| r.outcome == RoundOutcome::Completed);
        status.accuracy = last_completed.and_then(|r| r.accuracy);
        status.loss = last_completed.and_then(|r| r.loss);
        status.epsilon_spent = s.rounds.iter().rev().find_map(|r| r.epsilon_spent);
        status.refused_peers = s
            .refused
            .iter()
            .take(modelpub_crds::STATUS_REFUSED_KEPT)
            .map(|r| RefusedPeer {
                name: r.name.clone(),
                reason: TLS_REFUSED.to_string(),
                message: format!(
                    "the aggregator's TLS handshake refused its certificate: {}",
                    r.reason
                ),
                address: (!r.address.is_empty()).then(|| r.address.clone()),
                certificate_sha256: (!r.certificate_sha256.is_empty())
                    .then(|| r.certificate_sha256.clone()),
                last_refused_time: jiff::Timestamp::from_second(r.unix_secs)
                    .map(Time)
                    .unwrap_or_else(|_| obs.now.clone()),
            })
            .collect();
    }
    status.round_label = Some(FederationRoundStatus::round_label(
        status.current_round,
        status.total_rounds,
    ));
    if status.start_time.is_none() && v.phase != Phase::Pending {
        status.start_time = Some(obs.now.clone());
    }
    if v.phase.is_terminal() {
        status.completion_time = Some(obs.now.clone());
    }
    set_conditions(
        &mut status.conditions,
        v.phase,
        v.reason,
        &v.message,
        obs.generation,
        &obs.now,
    );
    status.observed_generation = obs.generation;
    status
}

/// The status of a round whose spec is invalid. The spec is immutable, so
/// the run fails for good, naming every bad field.
pub fn rejected(
    previous: Option<&FederationRoundStatus>,
    generation: Option<i64>,
    total_rounds: u32,
    errors: &SpecErrors,
    now: Time,
) -> FederationRoundStatus {
    let mut status = previous.cloned().unwrap_or_default();
    if status.phase.is_terminal() {
        return status;
    }
    let message = format!("invalid spec: {errors}");
    status.phase = Phase::Failed;
    status.message = Some(message.clone());
    status.total_rounds = total_rounds;
    status.round_label = Some(FederationRoundStatus::round_label(
        status.current_round,
        total_rounds,
    ));
    status.completion_time = Some(now.clone());
    set_conditions(
        &mut status.conditions,
        Phase::Failed,
        "InvalidSpec",
        &message,
        generation,
        &now,
    );
    status.observed_generation = generation;
    status
}

/// The status while the round waits for something outside it (its
/// TrustDomain to exist or become Ready): Pending, saying what for.
pub fn waiting(
    previous: Option<&FederationRoundStatus>,
    generation: Option<i64>,
    total_rounds: u32,
    why: &str,
    now: Time,
) -> FederationRoundStatus {
    waiting_because(
        previous,
        generation,
        total_rounds,
        "WaitingForTrustDomain",
        why,
        now,
    )
}

/// Pending, with `reason` on the conditions: nothing runs until it clears.
pub fn waiting_because(
    previous: Option<&FederationRoundStatus>,
    generation: Option<i64>,
    total_rounds: u32,
    reason: &str,
    why: &str,
    now: Time,
) -> FederationRoundStatus {
    let mut status = previous.cloned().unwrap_or_default();
    if status.phase.is_terminal() {
        return status;
    }
    status.message = Some(why.to_string());
    status.total_rounds = total_rounds;
    status.round_label = Some(FederationRoundStatus::round_label(
        status.current_round,
        total_rounds,
    ));
    let c = |t: &str, s: bool| new_condition(t, s, reason, why, generation, now.clone());
    upsert(&mut status.conditions, c(PROGRESSING, true));
    upsert(&mut status.conditions, c(COMPLETE, false));
    upsert(&mut status.conditions, c(FAILED, false));
    status.observed_generation = generation;
    status
}

#[cfg(test)]
mod tests {
    use super::super::progress::parse_status;
    use super::*;
    use crate::error::FieldError;
    use modelpub_crds::condition::{find, is_true};

    fn now() -> Time {
        Time("2026-03-02T10:00:00Z".parse().unwrap())
    }

    fn agents(states: &[AgentState]) -> Vec<Agent> {
        states
            .iter()
            .enumerate()
            .map(|(i, s)| Agent {
                vault: format!("hospital-{}", ["a", "b", "c"][i]),
                state: s.clone(),
                finished_at: None,
            })
            .collect()
    }

    const RUNNING: &str = r#"{"federation":"mnist","phase":"Running","message":"round 3 of 5 in progress",
        "current_round":3,"total_rounds":5,"model_digest":"d1",
        "rounds":[
          {"round":1,"accuracy":0.7,"loss":0.9,"participants":3,"dropped":0,"update_bytes":100,
           "epsilon_spent":0.5,"duration_secs":1.0,"outcome":"completed","reason":null},
          {"round":2,"accuracy":null,"loss":null,"participants":1,"dropped":2,"update_bytes":30,
           "epsilon_spent":null,"duration_secs":2.0,"outcome":"failed","reason":"1 update, 2 needed"}]}"#;

    fn obs<'a>(
        aggregator: Result<AggregatorStatus, String>,
        agents: &'a [Agent],
    ) -> Observation<'a> {
        Observation {
            generation: Some(1),
            total_rounds: 5,
            min_participants: 2,
            aggregator,
            agents,
            remote_participants: 0,
            now: now(),
        }
    }

    #[test]
    fn participants_in_other_clusters_count_towards_the_minimum() {
        // One local participant of a round whose other vault is a member's:
        // the coordinator cannot see that pod, so it is not a dropout.
        let a = agents(&[AgentState::Running]);
        let alone = status_from(&obs(Err("starting".into()), &a));
        assert_eq!(alone.phase, Phase::Failed, "{alone:?}");
        let mut o = obs(Err("starting".into()), &a);
        o.remote_participants = 1;
        let with_member = status_from(&o);
        assert_eq!(with_member.phase, Phase::Pending, "{with_member:?}");
        let failed = {
            let dead = agents(&[AgentState::Failed("OOMKilled".into())]);
            let mut o = obs(Err("starting".into()), &dead);
            o.remote_participants = 1;
            status_from(&o)
        };
        assert_eq!(failed.phase, Phase::Failed);
        assert!(
            failed
                .message
                .as_deref()
                .unwrap()
                .contains("only 1 of 2 participants"),
            "{failed:?}"
        );
    }

    fn status_from(o: &Observation) -> FederationRoundStatus {
        observe(None, o)
    }

    #[test]
    fn status_keeps_only_the_last_rounds_and_reads_the_rest_from_all() {
        let mut status = parse_status(RUNNING).expect("the RUNNING fixture parses");
        let template = status.rounds[0].clone();
        status.rounds = (1..=10_000)
            .map(|round| {
                let mut r = template.clone();
                r.round = round;
                r.accuracy = Some(f64::from(round) / 10_000.0);
                r
            })
            .collect();
        status.rounds[0].epsilon_spent = Some(0.1);
        for r in &mut status.rounds[1..] {
            r.epsilon_spent = None;
        }
        let a = agents(&[AgentState::Running]);
        let s = observe(None, &obs(Ok(status), &a));
        assert_eq!(s.rounds.len(), STATUS_ROUNDS_KEPT);
        assert_eq!(s.rounds[0].round, 10_000 - STATUS_ROUNDS_KEPT as u32 + 1);
        assert_eq!(s.rounds.last().map(|r| r.round), Some(10_000));
        assert_eq!(s.accuracy, Some(1.0));
        // The budget spent is read from the whole history, not the kept tail.
        assert_eq!(s.epsilon_spent, Some(0.1));
    }

    #[test]
    fn a_running_round_mirrors_the_aggregator() {
        let a = agents(&[
            AgentState::Running,
            AgentState::Running,
            AgentState::Running,
        ]);
        let s = observe(None, &obs(parse_status(RUNNING), &a));
        assert_eq!(s.phase, Phase::Running);
        assert_eq!(s.current_round, 3);
        assert_eq!(s.round_label.as_deref(), Some("3/5"));
        assert_eq!(s.model_digest.as_deref(), Some("d1"));
        assert_eq!(s.rounds.len(), 2);
        assert_eq!(s.rounds[1].outcome, CrdOutcome::Failed);
        assert_eq!(s.rounds[1].reason.as_deref(), Some("1 update, 2 needed"));
        assert_eq!(s.rounds[0].duration_seconds, Some(1.0));
        // Accuracy is the last completed round's, not the failed one's.
        assert_eq!(s.accuracy, Some(0.7));
        assert_eq!(s.epsilon_spent, Some(0.5));
        assert_eq!(s.start_time, Some(now()));
        assert_eq!(s.completion_time, None);
        assert!(is_true(&s.conditions, PROGRESSING));
        assert!(is_true(&s.conditions, ACCEPTED));
        assert!(!is_true(&s.conditions, COMPLETE));
        assert_eq!(
            find(&s.conditions, PROGRESSING)
                .unwrap()
                .observed_generation,
            Some(1)
        );
        assert_eq!(s.observed_generation, Some(1));
    }

    #[test]
    fn dropouts_below_the_minimum_fail_the_round_with_a_reason() {
        let a = agents(&[
            AgentState::Running,
            AgentState::Failed("OOMKilled, exit code 137".into()),
            AgentState::Failed("Evicted".into()),
        ]);
        let s = observe(None, &obs(parse_status(RUNNING), &a));
        assert_eq!(s.phase, Phase::Failed);
        assert_eq!(
            s.message.as_deref(),
            Some(
                "only 1 of 3 participants are left, below spec.participants.min (2); dropped: \
                 hospital-b (OOMKilled, exit code 137), hospital-c (Evicted)"
            )
        );
        assert_eq!(
            find(&s.conditions, FAILED).unwrap().reason,
            "BelowMinimumParticipants"
        );
        assert!(is_true(&s.conditions, FAILED));
        assert!(!is_true(&s.conditions, PROGRESSING));
        assert_eq!(s.completion_time, Some(now()));
        // Terminal: a later observation changes nothing.
        let later = observe(
            Some(&s),
            &obs(
                parse_status(RUNNING),
                &agents(&vec![AgentState::Running; 3]),
            ),
        );
        assert_eq!(later, s);
    }

    #[test]
    fn one_dropout_above_the_minimum_is_reported_and_tolerated() {
        let a = agents(&[
            AgentState::Running,
            AgentState::Failed("Error, exit code 1".into()),
            AgentState::Running,
        ]);
        let s = observe(None, &obs(parse_status(RUNNING), &a));
        assert_eq!(s.phase, Phase::Running);
        assert!(
            s.message
                .unwrap()
                .ends_with("; dropped: hospital-b (Error, exit code 1)")
        );
    }

    #[test]
    fn success_and_aggregator_failure_are_terminal() {
        let a = agents(&vec![AgentState::Succeeded; 3]);
        let done = parse_status(
            &RUNNING
                .replace("\"Running\"", "\"Succeeded\"")
                .replace("round 3 of 5 in progress", "5 rounds done"),
        );
        let s = observe(None, &obs(done, &a));
        assert_eq!(s.phase, Phase::Succeeded);
        assert!(is_true(&s.conditions, COMPLETE));
        assert_eq!(s.message.as_deref(), Some("5 rounds done"));
        let failed = parse_status(
            &RUNNING
                .replace("\"Running\"", "\"Failed\"")
                .replace("round 3 of 5 in progress", "privacy budget spent"),
        );
        let s = observe(None, &obs(failed, &a));
        assert_eq!(s.phase, Phase::Failed);
        assert_eq!(
            find(&s.conditions, FAILED).unwrap().reason,
            "AggregatorFailed"
        );
    }

    #[test]
    fn an_unreachable_aggregator_keeps_the_phase() {
        let a = agents(&vec![AgentState::Pending; 3]);
        let s = observe(None, &obs(Err("connection refused".into()), &a));
        assert_eq!(s.phase, Phase::Pending);
        assert_eq!(s.round_label.as_deref(), Some("0/5"));
        assert_eq!(
            s.message.as_deref(),
            Some("no status from the aggregator yet: connection refused")
        );
        assert_eq!(s.start_time, None);
        let running = observe(
            None,
            &obs(
                parse_status(RUNNING),
                &agents(&vec![AgentState::Running; 3]),
            ),
        );
        let s = observe(Some(&running), &obs(Err("timed out".into()), &a));
        assert_eq!(s.phase, Phase::Running);
        assert_eq!(s.current_round, 3, "the last known round stays");
    }

    #[test]
    fn a_silent_aggregator_after_the_last_participant_is_waited_for_then_let_go() {
        let running = observe(
            None,
            &obs(
                parse_status(RUNNING),
                &agents(&vec![AgentState::Running; 3]),
            ),
        );
        let finished = |secs_ago: i64| {
            let mut a = agents(&vec![AgentState::Succeeded; 3]);
            let at = now().0 - jiff::SignedDuration::from_secs(secs_ago);
            for agent in &mut a {
                agent.finished_at = Some(Time(at));
            }
            a
        };
        // Just finished: the aggregator's last word may still come.
        let a = finished(10);
        let waiting = observe(Some(&running), &obs(Err("timed out".into()), &a));
        assert_eq!(waiting.phase, Phase::Running);
        assert_eq!(
            find(&waiting.conditions, PROGRESSING).unwrap().reason,
            "AwaitingFinalReport"
        );
        assert_eq!(
            waiting.message.as_deref(),
            Some(
                "every participant finished; waiting for the aggregator's final report: timed out"
            )
        );
        assert_eq!(waiting.rounds.len(), 2, "what was known stays");
        // Long after: the run is over, and status says what may be missing.
        let a = finished(FINAL_REPORT_GRACE.as_secs() as i64 + 1);
        let done = observe(Some(&waiting), &obs(Err("connection refused".into()), &a));
        assert_eq!(done.phase, Phase::Succeeded);
        assert_eq!(
            done.message.as_deref(),
            Some(
                "every participant finished after round 3/5; the aggregator gave no final report \
                 (connection refused), so later rounds may be missing from status"
            )
        );
        // A kubelet that gives no finish time: nothing to wait by.
        let a = agents(&vec![AgentState::Succeeded; 3]);
        let done = observe(Some(&running), &obs(Err("timed out".into()), &a));
        assert_eq!(done.phase, Phase::Succeeded);
    }

    #[test]
    fn invalid_specs_fail_and_waiting_stays_pending() {
        let errors = SpecErrors(vec![FieldError::new(
            "spec.participants.min",
            "4 exceeds the 3 vaults in spec.data.vaults",
        )]);
        let s = rejected(None, Some(2), 5, &errors, now());
        assert_eq!(s.phase, Phase::Failed);
        assert_eq!(
            s.message.as_deref(),
            Some("invalid spec: spec.participants.min: 4 exceeds the 3 vaults in spec.data.vaults")
        );
        assert!(!is_true(&s.conditions, ACCEPTED));
        assert_eq!(find(&s.conditions, FAILED).unwrap().reason, "InvalidSpec");
        assert_eq!(s.observed_generation, Some(2));
        let w = waiting(
            None,
            Some(1),
            5,
            "spec.trustDomain: TrustDomain lab/x does not exist",
            now(),
        );
        assert_eq!(w.phase, Phase::Pending);
        assert_eq!(
            find(&w.conditions, PROGRESSING).unwrap().reason,
            "WaitingForTrustDomain"
        );
    }
}
