//! Bad input from outside the process: each gets a clear message naming
//! what is wrong and a non-zero exit, never a panic, and loses nothing.

use std::path::Path;

use modelpub_e2e::{assert_fails_with, modelpub, text};

fn simulate_csv(dir: &Path, csv: &str, extra: &[&str]) -> std::process::Output {
    let path = dir.join("input.csv");
    std::fs::write(&path, csv).unwrap();
    let data = format!("csv:{}", path.display());
    let out = dir.join("out");
    let mut args = vec!["simulate", "--data", &data, "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    modelpub(&args)
}

#[test]
fn ragged_csv_row_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = simulate_csv(dir.path(), "a,b,label\n1,2,0\n3,1\n", &[]);
    assert_fails_with(&out, &["line 3", "2 fields", "expected 3"]);
}

#[test]
fn non_numeric_cell_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = simulate_csv(dir.path(), "a,b,label\n1,2,0\n3,abc,1\n", &[]);
    assert_fails_with(&out, &["line 3", "`b`", "abc"]);
}

#[test]
fn missing_label_column_lists_the_columns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("input.csv");
    std::fs::write(&path, "a,b,label\n1,2,0\n3,4,1\n").unwrap();
    let data = format!("csv:{}:target", path.display());
    let out_dir = dir.path().join("out");
    let out = modelpub(&[
        "simulate",
        "--data",
        &data,
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert_fails_with(&out, &["target", "not found", "label"]);
}

#[test]
fn empty_data_set_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = simulate_csv(dir.path(), "a,b,label\n", &[]);
    assert_fails_with(&out, &["no examples"]);
    let empty = dir.path().join("notes");
    std::fs::create_dir(&empty).unwrap();
    let data = format!("text:{}", empty.display());
    let out = modelpub(&[
        "simulate",
        "--data",
        &data,
        "--out",
        dir.path().join("o2").to_str().unwrap(),
    ]);
    assert_fails_with(&out, &["notes"]);
}

#[test]
fn more_institutions_than_examples_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = simulate_csv(
        dir.path(),
        "a,label\n1,0\n2,1\n3,0\n4,1\n5,0\n6,1\n",
        &["--institutions", "9", "--partition", "iid"],
    );
    assert_fails_with(&out, &["9 institutions"]);
}

#[test]
fn unknown_options_values_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let o = dir.path().join("o");
    let o = o.to_str().unwrap();
    assert_fails_with(
        &modelpub(&["simulate", "--data", "mnist", "--out", o]),
        &["mnist"],
    );
    // Checked by the argument parser, before anything runs, naming the
    // choices.
    assert_fails_with(
        &modelpub(&["simulate", "--strategy", "fedsgd", "--out", o]),
        &["fedsgd", "fedavg, fedprox, fedadam"],
    );
    assert_fails_with(
        &modelpub(&["simulate", "--compression", "gzip", "--out", o]),
        &["gzip", "none, f16, int8"],
    );
    assert_fails_with(
        &modelpub(&["simulate", "--fedprox-mu", "0.1", "--out", o]),
        &["--fedprox-mu", "--strategy fedavg"],
    );
    assert!(
        !dir.path().join("o").exists(),
        "a refused command made --out"
    );
    assert_fails_with(
        &modelpub(&["simulate", "--partition", "dirichlet:-1", "--out", o]),
        &["dirichlet"],
    );
}

#[test]
fn a_foreign_out_dir_is_never_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let precious = dir.path().join("thesis.tex");
    std::fs::write(&precious, "years of work").unwrap();
    let out = modelpub(&["simulate", "--out", dir.path().to_str().unwrap()]);
    assert_fails_with(&out, &["not made by `modelpub simulate`"]);
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "years of work");
}

/// A one-round federation on disk to break in different ways.
fn small_federation(dir: &Path) -> std::path::PathBuf {
    let out = dir.join("fed");
    let run = modelpub(&[
        "simulate",
        "--rounds",
        "1",
        "--skip-local-only",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", text(&run));
    out
}

#[test]
fn parties_fail_cleanly_on_wrong_key_unreachable_aggregator_and_forged_audit() {
    let dir = tempfile::tempdir().unwrap();
    let fed = small_federation(dir.path());
    let inst = fed.join("inst-0");
    let inst_s = inst.to_str().unwrap();

    // An aggregator that is not there: the participant gives up, naming it.
    let config_path = inst.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["aggregator_url"] = "https://127.0.0.1:9".into();
    config["connect_timeout_secs"] = 2.into();
    std::fs::write(&config_path, config.to_string()).unwrap();
    let out = modelpub(&["participant", "--dir", inst_s]);
    assert_fails_with(&out, &["127.0.0.1:9", "not reachable"]);

    // A vault opened with the wrong key.
    let key = std::fs::read_to_string(inst.join("vault.key")).unwrap();
    let wrong: String = key
        .trim()
        .chars()
        .map(|c| if c == '0' { '1' } else { '0' })
        .collect();
    std::fs::write(inst.join("vault.key"), wrong).unwrap();
    let out = modelpub(&["participant", "--dir", inst_s]);
    assert_fails_with(&out, &["wrong key"]);
    std::fs::write(inst.join("vault.key"), &key).unwrap();

    // A corrupted vault: clear error, not garbage.
    let sealed = inst.join("vault/dataset.sealed");
    let mut bytes = std::fs::read(&sealed).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&sealed, bytes).unwrap();
    let out = modelpub(&["participant", "--dir", inst_s]);
    assert_fails_with(&out, &["corrupted"]);

    // One altered audit entry is found and named.
    let log_path = inst.join("audit.log");
    let log = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 4, "a round leaves several audit entries");
    let target = lines
        .iter()
        .position(|l| l.contains("\"round\":1,"))
        .expect("an audit entry of round 1");
    let mut altered: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    altered[target] = altered[target].replacen("\"round\":1,", "\"round\":7,", 1);
    std::fs::write(&log_path, altered.join("\n") + "\n").unwrap();
    let out = modelpub(&["audit", "verify", inst_s]);
    assert_fails_with(&out, &[&format!("entry {}", target + 1)]);
}

#[test]
fn a_missing_audit_log_names_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-party");
    let out = modelpub(&["audit", "verify", missing.to_str().unwrap()]);
    assert_fails_with(&out, &["identity.pub", "No such file"]);
    let stderr = text(&out);
    assert_eq!(
        stderr.matches("No such file").count(),
        1,
        "the cause is repeated: {stderr}"
    );
}

#[test]
fn a_role_on_a_missing_party_directory_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for role in ["aggregator", "participant"] {
        let missing = dir.path().join(format!("typo-{role}"));
        let out = modelpub(&[role, "--dir", missing.to_str().unwrap()]);
        assert_fails_with(&out, &["is not a directory", "--config and --secrets"]);
        assert!(!missing.exists(), "{role} created {}", missing.display());
        // A mistyped --config must not create the directory either.
        let bad_config = dir.path().join("no-config.json");
        let out = modelpub(&[
            role,
            "--dir",
            missing.to_str().unwrap(),
            "--config",
            bad_config.to_str().unwrap(),
        ]);
        assert_fails_with(&out, &["--config", "is not a file"]);
        assert!(!missing.exists(), "{role} created {}", missing.display());
    }
}
