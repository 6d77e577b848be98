//! The TrustDomain status, built purely from what the reconcile found: the
//! identity and CA in their Secrets, the join token, and each member's
//! probe. Conditions are upserted into the previous status so
//! `lastTransitionTime` only moves when `Ready` flips.

use modelpub_crds::condition::{self, Time};
use modelpub_crds::trust_domain::MemberStatus;
use modelpub_crds::{TrustDomain, TrustDomainStatus};
use modelpub_protocol::identity::PublicIdentity;

use super::join_token::JoinToken;
use super::probe::ProbeOutcome;
use crate::error::SpecErrors;

/// The identity facts the status publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub public: PublicIdentity,
    pub ca_fingerprint: String,
    pub identity_secret_name: String,
}

/// The join token peers paste to add this cluster.
pub fn join_token(td: &TrustDomain, issued: &Issued) -> JoinToken {
    JoinToken {
        name: td.spec.self_.name.clone(),
        endpoint: td.spec.self_.endpoint.clone(),
        public_key: issued.public.public_key.clone(),
        fingerprint: issued.public.fingerprint(),
        ca_fingerprint: issued.ca_fingerprint.clone(),
    }
}

/// Status after a successful reconcile. `probes` are (member name,
/// outcome) in spec order.
pub fn issued(
    td: &TrustDomain,
    issued: &Issued,
    probes: &[(String, ProbeOutcome)],
    now: Time,
) -> TrustDomainStatus {
    let mut status = td.status.clone().unwrap_or_default();
    status.identity_fingerprint = Some(issued.public.fingerprint());
    status.public_key = Some(issued.public.public_key.clone());
    status.join_token = Some(join_token(td, issued).encode());
    status.identity_secret_name = Some(issued.identity_secret_name.clone());
    status.members = probes
        .iter()
        .map(|(name, outcome)| MemberStatus {
            name: name.clone(),
            reachable: outcome.reachable,
            last_probe_time: Some(now.clone()),
            message: Some(outcome.message.clone()),
        })
        .collect();
    let unreachable: Vec<String> = probes
        .iter()
        .filter(|(_, o)| !o.reachable)
        .map(|(n, o)| format!("{n} ({})", o.message))
        .collect();
    let ready = if unreachable.is_empty() {
        let message = match probes.len() {
            0 => "identity issued; no members yet".to_string(),
            1 => "identity issued; the member is reachable".to_string(),
            n => format!("identity issued; all {n} members reachable"),
        };
        condition::new_condition(
            condition::READY,
            true,
            "Ready",
            message,
            td.metadata.generation,
            now,
        )
    } else {
        condition::new_condition(
            condition::READY,
            false,
            "MembersUnreachable",
            format!("unreachable: {}", unreachable.join(", ")),
            td.metadata.generation,
            now,
        )
    };
    condition::upsert(&mut status.conditions, ready);
    status.observed_generation = td.metadata.generation;
    status
}

/// Whether `new` must be written over `old`: anything but the members'
/// `lastProbeTime` changed, or the oldest probe time is at least half of
/// `probe_interval` old (so an unchanged domain is written about once per
/// interval, not once per reconcile).
pub fn needs_write(
    old: Option<&TrustDomainStatus>,
    new: &TrustDomainStatus,
    now: jiff::Timestamp,
    probe_interval: std::time::Duration,
) -> bool {
    let Some(old) = old else {
        return true;
    };
    let without_times = |s: &TrustDomainStatus| {
        let mut s = s.clone();
        for m in &mut s.members {
            m.last_probe_time = None;
        }
        s
    };
    if without_times(old) != without_times(new) {
        return true;
    }
    let fresh_for = jiff::SignedDuration::try_from(probe_interval / 2).unwrap_or_default();
    old.members.iter().any(|m| match &m.last_probe_time {
        Some(t) => now.duration_since(t.0) >= fresh_for,
        None => true,
    })
}

/// Status of a spec that cannot be acted on: `Ready=False`, reason
/// `InvalidSpec`, the message naming every bad field. What was published
/// before (identity, token, members) stays.
pub fn invalid(td: &TrustDomain, errors: &SpecErrors, now: Time) -> TrustDomainStatus {
    let mut status = td.status.clone().unwrap_or_default();
    condition::upsert(
        &mut status.conditions,
        condition::new_condition(
            condition::READY,
            false,
            "InvalidSpec",
            errors.to_string(),
            td.metadata.generation,
            now,
        ),
    );
    status.observed_generation = td.metadata.generation;
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::trust_domain::tests::trust_domain;
    use crate::error::FieldError;
    use jiff::Timestamp;
    use std::time::Duration;

    fn at(s: i64) -> Time {
        Time(Timestamp::from_second(s).unwrap())
    }

    fn facts() -> Issued {
        Issued {
            public: modelpub_protocol::identity::Identity::from_secret_bytes("hospital-a", [5; 32])
                .public(),
            ca_fingerprint: format!("SHA256:{}", "a".repeat(64)),
            identity_secret_name: "fed-identity".into(),
        }
    }

    #[test]
    fn ready_when_every_member_answers() {
        let td = trust_domain();
        let probes = vec![("b".to_string(), ProbeOutcome::reachable("ok"))];
        let s = issued(&td, &facts(), &probes, at(100));
        assert_eq!(s.identity_fingerprint, Some(facts().public.fingerprint()));
        let token = JoinToken::parse(s.join_token.as_deref().unwrap()).unwrap();
        assert_eq!(token.name, "hospital-a");
        assert_eq!(token.ca_fingerprint, facts().ca_fingerprint);
        assert_eq!(s.members[0].last_probe_time, Some(at(100)));
        let ready = condition::find(&s.conditions, condition::READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "Ready")
        );
        assert_eq!(ready.observed_generation, Some(3));
        assert_eq!(s.observed_generation, Some(3));
    }

    #[test]
    fn unreachable_members_are_named_and_transition_time_moves_only_on_flips() {
        let mut td = trust_domain();
        let down = vec![("b".to_string(), ProbeOutcome::unreachable("refused"))];
        let s1 = issued(&td, &facts(), &down, at(100));
        let c = condition::find(&s1.conditions, condition::READY).unwrap();
        assert_eq!(
            (c.status.as_str(), c.message.as_str()),
            ("False", "unreachable: b (refused)")
        );
        td.status = Some(s1);
        let s2 = issued(&td, &facts(), &down, at(200));
        assert_eq!(
            condition::find(&s2.conditions, condition::READY)
                .unwrap()
                .last_transition_time,
            at(100)
        );
        td.status = Some(s2);
        let up = vec![("b".to_string(), ProbeOutcome::reachable("ok"))];
        let s3 = issued(&td, &facts(), &up, at(300));
        assert_eq!(
            condition::find(&s3.conditions, condition::READY)
                .unwrap()
                .last_transition_time,
            at(300)
        );
    }

    #[test]
    fn unchanged_status_is_rewritten_only_when_probe_times_go_stale() {
        let mut td = trust_domain();
        let up = vec![("b".to_string(), ProbeOutcome::reachable("ok"))];
        let first = issued(&td, &facts(), &up, at(1_000));
        assert!(needs_write(
            None,
            &first,
            at(1_000).0,
            Duration::from_secs(60)
        ));
        td.status = Some(first.clone());
        let again = issued(&td, &facts(), &up, at(1_010));
        let interval = Duration::from_secs(60);
        assert!(!needs_write(Some(&first), &again, at(1_010).0, interval));
        assert!(needs_write(Some(&first), &again, at(1_030).0, interval));
        let down = vec![("b".to_string(), ProbeOutcome::unreachable("refused"))];
        let changed = issued(&td, &facts(), &down, at(1_010));
        assert!(needs_write(Some(&first), &changed, at(1_010).0, interval));
    }

    #[test]
    fn invalid_spec_names_the_field_and_keeps_the_identity() {
        let mut td = trust_domain();
        td.status = Some(issued(&td, &facts(), &[], at(1)));
        let errors = SpecErrors(vec![FieldError::new("spec.members[0].publicKey", "bad")]);
        let s = invalid(&td, &errors, at(2));
        let c = condition::find(&s.conditions, condition::READY).unwrap();
        assert_eq!(c.reason, "InvalidSpec");
        assert_eq!(c.message, "spec.members[0].publicKey: bad");
        assert!(s.identity_fingerprint.is_some());
    }
}
