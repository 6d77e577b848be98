//! The TrustDomain status, built purely from what the reconcile found: the
//! identity and CA in their Secrets, the join token, and each member's
//! probe. Conditions are upserted into the previous status so
//! `lastTransitionTime` only moves when `Ready` flips.

use modelpub_crds::condition::{self, Time};
use modelpub_crds::trust_domain::MemberStatus;
use modelpub_crds::{TrustDomain, TrustDomainStatus};
use modelpub_protocol::identity::{Identity, PublicIdentity};

use super::join_token::{JoinToken, TokenFacts};
use super::peers::{Peer, Refusal};
use super::probe::ProbeOutcome;
use crate::error::SpecErrors;

/// The identity facts the status publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub public: PublicIdentity,
    pub ca_fingerprint: String,
    pub identity_secret_name: String,
    pub join_token: JoinToken,
}

/// How long a join token published in status can be used to join.
pub const JOIN_TOKEN_VALIDITY_SECS: i64 = 7 * 24 * 3600;

/// The join token to publish at `now`: the one already in status while it
/// states the same facts, is ours and has more than half its validity
/// left (so the status does not change at every reconcile), else a fresh
/// one valid for [`JOIN_TOKEN_VALIDITY_SECS`].
pub fn join_token(
    previous: Option<&str>,
    identity: &Identity,
    facts: &TokenFacts,
    now: i64,
) -> JoinToken {
    let ours = identity.public();
    if let Some(old) = previous.and_then(|t| JoinToken::parse(t).ok())
        && old.public_key == ours.public_key
        && old.states(identity.name(), facts)
        && old.expires - now > JOIN_TOKEN_VALIDITY_SECS / 2
    {
        return old;
    }
    JoinToken::issue(
        identity,
        &TokenFacts {
            expires: now.saturating_add(JOIN_TOKEN_VALIDITY_SECS),
            ..facts.clone()
        },
    )
}

/// What the reconcile found about one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// Trusted, and probed.
    Probed(Peer, ProbeOutcome),
    /// Its join token was refused; not probed.
    Refused(Refusal),
}

/// Status after a successful reconcile; `members` in spec order.
pub fn issued(
    td: &TrustDomain,
    issued: &Issued,
    members: &[Observed],
    now: Time,
) -> TrustDomainStatus {
    let mut status = td.status.clone().unwrap_or_default();
    status.identity_fingerprint = Some(issued.public.fingerprint());
    status.public_key = Some(issued.public.public_key.clone());
    status.join_token = Some(issued.join_token.encode());
    status.join_token_expiry = jiff::Timestamp::from_second(issued.join_token.expires)
        .ok()
        .map(Time);
    status.identity_secret_name = Some(issued.identity_secret_name.clone());
    let previous = td
        .status
        .as_ref()
        .map(|s| s.members.clone())
        .unwrap_or_default();
    let before = |name: &str| previous.iter().find(|m| m.name == name);
    status.members = members
        .iter()
        .map(|m| match m {
            Observed::Probed(peer, outcome) => MemberStatus {
                name: peer.name.clone(),
                trusted: true,
                reason: Some(peer.reason.to_string()),
                fingerprint: peer.fingerprint.clone(),
                accepted_token_sha256: peer.accepted_token_sha256.clone(),
                reachable: outcome.reachable,
                last_probe_time: Some(now.clone()),
                message: Some(outcome.message.clone()),
                last_handshake_time: if outcome.handshake {
                    Some(now.clone())
                } else {
                    before(&peer.name).and_then(|b| b.last_handshake_time.clone())
                },
            },
            Observed::Refused(r) => MemberStatus {
                name: r.name.clone(),
                trusted: false,
                reason: Some(r.error.reason().to_string()),
                fingerprint: None,
                accepted_token_sha256: None,
                reachable: false,
                last_probe_time: None,
                message: Some(r.error.to_string()),
                last_handshake_time: None,
            },
        })
        .collect();
    let refused: Vec<String> = members
        .iter()
        .filter_map(|m| match m {
            Observed::Refused(r) => Some(format!("{} ({})", r.name, r.error.reason())),
            Observed::Probed(..) => None,
        })
        .collect();
    let unreachable: Vec<String> = members
        .iter()
        .filter_map(|m| match m {
            Observed::Probed(p, o) if !o.reachable => Some(format!("{} ({})", p.name, o.message)),
            _ => None,
        })
        .collect();
    let (ready, reason, message) = if !refused.is_empty() {
        (
            false,
            "MemberRefused",
            format!("not trusted: {}", refused.join(", ")),
        )
    } else if !unreachable.is_empty() {
        (
            false,
            "MembersUnreachable",
            format!("unreachable: {}", unreachable.join(", ")),
        )
    } else {
        let message = match members.len() {
            0 => "identity issued; no members yet".to_string(),
            1 => "identity issued; the member is reachable".to_string(),
            n => format!("identity issued; all {n} members reachable"),
        };
        (true, "Ready", message)
    };
    condition::upsert(
        &mut status.conditions,
        condition::new_condition(
            condition::READY,
            ready,
            reason,
            message,
            td.metadata.generation,
            now,
        ),
    );
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
            m.last_handshake_time = None;
        }
        s
    };
    if without_times(old) != without_times(new) {
        return true;
    }
    let fresh_for = jiff::SignedDuration::try_from(probe_interval / 2).unwrap_or_default();
    // A refused member is not probed, so it has no probe time to age.
    old.members.iter().any(|m| match &m.last_probe_time {
        Some(t) => now.duration_since(t.0) >= fresh_for,
        None => m.trusted,
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
    use crate::controllers::trust_domain::join_token::JoinTokenError;
    use crate::controllers::trust_domain::join_token::tests::issue_for;
    use crate::controllers::trust_domain::tests::trust_domain;
    use crate::error::FieldError;
    use jiff::Timestamp;
    use std::time::Duration;

    fn at(s: i64) -> Time {
        Time(Timestamp::from_second(s).unwrap())
    }

    fn me() -> Identity {
        Identity::from_secret_bytes("hospital-a", [5; 32])
    }

    /// The same facts every call (a CA is random).
    fn facts() -> Issued {
        static FACTS: std::sync::OnceLock<Issued> = std::sync::OnceLock::new();
        FACTS
            .get_or_init(|| {
                let token = issue_for(&me(), "fed", 10_000_000);
                Issued {
                    public: me().public(),
                    ca_fingerprint: token.ca_fingerprint.clone(),
                    identity_secret_name: "fed-identity".into(),
                    join_token: token,
                }
            })
            .clone()
    }

    fn peer(name: &str) -> Peer {
        Peer {
            name: name.into(),
            endpoint: format!("https://{name}.example"),
            public: None,
            fingerprint: None,
            ca_bundle: None,
            reason: crate::controllers::trust_domain::peers::PINNED,
            accepted_token_sha256: None,
        }
    }

    fn probed(name: &str, outcome: ProbeOutcome) -> Vec<Observed> {
        vec![Observed::Probed(peer(name), outcome)]
    }

    #[test]
    fn ready_when_every_member_answers() {
        let td = trust_domain();
        let probes = probed("b", ProbeOutcome::reachable("ok"));
        let s = issued(&td, &facts(), &probes, at(100));
        assert_eq!(s.identity_fingerprint, Some(facts().public.fingerprint()));
        let token = JoinToken::parse(s.join_token.as_deref().unwrap()).unwrap();
        assert_eq!(token.name, "hospital-a");
        assert_eq!(token.ca_fingerprint, facts().ca_fingerprint);
        assert_eq!(s.join_token_expiry, Some(at(10_000_000)));
        assert_eq!(s.members[0].last_probe_time, Some(at(100)));
        assert!(s.members[0].trusted);
        assert_eq!(s.members[0].reason.as_deref(), Some("Pinned"));
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
        let down = probed("b", ProbeOutcome::unreachable("refused"));
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
        let up = probed("b", ProbeOutcome::reachable("ok"));
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
        let up = probed("b", ProbeOutcome::reachable("ok"));
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
        let down = probed("b", ProbeOutcome::unreachable("refused"));
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

    #[test]
    fn a_refused_member_is_named_untrusted_and_not_probed() {
        let td = trust_domain();
        let members = vec![
            Observed::Probed(peer("b"), ProbeOutcome::reachable("ok")),
            Observed::Refused(Refusal {
                name: "c".into(),
                error: JoinTokenError::Tampered,
            }),
        ];
        let s = issued(&td, &facts(), &members, at(5));
        let c = &s.members[1];
        assert!(!c.trusted && !c.reachable && c.last_probe_time.is_none());
        assert_eq!(c.reason.as_deref(), Some("JoinTokenTampered"));
        assert!(c.message.as_deref().unwrap().contains("altered or forged"));
        let ready = condition::find(&s.conditions, condition::READY).unwrap();
        assert_eq!(
            (
                ready.status.as_str(),
                ready.reason.as_str(),
                ready.message.as_str()
            ),
            (
                "False",
                "MemberRefused",
                "not trusted: c (JoinTokenTampered)"
            )
        );
    }

    #[test]
    fn the_published_token_is_kept_until_half_its_validity_is_gone() {
        let (pem, fp) = crate::controllers::trust_domain::join_token::tests::ca();
        let facts = TokenFacts {
            federation: "fed",
            endpoint: "https://a.example:7443",
            ca_certificate: &pem,
            ca_fingerprint: &fp,
            expires: 0,
        };
        let first = join_token(None, &me(), &facts, 1_000);
        assert_eq!(first.expires, 1_000 + JOIN_TOKEN_VALIDITY_SECS);
        let encoded = first.encode();
        let half = JOIN_TOKEN_VALIDITY_SECS / 2;
        assert_eq!(
            join_token(Some(&encoded), &me(), &facts, 1_000 + half - 1),
            first
        );
        let renewed = join_token(Some(&encoded), &me(), &facts, 1_000 + half);
        assert_eq!(renewed.expires, 1_000 + half + JOIN_TOKEN_VALIDITY_SECS);
        let moved = TokenFacts {
            endpoint: "https://a2.example:7443",
            ..facts.clone()
        };
        assert_eq!(
            join_token(Some(&encoded), &me(), &moved, 1_001).endpoint,
            "https://a2.example:7443"
        );
        // A token signed by another key (a re-keyed identity) is replaced.
        let other = Identity::from_secret_bytes("hospital-a", [6; 32]);
        let theirs = join_token(None, &other, &facts, 1_000).encode();
        assert_eq!(
            join_token(Some(&theirs), &me(), &facts, 1_001).public_key,
            me().public().public_key
        );
    }
}
