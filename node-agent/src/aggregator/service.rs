//! The `modelpub.v1.Federation` gRPC service: every request is opened
//! (kind, federation, sender, signature, round, replay) before anything in it
//! is believed, and every reply is sealed by the aggregator.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use modelpub_protocol::audit::Direction;
use modelpub_protocol::envelope::{Expectation, Opened, RoundRule, open};
use modelpub_protocol::pb;
use modelpub_protocol::pb::federation_server::Federation;
use modelpub_protocol::secagg::{self, MaskPrg};
use prost::Name;
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status, Streaming};

use super::Shared;
use super::accumulator::{SpoolAddError, SpooledMasked, StagedMasked, StagedUpdate, StagingError};
use super::state::{GlobalModel, Joined, Phase, SecureRound, Stage};
use crate::audit_trail;

/// How many uploads may be decoded at once; a plain one holds one
/// model-sized staging buffer (a masked one spools to disk), so this bounds
/// aggregator memory independently of the number of participants.
pub const STAGING_SLOTS: usize = 2;

pub struct FederationService {
    shared: Arc<Shared>,
    staging: Arc<Semaphore>,
    /// Where masked uploads are spooled while they stream in.
    spool_dir: std::path::PathBuf,
}

impl FederationService {
    pub fn new(shared: Arc<Shared>, spool_dir: std::path::PathBuf) -> Self {
        Self {
            shared,
            staging: Arc::new(Semaphore::new(STAGING_SLOTS)),
            spool_dir,
        }
    }

    fn open<M: prost::Message + Name + Default>(
        &self,
        env: &pb::SignedEnvelope,
        round: RoundRule,
    ) -> Result<Opened<M>, Status> {
        let expect = Expectation {
            federation: &self.shared.config.federation,
            round,
        };
        match open::<M>(env, &self.shared.roster, &expect, &self.shared.replay) {
            Ok(opened) => {
                audit_trail::envelope(&self.shared.audit, Direction::Received, &opened.sender, env);
                Ok(opened)
            }
            Err(e) => {
                tracing::warn!(sender = %env.sender, kind = %env.kind, "rejected: {e}");
                audit_trail::event(
                    &self.shared.audit,
                    Direction::Received,
                    &env.kind,
                    &env.sender,
                    env.round,
                    "",
                    &format!("rejected: {e}"),
                );
                Err(e.into())
            }
        }
    }

    fn seal<M: prost::Message + Name>(&self, peer: &str, round: u32, m: &M) -> pb::SignedEnvelope {
        let env = self.shared.signer.seal(round, m);
        audit_trail::envelope(&self.shared.audit, Direction::Sent, peer, &env);
        env
    }

    /// Runs `f` on the open secure round `round`, or says why there is none.
    fn with_secure<T>(
        &self,
        round: u32,
        f: impl FnOnce(&pb::RoundPlan, &mut SecureRound) -> Result<T, Status>,
    ) -> Result<T, Status> {
        let mut state = self.shared.lock()?;
        let open = state
            .open_round()
            .filter(|o| o.plan.round == round)
            .ok_or_else(|| Status::failed_precondition(format!("round {round} is closed")))?;
        let plan = open.plan.clone();
        let secure = open.secure.as_mut().ok_or_else(|| {
            Status::failed_precondition(format!("round {round} does not use secure aggregation"))
        })?;
        if let Some(reason) = &secure.failure {
            return Err(Status::aborted(format!("round {round} failed: {reason}")));
        }
        f(&plan, secure)
    }

    /// Waits until the secure round has moved past a stage, then answers.
    async fn when_secure<T>(
        &self,
        round: u32,
        ready: impl Fn(&SecureRound) -> bool,
        answer: impl Fn(&SecureRound) -> Result<T, Status>,
    ) -> Result<T, Status> {
        let mut changes = self.shared.changes.subscribe();
        loop {
            let done = self.with_secure(round, |_, r| {
                Ok(if ready(r) { Some(answer(r)) } else { None })
            })?;
            if let Some(result) = done {
                return result;
            }
            changes
                .changed()
                .await
                .map_err(|_| Status::unavailable("aggregator is shutting down"))?;
        }
    }

    /// The round an in-round message must carry right now.
    fn current_round(&self) -> Result<u32, Status> {
        self.shared
            .state
            .lock()
            .map_err(|_| Status::internal("state lock poisoned"))?
            .open_round_number()
            .ok_or_else(|| Status::failed_precondition("no round is open"))
    }
}

type FrameStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Federation for FederationService {
    async fn join(
        &self,
        request: Request<pb::SignedEnvelope>,
    ) -> Result<Response<pb::SignedEnvelope>, Status> {
        let req = self.open::<pb::JoinRequest>(request.get_ref(), RoundRule::Exactly(0))?;
        if req.message.num_examples == 0 {
            return Err(Status::invalid_argument(
                "a participant with no training examples cannot join",
            ));
        }
        {
            let mut state = self.shared.lock()?;
            state.joined.insert(
                req.sender.clone(),
                Joined {
                    num_examples: req.message.num_examples,
                    device: req.message.device.clone(),
                    fast_mask_prgs: MaskPrg::known(&req.message.fast_mask_prgs),
                },
            );
        }
        tracing::info!(participant = %req.sender, examples = req.message.num_examples, device = %req.message.device, "joined");
        self.shared.bump();
        let accepted = pb::JoinAccepted {
            total_rounds: self.shared.config.rounds,
            current_round: self.shared.lock()?.last_round_to_skip(),
            model: Some(self.shared.model_spec()),
            roster: self.shared.roster.names(),
        };
        Ok(Response::new(self.seal(&req.sender, 0, &accepted)))
    }

    async fn await_round(
        &self,
        request: Request<pb::SignedEnvelope>,
    ) -> Result<Response<pb::SignedEnvelope>, Status> {
        let req = self.open::<pb::RoundRequest>(request.get_ref(), RoundRule::Exactly(0))?;
        let mut changes = self.shared.changes.subscribe();
        loop {
            {
                let mut state = self.shared.lock()?;
                match &state.phase {
                    Phase::Open(round)
                        if round.plan.round > req.message.after_round
                            && round.plan.participants.contains(&req.sender) =>
                    {
                        let plan = round.plan.clone();
                        drop(state);
                        return Ok(Response::new(self.seal(&req.sender, plan.round, &plan)));
                    }
                    Phase::Finished(done) => {
                        let done = done.clone();
                        state.told_finished.insert(req.sender.clone());
                        drop(state);
                        self.shared.bump();
                        return Ok(Response::new(self.seal(&req.sender, 0, &done)));
                    }
                    _ => {}
                }
            }
            changes
                .changed()
                .await
                .map_err(|_| Status::unavailable("aggregator is shutting down"))?;
        }
    }

    type DownloadModelStream = FrameStream<pb::ModelFrame>;

    async fn download_model(
        &self,
        request: Request<pb::SignedEnvelope>,
    ) -> Result<Response<Self::DownloadModelStream>, Status> {
        let round = self.current_round()?;
        let req = self.open::<pb::ModelRequest>(request.get_ref(), RoundRule::Exactly(round))?;
        let global = {
            let mut state = self.shared.lock()?;
            let global = state.global.clone();
            if req.message.model_sha256 != global.digest() {
                return Err(Status::not_found(format!(
                    "model {} is not the current global model ({})",
                    req.message.model_sha256,
                    global.digest()
                )));
            }
            if let Some(open) = state.open_round() {
                open.bytes_down += global.set.total_bytes();
            }
            global
        };
        let header = self.seal(
            &req.sender,
            round,
            &pb::ModelHeader {
                manifest: Some(global.manifest.clone()),
            },
        );
        let frames = std::iter::once(pb::ModelFrame {
            frame: Some(pb::model_frame::Frame::Header(header)),
        })
        .chain(ModelChunks::new(global).map(|chunk| pb::ModelFrame {
            frame: Some(pb::model_frame::Frame::Chunk(chunk)),
        }))
        .map(Ok);
        Ok(Response::new(Box::pin(futures::stream::iter(frames))))
    }

    async fn upload_update(
        &self,
        request: Request<Streaming<pb::UpdateFrame>>,
    ) -> Result<Response<pb::SignedEnvelope>, Status> {
        let mut frames = request.into_inner();
        let header_env = match frames.message().await?.and_then(|f| f.frame) {
            Some(pb::update_frame::Frame::Header(env)) => env,
            Some(pb::update_frame::Frame::Chunk(_)) => {
                return Err(Status::invalid_argument(
                    "an upload must start with a signed UpdateHeader, not a chunk",
                ));
            }
            None => return Err(Status::invalid_argument("empty upload")),
        };
        let round = self.current_round()?;
        let req = self.open::<pb::UpdateHeader>(&header_env, RoundRule::Exactly(round))?;
        let sender = req.sender.clone();
        let header = req.message;
        let manifest = header
            .manifest
            .ok_or_else(|| Status::invalid_argument("UpdateHeader has no manifest"))?;
        if header.num_examples == 0 {
            return Err(Status::invalid_argument(
                "an update must be weighted by at least one example",
            ));
        }
        let (global, secure_len, dp) = {
            let mut state = self.shared.lock()?;
            let global = state.global.clone();
            let open = state
                .open_round()
                .filter(|o| o.plan.round == round)
                .ok_or_else(|| Status::failed_precondition(format!("round {round} is closed")))?;
            if !open.plan.participants.contains(&sender) {
                return Err(Status::permission_denied(format!(
                    "{sender} is not a participant of round {round}"
                )));
            }
            let secure_len = match &open.secure {
                Some(r) if r.stage != Stage::MaskedInput => {
                    return Err(Status::failed_precondition(format!(
                        "round {round} does not take masked inputs now ({:?})",
                        r.stage
                    )));
                }
                Some(r) if !r.u2.contains(&sender) => {
                    return Err(Status::permission_denied(format!(
                        "{sender} did not complete the key stages of round {round}"
                    )));
                }
                Some(_) => open.plan.secure.as_ref().map(|s| s.vector_len),
                None => None,
            };
            if secure_len.is_some() != header.masked {
                return Err(Status::invalid_argument(if header.masked {
                    "a masked update in a round without secure aggregation"
                } else {
                    "this round uses secure aggregation: the update must be masked"
                }));
            }
            if open.uploaded.contains(&sender) || !open.receiving.insert(sender.clone()) {
                return Err(Status::already_exists(format!(
                    "{sender} already sent its update for round {round}"
                )));
            }
            (global, secure_len, open.plan.privacy.is_some())
        };
        let _receiving = ReceivingGuard {
            shared: &self.shared,
            sender: sender.clone(),
        };
        if header.base_model_sha256 != global.digest() {
            return Err(Status::failed_precondition(format!(
                "update was trained from model {}, the current model is {}",
                header.base_model_sha256,
                global.digest()
            )));
        }
        let _slot = self
            .staging
            .acquire()
            .await
            .map_err(|_| Status::unavailable("aggregator is shutting down"))?;
        let bad = |e: modelpub_protocol::tensor::TensorError| {
            Status::invalid_argument(format!("update from {sender}: {e}"))
        };
        let bad_masked = |e: StagingError| match e {
            StagingError::Tensor(e) => bad(e),
            StagingError::Spool(e) => {
                tracing::error!(participant = %sender, error = %e, "cannot spool a masked update");
                Status::internal(format!("the aggregator cannot spool the update: {e}"))
            }
        };
        // With differential privacy every update weighs the same, which is
        // what bounds one participant's influence (its sensitivity).
        let weight = if dp { 1.0 } else { header.num_examples as f64 };
        let mut staged = match secure_len {
            Some(len) => Staged::Masked(
                StagedMasked::new(&manifest, len, &self.spool_dir).map_err(bad_masked)?,
            ),
            None => Staged::Plain(
                StagedUpdate::new(&manifest, &global.manifest, weight, &header.dequant_scales)
                    .map_err(bad)?,
            ),
        };
        while let Some(frame) = frames.message().await? {
            match frame.frame {
                Some(pb::update_frame::Frame::Chunk(chunk)) => match &mut staged {
                    Staged::Masked(m) => m.push(&chunk).map_err(bad_masked)?,
                    Staged::Plain(p) => p.push(&chunk).map_err(bad)?,
                },
                Some(pb::update_frame::Frame::Header(_)) | None => {
                    return Err(Status::invalid_argument(
                        "an upload carries exactly one header, then chunks",
                    ));
                }
            }
        }
        let (sha256, bytes) = {
            let finished = match staged {
                Staged::Masked(m) => Finished::Masked(m.finish().map_err(bad_masked)?),
                Staged::Plain(p) => Finished::Plain(p.finish().map_err(bad)?),
            };
            let mut state = self.shared.lock()?;
            let open = state
                .open_round()
                .filter(|o| o.plan.round == round)
                .ok_or_else(|| {
                    Status::deadline_exceeded(format!(
                        "round {round} closed before the update was complete"
                    ))
                })?;
            let (sha256, bytes) = match finished {
                Finished::Plain(verified) => {
                    open.sum.add(&verified);
                    (verified.sha256, verified.bytes)
                }
                Finished::Masked(spooled) => {
                    let secure = open
                        .secure
                        .as_mut()
                        .filter(|r| r.stage == Stage::MaskedInput)
                        .ok_or_else(|| {
                            Status::deadline_exceeded(format!(
                                "round {round} stopped taking masked inputs"
                            ))
                        })?;
                    let (sha256, bytes) = (spooled.sha256.clone(), spooled.bytes);
                    let server = secure.server().map_err(secagg_status)?;
                    // Under the state lock, so the stage cannot move on
                    // between chunks and leave a partial input in the sum.
                    match spooled
                        .add_to(|offset, words| server.add_masked_chunk(&sender, offset, words))
                    {
                        Ok(()) => server.complete_input(&sender).map_err(secagg_status)?,
                        Err(SpoolAddError::Add(e)) => return Err(secagg_status(e)),
                        Err(SpoolAddError::Read(e)) => {
                            // Part of this input is in the sum and the rest
                            // is unreadable: no unmasking can recover it.
                            let reason = format!(
                                "the spooled masked update from {sender} became unreadable: {e}"
                            );
                            tracing::error!("{reason}");
                            secure.failure.get_or_insert(reason);
                            return Err(Status::internal(
                                "the aggregator lost the update's spool file",
                            ));
                        }
                    }
                    (sha256, bytes)
                }
            };
            open.mark_uploaded(sender.clone());
            open.bytes_up += bytes;
            open.train_losses
                .push((header.num_examples, header.train_loss));
            (sha256, bytes)
        };
        self.shared.telemetry.update_accepted(bytes);
        tracing::info!(participant = %sender, round, bytes, "update accepted");
        audit_trail::event(
            &self.shared.audit,
            Direction::Received,
            "modelpub.v1.UpdateTensors",
            &sender,
            round,
            &sha256,
            if secure_len.is_some() {
                "masked update verified and added to the secure sum"
            } else {
                "update verified and added to the round sum"
            },
        );
        self.shared.bump();
        let receipt = pb::UpdateReceipt {
            update_sha256: sha256,
            bytes_received: bytes,
        };
        Ok(Response::new(self.seal(&sender, round, &receipt)))
    }

    async fn get_round_result(
        &self,
        request: Request<pb::SignedEnvelope>,
    ) -> Result<Response<pb::SignedEnvelope>, Status> {
        let req = self.open::<pb::RoundResultRequest>(request.get_ref(), RoundRule::Exactly(0))?;
        let wanted = req.message.round;
        if wanted == 0 || wanted > self.shared.config.rounds {
            return Err(Status::out_of_range(format!(
                "round {wanted} does not exist; this run has rounds 1..={}",
                self.shared.config.rounds
            )));
        }
        let mut changes = self.shared.changes.subscribe();
        loop {
            {
                let state = self.shared.lock()?;
                if let Some(result) = state.results.get(&wanted) {
                    let result = result.clone();
                    drop(state);
                    return Ok(Response::new(self.seal(&req.sender, wanted, &result)));
                }
                if matches!(state.phase, Phase::Finished(_)) {
                    return Err(Status::not_found(format!(
                        "the run ended before round {wanted}"
                    )));
                }
            }
            changes
                .changed()
                .await
                .map_err(|_| Status::unavailable("aggregator is shutting down"))?;
        }
    }

    async fn advertise_keys(
        &self,
        request: Request<pb::SignedEnvelope>,
    ) -> Result<Response<pb::SignedEnvelope>, Status> {
        let round = self.current_round()?;
        let env = request.into_inner();
        let req = self.open::<pb::SecAggKeys>(&env, RoundRule::Exactly(round))?;
        let sender = req.sender;
        let keys = secagg::AdvertisedKeys::from_bytes(&req.message.keys)
            .map_err(|e| Status::invalid_argument(format!("keys from {sender}: {e}")))?;
        self.with_secure(round, |plan, r| {
            if !plan.participants.contains(&sender) {
                return Err(Status::permission_denied(format!(
                    "{sender} is not a participant of round {round}"
                )));
            }
            if r.stage != Stage::AdvertiseKeys {
                return Err(Status::failed_precondition(format!(
                    "round {round} no longer takes keys"
                )));
            }
            r.server()
                .map_err(secagg_status)?
                .receive_keys(&sender, keys)
                .map_err(secagg_status)?;
            r.advertisements.insert(sender.clone(), env.clone());
            Ok(())
        })?;
        self.shared.bump();
        let book = self
            .when_secure(
                round,
                |r| r.stage != Stage::AdvertiseKeys,
                |r| {
                    if !r.u1.contains(&sender) {
                        return Err(Status::failed_precondition(format!(
                            "{sender} missed the key stage of round {round}"
                        )));
                    }
                    Ok(pb::KeyBook {
                        advertisements: r
                            .u1
                            .iter()
                            .filter_map(|p| r.advertisements.get(p).cloned())
                            .collect(),
                    })
                },
            )
            .await?;
        Ok(Response::new(self.seal(&sender, round, &book)))
    }

    async fn share_keys(
        &self,
        request: Request<pb::SignedEnvelope>,
    ) -> Result<Response<pb::SignedEnvelope>, Status> {
        let round = self.current_round()?;
        let req = self.open::<pb::SharedKeys>(request.get_ref(), RoundRule::Exactly(round))?;
        let sender = req.sender;
        let shares = req
            .message
            .shares
            .iter()
            .map(|b| secagg::EncryptedShare::from_bytes(b))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Status::invalid_argument(format!("shares from {sender}: {e}")))?;
        self.with_secure(round, |_, r| {
            if r.stage != Stage::ShareKeys {
                return Err(Status::failed_precondition(format!(
                    "round {round} does not take key shares now ({:?})",
                    r.stage
                )));
            }
            if !r.u1.contains(&sender) {
                return Err(Status::permission_denied(format!(
                    "{sender} did not advertise keys in round {round}"
                )));
            }
            r.server()
                .map_err(secagg_status)?
                .receive_shares(&sender, shares)
                .map_err(secagg_status)?;
            r.shared.insert(sender.clone());
            Ok(())
        })?;
        self.shared.bump();
        let theirs = self
            .when_secure(
                round,
                |r| r.stage != Stage::ShareKeys,
                |r| {
                    if !r.u2.contains(&sender) {
                        return Err(Status::failed_precondition(format!(
                            "{sender} missed the share stage of round {round}"
                        )));
                    }
                    let server = r.server.as_ref().ok_or_else(|| {
                        Status::failed_precondition(format!("round {round} is closing"))
                    })?;
                    Ok(pb::SharesForYou {
                        u2: r.u2.clone(),
                        shares: server
                            .shares_for(&sender)
                            .iter()
                            .map(secagg::EncryptedShare::to_bytes)
                            .collect(),
                    })
                },
            )
            .await?;
        Ok(Response::new(self.seal(&sender, round, &theirs)))
    }

    async fn await_unmask(
        &self,
        request: Request<pb::SignedEnvelope>,
    ) -> Result<Response<pb::SignedEnvelope>, Status> {
        let round = self.current_round()?;
        let req = self.open::<pb::UnmaskPoll>(request.get_ref(), RoundRule::Exactly(round))?;
        let sender = req.sender;
        let ask = self
            .when_secure(
                round,
                |r| r.stage >= Stage::Unmask,
                |r| {
                    if r.stage != Stage::Unmask || !r.survivors.contains(&sender) {
                        return Err(Status::failed_precondition(format!(
                            "{sender} is not asked to unmask round {round}"
                        )));
                    }
                    Ok(pb::UnmaskRequest {
                        survivors: r.survivors.clone(),
                        dropped: r.dropped.clone(),
                    })
                },
            )
            .await?;
        Ok(Response::new(self.seal(&sender, round, &ask)))
    }

    async fn reveal(
        &self,
        request: Request<pb::SignedEnvelope>,
    ) -> Result<Response<pb::SignedEnvelope>, Status> {
        let round = self.current_round()?;
        let req = self.open::<pb::Reveal>(request.get_ref(), RoundRule::Exactly(round))?;
        let sender = req.sender;
        let shares = req
            .message
            .shares
            .iter()
            .map(|b| secagg::RevealedShare::from_bytes(b))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Status::invalid_argument(format!("reveal from {sender}: {e}")))?;
        let count = shares.len() as u32;
        self.with_secure(round, |_, r| {
            if r.stage != Stage::Unmask {
                return Err(Status::failed_precondition(format!(
                    "round {round} is not unmasking"
                )));
            }
            r.server()
                .map_err(secagg_status)?
                .receive_reveal(&sender, shares)
                .map_err(secagg_status)?;
            r.revealed.insert(sender.clone());
            Ok(())
        })?;
        self.shared.bump();
        Ok(Response::new(self.seal(
            &sender,
            round,
            &pb::RevealAccepted { shares: count },
        )))
    }
}

enum Staged {
    Plain(StagedUpdate),
    Masked(StagedMasked),
}

enum Finished {
    Plain(super::accumulator::VerifiedUpdate),
    Masked(SpooledMasked),
}

/// Protocol errors of secure aggregation, as the participant should see them.
fn secagg_status(e: secagg::SecAggError) -> Status {
    Status::failed_precondition(format!("secure aggregation: {e}"))
}

/// Frees the participant's upload slot however the upload ends.
struct ReceivingGuard<'a> {
    shared: &'a Shared,
    sender: String,
}

impl Drop for ReceivingGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut state) = self.shared.state.lock()
            && let Some(open) = state.open_round()
        {
            open.receiving.remove(&self.sender);
        }
    }
}

/// Bytes of the global model per download chunk. Every participant
/// downloads at once and each stream holds its chunk in flight (encoded, in
/// HTTP/2's send buffer) until the reader takes it, so this is the part of
/// the aggregator's memory that grows with n (issue 16): a quarter of the
/// 1 MiB a chunk may carry keeps it small while the per-message overhead
/// stays negligible.
const DOWNLOAD_CHUNK_BYTES: usize = modelpub_protocol::tensor::MAX_CHUNK_BYTES / 4;

/// The global model's chunks, produced lazily so a download costs no copy
/// of the model beyond the chunk in flight.
struct ModelChunks {
    model: Arc<GlobalModel>,
    tensor: usize,
    offset: usize,
}

impl ModelChunks {
    fn new(model: Arc<GlobalModel>) -> Self {
        Self {
            model,
            tensor: 0,
            offset: 0,
        }
    }
}

impl Iterator for ModelChunks {
    type Item = pb::TensorChunk;
    fn next(&mut self) -> Option<pb::TensorChunk> {
        loop {
            let t = self.model.set.tensors.get(self.tensor)?;
            if self.offset < t.data.len() {
                let end = (self.offset + DOWNLOAD_CHUNK_BYTES).min(t.data.len());
                let chunk = pb::TensorChunk {
                    tensor_index: self.tensor as u32,
                    offset: self.offset as u64,
                    data: t.data[self.offset..end].to_vec(),
                };
                self.offset = end;
                return Some(chunk);
            }
            self.tensor += 1;
            self.offset = 0;
        }
    }
}
