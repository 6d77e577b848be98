//! A real aggregator, in this process, over mutual TLS on loopback, and the
//! pieces a test needs to talk to it as one of its institutions.
#![allow(dead_code)]

use std::time::Duration;

use modelpub_node_agent::aggregator;
use modelpub_node_agent::config::{
    AggregatorConfig, StrategyConfig, TrainingSettings, read_json, write_json,
};
use modelpub_node_agent::data::{self, Dataset, Partition};
use modelpub_node_agent::model::ModelConfig;
use modelpub_node_agent::participant::connect;
use modelpub_node_agent::party::PartyDir;
use modelpub_node_agent::simulate::setup::{self, Plan};
use modelpub_node_agent::train::default_train_config;
use modelpub_protocol::envelope::Signer;
use modelpub_protocol::identity::Identity;
use modelpub_protocol::pb;
use modelpub_protocol::pb::federation_client::FederationClient;
use modelpub_protocol::tensor::{NamedTensor, TensorAssembler, TensorSet};
use modelpub_protocol::tls::TlsMaterial;
use tonic::transport::Channel;

pub struct Federation {
    pub aggregator: PartyDir,
    pub institutions: Vec<PartyDir>,
    pub server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Lays out a digits federation of `n` institutions and starts its
/// aggregator for `rounds` rounds, every institution needed in each.
pub async fn start_federation(out: &std::path::Path, n: usize, rounds: u32) -> Federation {
    start_federation_with_min(out, n, rounds, n as u32).await
}

/// As [`start_federation`], with rounds that count once `min` updates are in.
pub async fn start_federation_with_min(
    out: &std::path::Path,
    n: usize,
    rounds: u32,
    min: u32,
) -> Federation {
    start_federation_with(out, n, rounds, min, |_| {}).await
}

/// As [`start_federation_with_min`], with the aggregator's configuration
/// changed by `tweak` before it starts.
pub async fn start_federation_with(
    out: &std::path::Path,
    n: usize,
    rounds: u32,
    min: u32,
    tweak: impl FnOnce(&mut AggregatorConfig),
) -> Federation {
    let layout = lay_out_federation(out, n, rounds, min, tweak);
    let server = tokio::spawn(aggregator::run(layout.aggregator.clone()));
    while std::fs::read_to_string(&layout.address_file).map_or(true, |a| a.is_empty()) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Federation {
        aggregator: layout.aggregator,
        institutions: layout.institutions,
        server,
    }
}

/// The party directories of a digits federation of `n` institutions, as
/// [`start_federation_with`] lays them out, with nothing started.
pub fn lay_out_federation(
    out: &std::path::Path,
    n: usize,
    rounds: u32,
    min: u32,
    tweak: impl FnOnce(&mut AggregatorConfig),
) -> setup::Layout {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data");
    let whole = Dataset::Tabular(data::load_digits(&dir).unwrap());
    let (train, test) = data::split_train_test(&whole, 0.2, 1).unwrap();
    let parts = data::partition(&train, n, &Partition::Iid, 1).unwrap();
    let d = default_train_config(&whole);
    let training = TrainingSettings {
        local_epochs: 1,
        batch_size: d.batch_size as u32,
        learning_rate: d.learning_rate,
        max_batches_per_epoch: 0,
        seed: 1,
    };
    setup::prepare_out_dir(out).unwrap();
    let names: Vec<String> = (0..parts.len()).map(|i| format!("inst-{i}")).collect();
    let layout = setup::lay_out(
        out,
        &Plan {
            names: &names,
            train_parts: &parts,
            test: &test,
            model: &ModelConfig::default_for(&whole),
            training: &training,
            strategy: &StrategyConfig::FedAvg,
            rounds,
            min_participants: min,
            round_timeout_secs: 60,
            seed: 1,
            prefer_cuda: false,
            secure: None,
            privacy: None,
            compression: "none".into(),
            faults: Vec::new(),
        },
    )
    .unwrap();
    let mut config: AggregatorConfig = read_json(&layout.aggregator.config()).unwrap();
    config.join_timeout_secs = 30;
    tweak(&mut config);
    write_json(&layout.aggregator.config(), &config).unwrap();
    layout
}

/// A gRPC client holding `inst`'s certificate.
pub async fn client(inst: &PartyDir, aggregator: &PartyDir) -> FederationClient<Channel> {
    let address = std::fs::read_to_string(aggregator.root().join("address")).unwrap();
    let tls = TlsMaterial::load(&inst.tls()).unwrap();
    let channel = connect(
        &format!("https://{address}"),
        "localhost",
        &tls,
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    FederationClient::new(channel)
}

pub fn signer(inst: &PartyDir) -> Signer {
    Signer::new(Identity::load(inst.root()).unwrap(), setup::FEDERATION)
}

pub fn join_request() -> pb::JoinRequest {
    pb::JoinRequest {
        agent_version: "test".into(),
        num_examples: 100,
        device: "cpu".into(),
        // As an agent from before the field: its rounds use ChaCha20.
        fast_mask_prgs: vec![],
    }
}

pub async fn await_plan(rpc: &mut FederationClient<Channel>, me: &Signer) -> pb::RoundPlan {
    await_plan_after(rpc, me, 0).await
}

/// The plan of the first round after `after_round`.
pub async fn await_plan_after(
    rpc: &mut FederationClient<Channel>,
    me: &Signer,
    after_round: u32,
) -> pb::RoundPlan {
    let env = rpc
        .await_round(me.seal(0, &pb::RoundRequest { after_round }))
        .await
        .unwrap()
        .into_inner();
    <pb::RoundPlan as prost::Message>::decode(env.payload.as_slice()).unwrap()
}

pub async fn download(
    rpc: &mut FederationClient<Channel>,
    me: &Signer,
    plan: &pb::RoundPlan,
) -> TensorSet {
    let mut frames = rpc
        .download_model(me.seal(
            plan.round,
            &pb::ModelRequest {
                model_sha256: plan.model_sha256.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let header = match frames.message().await.unwrap().unwrap().frame.unwrap() {
        pb::model_frame::Frame::Header(h) => h,
        other => panic!("expected a header, got {other:?}"),
    };
    let manifest = <pb::ModelHeader as prost::Message>::decode(header.payload.as_slice())
        .unwrap()
        .manifest
        .unwrap();
    let mut asm = TensorAssembler::new(&manifest).unwrap();
    while let Some(frame) = frames.message().await.unwrap() {
        if let Some(pb::model_frame::Frame::Chunk(c)) = frame.frame {
            asm.push(&c).unwrap();
        }
    }
    asm.finish().unwrap()
}

pub fn upload_frames(
    header: pb::SignedEnvelope,
    chunks: Vec<pb::TensorChunk>,
) -> Vec<pb::UpdateFrame> {
    std::iter::once(pb::UpdateFrame {
        frame: Some(pb::update_frame::Frame::Header(header)),
    })
    .chain(chunks.into_iter().map(|c| pb::UpdateFrame {
        frame: Some(pb::update_frame::Frame::Chunk(c)),
    }))
    .collect()
}

pub fn update_header(me: &Signer, plan: &pb::RoundPlan, update: &TensorSet) -> pb::SignedEnvelope {
    me.seal(
        plan.round,
        &pb::UpdateHeader {
            base_model_sha256: plan.model_sha256.clone(),
            manifest: Some(update.manifest()),
            num_examples: 100,
            train_loss: 1.0,
            masked: false,
            dequant_scales: Vec::new(),
        },
    )
}

/// An update with the model's layout and every value `value`.
pub fn uniform_update(model: &TensorSet, value: f32) -> TensorSet {
    TensorSet::new(
        model
            .tensors
            .iter()
            .map(|t| {
                NamedTensor::from_f32(
                    t.name.clone(),
                    t.shape.clone(),
                    &vec![value; t.numel() as usize],
                )
            })
            .collect(),
    )
    .unwrap()
}
