//! The straggler cutoff as participants meet it: a round never closes on
//! slow participants before enough updates are in for it to count, and
//! once they are, a participant that never answers does not hold the
//! round to its full deadline, and one whose connection has closed is not
//! waited for at all.

mod common;

use std::time::{Duration, Instant};

use common::{
    await_plan_after, client, download, join_request, signer, start_federation_with_min,
    uniform_update, update_header, upload_frames,
};
use modelpub_protocol::envelope::Signer;
use modelpub_protocol::pb;
use modelpub_protocol::pb::federation_client::FederationClient;
use tonic::transport::Channel;

struct Institution {
    rpc: FederationClient<Channel>,
    me: Signer,
}

impl Institution {
    async fn plan(&mut self, after_round: u32) -> pb::RoundPlan {
        await_plan_after(&mut self.rpc, &self.me, after_round).await
    }

    async fn upload(&mut self, plan: &pb::RoundPlan) {
        let global = download(&mut self.rpc, &self.me, plan).await;
        let update = uniform_update(&global, 0.01);
        self.rpc
            .upload_update(futures::stream::iter(upload_frames(
                update_header(&self.me, plan, &update),
                update.chunks().collect(),
            )))
            .await
            .unwrap_or_else(|e| panic!("round {}: upload refused: {e}", plan.round));
    }

    async fn result(&mut self, round: u32) -> pb::RoundResult {
        let env = self
            .rpc
            .get_round_result(self.me.seal(0, &pb::RoundResultRequest { round }))
            .await
            .unwrap()
            .into_inner();
        <pb::RoundResult as prost::Message>::decode(env.payload.as_slice()).unwrap()
    }
}

/// Every institution of `fed`, connected and joined.
async fn join_all(fed: &common::Federation) -> Vec<Institution> {
    let mut insts = Vec::new();
    for inst in &fed.institutions {
        let mut rpc = client(inst, &fed.aggregator).await;
        let me = signer(inst);
        rpc.join(me.seal(0, &join_request())).await.unwrap();
        insts.push(Institution { rpc, me });
    }
    insts
}

/// Each institution's plan for the round after `after_round`.
async fn plan_all(insts: &mut [Institution], after_round: u32) -> Vec<pb::RoundPlan> {
    let mut plans = Vec::new();
    for inst in insts {
        plans.push(inst.plan(after_round).await);
    }
    plans
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_participants_are_waited_for_until_the_round_can_count() {
    let tmp = tempfile::tempdir().unwrap();
    // Three institutions; a round counts with two (round timeout 60 s).
    let fed = start_federation_with_min(&tmp.path().join("fed"), 3, 2, 2).await;
    let mut insts = join_all(&fed).await;

    // Round 1: one fast update, then the other two well past the minimum
    // grace (5 s) after it. The first alone cannot make the round count,
    // so nobody is cut off: all three are in.
    let plans = plan_all(&mut insts, 0).await;
    assert_eq!(plans[0].round, 1);
    insts[0].upload(&plans[0]).await;
    tokio::time::sleep(Duration::from_millis(6500)).await;
    insts[1].upload(&plans[1]).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    insts[2].upload(&plans[2]).await;
    let first = insts[0].result(1).await;
    assert!(first.succeeded, "round 1: {}", first.reason);
    assert_eq!(first.participants.len(), 3, "round 1: {first:?}");

    // Round 2: two answer at once, the third never does. The round closes
    // soon after the two (the cutoff is at least 5 s), not at its 60 s
    // deadline, and counts the two.
    let plans = plan_all(&mut insts, 1).await;
    assert_eq!(plans[0].round, 2);
    let quorum_in = Instant::now();
    insts[0].upload(&plans[0]).await;
    insts[1].upload(&plans[1]).await;
    let second = insts[0].result(2).await;
    let closed_after = quorum_in.elapsed();
    assert!(second.succeeded, "round 2: {}", second.reason);
    assert_eq!(
        second.participants,
        vec!["inst-0".to_string(), "inst-1".to_string()]
    );
    assert!(
        closed_after >= Duration::from_secs(4) && closed_after < Duration::from_secs(30),
        "round 2 closed {closed_after:?} after its quorum; the cutoff should be about 5 s"
    );
    fed.server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_whose_connection_closes_is_not_waited_for() {
    let tmp = tempfile::tempdir().unwrap();
    // Three institutions, a round counts with two: without the closed
    // connection the round would wait out the straggler cutoff (at least
    // 5 s after the two updates) for the third.
    let fed = start_federation_with_min(&tmp.path().join("fed"), 3, 1, 2).await;
    let mut insts = join_all(&fed).await;
    let plans = plan_all(&mut insts, 0).await;
    assert_eq!(plans[0].participants.len(), 3);
    // inst-2 goes away as a crashed process would: its only connection closes.
    drop(insts.pop());
    let quorum_in = Instant::now();
    insts[0].upload(&plans[0]).await;
    insts[1].upload(&plans[1]).await;
    let result = insts[0].result(1).await;
    let closed_after = quorum_in.elapsed();
    assert!(result.succeeded, "{}", result.reason);
    assert_eq!(result.participants, vec!["inst-0", "inst-1"]);
    assert_eq!(result.dropped, vec!["inst-2"]);
    assert!(
        closed_after < Duration::from_secs(3),
        "the round closed {closed_after:?} after the two updates; inst-2's connection had closed, so nobody was left to wait for"
    );
    fed.server.abort();
}
