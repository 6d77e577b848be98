//! Runs the aggregator: serves the Federation service over mutual TLS and
//! drives the run round by round.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use modelpub_protocol::audit::{AuditLog, Direction};
use modelpub_protocol::dp::PrivacyBudget;
use modelpub_protocol::envelope::Signer;
use modelpub_protocol::identity::{Identity, Roster};
use modelpub_protocol::pb;
use modelpub_protocol::pb::federation_server::FederationServer;
use modelpub_protocol::replay::ReplayGuard;
use modelpub_protocol::secagg::MaskPrg;
use modelpub_protocol::tls::TlsMaterial;
use tokio::sync::watch;
use tracing::Instrument;

use super::Shared;
use super::checkpoint::{self, Checkpoint, Store};
use super::evaluator::{Evaluator, Score};
use super::presence::Present;
use super::round;
use super::server_step;
use super::service::FederationService;
use super::state::{GlobalModel, Phase, State};
use super::strategy::{self, Strategy, StrategyState};
use crate::audit_trail;
use crate::config::{AggregatorConfig, read_json};
use crate::model::Model;
use crate::party::PartyDir;
use crate::round_record::RoundRecord;
use crate::telemetry::status::RefusedClient;
use crate::telemetry::{AggregatorTelemetry, Health};
use crate::weights_file;

/// How long participants get to hear that the run is over before the
/// server stops.
const FAREWELL: Duration = Duration::from_secs(20);

pub async fn run(party: PartyDir) -> anyhow::Result<()> {
    crate::telemetry::memory::return_large_frees_to_the_os();
    let config: AggregatorConfig = read_json(&party.config())?;
    validate(&config)?;
    let identity = Identity::load(party.root())?;
    let mut tls = TlsMaterial::load(&party.tls())?;
    // Participants of other clusters hold certificates from their own
    // CAs; the client roots are ours plus theirs (a PEM bundle).
    for ca in &config.peer_client_cas {
        tls.ca_pem.push('\n');
        tls.ca_pem.push_str(ca);
    }
    let audit = AuditLog::open(party.root(), identity.clone())?;
    let roster = Roster::new(config.roster.clone());
    // A restart takes up the run where the last checkpoint left it.
    let model_id = format!("{} {}", config.model.family(), config.model.to_json());
    let store = Store::new(party.root(), &config.federation, &model_id)?;
    let (initial, resume) = match store.load()? {
        Some(r) => {
            tracing::info!(
                last_round = r.checkpoint.last_round(),
                interrupted = ?r.checkpoint.open_round,
                model = %r.checkpoint.model_sha256,
                "resuming from checkpoint"
            );
            (r.global, Some((r.checkpoint, r.strategy_state)))
        }
        None => (
            Model::new(&config.model, tch::Device::Cpu, config.model_seed)?.weights(),
            None,
        ),
    };
    // Envelopes accepted before a restart stay refused after it.
    let replay = ReplayGuard::persistent(party.root().join("replay.jsonl"))?;
    let evaluator = match &config.evaluation {
        Some(v) => Some(Evaluator::open(v, config.model.clone())?),
        None => None,
    };
    let strategy = strategy::build(&config.strategy);
    let (changes, _) = watch::channel(0);
    let global = GlobalModel::new(initial);

    let (telemetry, registry) =
        AggregatorTelemetry::new(&config.federation, config.rounds, global.digest());
    let shared = Arc::new(Shared {
        signer: Signer::new(identity, &config.federation),
        roster,
        replay,
        audit,
        state: Mutex::new(State::new(global)),
        changes,
        telemetry,
        config,
    });
    {
        let mut state = shared.lock_anyhow()?;
        for record in resume.iter().flat_map(|(c, _)| &c.records) {
            shared.telemetry.round_restored(record);
            state.results.insert(record.round, record.result());
        }
        // The published file always holds the model the run goes on from
        // (a crash between publishing a model and checkpointing it leaves
        // a newer one), so a checkpoint can hard-link it.
        publish_model(&party, &state.global)?;
    }
    if let Some(addr) = &shared.config.metrics_listen {
        let watched = shared.clone();
        let health: Health = Arc::new(move || match watched.state.lock() {
            Ok(_) => Ok(()),
            Err(_) => Err("aggregator state lock poisoned".into()),
        });
        let bound = shared.telemetry.serve(addr, registry, health).await?;
        tracing::info!(%bound, "metrics listening");
    }

    // Masked uploads stream to unnamed files here (the party directory, a
    // volume in a pod, not a memory-backed /tmp).
    let spool_dir = party.root().join("spool");
    std::fs::create_dir_all(&spool_dir)
        .with_context(|| format!("cannot create {}", spool_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(&shared.config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", shared.config.listen))?;
    let address = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let refusals = shared.clone();
    let present = shared.clone();
    let incoming = super::listener::incoming(
        listener,
        tls,
        move |r| refused(&refusals, r),
        move |client| {
            let party = client.and_then(|c| c.common_name)?;
            Some(Present::arrive(present.clone(), party))
        },
    );
    // HTTP/2 lets each peer send a whole receive window before anyone
    // reads it, and uploads wait for a staging slot: with hyper's fixed
    // 1 MiB windows that is a megabyte per waiting participant, the one
    // part of the aggregator's memory that grew with n (issue 16). The
    // adaptive window sizes each connection to its measured
    // bandwidth-delay product instead, which is what a WAN link needs and
    // far less on a LAN.
    // Pings catch the peer that vanishes without closing its connection
    // (presence.rs); a ping unanswered for as long closes it.
    let keepalive = (shared.config.keepalive_secs > 0)
        .then(|| Duration::from_secs(shared.config.keepalive_secs));
    let server = tonic::transport::Server::builder()
        .http2_adaptive_window(Some(true))
        .http2_keepalive_interval(keepalive)
        .http2_keepalive_timeout(keepalive)
        .add_service(FederationServer::new(FederationService::new(
            shared.clone(),
            spool_dir,
        )))
        .serve_with_incoming_shutdown(incoming, async {
            stopped.await.ok();
        });
    let server = tokio::spawn(server);
    write_atomically(&shared.config.address_file, address.to_string().as_bytes())?;
    tracing::info!(%address, "aggregator listening");
    shared.telemetry.ready();

    let outcome = drive(&shared, evaluator, strategy, &party, &store, resume).await;
    let reason = match &outcome {
        Ok(summary) => summary.clone(),
        Err(e) => format!("run aborted: {e:#}"),
    };
    shared.telemetry.finished(match &outcome {
        Ok(_) => Ok(&reason),
        Err(_) => Err(&reason),
    });
    finish(&shared, reason).await;
    stop.send(()).ok();
    server.await?.context("gRPC server")?;
    if shared.config.linger_after_run && shared.config.metrics_listen.is_some() {
        tracing::info!("run over; serving /status until SIGTERM");
        until_terminated().await?;
    }
    outcome.map(|_| ())
}

/// A client refused in the TLS handshake: named in the audit log (its
/// certificate's common name and SHA-256) and in `/status`.
fn refused(shared: &Shared, r: super::listener::Refused) {
    let name = r.presented.name();
    tracing::warn!(client = %name, address = %r.address, "TLS handshake refused: {}", r.reason);
    audit_trail::event(
        &shared.audit,
        Direction::Received,
        "tls-handshake-refused",
        &name,
        0,
        &r.presented.sha256,
        &format!("from {}: {}", r.address, r.reason),
    );
    shared.telemetry.status().refused(RefusedClient {
        name,
        certificate_sha256: r.presented.sha256,
        address: r.address.to_string(),
        reason: r.reason,
        unix_secs: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
    });
}

/// Resolves on SIGTERM (what Kubernetes sends to stop a pod) or Ctrl-C.
async fn until_terminated() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch for SIGTERM")?;
    tokio::select! {
        _ = term.recv() => {}
        r = tokio::signal::ctrl_c() => r.context("cannot watch for Ctrl-C")?,
    }
    Ok(())
}

fn validate(config: &AggregatorConfig) -> anyhow::Result<()> {
    if config.rounds == 0 {
        bail!("rounds must be at least 1");
    }
    if config.min_participants == 0 {
        bail!("min_participants must be at least 1");
    }
    if (config.min_participants as usize) > config.roster.len() {
        bail!(
            "min_participants is {} but the roster has only {} members",
            config.min_participants,
            config.roster.len()
        );
    }
    Ok(())
}

async fn drive(
    shared: &Arc<Shared>,
    evaluator: Option<Evaluator>,
    mut strategy: Box<dyn Strategy>,
    party: &PartyDir,
    store: &Store,
    resume: Option<(Checkpoint, StrategyState)>,
) -> anyhow::Result<String> {
    let config = &shared.config;
    let mut checkpoint = match resume {
        Some((checkpoint, state)) => {
            strategy
                .restore(state)
                .map_err(|e| anyhow::anyhow!("checkpoint: {e}"))?;
            checkpoint
        }
        None => store.fresh(shared.lock_anyhow()?.global.digest()),
    };
    let global = shared.lock_anyhow()?.global.clone();
    let layout: Vec<(String, Vec<u64>)> = global
        .set
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone()))
        .collect();
    let restored_score = (checkpoint.records.iter().rev()).find_map(|r| {
        Some(Score {
            accuracy: r.accuracy?,
            loss: r.loss?,
        })
    });
    let mut last_score = match (&evaluator, restored_score) {
        (Some(_), Some(score)) => Some(score),
        (Some(e), None) => Some(e.score(global.clone()).await?),
        (None, _) => None,
    };
    let mut succeeded = checkpoint.records.iter().filter(|r| r.succeeded).count();
    let lengths: Vec<usize> = layout
        .iter()
        .map(|(_, shape)| shape.iter().product::<u64>() as usize)
        .collect();
    drop(global);
    let vector_len: usize = lengths.iter().sum();
    let mut budget = match &config.privacy {
        Some(p) => Some(PrivacyBudget::new(
            p.epsilon,
            p.delta,
            1.0,
            p.noise_multiplier,
        )?),
        None => None,
    };
    if let Some(b) = budget.as_mut() {
        for _ in 0..checkpoint.privacy_steps {
            b.record_step();
        }
    }
    if let Some(round) = checkpoint.open_round.take() {
        let record = checkpoint::interrupted(
            round,
            &checkpoint.model_sha256,
            budget.as_ref().map(|b| b.spent()),
        );
        tracing::warn!(round, "round failed: {}", record.reason);
        audit_round(shared, &record);
        shared.telemetry.round_closed(&record);
        shared.lock_anyhow()?.results.insert(round, record.result());
        checkpoint.records.push(record);
        store.mark(&checkpoint)?;
    }
    // Records checkpointed but not yet in rounds.jsonl (a stop between the
    // two writes, or the interrupted round just recorded).
    let in_file = RoundRecord::read_all(&config.rounds_file)
        .with_context(|| format!("cannot read {}", config.rounds_file.display()))?
        .iter()
        .map(|r| r.round)
        .max()
        .unwrap_or(0);
    for record in checkpoint.records.iter().filter(|r| r.round > in_file) {
        append_line(&config.rounds_file, &serde_json::to_string(record)?)?;
    }
    let first = checkpoint.last_round() + 1;
    if first <= config.rounds {
        wait_for_joins(shared).await?;
    }
    let mut stopped_early = None;
    for round in first..=config.rounds {
        if let Some(b) = &budget
            && b.would_exceed(1)
        {
            let reason = format!(
                "stopped before round {round}: it would take the privacy spent from ε = {:.3} past the budget ε = {} (δ = {})",
                b.spent(),
                b.epsilon(),
                b.delta()
            );
            tracing::warn!("{reason}");
            stopped_early = Some(reason);
            break;
        }
        if round > 1 && config.rejoin_grace_secs > 0 {
            let grace = Instant::now() + Duration::from_secs(config.rejoin_grace_secs);
            wait_until(shared, grace, |s| {
                s.joined.keys().all(|p| !s.presence.gone(p))
            })
            .await;
        }
        let joined = joined_now(shared)?;
        let plan = round::plan(shared, round, &joined, strategy.as_ref(), vector_len)?;
        checkpoint.open_round = Some(round);
        store.mark(&checkpoint)?;
        // One span per round (exported over OTLP when configured); the
        // handlers' and stages' events land in it.
        let closed = round::run(shared, plan, &lengths)
            .instrument(tracing::info_span!("round", federation = %config.federation, round))
            .await?;
        let open = closed.open;
        let dropped: Vec<String> = closed.dropped.iter().map(|(p, _)| p.clone()).collect();
        for (p, when) in &closed.dropped {
            tracing::warn!(round, participant = %p, "dropped {when}");
        }
        let (ok, reason) = match closed.mean {
            Ok(mean) => {
                // While the round closes only the current global model and
                // the mean's buffer, which becomes the next one, are alive.
                let current = shared.lock_anyhow()?.global.clone();
                let set = server_step::step_model(strategy.as_mut(), &current, &layout, mean)
                    .with_context(|| format!("round {round}"))?;
                drop(current);
                let new_global = GlobalModel::new(set);
                shared.lock_anyhow()?.global = new_global.clone();
                publish_model(party, &new_global)?;

                if let Some(e) = &evaluator {
                    last_score = Some(
                        e.score(new_global)
                            .instrument(tracing::info_span!("evaluate", round))
                            .await?,
                    );
                }
                if let Some(b) = budget.as_mut() {
                    b.record_step();
                }
                succeeded += 1;
                (true, String::new())
            }
            Err(reason) => (false, reason),
        };
        let epsilon = budget.as_ref().map(|b| b.spent());
        let dropped_detail: Vec<String> = closed
            .dropped
            .iter()
            .map(|(p, when)| format!("{p} ({when})"))
            .collect();
        let digest = shared.lock_anyhow()?.global.digest().to_string();
        let examples: u64 = open.train_losses.iter().map(|(n, _)| n).sum();
        let train_loss = (examples > 0).then(|| {
            open.train_losses
                .iter()
                .map(|(n, l)| *n as f64 * l)
                .sum::<f64>()
                / examples as f64
        });
        let mut uploaded: Vec<String> = open.uploaded.iter().cloned().collect();
        uploaded.sort();
        let record = RoundRecord {
            round,
            succeeded: ok,
            reason: reason.clone(),
            accuracy: last_score.as_ref().map(|s| s.accuracy),
            loss: last_score.as_ref().map(|s| s.loss),
            train_loss,
            participants: uploaded.len(),
            dropped: dropped.len(),
            participant_names: uploaded.clone(),
            dropped_names: dropped_detail,
            epsilon,
            secure: open.secure.is_some(),
            mask_prg: (open.plan.secure.as_ref()).and_then(|s| MaskPrg::from_wire(s.mask_prg).ok()),
            aggregator_peak_rss_bytes: crate::telemetry::memory::peak_rss_bytes(),
            bytes_up: open.bytes_up,
            bytes_down: open.bytes_down,
            seconds: open.started.elapsed().as_secs_f64(),
            model_sha256: digest.clone(),
        };
        // Checkpoint first: a stop before the append is mended on restart
        // from the checkpoint; the other order could record a round twice.
        checkpoint.open_round = None;
        checkpoint.model_sha256 = digest.clone();
        checkpoint.privacy_steps = budget.as_ref().map_or(0, |b| b.steps());
        checkpoint.records.push(record.clone());
        {
            let global = shared.lock_anyhow()?.global.clone();
            let published = party.root().join("global-model.safetensors");
            store.save(&mut checkpoint, &global.set, &published, &strategy.state())?;
        }
        append_line(&config.rounds_file, &serde_json::to_string(&record)?)?;
        shared.telemetry.round_closed(&record);
        let result = record.result();
        audit_round(shared, &record);
        shared.lock_anyhow()?.results.insert(round, result);
        shared.bump();
        if ok {
            tracing::info!(round, accuracy = ?record.accuracy, loss = ?record.loss, "round complete");
        } else {
            tracing::warn!(round, "round failed: {reason}");
        }
    }
    let summary = format!("{succeeded} of {} rounds completed", config.rounds);
    Ok(match stopped_early {
        Some(reason) => format!("{summary}; {reason}"),
        None => summary,
    })
}

/// A round's outcome in the aggregator's audit log.
fn audit_round(shared: &Shared, record: &RoundRecord) {
    let note = if record.succeeded {
        "round completed"
    } else {
        &record.reason
    };
    audit_trail::event(
        &shared.audit,
        Direction::Local,
        "modelpub.v1.RoundResult",
        "",
        record.round,
        &record.model_sha256,
        note,
    );
}

/// Everyone who has joined so far and is still connected: participants
/// that come back after a crash are planned again from the next round on,
/// and one whose connections have all closed is not planned at all, so a
/// party that is gone neither counts as a dropout in every later round nor
/// sizes the secure-aggregation threshold.
fn joined_now(shared: &Shared) -> anyhow::Result<Vec<String>> {
    let state = shared.lock_anyhow()?;
    Ok((state.joined.keys())
        .filter(|p| !state.presence.gone(p))
        .cloned()
        .collect())
}

/// Gang start: the first round waits for the whole roster, or for the join
/// timeout if at least `min_participants` made it.
async fn wait_for_joins(shared: &Arc<Shared>) -> anyhow::Result<Vec<String>> {
    let config = &shared.config;
    let want = shared.roster.names().len();
    let deadline = Instant::now() + Duration::from_secs(config.join_timeout_secs);
    wait_until(shared, deadline, |s| s.joined.len() >= want).await;
    let joined: Vec<String> = shared.lock_anyhow()?.joined.keys().cloned().collect();
    if joined.len() < config.min_participants as usize {
        bail!(
            "only {} of {want} participants joined within {} s (minimum {}): {:?}",
            joined.len(),
            config.join_timeout_secs,
            config.min_participants,
            joined
        );
    }
    Ok(joined)
}

pub(super) async fn wait_until(shared: &Shared, deadline: Instant, done: impl Fn(&State) -> bool) {
    let mut changes = shared.changes.subscribe();
    loop {
        match shared.state.lock() {
            Ok(state) if !done(&state) => {}
            _ => return,
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        if tokio::time::timeout(left, changes.changed()).await.is_err() {
            return;
        }
    }
}

async fn finish(shared: &Arc<Shared>, reason: String) {
    let (digest, rounds) = match shared.state.lock() {
        Ok(mut state) => {
            let digest = state.global.digest().to_string();
            let rounds = state.results.values().filter(|r| r.succeeded).count() as u32;
            state.phase = Phase::Finished(pb::FederationFinished {
                rounds_completed: rounds,
                final_model_sha256: digest.clone(),
                reason: reason.clone(),
            });
            (digest, rounds)
        }
        Err(_) => return,
    };
    shared.bump();
    tracing::info!(rounds, final_model = %digest, "run finished: {reason}");
    let joined = shared
        .state
        .lock()
        .map(|s| s.joined.len())
        .unwrap_or_default();
    wait_until(shared, Instant::now() + FAREWELL, |s| {
        s.told_finished.len() >= joined
    })
    .await;
}

/// Replaces the published model atomically: readers see the old file or the
/// new one, never a half-written one.
fn publish_model(party: &PartyDir, model: &GlobalModel) -> anyhow::Result<()> {
    let path = party.root().join("global-model.safetensors");
    let tmp = path.with_extension("tmp");
    weights_file::write(&model.set, &tmp)?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn append_line(path: &std::path::Path, line: &str) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    writeln!(f, "{line}")?;
    f.flush()?;
    Ok(())
}

impl Shared {
    pub(super) fn lock_anyhow(&self) -> anyhow::Result<std::sync::MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| anyhow::anyhow!("aggregator state lock poisoned"))
    }
}
