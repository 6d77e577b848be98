//! One round, from plan to mean update: the stages of a secure round
//! (advertise keys, share keys, masked input, unmask), or the single upload
//! stage of a plain one. Whoever misses a stage's deadline has dropped; a
//! stage stops waiting for a participant whose connections have all
//! closed (`presence.rs`).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use modelpub_protocol::pb;
use modelpub_protocol::secagg::{self, MaskPrg, Quantizer};

use super::Shared;
use super::accumulator::RoundSum;
use super::driver::wait_until;
use super::state::{OpenRound, Phase, SecureRound, Stage, State};
use super::strategy::{MeanUpdate, Strategy};
use crate::compression;

/// A straggler cutoff: once enough updates are in for the round to count
/// (its quorum), the others get this many times as long again as the
/// quorum took (and at least `MIN_STRAGGLER_GRACE`), so one vanished
/// participant does not hold every round to its full deadline. Before the
/// quorum only the deadline ends the wait: cutting off slow participants
/// then would fail a round that waiting could complete.
const STRAGGLER_FACTOR: u32 = 3;
const MIN_STRAGGLER_GRACE: Duration = Duration::from_secs(5);

/// What a closed round produced.
pub struct Closed {
    pub open: Box<OpenRound>,
    /// The example-weighted mean update, or why there is none.
    pub mean: Result<MeanUpdate, String>,
    /// Who dropped, and at which stage.
    pub dropped: Vec<(String, &'static str)>,
}

pub fn plan(
    shared: &Shared,
    round: u32,
    participants: &[String],
    strategy: &dyn Strategy,
    vector_len: usize,
) -> anyhow::Result<pb::RoundPlan> {
    let config = &shared.config;
    let deadline_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64
        + (config.round_timeout_secs * 1000) as i64;
    let t = &config.training;
    let n = participants.len();
    let secure = match &config.secure_aggregation {
        Some(s) => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("randomness: {e}"))?;
            // Explicit settings win; otherwise k and t are derived for the
            // roster and the tolerated dropout and corruption.
            let (k, threshold) = match s.neighbours {
                Some(k) => {
                    let k = k as usize;
                    (
                        k,
                        s.threshold
                            .map_or_else(|| secagg::Params::default_threshold(k), |t| t as usize),
                    )
                }
                None => {
                    let chosen = secagg::neighbourhood::choose(n, s.tolerance())?;
                    (
                        chosen.neighbours,
                        s.threshold.map_or(chosen.threshold, |t| t as usize),
                    )
                }
            };
            let quantizer = Quantizer::for_participants(s.clip, n)?;
            let (max_examples, mask_prg) = {
                let state = shared.lock_anyhow()?;
                let joined: Vec<_> = participants
                    .iter()
                    .filter_map(|p| state.joined.get(p))
                    .collect();
                let max_examples = joined.iter().map(|j| j.num_examples).max().unwrap_or(1);
                let mask_prg = s.mask_prg.unwrap_or_else(|| {
                    MaskPrg::fastest_for(joined.iter().map(|j| j.fast_mask_prgs.as_slice()))
                });
                (max_examples, mask_prg)
            };
            let example_scale = if config.privacy.is_some() {
                1.0
            } else {
                1.0 / max_examples.max(1) as f64
            };
            Some(pb::SecureAggregation {
                neighbours: k as u32,
                threshold: threshold as u32,
                graph_seed: seed.to_vec(),
                vector_len: vector_len as u64 + 1,
                clip: quantizer.clip,
                scale: quantizer.scale,
                example_scale,
                mask_prg: pb::MaskPrg::from(mask_prg) as i32,
            })
        }
        None => None,
    };
    let privacy = config.privacy.as_ref().map(|p| pb::DifferentialPrivacy {
        clip_norm: p.clip_norm,
        noise_std: modelpub_protocol::dp::per_participant_noise_std(
            p.noise_multiplier,
            p.clip_norm,
            n,
        ),
    });
    let compression = compression::parse(&config.compression).map_err(anyhow::Error::msg)?;
    Ok(pb::RoundPlan {
        round,
        total_rounds: config.rounds,
        model_sha256: shared.lock_anyhow()?.global.digest().to_string(),
        participants: participants.to_vec(),
        min_participants: config.min_participants,
        deadline_unix_ms: deadline_ms,
        training: Some(pb::TrainingConfig {
            local_epochs: t.local_epochs,
            batch_size: t.batch_size,
            learning_rate: t.learning_rate,
            proximal_mu: strategy.proximal_mu(),
            max_batches_per_epoch: t.max_batches_per_epoch,
            seed: t.seed,
        }),
        model: Some(shared.model_spec()),
        strategy: strategy.name().to_string(),
        secure,
        privacy,
        compression: compression as i32,
    })
}

/// Secure-aggregation parameters as the protocol library wants them.
pub fn secagg_params(
    federation: &str,
    plan: &pb::RoundPlan,
    secure: &pb::SecureAggregation,
) -> Result<secagg::Params, secagg::SecAggError> {
    let seed: [u8; 32] = secure.graph_seed.as_slice().try_into().map_err(|_| {
        secagg::SecAggError::InvalidParams("the graph seed must be 32 bytes".into())
    })?;
    let mut participants = plan.participants.clone();
    participants.sort();
    let params = secagg::Params {
        round: plan.round,
        federation: federation.to_string(),
        participants,
        neighbours: secure.neighbours as usize,
        threshold: secure.threshold as usize,
        graph_seed: seed,
        vector_len: secure.vector_len as usize,
        prg: secagg::MaskPrg::from_wire(secure.mask_prg)?,
    };
    params.validate()?;
    Ok(params)
}

/// Runs the round's stages and closes it.
pub async fn run(
    shared: &Shared,
    plan: pb::RoundPlan,
    lengths: &[usize],
) -> anyhow::Result<Closed> {
    let config = &shared.config;
    let secure = match &plan.secure {
        Some(s) => Some(SecureRound::new(secagg::Server::new(secagg_params(
            &config.federation,
            &plan,
            s,
        )?)?)),
        None => None,
    };
    let started = Instant::now();
    let deadline = started + Duration::from_secs(config.round_timeout_secs);
    {
        let mut state = shared.lock_anyhow()?;
        state.phase = Phase::Open(Box::new(OpenRound {
            sum: RoundSum::new(if secure.is_some() { &[] } else { lengths }),
            plan: plan.clone(),
            uploaded: Default::default(),
            receiving: Default::default(),
            bytes_up: 0,
            bytes_down: 0,
            train_losses: Vec::new(),
            started,
            quorum: quorum(&plan),
            quorum_at: None,
            secure_mean: None,
            secure,
        }));
    }
    shared.bump();
    shared
        .telemetry
        .round_opened(plan.round, plan.participants.len());
    tracing::info!(
        round = plan.round,
        participants = plan.participants.len(),
        secure = plan.secure.is_some(),
        "round open"
    );
    let mut dropped = Vec::new();
    let stage_timeout = Duration::from_secs(
        config
            .secure_aggregation
            .as_ref()
            .map_or(config.round_timeout_secs, |s| s.stage_timeout_secs),
    );
    if plan.secure.is_some() {
        secure_key_stages(
            shared,
            &plan,
            stage_timeout.min(deadline - Instant::now()),
            &mut dropped,
        )
        .await?;
    }
    await_uploads(shared, deadline).await;

    let mean = if plan.secure.is_some() {
        secure_unmask(shared, stage_timeout, &mut dropped, lengths).await?
    } else {
        Ok(())
    };
    let mut open = {
        let mut state = shared.lock_anyhow()?;
        match std::mem::replace(&mut state.phase, Phase::Closed) {
            Phase::Open(open) => open,
            _ => anyhow::bail!("round {} was closed by someone else", plan.round),
        }
    };
    shared.bump();
    let mean = match (mean, open.secure.is_some()) {
        (Err(reason), _) => Err(reason),
        (Ok(()), true) => {
            let survivors = open.secure.as_ref().map_or(0, |s| s.survivors.len());
            match open.secure_mean.take() {
                Some(_) if survivors < config.min_participants as usize => {
                    Err(below_minimum(survivors, &open, config.min_participants))
                }
                Some(mean) => Ok(mean),
                None => Err("secure round ended without a sum".to_string()),
            }
        }
        (Ok(()), false) => {
            for p in &open.plan.participants {
                if !open.uploaded.contains(p) {
                    dropped.push((p.clone(), "before uploading its update"));
                }
            }
            if open.sum.contributors() < config.min_participants as usize {
                Err(below_minimum(
                    open.sum.contributors(),
                    &open,
                    config.min_participants,
                ))
            } else {
                open.sum
                    .mean()
                    .map(MeanUpdate::PerTensor)
                    .context("no updates")
                    .map_err(|e| e.to_string())
            }
        }
    };
    Ok(Closed {
        open,
        mean,
        dropped,
    })
}

/// The number of updates a round needs to count.
fn quorum(plan: &pb::RoundPlan) -> usize {
    let threshold = plan.secure.as_ref().map_or(0, |s| s.threshold);
    plan.min_participants.max(threshold).max(1) as usize
}

fn below_minimum(have: usize, open: &OpenRound, min: u32) -> String {
    format!(
        "only {have} of {} updates arrived by the deadline (minimum {min}); the global model stays as it was",
        open.plan.participants.len()
    )
}

/// Stages 1 and 2. A failure here (too few left to meet the threshold)
/// closes the secure part of the round; the caller reports it.
async fn secure_key_stages(
    shared: &Shared,
    plan: &pb::RoundPlan,
    timeout: Duration,
    dropped: &mut Vec<(String, &'static str)>,
) -> anyhow::Result<()> {
    wait_until(shared, Instant::now() + timeout, |s| {
        secure_of(s).is_none_or(|r| {
            (plan.participants.iter())
                .all(|p| r.advertisements.contains_key(p) || s.presence.gone(p))
        })
    })
    .await;
    close_stage(shared, |r| {
        r.u1 = r.advertisements.keys().cloned().collect();
        for p in &plan.participants {
            if !r.advertisements.contains_key(p) {
                dropped.push((p.clone(), "before advertising keys"));
            }
        }
        r.stage = Stage::ShareKeys;
        Ok(())
    })?;
    wait_until(shared, Instant::now() + timeout, |s| {
        secure_of(s).is_none_or(|r| {
            r.stage != Stage::ShareKeys
                || (r.u1.iter()).all(|p| r.shared.contains(p) || s.presence.gone(p))
        })
    })
    .await;
    close_stage(shared, |r| {
        if r.stage != Stage::ShareKeys {
            return Ok(());
        }
        // Named before the threshold check, so a failed round names them too.
        for p in &r.u1 {
            if !r.shared.contains(p) {
                dropped.push((p.clone(), "after advertising keys"));
            }
        }
        r.u2 = r.server()?.close_shares()?;
        r.stage = Stage::MaskedInput;
        Ok(())
    })
}

/// Applies a stage transition; a protocol error fails the round and wakes
/// every handler waiting on it.
fn close_stage(
    shared: &Shared,
    step: impl FnOnce(&mut SecureRound) -> Result<(), secagg::SecAggError>,
) -> anyhow::Result<()> {
    {
        let mut state = shared.lock_anyhow()?;
        if let Some(r) = secure_of_mut(&mut state)
            && r.failure.is_none()
            && let Err(e) = step(r)
        {
            r.failure = Some(e.to_string());
            r.stage = Stage::Closed;
        }
    }
    shared.bump();
    Ok(())
}

/// Waits for the uploads, with the straggler cutoff.
async fn await_uploads(shared: &Shared, deadline: Instant) {
    loop {
        let (done, cutoff) = match shared.state.lock() {
            Ok(state) => match &state.phase {
                Phase::Open(r) => {
                    let failed = r.secure.as_ref().is_some_and(|s| s.failure.is_some());
                    let cutoff = r.quorum_at.map(|at| {
                        let waited = at.saturating_duration_since(r.started);
                        at + (waited * STRAGGLER_FACTOR).max(MIN_STRAGGLER_GRACE)
                    });
                    (failed || r.all_in(&state.presence), cutoff)
                }
                _ => (true, None),
            },
            Err(_) => (true, None),
        };
        let until = cutoff.map_or(deadline, |c| c.min(deadline));
        if done || Instant::now() >= until {
            return;
        }
        wait_until(
            shared,
            until.min(Instant::now() + Duration::from_millis(500)),
            |_| false,
        )
        .await;
    }
}

/// Stage 4: names survivors and dropped, collects the reveals, removes the
/// masks, and turns the sum back into a mean update.
async fn secure_unmask(
    shared: &Shared,
    timeout: Duration,
    dropped: &mut Vec<(String, &'static str)>,
    lengths: &[usize],
) -> anyhow::Result<Result<(), String>> {
    // Who shared keys but sent no masked input has dropped, whether or not
    // enough are left to unmask: a failed round names them too.
    let missing: Vec<String> = {
        let mut state = shared.lock_anyhow()?;
        state
            .open_round()
            .and_then(|open| {
                let r = open
                    .secure
                    .as_ref()
                    .filter(|r| r.stage == Stage::MaskedInput)?;
                Some(
                    r.u2.iter()
                        .filter(|p| !open.uploaded.contains(*p))
                        .cloned()
                        .collect(),
                )
            })
            .unwrap_or_default()
    };
    dropped.extend(missing.into_iter().map(|p| (p, "after sharing keys")));
    close_stage(shared, |r| {
        if r.stage != Stage::MaskedInput {
            return Ok(());
        }
        let (survivors, gone) = r.server()?.unmask_request()?;
        r.survivors = survivors;
        r.dropped = gone;
        r.stage = Stage::Unmask;
        Ok(())
    })?;
    wait_until(shared, Instant::now() + timeout, |s| {
        secure_of(s).is_none_or(|r| {
            r.stage != Stage::Unmask
                || (r.survivors.iter()).all(|p| r.revealed.contains(p) || s.presence.gone(p))
        })
    })
    .await;
    let (server, failure, quantizer, silent) = {
        let mut state = shared.lock_anyhow()?;
        let Some(open) = state.open_round() else {
            return Ok(Err("the round closed early".into()));
        };
        let plan_secure = open.plan.secure.clone();
        let Some(r) = open.secure.as_mut() else {
            return Ok(Err("not a secure round".into()));
        };
        let silent: Vec<String> = r
            .survivors
            .iter()
            .filter(|p| !r.revealed.contains(*p))
            .cloned()
            .collect();
        r.stage = Stage::Closed;
        let quantizer = plan_secure.map(|s| Quantizer {
            clip: s.clip,
            scale: s.scale,
        });
        (r.server.take(), r.failure.clone(), quantizer, silent)
    };
    shared.bump();
    for p in silent {
        dropped.push((p, "during unmasking"));
    }
    if let Some(reason) = failure {
        return Ok(Err(format!("secure aggregation failed: {reason}")));
    }
    let (Some(server), Some(quantizer)) = (server, quantizer) else {
        return Ok(Err("secure aggregation state missing".into()));
    };
    let sum = match tokio::task::spawn_blocking(move || server.finish()).await? {
        Ok(sum) => sum,
        Err(e) => return Ok(Err(format!("secure aggregation failed: {e}"))),
    };
    // Decoded and divided in the sum's own buffer: the mean costs no
    // second model.
    let mut values = quantizer.dequantize_sum_in_place(sum);
    let Some(weight) = values.pop() else {
        return Ok(Err("empty secure sum".into()));
    };
    if weight <= 0.0 {
        return Ok(Err("the securely aggregated weight is zero".into()));
    }
    if values.len() != lengths.iter().sum::<usize>() {
        return Ok(Err(format!(
            "the secure sum has {} coordinates, the model {}",
            values.len(),
            lengths.iter().sum::<usize>()
        )));
    }
    for v in &mut values {
        *v /= weight;
    }
    let mut state = shared.lock_anyhow()?;
    if let Some(open) = state.open_round() {
        open.secure_mean = Some(MeanUpdate::Flat {
            values,
            lengths: lengths.to_vec(),
        });
    }
    Ok(Ok(()))
}

fn secure_of(state: &State) -> Option<&SecureRound> {
    match &state.phase {
        Phase::Open(r) => r.secure.as_ref(),
        _ => None,
    }
}

fn secure_of_mut(state: &mut State) -> Option<&mut SecureRound> {
    match &mut state.phase {
        Phase::Open(r) => r.secure.as_mut(),
        _ => None,
    }
}
