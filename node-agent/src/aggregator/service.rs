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
use prost::Name;
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status, Streaming};

use super::Shared;
use super::accumulator::StagedUpdate;
use super::state::{GlobalModel, Joined, Phase};
use crate::audit_trail;

/// How many uploads may be decoded at once; each holds one model-sized
/// staging buffer, so this bounds aggregator memory independently of the
/// number of participants.
pub const STAGING_SLOTS: usize = 2;

pub struct FederationService {
    shared: Arc<Shared>,
    staging: Arc<Semaphore>,
}

impl FederationService {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            staging: Arc::new(Semaphore::new(STAGING_SLOTS)),
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
                },
            );
        }
        tracing::info!(participant = %req.sender, examples = req.message.num_examples, device = %req.message.device, "joined");
        self.shared.bump();
        let accepted = pb::JoinAccepted {
            total_rounds: self.shared.config.rounds,
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
        let global = {
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
            if open.uploaded.contains(&sender) || !open.receiving.insert(sender.clone()) {
                return Err(Status::already_exists(format!(
                    "{sender} already sent its update for round {round}"
                )));
            }
            global
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
        let mut staged = StagedUpdate::new(&manifest, &global.manifest, header.num_examples as f64)
            .map_err(|e| Status::invalid_argument(format!("update from {sender}: {e}")))?;
        while let Some(frame) = frames.message().await? {
            match frame.frame {
                Some(pb::update_frame::Frame::Chunk(chunk)) => staged
                    .push(&chunk)
                    .map_err(|e| Status::invalid_argument(format!("update from {sender}: {e}")))?,
                Some(pb::update_frame::Frame::Header(_)) | None => {
                    return Err(Status::invalid_argument(
                        "an upload carries exactly one header, then chunks",
                    ));
                }
            }
        }
        let verified = staged
            .finish()
            .map_err(|e| Status::invalid_argument(format!("update from {sender}: {e}")))?;
        {
            let mut state = self.shared.lock()?;
            let open = state
                .open_round()
                .filter(|o| o.plan.round == round)
                .ok_or_else(|| {
                    Status::deadline_exceeded(format!(
                        "round {round} closed before the update was complete"
                    ))
                })?;
            open.sum.add(&verified);
            open.uploaded.insert(sender.clone());
            open.bytes_up += verified.bytes;
            open.train_losses
                .push((header.num_examples, header.train_loss));
        }
        tracing::info!(participant = %sender, round, bytes = verified.bytes, "update accepted");
        audit_trail::event(
            &self.shared.audit,
            Direction::Received,
            "modelpub.v1.UpdateTensors",
            &sender,
            round,
            &verified.sha256,
            "update verified and added to the round sum",
        );
        self.shared.bump();
        let receipt = pb::UpdateReceipt {
            update_sha256: verified.sha256,
            bytes_received: verified.bytes,
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
                let end =
                    (self.offset + modelpub_protocol::tensor::MAX_CHUNK_BYTES).min(t.data.len());
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
