//! Every example in deploy/examples/ is accepted by the generated CRD
//! schemas, and every example in deploy/examples/invalid/ is rejected with
//! an error naming the field its `# expect:` header gives (and containing
//! its `# message:` text). An invalid file with two YAML documents is an
//! update: the first document is created, the second must be refused.

use std::path::{Path, PathBuf};

use modelpub_crds::validation::{CrdValidator, InvalidObject};
use modelpub_crds::{ComputeOffer, FederationRound, TrustDomain};
use serde_json::Value;

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn documents(path: &Path) -> (String, Vec<Value>) {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
    (text, docs)
}

fn validator_for(doc: &Value, path: &Path) -> CrdValidator {
    let kind = doc
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{}: no kind", path.display()));
    CrdValidator::for_kind(kind).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The value of a `# key: value` header line.
fn header(text: &str, key: &str) -> Option<String> {
    text.lines()
        .take_while(|l| l.starts_with('#'))
        .find_map(|l| {
            l.strip_prefix(&format!("# {key}:"))
                .map(|v| v.trim().to_string())
        })
}

#[test]
fn every_valid_example_is_accepted_and_reads_as_its_rust_type() {
    // The top level and each walk-through's folder (`invalid/` aside).
    let mut files = yaml_files(&examples_dir());
    files.extend(yaml_files(&examples_dir().join("two-clusters")));
    let kinds: Vec<String> = files
        .iter()
        .flat_map(|f| documents(f).1)
        .filter_map(|d| d.get("kind").and_then(Value::as_str).map(str::to_string))
        .collect();
    for kind in ["TrustDomain", "ComputeOffer", "FederationRound"] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "deploy/examples has no {kind}"
        );
    }
    for file in files {
        for doc in documents(&file).1 {
            let validator = validator_for(&doc, &file);
            let stored = validator
                .admit(doc, None)
                .unwrap_or_else(|e| panic!("{} is rejected: {e}", file.display()));
            // Re-applying the same object is an update that changes nothing.
            validator
                .admit(stored.clone(), Some(&stored))
                .unwrap_or_else(|e| {
                    panic!("{} is rejected as its own update: {e}", file.display())
                });
            let typed = match validator.kind() {
                "TrustDomain" => serde_json::from_value::<TrustDomain>(stored).map(|_| ()),
                "ComputeOffer" => serde_json::from_value::<ComputeOffer>(stored).map(|_| ()),
                "FederationRound" => serde_json::from_value::<FederationRound>(stored).map(|_| ()),
                other => panic!("unexpected kind {other}"),
            };
            typed.unwrap_or_else(|e| {
                panic!("{} does not read as its Rust type: {e}", file.display())
            });
        }
    }
}

#[test]
fn every_invalid_example_is_rejected_naming_its_field() {
    let files = yaml_files(&examples_dir().join("invalid"));
    assert!(files.len() >= 10, "only {} invalid examples", files.len());
    let mut updates = 0;
    for file in &files {
        let name = file.display();
        let (text, docs) = documents(file);
        let expect =
            header(&text, "expect").unwrap_or_else(|| panic!("{name}: no `# expect:` header"));
        let message =
            header(&text, "message").unwrap_or_else(|| panic!("{name}: no `# message:` header"));
        let validator = validator_for(&docs[0], file);
        let error: InvalidObject = match docs.as_slice() {
            [object] => validator
                .admit(object.clone(), None)
                .err()
                .unwrap_or_else(|| panic!("{name} was accepted")),
            [old, new] => {
                updates += 1;
                let old = validator
                    .admit(old.clone(), None)
                    .unwrap_or_else(|e| panic!("{name}: the original object is rejected: {e}"));
                // The new object is fine on its own: only the change is wrong.
                validator.admit(new.clone(), None).unwrap_or_else(|e| {
                    panic!("{name}: the updated object is invalid even as a create: {e}")
                });
                validator
                    .admit(new.clone(), Some(&old))
                    .err()
                    .unwrap_or_else(|| panic!("{name}: the update was accepted"))
            }
            other => panic!("{name}: expected 1 or 2 documents, found {}", other.len()),
        };
        let at_field: Vec<String> = error
            .errors
            .iter()
            .filter(|e| e.path == expect)
            .map(ToString::to_string)
            .collect();
        assert!(
            !at_field.is_empty(),
            "{name}: no error at {expect}; got: {error}"
        );
        assert!(
            at_field.iter().any(|e| e.contains(&message)),
            "{name}: the error at {expect} does not say `{message}`: {at_field:?}"
        );
        assert!(
            error.to_string().contains(&expect),
            "{name}: message does not name {expect}: {error}"
        );
    }
    assert!(updates >= 3, "only {updates} immutable-field examples");
}

/// The schema's defaults and the Rust types' serde defaults must agree:
/// a minimal object defaulted by the validator equals the same object read
/// into the Rust type and written back.
#[test]
fn schema_defaults_match_rust_defaults() {
    let minimal = r#"
apiVersion: modelpub.io/v1alpha1
kind: FederationRound
metadata: {name: minimal}
spec:
  trustDomain: td
  model: {architecture: mlp, licence: MIT}
  data:
    dataset: digits
    dataClass: public
    vaults: [{name: a, keySecretRef: {name: s}}]
"#;
    let object: Value = serde_saphyr::from_str(minimal).expect("YAML");
    let validator = CrdValidator::for_kind("FederationRound").expect("validator");
    let defaulted = validator
        .admit(object.clone(), None)
        .expect("minimal object is valid");
    let typed: FederationRound = serde_json::from_value(object).expect("reads as FederationRound");
    let written = serde_json::to_value(&typed).expect("writes");
    assert_eq!(defaulted["spec"], written["spec"]);
    assert_eq!(defaulted["spec"]["rounds"], 10);
    assert_eq!(defaulted["spec"]["secureAggregation"]["enabled"], true);
    assert_eq!(defaulted["spec"]["compression"], "none");
    assert_eq!(
        defaulted["spec"]["data"]["vaults"][0]["keySecretRef"]["key"],
        "vault.key"
    );

    for (kind, yaml) in [
        (
            "TrustDomain",
            "apiVersion: modelpub.io/v1alpha1\nkind: TrustDomain\nmetadata: {name: t}\nspec:\n  self: {name: a, endpoint: 'https://a.example'}\n",
        ),
        (
            "ComputeOffer",
            "apiVersion: modelpub.io/v1alpha1\nkind: ComputeOffer\nmetadata: {name: c}\nspec:\n  trustDomain: t\n  schedule:\n    windows: [{days: [Monday], start: '08:00', end: '17:00'}]\n",
        ),
    ] {
        let object: Value = serde_saphyr::from_str(yaml).expect("YAML");
        let defaulted = CrdValidator::for_kind(kind)
            .expect("validator")
            .admit(object.clone(), None)
            .expect("valid");
        let written = match kind {
            "TrustDomain" => {
                serde_json::to_value(serde_json::from_value::<TrustDomain>(object).expect("typed"))
            }
            _ => {
                serde_json::to_value(serde_json::from_value::<ComputeOffer>(object).expect("typed"))
            }
        }
        .expect("writes");
        assert_eq!(defaulted["spec"], written["spec"], "{kind} defaults differ");
    }
}

#[test]
fn envelope_mistakes_are_named() {
    let validator = CrdValidator::for_kind("ComputeOffer").expect("validator");
    let object: Value = serde_saphyr::from_str(
        "apiVersion: modelpub.io/v1\nkind: ComputeOffer\nspec: {trustDomain: t}\n",
    )
    .expect("YAML");
    let error = validator.admit(object, None).expect_err("wrong version");
    assert!(error.mentions("apiVersion"), "{error}");
    let object: Value = serde_saphyr::from_str("apiVersion: modelpub.io/v1alpha1\nkind: ComputeOffer\nmetadata: {}\nspec: {trustDomain: t}\n").expect("YAML");
    let error = validator.validate(&object, None).expect_err("no name");
    assert!(error.mentions("metadata.name"), "{error}");
    assert!(CrdValidator::for_kind("Pod").is_err());
}

#[test]
fn the_validator_can_be_shared_across_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<CrdValidator>();
}

/// A status the operator writes through the Rust types is valid, and the
/// condition schema refuses what metav1.Condition forbids.
#[test]
fn operator_written_status_is_valid_and_conditions_are_checked() {
    use k8s_openapi::jiff::Timestamp;
    use modelpub_crds::condition::{self, Time};
    use modelpub_crds::federation_round::{FederationRoundStatus, RoundOutcome, RoundStatus};

    let path = examples_dir().join("federation-round.yaml");
    let (_, docs) = documents(&path);
    let validator = CrdValidator::for_kind("FederationRound").expect("validator");
    let stored = validator
        .admit(docs[0].clone(), None)
        .expect("example is valid");
    let mut round: FederationRound = serde_json::from_value(stored.clone()).expect("typed");
    let now = Time(Timestamp::from_second(1_790_000_000).expect("timestamp"));
    let mut conditions = Vec::new();
    condition::upsert(
        &mut conditions,
        condition::new_condition(
            condition::PROGRESSING,
            true,
            "RoundRunning",
            "round 2",
            Some(1),
            now.clone(),
        ),
    );
    round.status = Some(FederationRoundStatus {
        phase: modelpub_crds::Phase::Running,
        current_round: 1,
        total_rounds: 10,
        round_label: Some(FederationRoundStatus::round_label(1, 10)),
        accuracy: Some(0.71),
        rounds: vec![RoundStatus {
            round: 1,
            outcome: RoundOutcome::Completed,
            accuracy: Some(0.71),
            loss: Some(0.93),
            participants: 3,
            dropped: 0,
            update_bytes: 53_504,
            epsilon_spent: Some(0.8),
            duration_seconds: Some(4.1),
            reason: None,
        }],
        start_time: Some(now),
        conditions,
        observed_generation: Some(1),
        ..FederationRoundStatus::default()
    });
    let with_status = serde_json::to_value(&round).expect("serializes");
    validator
        .validate(&with_status, Some(&stored))
        .unwrap_or_else(|e| panic!("operator-written status is rejected: {e}"));

    let mut bad = with_status.clone();
    bad["status"]["conditions"][0]["status"] = Value::from("Maybe");
    bad["status"]["conditions"][0]["reason"] = Value::from("not camel case");
    let error = validator
        .validate(&bad, Some(&stored))
        .expect_err("bad condition");
    assert!(error.mentions("status.conditions[0].status"), "{error}");
    assert!(error.mentions("status.conditions[0].reason"), "{error}");
}
