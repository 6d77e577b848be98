//! Every strategy behind the one trait carries a label-skewed federation to
//! a model no institution could train alone.

use modelpub_e2e::{modelpub, read_json, text};

fn final_accuracy(strategy: &str) -> f64 {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("run");
    let run = modelpub(&[
        "simulate",
        "--strategy",
        strategy,
        "--skip-local-only",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{strategy}: {}", text(&run));
    let report = read_json(&dir.join("report.json"));
    assert_eq!(report["config"]["strategy"]["name"], strategy);
    report["final"]["accuracy"].as_f64().unwrap()
}

#[test]
fn fedprox_learns_all_ten_digits() {
    let acc = final_accuracy("fedprox");
    assert!(acc >= 0.85, "fedprox reached {acc}");
}

#[test]
fn fedadam_learns_all_ten_digits() {
    let acc = final_accuracy("fedadam");
    assert!(acc >= 0.85, "fedadam reached {acc}");
}
