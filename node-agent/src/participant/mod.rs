//! The participant role: joins the federation, and each round downloads the
//! global model, trains on its own vault, and streams back only the update.
//! Raw data never leaves the vault.

mod connect;
mod secure;

use std::time::Duration;

use anyhow::{Context, bail};
use modelpub_protocol::audit::{AuditLog, Direction};
use modelpub_protocol::envelope::{Expectation, RoundRule, Signer, open};
use modelpub_protocol::identity::{Identity, Roster};
use modelpub_protocol::pb;
use modelpub_protocol::pb::federation_client::FederationClient;
use modelpub_protocol::replay::ReplayGuard;
use modelpub_protocol::secagg::MaskPrg;
use modelpub_protocol::tensor::{NamedTensor, TensorAssembler, TensorSet};
use modelpub_protocol::tls::TlsMaterial;
use prost::Name;
use tonic::transport::Channel;
use tracing::Instrument;

use crate::audit_trail;
use crate::config::{Fault, FaultStage, ParticipantConfig, read_json};
use crate::data::{Dataset, decode_dataset};
use crate::model::{Model, ModelConfig, pick_device};
use crate::party::PartyDir;
use crate::telemetry::{ParticipantMetrics, ParticipantTelemetry};
use crate::train::{self, TrainConfig};
use crate::vault::{Vault, VaultKey};
use crate::weights_file;

pub use connect::connect;

/// The protocol state of one participant: who it is, whom it trusts.
struct Session {
    client: FederationClient<Channel>,
    signer: Signer,
    aggregator: Roster,
    aggregator_name: String,
    replay: ReplayGuard,
    audit: AuditLog,
    federation: String,
}

impl Session {
    fn seal<M: prost::Message + Name>(&self, round: u32, m: &M) -> pb::SignedEnvelope {
        let env = self.signer.seal(round, m);
        audit_trail::envelope(&self.audit, Direction::Sent, &self.aggregator_name, &env);
        env
    }

    fn open<M: prost::Message + Name + Default>(
        &self,
        env: &pb::SignedEnvelope,
        round: RoundRule,
    ) -> anyhow::Result<M> {
        let expect = Expectation {
            federation: &self.federation,
            round,
        };
        let opened = open::<M>(env, &self.aggregator, &expect, &self.replay)
            .with_context(|| format!("reply from the aggregator ({})", env.kind))?;
        audit_trail::envelope(&self.audit, Direction::Received, &opened.sender, env);
        Ok(opened.message)
    }
}

pub async fn run(party: PartyDir) -> anyhow::Result<()> {
    let config: ParticipantConfig = read_json(&party.config())?;
    let identity = Identity::load(party.root())?;
    let name = identity.name().to_string();
    let mut tls = TlsMaterial::load(&party.tls())?;
    if let Some(ca) = &config.aggregator_ca {
        // An aggregator in another cluster: its CA, not ours, vouches for it.
        tls.ca_pem = ca.clone();
    }
    let vault = Vault::open(&config.vault.dir, VaultKey::load(&config.vault.key_file)?)?;
    let data = decode_dataset(&vault.get("dataset")?).context("the vault's data set")?;
    if data.is_empty() {
        bail!("the vault's data set is empty");
    }
    let device = pick_device(config.prefer_cuda);
    let telemetry =
        ParticipantTelemetry::start(&config.federation, &name, config.metrics_listen.as_deref())
            .await?;
    let channel = connect(
        &config.aggregator_url,
        &config.aggregator_server_name,
        &tls,
        Duration::from_secs(config.connect_timeout_secs),
    )
    .await?;
    let mut session = Session {
        client: FederationClient::new(channel)
            .max_decoding_message_size(8 << 20)
            .max_encoding_message_size(8 << 20),
        audit: AuditLog::open(party.root(), identity.clone())?,
        signer: Signer::new(identity, &config.federation),
        aggregator_name: config.aggregator_identity.name.clone(),
        aggregator: Roster::new([config.aggregator_identity.clone()]),
        replay: ReplayGuard::new(),
        federation: config.federation.clone(),
    };

    let join_request = pb::JoinRequest {
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        num_examples: data.len() as u64,
        device: format!("{device:?}").to_lowercase(),
        fast_mask_prgs: MaskPrg::fast_here()
            .into_iter()
            .map(|p| pb::MaskPrg::from(p) as i32)
            .collect(),
    };
    let accepted = join(&mut session, &join_request).await?;
    let spec = accepted
        .model
        .context("JoinAccepted carries no model spec")?;
    let model_config = ModelConfig::from_json(&spec.family, &spec.config_json)?;
    let mut model = Model::new(&model_config, device, 0)?;
    tracing::info!(participant = %name, rounds = accepted.total_rounds, examples = data.len(), ?device, "joined");
    telemetry.joined();

    let roster = Roster::new(config.roster.clone());
    // Joining while a round is under way (after a crash, say): that round
    // planned without us, so wait for the next.
    let mut after_round = accepted.current_round;
    loop {
        let ask = session.seal(0, &pb::RoundRequest { after_round });
        let reply = match session.client.await_round(ask).await {
            Ok(reply) => reply.into_inner(),
            Err(status) if aggregator_gone(&status) => {
                // The aggregator restarted (or its pod did): it forgot who
                // joined, and says from which round on it counts on us.
                tracing::warn!(
                    after_round,
                    "aggregator unreachable ({}); joining again",
                    status.message()
                );
                let patience = Duration::from_secs(config.connect_timeout_secs);
                let accepted = rejoin(&mut session, &join_request, patience).await?;
                tracing::info!(current_round = accepted.current_round, "joined again");
                after_round = accepted.current_round;
                continue;
            }
            Err(status) => {
                return Err(anyhow::Error::new(status).context("waiting for the next round"));
            }
        };
        if reply.kind == pb::FederationFinished::full_name() {
            let done: pb::FederationFinished = session.open(&reply, RoundRule::Exactly(0))?;
            tracing::info!(rounds = done.rounds_completed, model = %done.final_model_sha256, "federation finished: {}", done.reason);
            break;
        }
        let plan: pb::RoundPlan = session.open(&reply, RoundRule::Any)?;
        if plan.round <= after_round || reply.round != plan.round {
            bail!(
                "the aggregator planned round {} after round {after_round}; refusing a round that goes backwards",
                plan.round
            );
        }
        let round = plan.round;
        let mut ctx = RoundContext {
            session: &mut session,
            plan: &plan,
            model: &mut model,
            data: &data,
            vault: &vault,
            name: &name,
            roster: &roster,
            faults: &config.faults,
            metrics: &telemetry.metrics,
        };
        let span = tracing::info_span!("round", federation = %config.federation, round, participant = %name);
        if let Err(e) = take_part(&mut ctx).instrument(span).await {
            // A round that fails (too few left for secure aggregation, a
            // deadline missed) is the aggregator's to report; this
            // participant goes on with the next one.
            tracing::warn!(round, "could not complete the round: {e:#}");
        }
        let ask = session.seal(0, &pb::RoundResultRequest { round });
        match session.client.get_round_result(ask).await {
            Ok(reply) => {
                let result: pb::RoundResult =
                    session.open(&reply.into_inner(), RoundRule::Exactly(round))?;
                tracing::info!(round, succeeded = result.succeeded, model = %result.model_sha256, "round result: {}", result.reason);
            }
            Err(status) => tracing::warn!(round, "no round result: {}", status.message()),
        }
        after_round = round;
    }
    Ok(())
}

async fn join(
    session: &mut Session,
    request: &pb::JoinRequest,
) -> anyhow::Result<pb::JoinAccepted> {
    let env = session.seal(0, request);
    let reply = session.client.join(env).await.context("join")?.into_inner();
    session.open(&reply, RoundRule::Exactly(0))
}

/// Joins again, trying for `patience` while the aggregator is not back.
async fn rejoin(
    session: &mut Session,
    request: &pb::JoinRequest,
    patience: Duration,
) -> anyhow::Result<pb::JoinAccepted> {
    let deadline = std::time::Instant::now() + patience;
    loop {
        match join(session, request).await {
            Ok(accepted) => return Ok(accepted),
            Err(e)
                if std::time::Instant::now() < deadline
                    && e.downcast_ref::<tonic::Status>()
                        .is_some_and(aggregator_gone) =>
            {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                return Err(e.context(format!(
                    "the aggregator did not take us back within {} s",
                    patience.as_secs()
                )));
            }
        }
    }
}

/// What a call sees when the aggregator's process or connection went away
/// (not a refusal, which has its own code).
fn aggregator_gone(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
    )
}

/// Everything one round of this participant needs.
struct RoundContext<'a> {
    session: &'a mut Session,
    plan: &'a pb::RoundPlan,
    model: &'a mut Model,
    data: &'a Dataset,
    vault: &'a Vault,
    name: &'a str,
    roster: &'a Roster,
    faults: &'a [Fault],
    metrics: &'a ParticipantMetrics,
}

impl RoundContext<'_> {
    /// Injected failure (`simulate --dropout`): the process ends here, as a
    /// crashed or disconnected institution would.
    fn fault(&self, stage: FaultStage) {
        let round = self.plan.round;
        if self
            .faults
            .iter()
            .any(|f| f.round == round && f.stage == stage)
        {
            tracing::warn!(round, "fault injection: exiting {}", stage.name());
            std::process::exit(FAULT_EXIT_CODE);
        }
    }
}

/// Exit status of a participant that failed on purpose.
pub const FAULT_EXIT_CODE: i32 = 75;

async fn take_part(ctx: &mut RoundContext<'_>) -> anyhow::Result<()> {
    let plan = ctx.plan;
    let round = plan.round;
    let global = download(ctx.session, plan).await?;
    ctx.fault(FaultStage::AfterDownload);
    ctx.model.load_weights(&global)?;
    let mut secure = match &plan.secure {
        Some(s) => Some(secure::key_stages(ctx, s).await?),
        None => None,
    };
    let training = plan
        .training
        .context("RoundPlan carries no training config")?;
    let cfg = TrainConfig {
        local_epochs: training.local_epochs,
        batch_size: training.batch_size.max(1) as usize,
        learning_rate: training.learning_rate,
        proximal_mu: training.proximal_mu,
        max_batches_per_epoch: training.max_batches_per_epoch as usize,
        seed: training
            .seed
            .wrapping_mul(1_000_003)
            .wrapping_add(u64::from(round))
            .wrapping_add(seed_of(ctx.name)),
    };
    let (model, data) = (&mut *ctx.model, ctx.data);
    let training_started = std::time::Instant::now();
    let outcome = tokio::task::block_in_place(|| train::train(model, data, &cfg, &mut |_, _| {}))?;
    ctx.metrics
        .trained(training_started.elapsed().as_secs_f64());
    let local = ctx.model.weights();
    save_model_state(ctx.vault, &local)?;
    let mut update = difference(&local, &global)?;
    if let Some(dp) = &plan.privacy {
        update = privatize(&update, dp)?;
    }
    let sent = match (&mut secure, &plan.secure) {
        (Some(client), Some(s)) => {
            let masked = secure::mask(client, s, &update, outcome.num_examples)?;
            upload(
                ctx.session,
                plan,
                &masked,
                outcome.num_examples,
                outcome.mean_loss,
                true,
                &[],
            )
            .await?
        }
        _ => {
            let how = pb::Compression::try_from(plan.compression).unwrap_or(pb::Compression::None);
            let (wire, scales) = crate::compression::encode(&update, how)?;
            upload(
                ctx.session,
                plan,
                &wire,
                outcome.num_examples,
                outcome.mean_loss,
                false,
                &scales,
            )
            .await?
        }
    };
    ctx.metrics.update_sent(sent.bytes_received);
    tracing::info!(
        round,
        loss = outcome.mean_loss,
        bytes = sent.bytes_received,
        "update sent"
    );
    ctx.fault(FaultStage::AfterUpload);
    if let Some(client) = secure.as_mut() {
        secure::unmask(ctx, client).await?;
    }
    Ok(())
}

/// Client-level DP: clip the whole update to the L2 bound, then add this
/// participant's share of the Gaussian noise.
fn privatize(update: &TensorSet, dp: &pb::DifferentialPrivacy) -> anyhow::Result<TensorSet> {
    let mut values: Vec<Vec<f32>> = update
        .tensors
        .iter()
        .map(|t| t.to_f32())
        .collect::<Result<_, _>>()?;
    modelpub_protocol::dp::clip_l2(&mut values, dp.clip_norm);
    let mut rng = modelpub_protocol::dp::os_rng()?;
    for v in values.iter_mut() {
        let noise = modelpub_protocol::dp::gaussian_noise(v.len(), dp.noise_std, &mut rng)?;
        for (x, n) in v.iter_mut().zip(noise) {
            *x += n;
        }
    }
    let tensors = update
        .tensors
        .iter()
        .zip(values)
        .map(|(t, v)| NamedTensor::from_f32(t.name.clone(), t.shape.clone(), &v))
        .collect();
    Ok(TensorSet::new(tensors)?)
}

fn seed_of(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

async fn download(session: &mut Session, plan: &pb::RoundPlan) -> anyhow::Result<TensorSet> {
    let ask = session.seal(
        plan.round,
        &pb::ModelRequest {
            model_sha256: plan.model_sha256.clone(),
        },
    );
    let mut frames = session
        .client
        .download_model(ask)
        .await
        .context("downloading the global model")?
        .into_inner();
    let header = match frames.message().await?.and_then(|f| f.frame) {
        Some(pb::model_frame::Frame::Header(env)) => env,
        _ => bail!("the model stream did not start with a signed header"),
    };
    let header: pb::ModelHeader = session.open(&header, RoundRule::Exactly(plan.round))?;
    let manifest = header.manifest.context("ModelHeader carries no manifest")?;
    if manifest.content_sha256 != plan.model_sha256 {
        bail!(
            "the aggregator sent model {} but planned round {} on model {}",
            manifest.content_sha256,
            plan.round,
            plan.model_sha256
        );
    }
    let mut assembler = TensorAssembler::new(&manifest)?;
    while let Some(frame) = frames.message().await? {
        match frame.frame {
            Some(pb::model_frame::Frame::Chunk(c)) => assembler.push(&c)?,
            _ => bail!("the model stream carried a second header"),
        }
    }
    let set = assembler.finish()?;
    audit_trail::event(
        &session.audit,
        Direction::Received,
        "modelpub.v1.ModelTensors",
        &session.aggregator_name,
        plan.round,
        &set.digest(),
        "global model verified against the signed digest",
    );
    Ok(set)
}

async fn upload(
    session: &mut Session,
    plan: &pb::RoundPlan,
    update: &TensorSet,
    num_examples: u64,
    train_loss: f64,
    masked: bool,
    dequant_scales: &[f32],
) -> anyhow::Result<pb::UpdateReceipt> {
    let round = plan.round;
    let header = session.seal(
        round,
        &pb::UpdateHeader {
            base_model_sha256: plan.model_sha256.clone(),
            manifest: Some(update.manifest()),
            num_examples,
            train_loss,
            masked,
            dequant_scales: dequant_scales.to_vec(),
        },
    );
    audit_trail::event(
        &session.audit,
        Direction::Sent,
        "modelpub.v1.UpdateTensors",
        &session.aggregator_name,
        round,
        &update.digest(),
        "",
    );
    let frames: Vec<pb::UpdateFrame> = std::iter::once(pb::UpdateFrame {
        frame: Some(pb::update_frame::Frame::Header(header)),
    })
    .chain(update.chunks().map(|c| pb::UpdateFrame {
        frame: Some(pb::update_frame::Frame::Chunk(c)),
    }))
    .collect();
    let reply = session
        .client
        .upload_update(futures::stream::iter(frames))
        .await
        .context("uploading the update")?
        .into_inner();
    let receipt: pb::UpdateReceipt = session.open(&reply, RoundRule::Exactly(round))?;
    if receipt.update_sha256 != update.digest() {
        bail!(
            "the aggregator's receipt names update {}, we sent {}",
            receipt.update_sha256,
            update.digest()
        );
    }
    Ok(receipt)
}

/// The update the protocol carries: local weights minus global weights.
fn difference(local: &TensorSet, global: &TensorSet) -> anyhow::Result<TensorSet> {
    local.check_same_layout(global)?;
    let tensors = local
        .tensors
        .iter()
        .zip(&global.tensors)
        .map(|(l, g)| {
            let delta: Vec<f32> = l
                .to_f32()?
                .iter()
                .zip(g.to_f32()?)
                .map(|(a, b)| a - b)
                .collect();
            Ok(NamedTensor::from_f32(
                l.name.clone(),
                l.shape.clone(),
                &delta,
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(TensorSet::new(tensors)?)
}

/// The local model after training stays in the vault, encrypted.
fn save_model_state(vault: &Vault, weights: &TensorSet) -> anyhow::Result<()> {
    vault.put("model", &weights_file::encode(weights)?)?;
    Ok(())
}

/// Trains alone on the vault, for the "local only" baseline that shows what
/// federation adds. Evaluates after every `eval_every` epochs.
pub fn train_local_only(
    data: &Dataset,
    test: &Dataset,
    model_config: &ModelConfig,
    cfg: &TrainConfig,
    evaluations: u32,
    model_seed: u64,
    prefer_cuda: bool,
) -> anyhow::Result<Vec<train::Evaluation>> {
    let mut model = Model::new(model_config, pick_device(prefer_cuda), model_seed)?;
    let mut scores = Vec::with_capacity(evaluations as usize);
    for i in 0..evaluations {
        let round_cfg = TrainConfig {
            seed: cfg.seed.wrapping_add(u64::from(i)),
            ..cfg.clone()
        };
        train::train(&mut model, data, &round_cfg, &mut |_, _| {})?;
        scores.push(train::evaluate(&model, test)?);
    }
    Ok(scores)
}
