//! The aggregator as an attacker meets it: a real server over mutual TLS,
//! fed replayed, tampered, out-of-round, foreign and malformed messages.
//! Each is refused with a status that names why, and the honest run goes on.

use std::time::Duration;

use modelpub_node_agent::aggregator;
use modelpub_node_agent::config::{AggregatorConfig, StrategyConfig, read_json, write_json};
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
use tonic::Code;
use tonic::transport::Channel;

fn digits() -> Dataset {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data");
    Dataset::Tabular(data::load_digits(&dir).unwrap())
}

async fn start_federation(
    out: &std::path::Path,
) -> (
    PartyDir,
    PartyDir,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let whole = digits();
    let (train, test) = data::split_train_test(&whole, 0.2, 1).unwrap();
    let parts = data::partition(&train, 1, &Partition::Iid, 1).unwrap();
    let d = default_train_config(&whole);
    let training = modelpub_node_agent::config::TrainingSettings {
        local_epochs: 1,
        batch_size: d.batch_size as u32,
        learning_rate: d.learning_rate,
        max_batches_per_epoch: 0,
        seed: 1,
    };
    setup::prepare_out_dir(out).unwrap();
    let layout = setup::lay_out(
        out,
        &Plan {
            train_parts: &parts,
            test: &test,
            model: &ModelConfig::default_for(&whole),
            training: &training,
            strategy: &StrategyConfig::FedAvg,
            rounds: 1,
            round_timeout_secs: 60,
            seed: 1,
            prefer_cuda: false,
        },
    )
    .unwrap();
    let mut config: AggregatorConfig = read_json(&layout.aggregator.config()).unwrap();
    config.join_timeout_secs = 30;
    write_json(&layout.aggregator.config(), &config).unwrap();
    let handle = tokio::spawn(aggregator::run(layout.aggregator.clone()));
    while std::fs::read_to_string(&layout.address_file).map_or(true, |a| a.is_empty()) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (layout.aggregator, layout.institutions[0].clone(), handle)
}

async fn client(inst: &PartyDir, aggregator: &PartyDir) -> FederationClient<Channel> {
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

fn assert_refused<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, words: &str) {
    let status = result.expect_err("the aggregator must refuse this");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().to_lowercase().contains(words),
        "`{}` should say `{words}`",
        status.message()
    );
}

fn upload_frames(header: pb::SignedEnvelope, chunks: Vec<pb::TensorChunk>) -> Vec<pb::UpdateFrame> {
    std::iter::once(pb::UpdateFrame {
        frame: Some(pb::update_frame::Frame::Header(header)),
    })
    .chain(chunks.into_iter().map(|c| pb::UpdateFrame {
        frame: Some(pb::update_frame::Frame::Chunk(c)),
    }))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_are_refused_and_the_round_still_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let (aggregator, inst, server) = start_federation(&tmp.path().join("fed")).await;
    let mut rpc = client(&inst, &aggregator).await;
    let me = Signer::new(Identity::load(inst.root()).unwrap(), setup::FEDERATION);

    let join = me.seal(
        0,
        &pb::JoinRequest {
            agent_version: "test".into(),
            num_examples: 100,
            device: "cpu".into(),
        },
    );
    rpc.join(join.clone()).await.unwrap();
    // The same signed message again: a replay.
    assert_refused(rpc.join(join).await, Code::AlreadyExists, "replayed");

    // A byte of the payload changed in flight.
    let mut tampered = me.seal(0, &pb::RoundRequest { after_round: 0 });
    tampered.payload.push(0);
    assert_refused(
        rpc.await_round(tampered).await,
        Code::Unauthenticated,
        "signature",
    );

    // A message for another federation, and one from outside the roster
    // (holding a valid certificate, but no registered identity).
    let foreign = Signer::new(Identity::load(inst.root()).unwrap(), "another-federation");
    assert_refused(
        rpc.await_round(foreign.seal(0, &pb::RoundRequest { after_round: 0 }))
            .await,
        Code::InvalidArgument,
        "federation",
    );
    let mallory = Signer::new(Identity::generate("mallory").unwrap(), setup::FEDERATION);
    assert_refused(
        rpc.await_round(mallory.seal(0, &pb::RoundRequest { after_round: 0 }))
            .await,
        Code::PermissionDenied,
        "mallory",
    );

    let plan_env = rpc
        .await_round(me.seal(0, &pb::RoundRequest { after_round: 0 }))
        .await
        .unwrap()
        .into_inner();
    let plan = <pb::RoundPlan as prost::Message>::decode(plan_env.payload.as_slice()).unwrap();
    assert_eq!(plan.round, 1);

    // Asking for the model with a message bound to another round.
    assert_refused(
        rpc.download_model(me.seal(
            2,
            &pb::ModelRequest {
                model_sha256: plan.model_sha256.clone(),
            },
        ))
        .await,
        Code::FailedPrecondition,
        "round",
    );

    let mut frames = rpc
        .download_model(me.seal(
            1,
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
    let global = asm.finish().unwrap();
    assert_eq!(global.digest(), plan.model_sha256);

    // An update of zeros, the same layout as the model.
    let update = TensorSet::new(
        global
            .tensors
            .iter()
            .map(|t| {
                NamedTensor::from_f32(
                    t.name.clone(),
                    t.shape.clone(),
                    &vec![0.01; t.numel() as usize],
                )
            })
            .collect(),
    )
    .unwrap();
    let header_for = |set: &TensorSet| {
        me.seal(
            1,
            &pb::UpdateHeader {
                base_model_sha256: plan.model_sha256.clone(),
                manifest: Some(set.manifest()),
                num_examples: 100,
                train_loss: 1.0,
            },
        )
    };

    // Bytes that do not match what the signed header committed to.
    let mut chunks: Vec<_> = update.chunks().collect();
    chunks[0].data[0] ^= 0x55;
    assert_refused(
        rpc.upload_update(futures::stream::iter(upload_frames(
            header_for(&update),
            chunks,
        )))
        .await,
        Code::InvalidArgument,
        "digest",
    );
    // An update shaped for another model.
    let wrong = TensorSet::new(vec![NamedTensor::from_f32("w", vec![2], &[1.0, 2.0])]).unwrap();
    assert_refused(
        rpc.upload_update(futures::stream::iter(upload_frames(
            header_for(&wrong),
            wrong.chunks().collect(),
        )))
        .await,
        Code::InvalidArgument,
        "tensor",
    );
    // Chunks without a header.
    assert_refused(
        rpc.upload_update(futures::stream::iter(
            upload_frames(header_for(&update), update.chunks().collect())
                .into_iter()
                .skip(1)
                .collect::<Vec<_>>(),
        ))
        .await,
        Code::InvalidArgument,
        "header",
    );

    // The honest update is accepted, once.
    let receipt = rpc
        .upload_update(futures::stream::iter(upload_frames(
            header_for(&update),
            update.chunks().collect(),
        )))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(receipt.sender, "aggregator");
    let result_env = rpc
        .get_round_result(me.seal(0, &pb::RoundResultRequest { round: 1 }))
        .await
        .unwrap()
        .into_inner();
    let result =
        <pb::RoundResult as prost::Message>::decode(result_env.payload.as_slice()).unwrap();
    assert!(result.succeeded, "{}", result.reason);
    assert_eq!(result.participants, vec!["inst-0".to_string()]);
    assert_ne!(result.model_sha256, plan.model_sha256, "the model moved");

    // The run is over: the aggregator says so, then stops cleanly.
    let done = rpc
        .await_round(me.seal(0, &pb::RoundRequest { after_round: 1 }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.kind, "modelpub.v1.FederationFinished");
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("aggregator stops once everyone knows the run is over")
        .unwrap()
        .unwrap();

    // Its audit log recorded the refusals too, and verifies.
    let report = modelpub_protocol::audit::verify(aggregator.root(), None).unwrap();
    assert!(report.entries > 10);
    let log = std::fs::read_to_string(aggregator.root().join("audit.log")).unwrap();
    assert!(log.contains("rejected"));
}
