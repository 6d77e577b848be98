//! Aggregator memory stays O(model size): however many participants upload
//! at once, at most `STAGING_SLOTS` updates are held while they stream in;
//! every other update waits its turn, and all of them count.

mod common;

use std::time::Duration;

use common::{
    await_plan, client, download, join_request, signer, start_federation, uniform_update,
    update_header, upload_frames,
};
use futures::StreamExt;
use modelpub_node_agent::aggregator::{STAGING_SLOTS, accumulator::peak_staged_updates};
use modelpub_protocol::pb;

const PARTICIPANTS: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_uploads_are_staged_a_bounded_number_at_a_time() {
    let tmp = tempfile::tempdir().unwrap();
    let fed = start_federation(&tmp.path().join("fed"), PARTICIPANTS, 1).await;
    let mut uploads = Vec::new();
    for inst in &fed.institutions {
        let mut rpc = client(inst, &fed.aggregator).await;
        let me = signer(inst);
        rpc.join(me.seal(0, &join_request())).await.unwrap();
        uploads.push((rpc, me));
    }
    let mut tasks = Vec::new();
    for (mut rpc, me) in uploads {
        tasks.push(tokio::spawn(async move {
            let plan = await_plan(&mut rpc, &me).await;
            let global = download(&mut rpc, &me, &plan).await;
            let update = uniform_update(&global, 0.5);
            // Slow streams, so that every upload is in flight at once.
            let frames = upload_frames(
                update_header(&me, &plan, &update),
                update.chunks().collect(),
            );
            let slow = futures::stream::iter(frames).then(|f: pb::UpdateFrame| async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                f
            });
            rpc.upload_update(slow).await?;
            // Hear that the run is over, so the aggregator can stop.
            rpc.await_round(me.seal(0, &pb::RoundRequest { after_round: 1 }))
                .await
                .map(|_| ())
        }));
    }
    for t in tasks {
        t.await
            .unwrap()
            .expect("every upload is accepted, some after waiting");
    }
    let peak = peak_staged_updates();
    assert!(peak >= 1, "uploads went through staging");
    assert!(
        peak <= STAGING_SLOTS,
        "{peak} updates were held at once; the bound is {STAGING_SLOTS}"
    );
    tokio::time::timeout(Duration::from_secs(60), fed.server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let rounds = std::fs::read_to_string(fed.aggregator.root().join("rounds.jsonl")).unwrap();
    let record: serde_json::Value = serde_json::from_str(rounds.lines().next().unwrap()).unwrap();
    assert_eq!(record["participants"], PARTICIPANTS);
    assert_eq!(record["dropped"], 0);
}
