//! The aggregator as an attacker meets it: a real server over mutual TLS,
//! fed replayed, tampered, out-of-round, foreign and malformed messages.
//! Each is refused with a status that names why, and the honest run goes on.

mod common;

use std::time::Duration;

use common::{
    await_plan, client, download, join_request, signer, start_federation, uniform_update,
    update_header, upload_frames,
};
use modelpub_node_agent::simulate::setup;
use modelpub_protocol::envelope::Signer;
use modelpub_protocol::identity::Identity;
use modelpub_protocol::pb;
use modelpub_protocol::tensor::{NamedTensor, TensorSet};
use tonic::Code;

fn assert_refused<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, words: &str) {
    let status = result.expect_err("the aggregator must refuse this");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().to_lowercase().contains(words),
        "`{}` should say `{words}`",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_are_refused_and_the_round_still_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let fed = start_federation(&tmp.path().join("fed"), 1, 1).await;
    let (aggregator, inst, server) = (fed.aggregator, fed.institutions[0].clone(), fed.server);
    let mut rpc = client(&inst, &aggregator).await;
    let me = signer(&inst);

    let join = me.seal(0, &join_request());
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

    let plan = await_plan(&mut rpc, &me).await;
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

    let global = download(&mut rpc, &me, &plan).await;
    assert_eq!(global.digest(), plan.model_sha256);

    // A small update, the same layout as the model.
    let update = uniform_update(&global, 0.01);
    let header_for = |set: &TensorSet| update_header(&me, &plan, set);

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

/// A client whose certificate comes from another CA (a cluster never
/// peered, or one whose CA changed) does not get through the handshake,
/// and the aggregator names it in its audit log, which still verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_an_unknown_ca_is_refused_in_the_handshake_and_audited() {
    use modelpub_protocol::tls::{FederationCa, TlsMaterial};
    let tmp = tempfile::tempdir().unwrap();
    let fed = start_federation(&tmp.path().join("fed"), 1, 1).await;
    let (aggregator, inst) = (fed.aggregator, fed.institutions[0].clone());
    let address = std::fs::read_to_string(aggregator.root().join("address")).unwrap();
    let ours = TlsMaterial::load(&inst.tls()).unwrap();
    let rogue_ca = FederationCa::generate("rogue").unwrap();
    let rogue_leaf = rogue_ca
        .issue("rogue-participant", &["rogue-participant"], &[])
        .unwrap();
    // It trusts the aggregator's CA, so only the aggregator can refuse.
    let rogue = TlsMaterial {
        ca_pem: ours.ca_pem.clone(),
        ..rogue_leaf
    };
    let refused = match modelpub_node_agent::participant::connect(
        &format!("https://{address}"),
        "localhost",
        &rogue,
        Duration::from_secs(2),
    )
    .await
    {
        Err(_) => true,
        // TLS 1.3 may let the client finish first; its first call fails.
        Ok(channel) => {
            let mut rpc = pb::federation_client::FederationClient::new(channel);
            let me = Signer::new(
                Identity::generate("rogue-participant").unwrap(),
                setup::FEDERATION,
            );
            rpc.join(me.seal(0, &join_request())).await.is_err()
        }
    };
    assert!(
        refused,
        "a certificate from another CA must not get through"
    );
    let log_path = aggregator.root().join(modelpub_protocol::audit::LOG_FILE);
    let mut logged = String::new();
    for _ in 0..100 {
        logged = std::fs::read_to_string(&log_path).unwrap_or_default();
        if logged.contains("tls-handshake-refused") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let line = logged
        .lines()
        .find(|l| l.contains("tls-handshake-refused"))
        .unwrap_or_else(|| panic!("no refusal in the audit log:\n{logged}"));
    assert!(line.contains("rogue-participant"), "{line}");
    modelpub_protocol::audit::verify(aggregator.root(), None)
        .expect("the audit log still verifies");
    // The honest participant still joins.
    let mut rpc = client(&inst, &aggregator).await;
    rpc.join(signer(&inst).seal(0, &join_request()))
        .await
        .unwrap();
}
