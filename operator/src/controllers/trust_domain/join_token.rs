//! Join tokens: how a peer learns enough about this cluster to trust it.
//!
//! The TrustDomain status carries `joinToken`, a single line a peer's admin
//! pastes into `spec.members[].joinToken` of their own TrustDomain. It holds
//! no secret, but it is signed: format `mpj2.` followed by the unpadded
//! base64url encoding of the JSON object
//!
//! ```json
//! {"federation": "cardio-research", "name": "hospital-a",
//!  "endpoint": "https://a.example:7443", "publicKey": "<64 hex>",
//!  "fingerprint": "SHA256:<64 hex>", "caCertificate": "-----BEGIN …",
//!  "caFingerprint": "SHA256:<64 hex>", "expires": 1767225600,
//!  "signature": "<128 hex>"}
//! ```
//!
//! `fingerprint` is the SHA-256 of the Ed25519 public key, `caFingerprint`
//! the SHA-256 of the DER of the CA certificate, `expires` UNIX seconds.
//! `signature` is the issuer's Ed25519 signature (by `publicKey`) over
//! [`signing_bytes`]: a token altered anywhere, or re-signed by anyone else,
//! no longer verifies. [`JoinToken::parse`] checks structure and signature;
//! [`JoinToken::accept`] checks it is for our federation, for the member it
//! is pasted under, and not expired.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use modelpub_protocol::identity::Identity;
use serde::{Deserialize, Serialize};

use super::probe::socket_address;
use super::validate::{check_public_key, is_dns_label, is_fingerprint};

/// The version prefix of every token.
pub const PREFIX: &str = "mpj2.";
/// The unsigned tokens of earlier releases.
const OLD_PREFIX: &str = "mpj1.";
/// Domain separation of the signature.
const DOMAIN: &[u8] = b"modelpub/v1/join-token";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinToken {
    pub federation: String,
    pub name: String,
    pub endpoint: String,
    pub public_key: String,
    pub fingerprint: String,
    /// PEM of the issuer's CA certificate, which its TLS certificates chain to.
    pub ca_certificate: String,
    pub ca_fingerprint: String,
    /// UNIX seconds after which a peer that has not accepted it refuses it.
    pub expires: i64,
    /// Hex Ed25519 signature over [`signing_bytes`].
    pub signature: String,
}

/// Why a token was refused. [`JoinTokenError::reason`] is the
/// `CamelCase` reason the status and Events use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinTokenError {
    #[error("a join token starts with {PREFIX:?}")]
    Prefix,
    #[error(
        "this is an unsigned {OLD_PREFIX} token of an earlier release; ask the peer for its current status.joinToken ({PREFIX}...)"
    )]
    Unsigned,
    #[error("join token is not base64url: {0}")]
    Base64(String),
    #[error("join token does not hold the expected JSON: {0}")]
    Json(String),
    #[error("join token field {field}: {message}")]
    Field {
        field: &'static str,
        message: String,
    },
    #[error(
        "join token signature does not verify under its publicKey: the token was altered or forged"
    )]
    Tampered,
    #[error("join token is for federation {token:?}, this TrustDomain is federation {ours:?}")]
    ForeignFederation { token: String, ours: String },
    #[error("join token is for {token:?}, but is pasted under member {member:?}")]
    WrongMember { token: String, member: String },
    #[error("join token's {field} differs from the member's own {field} pin")]
    PinMismatch { field: &'static str },
    // No "now" in the message: it is the member's status message and the
    // Event's note, and must not change at every reconcile.
    #[error("join token expired at {expired}; ask {name:?} for its current status.joinToken")]
    Expired { name: String, expired: String },
}

impl JoinTokenError {
    /// The reason word for conditions, member status and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Tampered => "JoinTokenTampered",
            Self::ForeignFederation { .. } => "JoinTokenForeignFederation",
            Self::Expired { .. } => "JoinTokenExpired",
            Self::WrongMember { .. } | Self::PinMismatch { .. } => "JoinTokenMismatch",
            Self::Prefix
            | Self::Unsigned
            | Self::Base64(_)
            | Self::Json(_)
            | Self::Field { .. } => "JoinTokenInvalid",
        }
    }
}

/// What the signature covers: every field but `signature`, each
/// length-prefixed (u32 LE), `expires` as i64 LE, after a domain tag.
pub fn signing_bytes(t: &JoinToken) -> Vec<u8> {
    let mut out = DOMAIN.to_vec();
    for field in [
        &t.federation,
        &t.name,
        &t.endpoint,
        &t.public_key,
        &t.fingerprint,
        &t.ca_certificate,
        &t.ca_fingerprint,
    ] {
        let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(field.as_bytes());
    }
    out.extend_from_slice(&t.expires.to_le_bytes());
    out
}

/// The facts a token vouches for, before signing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFacts<'a> {
    pub federation: &'a str,
    pub endpoint: &'a str,
    pub ca_certificate: &'a str,
    pub ca_fingerprint: &'a str,
    pub expires: i64,
}

impl JoinToken {
    /// A token for `identity`, signed by it.
    pub fn issue(identity: &Identity, facts: &TokenFacts) -> Self {
        let public = identity.public();
        let mut t = JoinToken {
            federation: facts.federation.to_string(),
            name: identity.name().to_string(),
            endpoint: facts.endpoint.to_string(),
            fingerprint: public.fingerprint(),
            public_key: public.public_key,
            ca_certificate: facts.ca_certificate.to_string(),
            ca_fingerprint: facts.ca_fingerprint.to_string(),
            expires: facts.expires,
            signature: String::new(),
        };
        t.signature = hex::encode(identity.sign(&signing_bytes(&t)));
        t
    }

    /// Whether this token says the same as `facts` would (the signature
    /// aside), so an unexpired one need not be re-issued.
    pub fn states(&self, name: &str, facts: &TokenFacts) -> bool {
        self.name == name
            && self.federation == facts.federation
            && self.endpoint == facts.endpoint
            && self.ca_certificate == facts.ca_certificate
            && self.ca_fingerprint == facts.ca_fingerprint
    }

    /// `mpj2.<base64url(JSON)>`.
    pub fn encode(&self) -> String {
        // Serializing a struct of strings and an integer cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(json))
    }

    /// Decodes a token pasted by a user (surrounding whitespace is ignored)
    /// and checks every field and the signature. Whom it is for and when it
    /// expires are [`JoinToken::accept`]'s business.
    pub fn parse(token: &str) -> Result<Self, JoinTokenError> {
        let token = token.trim();
        if token.starts_with(OLD_PREFIX) {
            return Err(JoinTokenError::Unsigned);
        }
        let body = token.strip_prefix(PREFIX).ok_or(JoinTokenError::Prefix)?;
        let json = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|e| JoinTokenError::Base64(e.to_string()))?;
        let t: JoinToken =
            serde_json::from_slice(&json).map_err(|e| JoinTokenError::Json(e.to_string()))?;
        let field = |field, message: String| JoinTokenError::Field { field, message };
        if !is_dns_label(&t.federation) {
            return Err(field(
                "federation",
                format!("{:?} is not a DNS label", t.federation),
            ));
        }
        if !is_dns_label(&t.name) {
            return Err(field("name", format!("{:?} is not a DNS label", t.name)));
        }
        socket_address(&t.endpoint).map_err(|e| field("endpoint", e))?;
        let public = check_public_key(&t.name, &t.public_key).map_err(|e| field("publicKey", e))?;
        if public
            .verify(&signing_bytes(&t), &hex_bytes(&t.signature))
            .is_err()
        {
            return Err(JoinTokenError::Tampered);
        }
        // Signed by the key it names, the rest is the issuer's own word;
        // these checks catch an issuer that is broken, not a forger.
        if public.fingerprint() != t.fingerprint {
            return Err(field("fingerprint", "does not belong to publicKey".into()));
        }
        if !is_fingerprint(&t.ca_fingerprint) {
            return Err(field(
                "caFingerprint",
                "must be SHA256: followed by 64 lower-case hex characters".into(),
            ));
        }
        match crate::identity::certificate_fingerprint("caCertificate", &t.ca_certificate) {
            Ok(fp) if fp == t.ca_fingerprint => {}
            Ok(fp) => {
                return Err(field(
                    "caFingerprint",
                    format!("is not that of caCertificate ({fp})"),
                ));
            }
            Err(e) => return Err(field("caCertificate", e.to_string())),
        }
        Ok(t)
    }

    /// Checks the token may be trusted as member `member` of `federation`
    /// at `now` (UNIX seconds). `already_accepted`: this very token was
    /// accepted before, so its expiry no longer matters (a token only
    /// limits how long it can be used to join).
    pub fn accept(
        &self,
        federation: &str,
        member: &str,
        now: i64,
        already_accepted: bool,
    ) -> Result<(), JoinTokenError> {
        if self.federation != federation {
            return Err(JoinTokenError::ForeignFederation {
                token: self.federation.clone(),
                ours: federation.to_string(),
            });
        }
        if self.name != member {
            return Err(JoinTokenError::WrongMember {
                token: self.name.clone(),
                member: member.to_string(),
            });
        }
        if !already_accepted && now >= self.expires {
            let expired = jiff::Timestamp::from_second(self.expires)
                .map_or_else(|_| self.expires.to_string(), |t| t.to_string());
            return Err(JoinTokenError::Expired {
                name: self.name.clone(),
                expired,
            });
        }
        Ok(())
    }
}

/// Hex to bytes; anything that is not hex becomes bytes no signature
/// matches.
fn hex_bytes(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use modelpub_protocol::tls::FederationCa;

    pub(crate) fn ca() -> (String, String) {
        let ca = FederationCa::generate("hospital-a").unwrap();
        let pem = ca.cert_pem();
        let fp = crate::identity::certificate_fingerprint("ca", &pem).unwrap();
        (pem, fp)
    }

    pub(crate) fn issue_for(id: &Identity, federation: &str, expires: i64) -> JoinToken {
        let (pem, fp) = ca();
        JoinToken::issue(
            id,
            &TokenFacts {
                federation,
                endpoint: "https://a.example:7443",
                ca_certificate: &pem,
                ca_fingerprint: &fp,
                expires,
            },
        )
    }

    fn identity() -> Identity {
        Identity::from_secret_bytes("hospital-a", [3; 32])
    }

    fn token() -> JoinToken {
        issue_for(&identity(), "cardio", 2_000)
    }

    /// Re-encodes `t` after `change`, keeping the old signature.
    fn altered(change: impl FnOnce(&mut JoinToken)) -> String {
        let mut t = token();
        change(&mut t);
        t.encode()
    }

    #[test]
    fn round_trips_and_is_accepted_by_its_federation_before_expiry() {
        let t = token();
        let s = t.encode();
        assert!(
            s.starts_with("mpj2.") && !s.contains('=') && !s.contains('+'),
            "{s}"
        );
        let back = JoinToken::parse(&format!("  {s}\n")).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.accept("cardio", "hospital-a", 1_999, false), Ok(()));
    }

    #[test]
    fn any_altered_field_is_tampering() {
        let other = Identity::from_secret_bytes("hospital-a", [4; 32]).public();
        for bad in [
            altered(|t| t.endpoint = "https://evil.example:7443".into()),
            altered(|t| t.expires += 1),
            altered(|t| t.federation = "other".into()),
            altered(|t| t.ca_certificate = ca().0),
            // A forger's key with the fingerprint to match it: the old
            // signature is not theirs.
            altered(|t| {
                t.public_key = other.public_key.clone();
                t.fingerprint = other.fingerprint();
            }),
            altered(|t| t.signature = "00".repeat(64)),
            altered(|t| t.signature = "not hex".into()),
        ] {
            let err = JoinToken::parse(&bad).unwrap_err();
            assert_eq!(err, JoinTokenError::Tampered, "{bad}");
            assert_eq!(err.reason(), "JoinTokenTampered");
        }
    }

    #[test]
    fn a_token_re_signed_by_another_key_names_that_key() {
        let impostor = Identity::from_secret_bytes("hospital-a", [8; 32]);
        let t = issue_for(&impostor, "cardio", 2_000);
        let parsed = JoinToken::parse(&t.encode()).unwrap();
        // It verifies, but under the impostor's key: a member pinned to
        // hospital-a's real key must compare (peers.rs does).
        assert_ne!(parsed.public_key, identity().public().public_key);
    }

    #[test]
    fn expired_foreign_and_misplaced_tokens_are_refused_with_their_reason() {
        let t = token();
        let expired = t.accept("cardio", "hospital-a", 2_000, false).unwrap_err();
        assert_eq!(expired.reason(), "JoinTokenExpired");
        assert!(
            expired
                .to_string()
                .contains("expired at 1970-01-01T00:33:20Z"),
            "{expired}"
        );
        assert_eq!(t.accept("cardio", "hospital-a", 9_999, true), Ok(()));
        let foreign = t.accept("oncology", "hospital-a", 0, false).unwrap_err();
        assert_eq!(foreign.reason(), "JoinTokenForeignFederation");
        assert!(foreign.to_string().contains("\"oncology\""), "{foreign}");
        let misplaced = t.accept("cardio", "hospital-b", 0, false).unwrap_err();
        assert_eq!(misplaced.reason(), "JoinTokenMismatch");
    }

    #[test]
    fn garbled_and_old_tokens_are_refused_with_the_reason() {
        assert_eq!(JoinToken::parse("abc"), Err(JoinTokenError::Prefix));
        assert_eq!(JoinToken::parse("mpj1.eyJ9"), Err(JoinTokenError::Unsigned));
        assert!(matches!(
            JoinToken::parse("mpj2.@@@"),
            Err(JoinTokenError::Base64(_))
        ));
        let not_json = format!("mpj2.{}", URL_SAFE_NO_PAD.encode("{}"));
        let err = JoinToken::parse(&not_json).unwrap_err();
        assert!(matches!(err, JoinTokenError::Json(_)), "{err}");
        assert_eq!(err.reason(), "JoinTokenInvalid");
        assert!(matches!(
            JoinToken::parse(&altered(|t| t.endpoint = "http://a".into())),
            Err(JoinTokenError::Field {
                field: "endpoint",
                ..
            })
        ));
    }

    #[test]
    fn a_ca_fingerprint_must_be_the_certificates() {
        let id = identity();
        let (pem, _) = ca();
        let t = JoinToken::issue(
            &id,
            &TokenFacts {
                federation: "cardio",
                endpoint: "https://a.example:7443",
                ca_certificate: &pem,
                ca_fingerprint: &format!("SHA256:{}", "c".repeat(64)),
                expires: 5,
            },
        );
        let err = JoinToken::parse(&t.encode()).unwrap_err();
        assert!(
            err.to_string().contains("caFingerprint: is not that of"),
            "{err}"
        );
    }
}
