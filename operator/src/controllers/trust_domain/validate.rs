//! TrustDomain validation beyond what the CRD schema can say: member names
//! unique and not our own, pins well-formed and consistent (a fingerprint
//! must be the SHA-256 of the public key when both are given), endpoints
//! usable. Pure; every problem names its field.

use std::collections::BTreeSet;

use modelpub_crds::TrustDomainSpec;
use modelpub_protocol::identity::PublicIdentity;

use super::probe::socket_address;
use crate::error::{FieldError, SpecErrors};

pub use modelpub_agent_config::names::is_dns_label;

/// 64 lower-case hex characters.
pub fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

/// `SHA256:` + 64 lower-case hex characters.
pub fn is_fingerprint(s: &str) -> bool {
    s.strip_prefix("SHA256:").is_some_and(is_hex64)
}

/// Checks an Ed25519 public key in hex; `Err` says what is wrong.
pub fn check_public_key(name: &str, hex_key: &str) -> Result<PublicIdentity, String> {
    if !is_hex64(hex_key) {
        return Err("must be 64 lower-case hex characters".into());
    }
    let public = PublicIdentity {
        name: name.to_string(),
        public_key: hex_key.to_string(),
    };
    public
        .verifying_key()
        .map_err(|_| "is not a valid Ed25519 public key".to_string())?;
    Ok(public)
}

/// Checks `spec` of the TrustDomain named `name`. Join tokens are not
/// judged here: a refused token refuses its member only (see `peers`).
pub fn validate(name: &str, spec: &TrustDomainSpec) -> Result<(), SpecErrors> {
    let mut errors = Vec::new();
    match &spec.federation {
        Some(f) if !is_dns_label(f) => errors.push(FieldError::new(
            "spec.federation",
            format!("{f:?} is not a DNS label (a-z, 0-9, '-')"),
        )),
        None if !is_dns_label(name) => errors.push(FieldError::new(
            "spec.federation",
            format!(
                "required: the federation is named after the TrustDomain, and {name:?} is not a DNS label"
            ),
        )),
        _ => {}
    }
    if !is_dns_label(&spec.self_.name) {
        errors.push(FieldError::new(
            "spec.self.name",
            format!("{:?} is not a DNS label (a-z, 0-9, '-')", spec.self_.name),
        ));
    }
    if let Err(e) = socket_address(&spec.self_.endpoint) {
        errors.push(FieldError::new("spec.self.endpoint", e));
    }
    let mut names = BTreeSet::new();
    for (i, m) in spec.members.iter().enumerate() {
        let field = |f: &str| format!("spec.members[{i}].{f}");
        if !is_dns_label(&m.name) {
            errors.push(FieldError::new(
                field("name"),
                format!("{:?} is not a DNS label", m.name),
            ));
        } else if m.name == spec.self_.name {
            errors.push(FieldError::new(
                field("name"),
                format!("{:?} is this cluster's own name (spec.self.name)", m.name),
            ));
        } else if !names.insert(m.name.as_str()) {
            errors.push(FieldError::new(
                field("name"),
                format!("{:?} is listed twice", m.name),
            ));
        }
        match &m.endpoint {
            Some(endpoint) => {
                if let Err(e) = socket_address(endpoint) {
                    errors.push(FieldError::new(field("endpoint"), e));
                }
            }
            None if m.join_token.is_none() => errors.push(FieldError::new(
                field("endpoint"),
                "a member needs an endpoint unless its joinToken gives one",
            )),
            None => {}
        }
        if m.public_key.is_none() && m.fingerprint.is_none() && m.join_token.is_none() {
            errors.push(FieldError::new(
                field("publicKey"),
                "a member needs a joinToken, a publicKey or a fingerprint pin",
            ));
        }
        let public = match &m.public_key {
            Some(k) => match check_public_key(&m.name, k) {
                Ok(p) => Some(p),
                Err(e) => {
                    errors.push(FieldError::new(field("publicKey"), e));
                    None
                }
            },
            None => None,
        };
        if let Some(fp) = &m.fingerprint {
            if !is_fingerprint(fp) {
                errors.push(FieldError::new(
                    field("fingerprint"),
                    "must be SHA256: followed by 64 lower-case hex characters",
                ));
            } else if let Some(public) = &public
                && public.fingerprint() != *fp
            {
                errors.push(FieldError::new(
                    field("fingerprint"),
                    format!(
                        "does not match publicKey (whose fingerprint is {})",
                        public.fingerprint()
                    ),
                ));
            }
        }
        if let Some(bundle) = &m.ca_bundle
            && !bundle.contains("-----BEGIN CERTIFICATE-----")
        {
            errors.push(FieldError::new(
                field("caBundle"),
                "holds no PEM certificate",
            ));
        }
    }
    let mut classes = BTreeSet::new();
    for (i, rule) in spec.policy.data_classes.iter().enumerate() {
        if !classes.insert(rule.name.as_str()) {
            errors.push(FieldError::new(
                format!("spec.policy.dataClasses[{i}].name"),
                format!("{:?} is listed twice", rule.name),
            ));
        }
        if let Some(eps) = rule.max_epsilon
            && !(eps.is_finite() && eps >= 0.0)
        {
            errors.push(FieldError::new(
                format!("spec.policy.dataClasses[{i}].maxEpsilon"),
                "must be a finite number >= 0",
            ));
        }
    }
    SpecErrors::check(errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelpub_crds::trust_domain::{Member, SelfIdentity, TrustPolicy};

    pub(crate) fn spec() -> TrustDomainSpec {
        TrustDomainSpec {
            federation: None,
            self_: SelfIdentity {
                name: "hospital-a".into(),
                endpoint: "https://a.example:7443".into(),
            },
            members: vec![],
            policy: TrustPolicy::default(),
        }
    }

    fn member(name: &str) -> Member {
        let id = modelpub_protocol::identity::Identity::from_secret_bytes(name, [7; 32]).public();
        Member {
            name: name.into(),
            endpoint: Some(format!("https://{name}.example:7443")),
            join_token: None,
            public_key: Some(id.public_key.clone()),
            fingerprint: Some(id.fingerprint()),
            ca_bundle: None,
        }
    }

    fn fields(spec: &TrustDomainSpec) -> Vec<String> {
        match validate("fed", spec) {
            Ok(()) => vec![],
            Err(e) => e.0.into_iter().map(|f| f.field).collect(),
        }
    }

    #[test]
    fn a_sound_spec_passes() {
        let mut s = spec();
        s.members = vec![member("hospital-b"), member("hospital-c")];
        assert_eq!(validate("fed", &s), Ok(()));
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let mut s = spec();
        s.self_.endpoint = "http://a.example".into();
        let mut dup = member("hospital-b");
        dup.fingerprint = Some(format!("SHA256:{}", "0".repeat(64)));
        let mut own = member("hospital-a");
        own.public_key = Some("XYZ".into());
        let mut unpinned = member("hospital-c");
        unpinned.public_key = None;
        unpinned.fingerprint = None;
        unpinned.endpoint = Some("https://c.example:x".into());
        s.members = vec![member("hospital-b"), dup, own, unpinned];
        assert_eq!(
            fields(&s),
            [
                "spec.self.endpoint",
                "spec.members[1].name",
                "spec.members[1].fingerprint",
                "spec.members[2].name",
                "spec.members[2].publicKey",
                "spec.members[3].endpoint",
                "spec.members[3].publicKey",
            ]
        );
        let msg = validate("fed", &s).unwrap_err().to_string();
        assert!(
            msg.contains("spec.members[1].fingerprint: does not match publicKey"),
            "{msg}"
        );
        assert!(msg.contains("own name"), "{msg}");
    }

    #[test]
    fn a_token_stands_in_for_pins_and_endpoint_and_the_federation_needs_a_label() {
        let mut s = spec();
        let mut by_token = member("hospital-b");
        by_token.endpoint = None;
        by_token.public_key = None;
        by_token.fingerprint = None;
        by_token.join_token = Some("mpj2.judged-by-peers-rs".into());
        let mut nothing = by_token.clone();
        nothing.name = "hospital-c".into();
        nothing.join_token = None;
        s.members = vec![by_token, nothing];
        assert_eq!(
            fields(&s),
            ["spec.members[1].endpoint", "spec.members[1].publicKey"]
        );
        s.members.clear();
        assert_eq!(
            validate("fed.example", &s).unwrap_err().0[0].field,
            "spec.federation"
        );
        s.federation = Some("cardio".into());
        assert_eq!(validate("fed.example", &s), Ok(()));
        s.federation = Some("Cardio".into());
        assert_eq!(fields(&s), ["spec.federation"]);
    }

    #[test]
    fn helpers() {
        assert!(
            is_dns_label("a-1") && !is_dns_label("-a") && !is_dns_label("A") && !is_dns_label("")
        );
        assert!(is_fingerprint(&format!("SHA256:{}", "ab".repeat(32))));
        assert!(!is_fingerprint(&format!("sha256:{}", "ab".repeat(32))));
        assert!(
            check_public_key("x", &"AB".repeat(32))
                .unwrap_err()
                .contains("lower-case")
        );
        let good = modelpub_protocol::identity::Identity::from_secret_bytes("x", [1; 32]).public();
        assert_eq!(check_public_key("x", &good.public_key).unwrap(), good);
    }
}
