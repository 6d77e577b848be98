//! Which members are trusted, and by what: a member pinned by hand is
//! trusted as written; a member given by a join token is trusted only when
//! the token verifies, is for this federation and this member, has not
//! expired (unless this very token was accepted before), and agrees with
//! any pins written next to it. Pure: the reconcile passes the previous
//! member status and the time.

use modelpub_crds::trust_domain::{Member, MemberStatus};
use modelpub_protocol::identity::PublicIdentity;
use sha2::{Digest, Sha256};

use super::join_token::{JoinToken, JoinTokenError};

/// `MemberStatus.reason` of a member pinned by hand.
pub const PINNED: &str = "Pinned";
/// `MemberStatus.reason` (and Event reason) of a member whose join token
/// was accepted.
pub const TOKEN_ACCEPTED: &str = "JoinTokenAccepted";

/// A member this cluster trusts, with everything it is pinned by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    pub endpoint: String,
    /// The Ed25519 key, when pinned by key or token (a fingerprint pin
    /// alone names no key).
    pub public: Option<PublicIdentity>,
    pub fingerprint: Option<String>,
    /// PEM certificates its TLS certificate must chain to.
    pub ca_bundle: Option<String>,
    /// [`PINNED`] or [`TOKEN_ACCEPTED`].
    pub reason: &'static str,
    /// The SHA-256 (hex) of the accepted token.
    pub accepted_token_sha256: Option<String>,
}

/// A member this cluster refuses to trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub name: String,
    pub error: JoinTokenError,
}

/// The verdict on one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    Trusted(Peer),
    Refused(Refusal),
}

impl Trust {
    pub fn name(&self) -> &str {
        match self {
            Trust::Trusted(p) => &p.name,
            Trust::Refused(r) => &r.name,
        }
    }
}

/// Hex SHA-256 of a token as pasted (surrounding whitespace ignored).
pub fn token_sha256(token: &str) -> String {
    hex::encode(Sha256::digest(token.trim().as_bytes()))
}

/// The verdict on `member` of `federation` at `now` (UNIX seconds).
/// `previous` is its entry in the last status written. The spec has been
/// validated: a member without a token has an endpoint and a pin.
pub fn resolve(
    member: &Member,
    federation: &str,
    previous: Option<&MemberStatus>,
    now: i64,
) -> Trust {
    let Some(token) = &member.join_token else {
        return Trust::Trusted(Peer {
            name: member.name.clone(),
            endpoint: member.endpoint.clone().unwrap_or_default(),
            public: member.public_key.as_ref().map(|k| PublicIdentity {
                name: member.name.clone(),
                public_key: k.clone(),
            }),
            fingerprint: member.fingerprint.clone().or_else(|| {
                member.public_key.as_ref().map(|k| {
                    PublicIdentity {
                        name: member.name.clone(),
                        public_key: k.clone(),
                    }
                    .fingerprint()
                })
            }),
            ca_bundle: member.ca_bundle.clone(),
            reason: PINNED,
            accepted_token_sha256: None,
        });
    };
    let digest = token_sha256(token);
    let already_accepted = previous
        .and_then(|p| p.accepted_token_sha256.as_deref())
        .is_some_and(|d| d == digest);
    match from_token(member, token, federation, now, already_accepted) {
        Ok(t) => Trust::Trusted(Peer {
            name: member.name.clone(),
            endpoint: member
                .endpoint
                .clone()
                .unwrap_or_else(|| t.endpoint.clone()),
            public: Some(PublicIdentity {
                name: member.name.clone(),
                public_key: t.public_key,
            }),
            fingerprint: Some(t.fingerprint),
            ca_bundle: Some(member.ca_bundle.clone().unwrap_or(t.ca_certificate)),
            reason: TOKEN_ACCEPTED,
            accepted_token_sha256: Some(digest),
        }),
        Err(error) => Trust::Refused(Refusal {
            name: member.name.clone(),
            error,
        }),
    }
}

fn from_token(
    member: &Member,
    token: &str,
    federation: &str,
    now: i64,
    already_accepted: bool,
) -> Result<JoinToken, JoinTokenError> {
    let t = JoinToken::parse(token)?;
    t.accept(federation, &member.name, now, already_accepted)?;
    if member
        .public_key
        .as_ref()
        .is_some_and(|k| *k != t.public_key)
    {
        return Err(JoinTokenError::PinMismatch { field: "publicKey" });
    }
    if member
        .fingerprint
        .as_ref()
        .is_some_and(|f| *f != t.fingerprint)
    {
        return Err(JoinTokenError::PinMismatch {
            field: "fingerprint",
        });
    }
    if member
        .ca_bundle
        .as_ref()
        .is_some_and(|b| !b.contains(t.ca_certificate.trim()))
    {
        return Err(JoinTokenError::PinMismatch { field: "caBundle" });
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::trust_domain::join_token::tests::issue_for;
    use modelpub_protocol::identity::Identity;

    fn a() -> Identity {
        Identity::from_secret_bytes("hospital-a", [3; 32])
    }

    fn by_token(token: &JoinToken) -> Member {
        Member {
            name: "hospital-a".into(),
            endpoint: None,
            join_token: Some(token.encode()),
            public_key: None,
            fingerprint: None,
            ca_bundle: None,
        }
    }

    fn accepted(trust: Trust) -> Peer {
        match trust {
            Trust::Trusted(p) => p,
            Trust::Refused(r) => panic!("refused: {}", r.error),
        }
    }

    fn refused(trust: Trust) -> &'static str {
        match trust {
            Trust::Trusted(p) => panic!("trusted: {p:?}"),
            Trust::Refused(r) => r.error.reason(),
        }
    }

    #[test]
    fn a_token_pins_key_ca_and_endpoint() {
        let token = issue_for(&a(), "cardio", 100);
        let peer = accepted(resolve(&by_token(&token), "cardio", None, 50));
        assert_eq!(peer.endpoint, "https://a.example:7443");
        assert_eq!(peer.public, Some(a().public()));
        assert_eq!(peer.fingerprint, Some(a().public().fingerprint()));
        assert_eq!(
            peer.ca_bundle.as_deref(),
            Some(token.ca_certificate.as_str())
        );
        assert_eq!(peer.reason, TOKEN_ACCEPTED);
        assert_eq!(
            peer.accepted_token_sha256,
            Some(token_sha256(&token.encode()))
        );
    }

    #[test]
    fn expiry_is_checked_until_that_token_is_accepted() {
        let token = issue_for(&a(), "cardio", 100);
        let member = by_token(&token);
        assert_eq!(
            refused(resolve(&member, "cardio", None, 100)),
            "JoinTokenExpired"
        );
        let before = MemberStatus {
            name: "hospital-a".into(),
            trusted: true,
            reason: Some(TOKEN_ACCEPTED.into()),
            fingerprint: None,
            accepted_token_sha256: Some(token_sha256(&token.encode())),
            reachable: true,
            last_probe_time: None,
            message: None,
            last_handshake_time: None,
        };
        accepted(resolve(&member, "cardio", Some(&before), 10_000));
        // Another token (even from the same peer) is a new acceptance.
        let newer = issue_for(&a(), "cardio", 200);
        assert_eq!(
            refused(resolve(&by_token(&newer), "cardio", Some(&before), 10_000)),
            "JoinTokenExpired"
        );
    }

    #[test]
    fn foreign_tampered_and_contradicted_tokens_are_refused() {
        let token = issue_for(&a(), "oncology", 100);
        assert_eq!(
            refused(resolve(&by_token(&token), "cardio", None, 0)),
            "JoinTokenForeignFederation"
        );
        let mut t = issue_for(&a(), "cardio", 100);
        t.endpoint = "https://evil.example:7443".into();
        assert_eq!(
            refused(resolve(&by_token(&t), "cardio", None, 0)),
            "JoinTokenTampered"
        );
        // A token re-signed by an impostor contradicts the key pinned by hand.
        let impostor = Identity::from_secret_bytes("hospital-a", [8; 32]);
        let mut m = by_token(&issue_for(&impostor, "cardio", 100));
        m.public_key = Some(a().public().public_key);
        assert_eq!(refused(resolve(&m, "cardio", None, 0)), "JoinTokenMismatch");
        let mut m = by_token(&issue_for(&a(), "cardio", 100));
        m.name = "hospital-b".into();
        assert_eq!(refused(resolve(&m, "cardio", None, 0)), "JoinTokenMismatch");
    }

    #[test]
    fn members_pinned_by_hand_are_trusted_as_written() {
        let m = Member {
            name: "hospital-b".into(),
            endpoint: Some("https://b.example".into()),
            join_token: None,
            public_key: Some(a().public().public_key),
            fingerprint: None,
            ca_bundle: None,
        };
        let peer = accepted(resolve(&m, "cardio", None, 0));
        assert_eq!(peer.reason, PINNED);
        assert_eq!(peer.fingerprint, Some(a().public().fingerprint()));
        assert_eq!(peer.accepted_token_sha256, None);
    }
}
