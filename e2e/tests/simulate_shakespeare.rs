//! The writing assistant trained on local notes: Tiny Shakespeare split by
//! speaking role, a character-level transformer per institution. Together
//! the institutions predict every role's text better than any of them can
//! alone.

use modelpub_e2e::{modelpub, read_json, text};

#[test]
fn federated_text_model_beats_every_institution_alone() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("run");
    let run = modelpub(&[
        "simulate",
        "--data",
        "shakespeare",
        "--rounds",
        "5",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", text(&run));
    let report = read_json(&dir.join("report.json"));
    assert_eq!(report["config"]["partition"], "Role");
    assert_eq!(report["config"]["model"]["family"], "char-transformer");
    let federated = report["final"]["loss"].as_f64().unwrap();
    let local = report["local_only"].as_array().unwrap();
    assert_eq!(local.len(), 3);
    for l in local {
        let alone = l["loss"].as_f64().unwrap();
        assert!(
            federated < alone,
            "{}: alone {alone} <= federated {federated}",
            l["institution"]
        );
    }
    // Next-character accuracy is reported too, and is far above chance.
    assert!(report["final"]["accuracy"].as_f64().unwrap() > 1.0 / 65.0);
}
