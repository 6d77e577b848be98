//! Join tokens: how a peer learns enough about this cluster to trust it.
//!
//! The TrustDomain status carries `joinToken`, a single line a peer's admin
//! pastes to add this cluster to their own TrustDomain's `spec.members`.
//! It holds no secret. Format: `mpj1.` followed by the unpadded base64url
//! encoding of the JSON object
//!
//! ```json
//! {"name": "hospital-a", "endpoint": "https://a.example:7443",
//!  "publicKey": "<64 hex>", "fingerprint": "SHA256:<64 hex>",
//!  "caFingerprint": "SHA256:<64 hex>"}
//! ```
//!
//! `fingerprint` is the SHA-256 of the Ed25519 public key and
//! `caFingerprint` the SHA-256 of the DER of this cluster's CA certificate.
//! [`JoinToken::parse`] checks every field (including that the fingerprint
//! belongs to the key) and [`JoinToken::to_member`] gives the member entry.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use modelpub_crds::trust_domain::Member;
use serde::{Deserialize, Serialize};

use super::probe::socket_address;
use super::validate::{check_public_key, is_dns_label, is_fingerprint};

/// The version prefix of every token.
pub const PREFIX: &str = "mpj1.";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinToken {
    pub name: String,
    pub endpoint: String,
    pub public_key: String,
    pub fingerprint: String,
    pub ca_fingerprint: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinTokenError {
    #[error("a join token starts with {PREFIX:?}")]
    Prefix,
    #[error("join token is not base64url: {0}")]
    Base64(String),
    #[error("join token does not hold the expected JSON: {0}")]
    Json(String),
    #[error("join token field {field}: {message}")]
    Field {
        field: &'static str,
        message: String,
    },
}

impl JoinToken {
    /// `mpj1.<base64url(JSON)>`.
    pub fn encode(&self) -> String {
        // Serializing a struct of strings cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(json))
    }

    /// Decodes and checks a token pasted by a user (surrounding whitespace
    /// is ignored).
    pub fn parse(token: &str) -> Result<Self, JoinTokenError> {
        let body = token
            .trim()
            .strip_prefix(PREFIX)
            .ok_or(JoinTokenError::Prefix)?;
        let json = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|e| JoinTokenError::Base64(e.to_string()))?;
        let t: JoinToken =
            serde_json::from_slice(&json).map_err(|e| JoinTokenError::Json(e.to_string()))?;
        let field = |field, message: String| JoinTokenError::Field { field, message };
        if !is_dns_label(&t.name) {
            return Err(field("name", format!("{:?} is not a DNS label", t.name)));
        }
        socket_address(&t.endpoint).map_err(|e| field("endpoint", e))?;
        let public = check_public_key(&t.name, &t.public_key).map_err(|e| field("publicKey", e))?;
        if public.fingerprint() != t.fingerprint {
            return Err(field(
                "fingerprint",
                "does not belong to publicKey (the token was altered)".into(),
            ));
        }
        if !is_fingerprint(&t.ca_fingerprint) {
            return Err(field(
                "caFingerprint",
                "must be SHA256: followed by 64 lower-case hex characters".into(),
            ));
        }
        Ok(t)
    }

    /// The `spec.members` entry for this peer, pinned by key and
    /// fingerprint. (The CA bundle is not in the token; add `caBundle` to
    /// also pin the peer's TLS chain.)
    pub fn to_member(&self) -> Member {
        Member {
            name: self.name.clone(),
            endpoint: self.endpoint.clone(),
            public_key: Some(self.public_key.clone()),
            fingerprint: Some(self.fingerprint.clone()),
            ca_bundle: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelpub_protocol::identity::Identity;

    fn token() -> JoinToken {
        let id = Identity::from_secret_bytes("hospital-a", [3; 32]).public();
        JoinToken {
            name: "hospital-a".into(),
            endpoint: "https://a.example:7443".into(),
            fingerprint: id.fingerprint(),
            public_key: id.public_key,
            ca_fingerprint: format!("SHA256:{}", "c".repeat(64)),
        }
    }

    #[test]
    fn round_trips_and_becomes_a_member() {
        let t = token();
        let s = t.encode();
        assert!(
            s.starts_with("mpj1.") && !s.contains('=') && !s.contains('+'),
            "{s}"
        );
        assert_eq!(JoinToken::parse(&format!("  {s}\n")).unwrap(), t);
        let m = t.to_member();
        assert_eq!(m.name, "hospital-a");
        assert_eq!(m.public_key.as_deref(), Some(t.public_key.as_str()));
        assert_eq!(m.fingerprint.as_deref(), Some(t.fingerprint.as_str()));
    }

    #[test]
    fn altered_or_garbled_tokens_are_refused_with_the_reason() {
        assert_eq!(JoinToken::parse("abc"), Err(JoinTokenError::Prefix));
        assert!(matches!(
            JoinToken::parse("mpj1.@@@"),
            Err(JoinTokenError::Base64(_))
        ));
        let not_json = format!("mpj1.{}", URL_SAFE_NO_PAD.encode("{}"));
        assert!(matches!(
            JoinToken::parse(&not_json),
            Err(JoinTokenError::Json(_))
        ));
        let mut t = token();
        t.fingerprint = format!("SHA256:{}", "0".repeat(64));
        let err = JoinToken::parse(&t.encode()).unwrap_err();
        assert!(
            err.to_string().contains("fingerprint: does not belong"),
            "{err}"
        );
        let mut t = token();
        t.endpoint = "http://a".into();
        assert!(matches!(
            JoinToken::parse(&t.encode()),
            Err(JoinTokenError::Field {
                field: "endpoint",
                ..
            })
        ));
        let mut t = token();
        t.ca_fingerprint = "nope".into();
        assert!(matches!(
            JoinToken::parse(&t.encode()),
            Err(JoinTokenError::Field {
                field: "caFingerprint",
                ..
            })
        ));
    }
}
