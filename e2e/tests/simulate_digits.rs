//! `modelpub simulate` on its defaults, run as a user runs it: the built
//! binary, one OS process per party, a report at the end.

use modelpub_e2e::{modelpub, read_json, text};

#[test]
fn default_federation_beats_every_institution_alone() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("run");
    let dir_s = dir.to_str().unwrap();
    let run = modelpub(&["simulate", "--out", dir_s]);
    let log = text(&run);
    assert!(run.status.success(), "simulate failed:\n{log}");
    assert!(
        log.contains("round"),
        "the run must show progress and a table:\n{log}"
    );

    let report = read_json(&dir.join("report.json"));
    let rounds = report["rounds"].as_array().expect("rounds");
    assert_eq!(rounds.len(), 10, "10 rounds by default");
    for (i, r) in rounds.iter().enumerate() {
        assert_eq!(r["round"], i as u64 + 1);
        assert_eq!(r["participants"], 3, "round {}: {r}", i + 1);
        assert_eq!(r["dropped"], 0);
        assert!(r["bytes_up"].as_u64().unwrap() > 0);
        assert!(r["bytes_down"].as_u64().unwrap() > 0);
        assert!(r["seconds"].as_f64().unwrap() > 0.0);
        let acc = r["accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc));
        assert!(r["loss"].as_f64().unwrap().is_finite());
    }
    let final_acc = report["final"]["accuracy"].as_f64().unwrap();
    assert!(final_acc >= 0.90, "federated accuracy {final_acc} < 0.90");
    let sha = report["final"]["model_sha256"].as_str().unwrap();
    assert_eq!(sha.len(), 64);
    assert_eq!(sha, rounds[9]["model_sha256"].as_str().unwrap());

    let local = report["local_only"].as_array().expect("local_only");
    assert_eq!(local.len(), 3);
    let best_local = local
        .iter()
        .map(|l| l["accuracy"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!(
        best_local <= 0.50,
        "label-partitioned institutions alone should not exceed 0.50, best was {best_local}"
    );
    assert!(final_acc > best_local + 0.3);

    // The picture a person looks at.
    let svg = std::fs::read_to_string(dir.join("report.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("federated"));

    // Every institution is its own party: identity, certificate, sealed
    // vault and an audit log whose chain and signatures verify.
    for party in ["aggregator", "inst-0", "inst-1", "inst-2"] {
        let p = dir.join(party);
        for f in [
            "identity.key",
            "identity.pub",
            "tls/tls.crt",
            "tls/tls.key",
            "audit.log",
        ] {
            assert!(p.join(f).is_file(), "{party}/{f} missing");
        }
        let verify = modelpub(&["audit", "verify", p.to_str().unwrap()]);
        assert!(verify.status.success(), "{party}: {}", text(&verify));
        assert!(text(&verify).contains("chain intact"));
    }
    // The model that was published is the one the report names.
    let published = std::fs::read(dir.join("aggregator/global-model.safetensors")).unwrap();
    assert!(published.len() > 1000);
}
