//! A participant that goes silent without closing its connection (its node
//! lost power, the network split) is caught by the aggregator's HTTP/2
//! keepalive: the unanswered ping closes the connection, and the round
//! stops waiting for it as it would for a crashed process.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{
    await_plan_after, client, download, join_request, signer, start_federation_with,
    uniform_update, update_header, upload_frames,
};
use modelpub_node_agent::participant::connect;
use modelpub_protocol::pb;
use modelpub_protocol::pb::federation_client::FederationClient;
use modelpub_protocol::tls::TlsMaterial;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP relay to `target` that, once `frozen` is set, stops moving bytes
/// in either direction but keeps both sockets open: a peer that is gone
/// without a FIN or a reset.
async fn freezable_relay(target: String, frozen: Arc<AtomicBool>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let outbound = TcpStream::connect(&target).await.unwrap();
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            tokio::spawn(pump(ri, wo, frozen.clone()));
            tokio::spawn(pump(ro, wi, frozen.clone()));
        }
    });
    address
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        if frozen.load(Ordering::SeqCst) {
            // Hold both halves, move nothing.
            std::future::pending::<()>().await;
        }
        let n = match tokio::time::timeout(Duration::from_millis(50), from.read(&mut buf)).await {
            Err(_) => continue,
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) => n,
        };
        if frozen.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_goes_silent_is_dropped_after_the_keepalive() {
    let tmp = tempfile::tempdir().unwrap();
    // A round counts with two of three; pings every second. Without them
    // the silent third would hold the round to the straggler cutoff.
    let fed = start_federation_with(&tmp.path().join("fed"), 3, 1, 2, |c| {
        c.keepalive_secs = 1;
    })
    .await;
    let mut live = Vec::new();
    for inst in &fed.institutions[..2] {
        let mut rpc = client(inst, &fed.aggregator).await;
        let me = signer(inst);
        rpc.join(me.seal(0, &join_request())).await.unwrap();
        live.push((rpc, me));
    }
    // The third talks to the aggregator through a relay that will freeze.
    let frozen = Arc::new(AtomicBool::new(false));
    let aggregator_address =
        std::fs::read_to_string(fed.aggregator.root().join("address")).unwrap();
    let relay = freezable_relay(aggregator_address, frozen.clone()).await;
    let silent_party = &fed.institutions[2];
    let channel = connect(
        &format!("https://{relay}"),
        "localhost",
        &TlsMaterial::load(&silent_party.tls()).unwrap(),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let mut silent = FederationClient::new(channel);
    let silent_me = signer(silent_party);
    silent
        .join(silent_me.seal(0, &join_request()))
        .await
        .unwrap();

    let mut plans = Vec::new();
    for (rpc, me) in &mut live {
        plans.push(await_plan_after(rpc, me, 0).await);
    }
    assert_eq!(plans[0].participants.len(), 3, "{:?}", plans[0]);
    frozen.store(true, Ordering::SeqCst);
    let froze = Instant::now();
    for ((rpc, me), plan) in live.iter_mut().zip(&plans) {
        let global = download(rpc, me, plan).await;
        let update = uniform_update(&global, 0.01);
        rpc.upload_update(futures::stream::iter(upload_frames(
            update_header(me, plan, &update),
            update.chunks().collect(),
        )))
        .await
        .unwrap();
    }
    let (rpc, me) = &mut live[0];
    let env = rpc
        .get_round_result(me.seal(0, &pb::RoundResultRequest { round: 1 }))
        .await
        .unwrap()
        .into_inner();
    let result = <pb::RoundResult as prost::Message>::decode(env.payload.as_slice()).unwrap();
    let closed_after = froze.elapsed();
    assert!(result.succeeded, "{}", result.reason);
    assert_eq!(result.dropped, vec!["inst-2"]);
    // One ping interval plus its timeout, with slack for a loaded machine;
    // the straggler cutoff alone would have held it at least 5 s.
    assert!(
        closed_after < Duration::from_millis(4500),
        "the round closed {closed_after:?} after inst-2 went silent; its keepalive is 1 s"
    );
    fed.server.abort();
}
