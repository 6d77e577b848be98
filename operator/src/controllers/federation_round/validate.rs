//! Checks a FederationRound against itself and its TrustDomain before
//! anything is built. Every problem names its field, e.g.
//! `spec.participants.min: 4 exceeds the 3 vaults in spec.data.vaults`,
//! and all of them are reported at once.

use std::collections::BTreeMap;

use kube::ResourceExt;
use modelpub_agent_config::names::{DNS_LABEL_MAX as LABEL_MAX, is_dns_label};
use modelpub_crds::condition::{self, READY};
use modelpub_crds::{FederationRound, TrustDomain};

use super::build::{config, names};
use crate::error::{Error, FieldError, SpecErrors};

/// The dereference step: the round's TrustDomain must exist and have
/// issued its identity (its CA issues the parties' certificates), whether
/// or not its remote members answer probes. Not a spec error: the round
/// waits, retried with backoff.
pub fn trust_domain_ready<'a>(
    fr: &FederationRound,
    td: Option<&'a TrustDomain>,
) -> Result<&'a TrustDomain, Error> {
    let ns = fr.namespace().unwrap_or_default();
    let name = &fr.spec.trust_domain;
    let td = td.ok_or_else(|| {
        Error::MissingReference(format!(
            "spec.trustDomain: TrustDomain {ns}/{name} does not exist"
        ))
    })?;
    let conditions = td
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or(&[]);
    // What a round needs is the domain's identity and CA: members that do
    // not answer (yet) are no reason to hold a round whose parties are all
    // in this cluster (rounds naming remote members are refused below).
    let issued = td
        .status
        .as_ref()
        .is_some_and(|s| s.identity_fingerprint.is_some());
    if !issued && !condition::is_true(conditions, READY) {
        let why = condition::find(conditions, READY)
            .map(|c| format!(": {}", c.message))
            .unwrap_or_default();
        return Err(Error::MissingReference(format!(
            "spec.trustDomain: TrustDomain {ns}/{name} is not Ready yet{why}"
        )));
    }
    Ok(td)
}

/// Checks the round's spec and its fit with the TrustDomain's policy.
pub fn validate(fr: &FederationRound, td: &TrustDomain) -> Result<(), SpecErrors> {
    let mut errors = Vec::new();
    let mut err = |field: String, message: String| errors.push(FieldError::new(field, message));
    let spec = &fr.spec;
    let name = fr.name_any();
    let vaults = &spec.data.vaults;

    // The aggregator's Service is `<name>-aggregator`: a DNS-1035 label.
    let service = names::aggregator(&name);
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) || service.len() > LABEL_MAX {
        err(
            "metadata.name".into(),
            format!(
                "`{name}` must start with a letter and be at most {} characters, so the \
                 Service `{service}` is a valid DNS label",
                LABEL_MAX - "-aggregator".len()
            ),
        );
    }

    if vaults.is_empty() {
        err("spec.data.vaults".into(), "needs at least one vault".into());
    }

    // The key stages run inside the round's time: waiting on a dead
    // participant's keys for the whole round leaves no time for updates,
    // so every round after a dropout would fail.
    let secure = &spec.secure_aggregation;
    let round_timeout = spec.participants.round_timeout_seconds;
    if secure.enabled && secure.stage_timeout_seconds >= round_timeout {
        err(
            "spec.secureAggregation.stageTimeoutSeconds".into(),
            format!(
                "{} must be less than spec.participants.roundTimeoutSeconds ({round_timeout}): \
                 the key stages wait for stragglers inside the round's time",
                secure.stage_timeout_seconds
            ),
        );
    }
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, v) in vaults.iter().enumerate() {
        let field = format!("spec.data.vaults[{i}].name");
        if !is_dns_label(&v.name) {
            err(
                field.clone(),
                format!(
                    "`{}` is not a DNS-1123 label (lower-case letters, digits and '-')",
                    v.name
                ),
            );
        }
        if let Some(first) = seen.insert(&v.name, i) {
            err(
                field.clone(),
                format!(
                    "`{}` is used by spec.data.vaults[{first}] too; names must be unique",
                    v.name
                ),
            );
        }
        if v.name == service {
            err(
                field.clone(),
                format!("`{}` is the aggregator's identity name", v.name),
            );
        }
        let job = names::agent(&name, &v.name);
        if job.len() > LABEL_MAX {
            err(
                field.clone(),
                format!("makes the Job name `{job}` longer than {LABEL_MAX} characters"),
            );
        }
        if let Some(member) = &v.member
            && member != &td.spec.self_.name
            && !td.spec.members.iter().any(|m| &m.name == member)
        {
            err(
                format!("spec.data.vaults[{i}].member"),
                format!(
                    "`{member}` is not a member of TrustDomain {}",
                    td.name_any()
                ),
            );
        }
    }
    let here = &td.spec.self_.name;
    let spans = spec.coordinator.as_ref().is_some_and(|c| c != here)
        || spec
            .data
            .vaults
            .iter()
            .any(|v| v.member.as_ref().is_some_and(|m| m != here));
    if spans {
        // Absent means "this cluster" wherever the round is applied: in a
        // round across clusters that would run the vault twice.
        for (i, v) in spec.data.vaults.iter().enumerate() {
            if v.member.is_none() {
                err(
                    format!("spec.data.vaults[{i}].member"),
                    format!(
                        "required in a round across clusters: name the member holding `{}` (`{here}` for this cluster)",
                        v.name
                    ),
                );
            }
        }
    }
    if let Some(c) = spec.coordinator.as_ref().filter(|c| *c != here) {
        if !td.spec.members.iter().any(|m| &m.name == c) {
            err(
                "spec.coordinator".into(),
                format!("`{c}` is not a member of TrustDomain {}", td.name_any()),
            );
        }
        if !spec
            .data
            .vaults
            .iter()
            .any(|v| v.member.as_ref().is_none_or(|m| m == here))
        {
            err(
                "spec.data.vaults".into(),
                format!(
                    "no vault is held by this cluster ({here}): a round coordinated by `{c}` \
                     runs here only the participants of this cluster's vaults"
                ),
            );
        }
    }

    let p = &spec.participants;
    if p.min as usize > vaults.len() {
        err(
            "spec.participants.min".into(),
            format!(
                "{} exceeds the {} vaults in spec.data.vaults",
                p.min,
                vaults.len()
            ),
        );
    }
    if p.fraction < 1.0 {
        err(
            "spec.participants.fraction".into(),
            format!(
                "{} is not supported yet: the node-agent asks every vault to train every round; use 1",
                p.fraction
            ),
        );
    }

    let sa = &spec.secure_aggregation;
    if sa.enabled {
        if vaults.len() < 2 {
            err(
                "spec.secureAggregation.enabled".into(),
                "secure aggregation needs at least 2 vaults: the sum of one update is the update"
                    .into(),
            );
        }
        if spec.compression != modelpub_crds::federation_round::Compression::None {
            err(
                "spec.compression".into(),
                format!(
                    "{} applies to plain updates; masked updates cannot be quantised (set \
                     secureAggregation.enabled: false or compression: none)",
                    spec.compression.name()
                ),
            );
        }
        if let Some(t) = sa.threshold {
            if t as usize > vaults.len() {
                err(
                    "spec.secureAggregation.threshold".into(),
                    format!(
                        "{t} exceeds the {} vaults in spec.data.vaults",
                        vaults.len()
                    ),
                );
            }
            if let Some(k) = sa.neighbours
                && t > k
            {
                err(
                    "spec.secureAggregation.threshold".into(),
                    format!("{t} exceeds spec.secureAggregation.neighbours ({k})"),
                );
            }
        }
        // Without explicit neighbours the aggregator derives k and t for
        // the full roster; refuse here what it would refuse at round one.
        if sa.neighbours.is_none() && vaults.len() >= 2 {
            use modelpub_protocol::secagg::{SecAggError, neighbourhood};
            // The tolerance exactly as the aggregator will read it.
            let tolerance =
                config::secure(spec).map_or(neighbourhood::Tolerance::DEFAULT, |s| s.tolerance());
            match neighbourhood::choose(vaults.len(), tolerance) {
                Ok(_) => {}
                Err(SecAggError::InvalidParams(why)) => {
                    err("spec.secureAggregation.toleratedDropout".into(), why)
                }
                Err(other) => err(
                    "spec.secureAggregation.toleratedDropout".into(),
                    other.to_string(),
                ),
            }
        }
    }

    // Model, data set and DP settings must render into node-agent configs.
    for e in [
        config::model(spec).err(),
        config::training(spec).err(),
        config::privacy(spec).err(),
    ]
    .into_iter()
    .flatten()
    {
        if let Error::InvalidSpec(SpecErrors(list)) = e {
            for f in list {
                err(f.field, f.message);
            }
        }
    }

    // The trust domain's policy.
    let policy = &td.spec.policy;
    if !policy.allowed_model_licences.is_empty()
        && !policy.allowed_model_licences.contains(&spec.model.licence)
    {
        err(
            "spec.model.licence".into(),
            format!(
                "`{}` is not among TrustDomain {}'s policy.allowedModelLicences ({})",
                spec.model.licence,
                td.name_any(),
                policy.allowed_model_licences.join(", ")
            ),
        );
    }
    let class = &spec.data.data_class;
    match policy.data_classes.iter().find(|r| &r.name == class) {
        None if !policy.data_classes.is_empty() => err(
            "spec.data.dataClass".into(),
            format!(
                "`{class}` is not in TrustDomain {}'s policy.dataClasses",
                td.name_any()
            ),
        ),
        None => {}
        Some(rule) => {
            if !rule.federated_training {
                err(
                    "spec.data.dataClass".into(),
                    format!("the policy for `{class}` does not allow federated training"),
                );
            }
            if rule.require_secure_aggregation && !sa.enabled {
                err(
                    "spec.secureAggregation.enabled".into(),
                    format!("the policy for `{class}` requires secure aggregation"),
                );
            }
            if let Some(max) = rule.max_epsilon {
                let dp = &spec.differential_privacy;
                match dp.epsilon.filter(|_| dp.enabled) {
                    Some(e) if e <= max => {}
                    Some(e) => err(
                        "spec.differentialPrivacy.epsilon".into(),
                        format!("{e} exceeds the policy's maxEpsilon {max} for `{class}`"),
                    ),
                    None => err(
                        "spec.differentialPrivacy.enabled".into(),
                        format!(
                            "the policy for `{class}` caps epsilon at {max}: enable differential \
                             privacy with an epsilon within it"
                        ),
                    ),
                }
            }
        }
    }

    SpecErrors::check(errors)
}

/// The annotation that records consent to train on this cluster's data.
pub const CONSENT_ANNOTATION: &str = "modelpub.io/consent";

/// Why the round must wait for consent, or `None` when it may run: the
/// trust domain's `policy.consentRequired` and no
/// `modelpub.io/consent: granted` annotation on the round.
pub fn awaiting_consent(fr: &FederationRound, td: &TrustDomain) -> Option<String> {
    if !td.spec.policy.consent_required {
        return None;
    }
    let granted = fr
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CONSENT_ANNOTATION))
        .is_some_and(|v| v == "granted");
    (!granted).then(|| {
        format!(
            "TrustDomain {} requires consent before training on this cluster's data: \
             kubectl annotate federationround {} {CONSENT_ANNOTATION}=granted",
            td.name_any(),
            fr.name_any()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::super::build::fixtures::round_fixture;
    use super::*;
    use modelpub_crds::condition::new_condition;

    fn trust_domain(ready: bool) -> TrustDomain {
        let mut td: TrustDomain = serde_json::from_value(serde_json::json!({
            "apiVersion": "modelpub.io/v1alpha1",
            "kind": "TrustDomain",
            "metadata": {"name": "hospitals", "namespace": "lab"},
            "spec": {
                "self": {"name": "hospital-hq", "endpoint": "hq.example:7443"},
                "members": [{"name": "clinic", "endpoint": "clinic.example:7443"}],
                "policy": {
                    "allowedModelLicences": ["Apache-2.0"],
                    "dataClasses": [
                        {"name": "research", "federatedTraining": true, "remoteCompute": false},
                        {"name": "sensitive", "federatedTraining": true, "remoteCompute": false,
                         "maxEpsilon": 4.0},
                        {"name": "closed", "federatedTraining": false, "remoteCompute": false}
                    ]
                }
            }
        }))
        .unwrap();
        let now = modelpub_crds::condition::Time(jiff::Timestamp::UNIX_EPOCH);
        td.status = Some(Default::default());
        if let Some(s) = td.status.as_mut() {
            s.conditions.push(new_condition(
                READY,
                ready,
                "Test",
                "CA not issued",
                Some(1),
                now,
            ));
        }
        td
    }

    fn messages(fr: &FederationRound) -> Vec<String> {
        match validate(fr, &trust_domain(true)) {
            Ok(()) => Vec::new(),
            Err(SpecErrors(list)) => list.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn the_fixture_is_valid() {
        assert_eq!(messages(&round_fixture()), Vec::<String>::new());
    }

    #[test]
    fn the_trust_domain_must_exist_and_be_ready() {
        let fr = round_fixture();
        let err = trust_domain_ready(&fr, None).unwrap_err().to_string();
        assert_eq!(
            err,
            "spec.trustDomain: TrustDomain lab/hospitals does not exist"
        );
        let td = trust_domain(false);
        let err = trust_domain_ready(&fr, Some(&td)).unwrap_err().to_string();
        assert!(err.contains("is not Ready yet: CA not issued"), "{err}");
        // Issued, but members unreachable (the example's hospitals on a
        // test cluster): a round of this cluster's vaults may run.
        let mut td = trust_domain(false);
        td.status
            .get_or_insert_with(Default::default)
            .identity_fingerprint = Some("SHA256:ab".into());
        assert!(trust_domain_ready(&fr, Some(&td)).is_ok());
        let td = trust_domain(true);
        assert!(trust_domain_ready(&fr, Some(&td)).is_ok());
    }

    #[test]
    fn key_stages_must_fit_in_the_round() {
        let mut fr = round_fixture();
        fr.spec.participants.round_timeout_seconds = 20;
        fr.spec.secure_aggregation.stage_timeout_seconds = 60;
        assert_eq!(
            messages(&fr),
            [
                "spec.secureAggregation.stageTimeoutSeconds: 60 must be less than \
              spec.participants.roundTimeoutSeconds (20): the key stages wait for stragglers \
              inside the round's time"
            ]
        );
        fr.spec.secure_aggregation.stage_timeout_seconds = 5;
        assert_eq!(messages(&fr), Vec::<String>::new());
    }

    #[test]
    fn min_participants_cannot_exceed_the_vaults() {
        let mut fr = round_fixture();
        fr.spec.participants.min = 4;
        assert_eq!(
            messages(&fr),
            ["spec.participants.min: 4 exceeds the 3 vaults in spec.data.vaults"]
        );
    }

    #[test]
    fn vault_names_are_unique_dns_labels() {
        let mut fr = round_fixture();
        fr.spec.data.vaults[1].name = "hospital-a".into();
        fr.spec.data.vaults[2].name = "Hospital_C".into();
        let m = messages(&fr);
        assert!(
            m.contains(&"spec.data.vaults[1].name: `hospital-a` is used by spec.data.vaults[0] too; names must be unique".to_string()),
            "{m:?}"
        );
        assert!(
            m.iter()
                .any(|e| e
                    .starts_with("spec.data.vaults[2].name: `Hospital_C` is not a DNS-1123 label")),
            "{m:?}"
        );
        let mut fr = round_fixture();
        fr.spec.data.vaults[0].name = "v".repeat(60);
        let m = messages(&fr);
        assert!(m[0].contains("longer than 63 characters"), "{m:?}");
        let mut fr = round_fixture();
        fr.metadata.name = Some("1run".into());
        assert!(messages(&fr)[0].starts_with("metadata.name: `1run` must start with a letter"));
    }

    #[test]
    fn secure_aggregation_and_dp_must_be_coherent() {
        let mut fr = round_fixture();
        fr.spec.compression = modelpub_crds::federation_round::Compression::Int8;
        fr.spec.secure_aggregation.threshold = Some(5);
        fr.spec.secure_aggregation.neighbours = Some(2);
        let m = messages(&fr);
        assert!(
            m.iter()
                .any(|e| e.starts_with("spec.compression: int8 applies to plain updates")),
            "{m:?}"
        );
        assert!(
            m.contains(
                &"spec.secureAggregation.threshold: 5 exceeds the 3 vaults in spec.data.vaults"
                    .to_string()
            ),
            "{m:?}"
        );
        assert!(m.contains(&"spec.secureAggregation.threshold: 5 exceeds spec.secureAggregation.neighbours (2)".to_string()), "{m:?}");
        let mut fr = round_fixture();
        fr.spec.secure_aggregation.tolerated_dropout = Some(0.7);
        let m = messages(&fr);
        assert!(
            m.iter().any(|e| e
                .starts_with("spec.secureAggregation.toleratedDropout: no neighbour count")
                && e.contains("70 % dropout")),
            "{m:?}"
        );
        let mut fr = round_fixture();
        fr.spec.differential_privacy.enabled = true;
        let m = messages(&fr);
        assert!(m.contains(&"spec.differentialPrivacy.epsilon: required when differentialPrivacy.enabled is true".to_string()), "{m:?}");
        let mut fr = round_fixture();
        fr.spec.data.vaults.truncate(1);
        fr.spec.participants.min = 1;
        assert!(messages(&fr)[0].starts_with(
            "spec.secureAggregation.enabled: secure aggregation needs at least 2 vaults"
        ));
    }

    #[test]
    fn the_trust_domain_policy_applies() {
        let mut fr = round_fixture();
        fr.spec.model.licence = "GPL-3.0".into();
        fr.spec.data.data_class = "closed".into();
        let m = messages(&fr);
        assert!(
            m[0].starts_with("spec.model.licence: `GPL-3.0` is not among"),
            "{m:?}"
        );
        assert_eq!(
            m[1],
            "spec.data.dataClass: the policy for `closed` does not allow federated training"
        );
        fr.spec.model.licence = "Apache-2.0".into();
        fr.spec.data.data_class = "sensitive".into();
        assert!(messages(&fr)[0].starts_with(
            "spec.differentialPrivacy.enabled: the policy for `sensitive` caps epsilon at 4"
        ));
        fr.spec.differential_privacy.enabled = true;
        fr.spec.differential_privacy.epsilon = Some(8.0);
        assert_eq!(
            messages(&fr),
            [
                "spec.differentialPrivacy.epsilon: 8 exceeds the policy's maxEpsilon 4 for `sensitive`"
            ]
        );
        fr.spec.differential_privacy.epsilon = Some(2.0);
        assert_eq!(messages(&fr), Vec::<String>::new());
        fr.spec.data.data_class = "unknown".into();
        assert!(messages(&fr)[0].starts_with("spec.data.dataClass: `unknown` is not in"));
    }

    #[test]
    fn members_and_coordinators_must_be_known_and_a_participant_holds_a_vault() {
        let mut fr = round_fixture();
        fr.spec.data.vaults[0].member = Some("clinic".into());
        fr.spec.data.vaults[1].member = Some("nobody".into());
        let m = messages(&fr);
        assert_eq!(
            m,
            [
                "spec.data.vaults[1].member: `nobody` is not a member of TrustDomain hospitals",
                "spec.data.vaults[2].member: required in a round across clusters: name the member holding `hospital-c` (`hospital-hq` for this cluster)"
            ]
        );
        fr.spec.data.vaults[2].member = Some("hospital-hq".into());
        fr.spec.data.vaults[1].member = Some("clinic".into());
        fr.spec.coordinator = Some("clinic".into());
        assert!(messages(&fr).is_empty(), "{:?}", messages(&fr));
        fr.spec.data.vaults[2].member = Some("clinic".into());
        let m = messages(&fr);
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(
            m[0].starts_with("spec.data.vaults: no vault is held by this cluster (hospital-hq)"),
            "{m:?}"
        );
        fr.spec.coordinator = Some("elsewhere".into());
        assert!(messages(&fr)[0].starts_with("spec.coordinator: `elsewhere` is not a member"));
    }

    #[test]
    fn unsupported_choices_say_so() {
        let mut fr = round_fixture();
        fr.spec.participants.fraction = 0.5;
        assert!(
            messages(&fr)[0].starts_with("spec.participants.fraction: 0.5 is not supported yet")
        );
    }
}
