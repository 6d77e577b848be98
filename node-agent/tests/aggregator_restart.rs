//! An aggregator killed in the middle of a round (SIGKILL: what an OOM kill
//! or a node's container runtime does) and started again on the same
//! party directory: the round it was in is recorded as failed with the
//! reason, the run goes on from the last completed round, the participants
//! join again by themselves, every round is in `rounds.jsonl` exactly once,
//! an envelope accepted before the restart is refused after it, and every
//! audit log verifies.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{client, lay_out_federation, signer};
use modelpub_node_agent::party::PartyDir;
use modelpub_node_agent::round_record::RoundRecord;
use modelpub_node_agent::simulate::setup;
use modelpub_protocol::pb;

const ROUNDS: u32 = 4;

fn modelpub() -> Command {
    Command::new(env!("CARGO_BIN_EXE_modelpub"))
}

fn start(role: &str, party: &PartyDir, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    modelpub()
        .args([role, "--dir"])
        .arg(party.root())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Waits for `child` to exit, killing it after `limit`.
fn wait(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("{what} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The round the checkpoint says is running, if any.
fn open_round(aggregator: &PartyDir) -> Option<u64> {
    let text =
        std::fs::read_to_string(aggregator.root().join("checkpoint/checkpoint.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["open_round"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_aggregator_fails_the_round_it_was_in_and_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    // A fixed port, so the participants find the restarted aggregator.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Three in the roster, two running as participants (a round counts
    // with two); inst-2 only sends the envelope the test replays.
    let layout = lay_out_federation(&tmp.path().join("fed"), 3, ROUNDS, 2, |c| {
        c.listen = format!("127.0.0.1:{port}");
        c.join_timeout_secs = 3;
    });
    setup::set_aggregator_address(&layout, &format!("127.0.0.1:{port}")).unwrap();
    let logs = tmp.path();
    let aggregator = &layout.aggregator;
    let mut agg = start("aggregator", aggregator, &logs.join("aggregator.log"));
    let mut participants: Vec<Child> = (0..2)
        .map(|i| {
            let log = logs.join(format!("inst-{i}.log"));
            start("participant", &layout.institutions[i], &log)
        })
        .collect();

    // inst-2 asks for round 1's result once it is out: that envelope is
    // accepted, and is what the test replays after the restart.
    while std::fs::read_to_string(&layout.address_file).map_or(true, |a| a.is_empty()) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let outsider = &layout.institutions[2];
    let me = signer(outsider);
    let asked = me.seal(0, &pb::RoundResultRequest { round: 1 });
    let mut rpc = client(outsider, aggregator).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match rpc.get_round_result(asked.clone()).await {
            Ok(_) => break,
            // Refused while round 1 runs, before the envelope counts.
            Err(s) if Instant::now() < deadline && s.code() != tonic::Code::AlreadyExists => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(s) => panic!("round 1's result never came: {s}"),
        }
    }
    drop(rpc);

    // Kill the aggregator once round 2 is under way.
    let deadline = Instant::now() + Duration::from_secs(120);
    while open_round(aggregator) != Some(2) {
        assert!(Instant::now() < deadline, "round 2 never opened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    agg.kill().unwrap();
    agg.wait().unwrap();
    let mut agg = start("aggregator", aggregator, &logs.join("aggregator.log"));

    // The envelope accepted before the restart is refused after it.
    let mut rpc = client(outsider, aggregator).await;
    let replayed = rpc.get_round_result(asked).await.unwrap_err();
    assert_eq!(replayed.code(), tonic::Code::AlreadyExists, "{replayed}");
    assert!(replayed.message().contains("replayed"), "{replayed}");
    drop(rpc);

    let log = |name: &str| std::fs::read_to_string(logs.join(name)).unwrap_or_default();
    let status = wait(
        &mut agg,
        Duration::from_secs(240),
        "the restarted aggregator",
    );
    assert!(
        status.success(),
        "aggregator: {status}\n{}",
        log("aggregator.log")
    );
    for (i, p) in participants.iter_mut().enumerate() {
        let status = wait(p, Duration::from_secs(60), "a participant");
        let name = format!("inst-{i}.log");
        assert!(status.success(), "inst-{i}: {status}\n{}", log(&name));
        assert!(
            log(&name).contains("joining again"),
            "inst-{i} never rejoined:\n{}",
            log(&name)
        );
    }

    let records = RoundRecord::read_all(&layout.rounds_file).unwrap();
    let numbers: Vec<u32> = records.iter().map(|r| r.round).collect();
    assert_eq!(numbers, (1..=ROUNDS).collect::<Vec<_>>(), "{records:#?}");
    let interrupted = &records[1];
    assert!(!interrupted.succeeded);
    assert!(
        interrupted.reason.contains("restarted during round 2"),
        "{}",
        interrupted.reason
    );
    // Round 2 applied nothing: it names round 1's model.
    assert_eq!(interrupted.model_sha256, records[0].model_sha256);
    for r in [&records[0], &records[2], &records[3]] {
        assert!(r.succeeded, "round {}: {}", r.round, r.reason);
        assert_eq!(
            r.participant_names,
            ["inst-0", "inst-1"],
            "round {}",
            r.round
        );
    }
    assert_ne!(records[2].model_sha256, records[0].model_sha256);

    for party in [aggregator, &layout.institutions[0], &layout.institutions[1]] {
        let out = modelpub()
            .args(["audit", "verify"])
            .arg(party.root())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            party.root().display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
