//! Join tokens as a user pastes them (`mpj2.` + base64url JSON). Inputs
//! that are not a token are wrapped as one, so the mutations also reach
//! the JSON and every field check behind the base64.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use modelpub_operator::controllers::trust_domain::join_token::{JoinToken, PREFIX, TokenFacts};
use modelpub_protocol::identity::Identity;
use modelpub_protocol::tls::FederationCa;

use crate::Target;

pub struct JoinTokens {
    token: String,
}

impl JoinTokens {
    pub fn new() -> anyhow::Result<Self> {
        let ca = FederationCa::generate("hospital-a")?;
        let pem = ca.cert_pem();
        let fingerprint = modelpub_operator::identity::certificate_fingerprint("ca", &pem)?;
        let identity = Identity::from_secret_bytes("hospital-a", [3; 32]);
        let token = JoinToken::issue(
            &identity,
            &TokenFacts {
                federation: "cancer-research",
                endpoint: "https://a.example:7443",
                ca_certificate: &pem,
                ca_fingerprint: &fingerprint,
                expires: 4_102_444_800,
            },
        )
        .encode();
        Ok(Self { token })
    }
}

/// The token's JSON, for the seed that starts behind the base64.
fn token_json(token: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(token.strip_prefix(PREFIX)?).ok()
}

impl Target for JoinTokens {
    fn name(&self) -> &'static str {
        "join-token"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        let mut seeds = vec![self.token.clone().into_bytes()];
        if let Some(json) = token_json(&self.token) {
            seeds.push(json);
        }
        seeds
    }

    fn run(&mut self, input: &[u8]) -> Result<(), String> {
        let text = String::from_utf8_lossy(input);
        let token = if text.trim_start().starts_with(PREFIX) {
            text.into_owned()
        } else {
            format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(input))
        };
        JoinToken::parse(&token)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
