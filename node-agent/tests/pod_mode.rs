//! The `modelpub` binary as a pod runs it: `vault seal` in an init
//! container, then `aggregator` / `participant` with their identity,
//! certificate and config on read-only mounts and only the party directory
//! writable.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use modelpub_agent_config::{
    AggregatorConfig, DataShape, ModelConfig, ParticipantConfig, StrategyConfig, TrainingSettings,
    VaultRef,
};
use modelpub_node_agent::data::{self, Dataset, decode_dataset};
use modelpub_node_agent::vault::{Vault, VaultKey};
use modelpub_protocol::identity::{Identity, PublicIdentity};
use modelpub_protocol::tls::FederationCa;

fn modelpub() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_modelpub"));
    c.env("MODELPUB_DATA_DIR", repo_data())
        .env("MODELPUB_TORCH_THREADS", "1")
        .env("RUST_LOG", "warn");
    c
}

fn repo_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data")
}

fn run(args: &[&str]) -> Output {
    modelpub()
        .args(args)
        .output()
        .expect("the modelpub binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// A vault key file, read-only like a mounted Secret.
fn key_file(dir: &Path, byte: u8) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("vault.key");
    std::fs::write(&path, format!("{}\n", hex::encode([byte; 32]))).unwrap();
    read_only(&path);
    path
}

fn read_only(path: &Path) {
    let mut p = std::fs::metadata(path).unwrap().permissions();
    p.set_readonly(true);
    std::fs::set_permissions(path, p).unwrap();
}

fn open(dir: &Path, key: &Path) -> Dataset {
    let vault = Vault::open(dir, VaultKey::load(key).unwrap()).unwrap();
    decode_dataset(&vault.get("dataset").unwrap()).unwrap()
}

fn seal(key: &Path, out: &Path, extra: &[&str]) {
    let mut args = vec![
        "vault",
        "seal",
        "--dataset",
        "digits",
        "--key-file",
        key.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = run(&args);
    assert!(o.status.success(), "seal {extra:?} failed: {}", stderr(&o));
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(said.starts_with("sealed "), "{said}");
}

#[test]
fn sealed_shares_are_disjoint_and_hold_out_the_test_split() {
    let tmp = tempfile::tempdir().unwrap();
    let key = key_file(&tmp.path().join("secret"), 7);
    seal(&key, &tmp.path().join("test"), &["--split", "test"]);
    for part in 0..3 {
        let p = part.to_string();
        seal(
            &key,
            &tmp.path().join(format!("part-{part}")),
            &["--part", &p, "--of", "3"],
        );
    }
    let whole = Dataset::Tabular(data::load_digits(&repo_data()).unwrap());
    let (train, test) = data::split_train_test(&whole, 0.2, 42).unwrap();
    let sealed_test = open(&tmp.path().join("test"), &key);
    assert_eq!(sealed_test.len(), test.len());
    let parts: Vec<Dataset> = (0..3)
        .map(|i| open(&tmp.path().join(format!("part-{i}")), &key))
        .collect();
    assert_eq!(parts.iter().map(Dataset::len).sum::<usize>(), train.len());
    // `--partition label` (the default for tables) deals whole classes.
    let classes = |d: &Dataset| match d {
        Dataset::Tabular(t) => {
            let mut c: Vec<i64> = t.labels.clone();
            c.sort();
            c.dedup();
            c
        }
        Dataset::Text(_) => unreachable!("digits is tabular"),
    };
    for (i, a) in parts.iter().enumerate() {
        for b in &parts[i + 1..] {
            assert!(
                classes(a).iter().all(|c| !classes(b).contains(c)),
                "parts share a class"
            );
        }
    }
    // The same command seals the same share: separate pods agree.
    seal(
        &key,
        &tmp.path().join("again"),
        &["--part", "1", "--of", "3"],
    );
    assert_eq!(
        open(&tmp.path().join("again"), &key),
        open(&tmp.path().join("part-1"), &key)
    );
}

#[test]
fn bad_seal_input_gets_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let key = key_file(&tmp.path().join("secret"), 7);
    let out = tmp.path().join("vault");
    let (k, o) = (key.to_str().unwrap(), out.to_str().unwrap());
    let fails = |args: &[&str], words: &str| {
        let r = run(args);
        assert!(!r.status.success(), "{args:?} succeeded");
        let e = stderr(&r);
        assert!(e.contains(words), "{args:?}: expected `{words}` in:\n{e}");
    };
    let missing = tmp.path().join("nowhere/vault.key");
    let m = missing.to_str().unwrap();
    fails(
        &[
            "vault",
            "seal",
            "--dataset",
            "digits",
            "--part",
            "0",
            "--of",
            "2",
            "--key-file",
            m,
            "--out",
            o,
        ],
        &format!("--key-file: vault key file `{m}`"),
    );
    fails(
        &[
            "vault",
            "seal",
            "--dataset",
            "mnist",
            "--part",
            "0",
            "--of",
            "2",
            "--key-file",
            k,
            "--out",
            o,
        ],
        "invalid value 'mnist' for '--dataset <DATASET>'",
    );
    fails(
        &[
            "vault",
            "seal",
            "--dataset",
            "digits",
            "--part",
            "3",
            "--of",
            "3",
            "--key-file",
            k,
            "--out",
            o,
        ],
        "--part 3 is out of range: the 3 parts of --of 3 are numbered 0 to 2",
    );
    fails(
        &[
            "vault",
            "seal",
            "--dataset",
            "digits",
            "--part",
            "0",
            "--of",
            "0",
            "--key-file",
            k,
            "--out",
            o,
        ],
        "--of must be at least 1",
    );
    fails(
        &[
            "vault",
            "seal",
            "--dataset",
            "digits",
            "--key-file",
            k,
            "--out",
            o,
        ],
        "--split train needs --part I and --of N",
    );
    fails(
        &[
            "vault",
            "seal",
            "--dataset",
            "digits",
            "--split",
            "test",
            "--part",
            "0",
            "--of",
            "2",
            "--key-file",
            k,
            "--out",
            o,
        ],
        "--part and --of apply to --split train, not test",
    );
    fails(
        &[
            "vault",
            "seal",
            "--dataset",
            "csv",
            "--part",
            "0",
            "--of",
            "1",
            "--key-file",
            k,
            "--out",
            o,
        ],
        "--dataset csv needs --csv-file PATH",
    );
    let bad_key = tmp.path().join("bad.key");
    std::fs::write(&bad_key, "not hex").unwrap();
    fails(
        &[
            "vault",
            "seal",
            "--dataset",
            "digits",
            "--part",
            "0",
            "--of",
            "2",
            "--key-file",
            bad_key.to_str().unwrap(),
            "--out",
            o,
        ],
        "expected 64 hex digits",
    );
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("something"), "x").unwrap();
    fails(
        &[
            "vault",
            "seal",
            "--dataset",
            "digits",
            "--part",
            "0",
            "--of",
            "2",
            "--key-file",
            k,
            "--out",
            o,
        ],
        "exists and is not empty",
    );
    assert!(!tmp.path().join("vault/vault.meta").exists());
}

#[test]
fn roles_refuse_incomplete_mounts() {
    let tmp = tempfile::tempdir().unwrap();
    let secrets = tmp.path().join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("identity.key"), "00").unwrap();
    let config = tmp.path().join("config.json");
    std::fs::write(&config, "{}").unwrap();
    let party = tmp.path().join("party");
    let r = run(&[
        "participant",
        "--dir",
        party.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--secrets",
        secrets.to_str().unwrap(),
    ]);
    assert!(!r.status.success());
    let e = stderr(&r);
    assert!(
        e.contains("lacks identity.pub, ca.crt, tls.crt, tls.key"),
        "{e}"
    );
    let r = run(&[
        "aggregator",
        "--dir",
        party.to_str().unwrap(),
        "--config",
        tmp.path().join("missing.json").to_str().unwrap(),
    ]);
    assert!(
        stderr(&r).contains("missing.json is not a file"),
        "{}",
        stderr(&r)
    );
}

/// A party's Secret as the operator mounts it: flat, read-only.
fn secret_dir(dir: &Path, ca: &FederationCa, name: &str, vault_key: Option<u8>) -> PublicIdentity {
    std::fs::create_dir_all(dir).unwrap();
    let identity = Identity::generate(name).unwrap();
    identity.save(dir).unwrap();
    let tls = ca
        .issue(name, &["localhost"], &[IpAddr::V4(Ipv4Addr::LOCALHOST)])
        .unwrap();
    tls.save(dir).unwrap();
    if let Some(byte) = vault_key {
        key_file(dir, byte);
    }
    for entry in std::fs::read_dir(dir).unwrap() {
        read_only(&entry.unwrap().path());
    }
    identity.public()
}

fn write_read_only_json<T: serde::Serialize>(path: &Path, value: &T) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_string_pretty(value).unwrap()).unwrap();
    read_only(path);
}

fn spawn(args: &[&str], log: &Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    modelpub()
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn wait(child: &mut Child, limit: Duration, what: &str, log: &Path) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            assert!(status.success(), "{what} failed ({status}):\n{text}");
            return;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!(
                "{what} did not finish in {limit:?}:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Lists every file under `dir` with its bytes, to show a mount was not
/// written to.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_federation_runs_from_read_only_mounts() {
    let tmp = tempfile::tempdir().unwrap();
    let mounts = tmp.path().join("mounts");
    let ca = FederationCa::generate("pod-mode").unwrap();
    let aggregator_id = secret_dir(
        &mounts.join("aggregator/secrets"),
        &ca,
        "aggregator",
        Some(9),
    );
    let mut roster = Vec::new();
    for (i, name) in ["hospital-a", "hospital-b"].iter().enumerate() {
        roster.push(secret_dir(
            &mounts.join(format!("{name}/secrets")),
            &ca,
            name,
            None,
        ));
        let key = key_file(&mounts.join(format!("{name}/vault-key")), i as u8 + 1);
        // The init container: seal this party's share into its party dir.
        let p = i.to_string();
        seal(
            &key,
            &tmp.path().join(format!("{name}/vault")),
            &["--partition", "iid", "--part", &p, "--of", "2"],
        );
    }
    let agg_party = tmp.path().join("aggregator");
    let agg_key = mounts.join("aggregator/secrets/vault.key");
    seal(
        &agg_key,
        &agg_party.join("evaluation"),
        &["--split", "test"],
    );

    let mut training = TrainingSettings::defaults_for(DataShape::DIGITS, 42);
    training.max_batches_per_epoch = 5;
    let config = AggregatorConfig {
        federation: "pod-mode".into(),
        listen: "127.0.0.1:0".into(),
        address_file: agg_party.join("address"),
        rounds_file: agg_party.join("rounds.jsonl"),
        roster: roster.clone(),
        min_participants: 2,
        rounds: 1,
        round_timeout_secs: 60,
        join_timeout_secs: 60,
        rejoin_grace_secs: 0,
        keepalive_secs: modelpub_agent_config::DEFAULT_KEEPALIVE_SECS,
        strategy: StrategyConfig::FedAvg,
        training,
        model: ModelConfig::default_for(DataShape::DIGITS),
        model_seed: 42,
        evaluation: Some(VaultRef {
            dir: agg_party.join("evaluation"),
            key_file: agg_key.clone(),
        }),
        secure_aggregation: None,
        privacy: None,
        compression: "none".into(),
        metrics_listen: None,
        linger_after_run: false,
        peer_client_cas: Vec::new(),
    };
    write_read_only_json(&mounts.join("aggregator/config/config.json"), &config);
    let before = snapshot(&mounts);

    let agg_log = tmp.path().join("aggregator.log");
    let mut aggregator = spawn(
        &[
            "aggregator",
            "--dir",
            agg_party.to_str().unwrap(),
            "--config",
            mounts
                .join("aggregator/config/config.json")
                .to_str()
                .unwrap(),
            "--secrets",
            mounts.join("aggregator/secrets").to_str().unwrap(),
        ],
        &agg_log,
    );
    let started = Instant::now();
    let address = loop {
        if let Ok(a) = std::fs::read_to_string(agg_party.join("address"))
            && !a.trim().is_empty()
        {
            break a.trim().to_string();
        }
        if let Some(status) = aggregator.try_wait().unwrap() {
            panic!(
                "aggregator exited ({status}):\n{}",
                std::fs::read_to_string(&agg_log).unwrap()
            );
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no address");
        std::thread::sleep(Duration::from_millis(100));
    };

    let mut participants = Vec::new();
    for name in ["hospital-a", "hospital-b"] {
        let party = tmp.path().join(name);
        let config = ParticipantConfig {
            federation: "pod-mode".into(),
            aggregator_url: format!("https://{address}"),
            aggregator_server_name: "localhost".into(),
            aggregator_ca: None,
            aggregator_identity: aggregator_id.clone(),
            vault: VaultRef {
                dir: party.join("vault"),
                key_file: mounts.join(format!("{name}/vault-key/vault.key")),
            },
            connect_timeout_secs: 30,
            prefer_cuda: false,
            roster: roster.clone(),
            faults: Vec::new(),
            metrics_listen: None,
        };
        let config_path = mounts.join(format!("{name}/config/config.json"));
        write_read_only_json(&config_path, &config);
        let log = tmp.path().join(format!("{name}.log"));
        let child = spawn(
            &[
                "participant",
                "--dir",
                party.to_str().unwrap(),
                "--config",
                config_path.to_str().unwrap(),
                "--secrets",
                mounts.join(format!("{name}/secrets")).to_str().unwrap(),
            ],
            &log,
        );
        participants.push((name, child, log));
    }
    for (name, child, log) in &mut participants {
        wait(child, Duration::from_secs(180), name, log);
    }
    wait(
        &mut aggregator,
        Duration::from_secs(60),
        "aggregator",
        &agg_log,
    );

    let rounds = std::fs::read_to_string(agg_party.join("rounds.jsonl")).unwrap();
    let record: serde_json::Value = serde_json::from_str(rounds.lines().next().unwrap()).unwrap();
    assert_eq!(record["round"], 1);
    assert_eq!(record["succeeded"], true, "{record}");
    assert!(record["accuracy"].as_f64().unwrap() > 0.0, "{record}");
    // Each role copied its identity into its writable party dir and kept
    // its audit log there; the mounts are untouched.
    for party in [agg_party.clone(), tmp.path().join("hospital-a")] {
        assert!(party.join("identity.pub").is_file());
        assert!(party.join("tls/tls.key").is_file());
        assert!(party.join("audit.log").is_file());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(party.join("identity.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "identity.key copy is owner-only");
        }
    }
    let mut after = snapshot(&mounts);
    after.retain(|(p, _)| {
        !p.ends_with("hospital-a/config/config.json")
            && !p.ends_with("hospital-b/config/config.json")
    });
    let mut before = before;
    before.retain(|(p, _)| {
        !p.ends_with("hospital-a/config/config.json")
            && !p.ends_with("hospital-b/config/config.json")
    });
    assert_eq!(before, after, "the read-only mounts changed");
}
