//! Key material in Secrets, as pure functions: generate this cluster's
//! Ed25519 identity and federation CA as Secret data, read them back, and
//! issue a party's mutual-TLS certificate from the CA Secret's data.
//!
//! The Secret layouts match what `modelpub_protocol` reads from a directory,
//! so a Secret mounted as a volume is directly an identity / TLS directory:
//!
//! | Secret | keys |
//! | --- | --- |
//! | `<td>-identity` | `identity.key` (hex Ed25519 secret), `identity.pub` (JSON `{name, public_key}`) |
//! | `<td>-ca` | `ca.crt`, `ca.key` (PEM) |
//! | a party (`<fr>-aggregator`, `<fr>-agent-<vault>`) | `identity.key`, `identity.pub`, `ca.crt`, `tls.crt`, `tls.key` |

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use modelpub_protocol::identity::{Identity, PublicIdentity};
use modelpub_protocol::tls::{FederationCa, TlsMaterial};

use sha2::{Digest, Sha256};

use crate::error::Error;

pub const IDENTITY_KEY: &str = "identity.key";
pub const IDENTITY_PUB: &str = "identity.pub";
pub const CA_CRT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const TLS_CRT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";

/// Secret data: key → bytes.
pub type SecretData = BTreeMap<String, ByteString>;

fn text(s: impl Into<String>) -> ByteString {
    ByteString(s.into().into_bytes())
}

fn read<'a>(data: &'a SecretData, what: &str, key: &str) -> Result<&'a str, Error> {
    let bytes = data
        .get(key)
        .ok_or_else(|| Error::identity(what, format!("has no `{key}` key")))?;
    std::str::from_utf8(&bytes.0)
        .map_err(|_| Error::identity(what, format!("`{key}` is not UTF-8 text")))
}

/// The data of an identity Secret for `name` with Ed25519 `secret`:
/// `identity.key` and `identity.pub`, exactly as [`Identity::save`] writes
/// them.
fn identity_data(name: &str, secret: &[u8; 32]) -> Result<SecretData, Error> {
    let public = Identity::from_secret_bytes(name, *secret).public();
    let json = serde_json::to_string_pretty(&public).map_err(|e| Error::identity(name, e))?;
    Ok(BTreeMap::from([
        (IDENTITY_KEY.to_string(), text(hex::encode(secret))),
        (IDENTITY_PUB.to_string(), text(json + "\n")),
    ]))
}

/// 32 bytes from the operating system's random source.
fn random_secret(name: &str) -> Result<[u8; 32], Error> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)
        .map_err(|e| Error::identity(format!("identity {name}"), format!("no randomness: {e}")))?;
    Ok(secret)
}

/// Generates a fresh identity named `name` (this cluster's `spec.self.name`
/// or a party's name) as Secret data.
pub fn generate_identity_data(name: &str) -> Result<SecretData, Error> {
    identity_data(name, &random_secret(name)?)
}

/// Reads an identity Secret's data back; `what` names the Secret in errors.
/// The public half must belong to the secret key.
pub fn identity_from_data(what: &str, data: &SecretData) -> Result<Identity, Error> {
    let public: PublicIdentity =
        serde_json::from_str(read(data, what, IDENTITY_PUB)?).map_err(|e| {
            Error::identity(
                what,
                format!("`{IDENTITY_PUB}` is not a public identity: {e}"),
            )
        })?;
    let secret: [u8; 32] = hex::decode(read(data, what, IDENTITY_KEY)?.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            Error::identity(
                what,
                format!("`{IDENTITY_KEY}` is not a hex 32-byte Ed25519 key"),
            )
        })?;
    let identity = Identity::from_secret_bytes(&public.name, secret);
    if identity.public() != public {
        return Err(Error::identity(
            what,
            format!("`{IDENTITY_PUB}` does not belong to the key in `{IDENTITY_KEY}`"),
        ));
    }
    Ok(identity)
}

/// Generates a CA for `federation` as Secret data (`ca.crt`, `ca.key`).
pub fn generate_ca_data(federation: &str) -> Result<SecretData, Error> {
    let ca = FederationCa::generate(federation)
        .map_err(|e| Error::identity(format!("CA of {federation}"), e))?;
    Ok(BTreeMap::from([
        (CA_CRT.to_string(), text(ca.cert_pem())),
        (CA_KEY.to_string(), text(ca.key_pem())),
    ]))
}

/// Reads a CA Secret's data back; `what` names the Secret in errors.
pub fn ca_from_data(what: &str, data: &SecretData) -> Result<FederationCa, Error> {
    FederationCa::from_pem(read(data, what, CA_CRT)?, read(data, what, CA_KEY)?)
        .map_err(|e| Error::identity(what, e))
}

/// Issues a leaf certificate for `party` (CN = party; DNS SANs `dns_names`,
/// e.g. the aggregator Service's names) from the CA in `ca_data` (the data
/// of the `<td>-ca` Secret, named `ca_what` in errors). Valid for both
/// server and client auth, 365 days.
pub fn issue_certificate(
    ca_what: &str,
    ca_data: &SecretData,
    party: &str,
    dns_names: &[String],
) -> Result<TlsMaterial, Error> {
    let ca = ca_from_data(ca_what, ca_data)?;
    let names: Vec<&str> = dns_names.iter().map(String::as_str).collect();
    ca.issue(party, &names, &[])
        .map_err(|e| Error::identity(format!("certificate for {party}"), e))
}

/// Generates a new identity for `party` and issues its certificate from
/// the CA in `ca_data` (the `<td>-ca` Secret's data, named `ca_what` in
/// errors): the whole data of a party Secret (`identity.key`,
/// `identity.pub`, `ca.crt`, `tls.crt`, `tls.key`) in one call.
pub fn new_party_data(
    ca_what: &str,
    ca_data: &SecretData,
    party: &str,
    dns_names: &[String],
) -> Result<SecretData, Error> {
    let mut data = generate_identity_data(party)?;
    let tls = issue_certificate(ca_what, ca_data, party, dns_names)?;
    data.insert(CA_CRT.to_string(), text(tls.ca_pem.clone()));
    data.insert(TLS_CRT.to_string(), text(tls.cert_pem.clone()));
    data.insert(TLS_KEY.to_string(), text(tls.key_pem.clone()));
    Ok(data)
}

/// `SHA256:<hex>` of the first certificate's DER in `pem`, the fingerprint
/// peers pin a CA by.
pub fn certificate_fingerprint(what: &str, pem: &str) -> Result<String, Error> {
    let der = pem_body(pem).ok_or_else(|| Error::identity(what, "no PEM certificate found"))?;
    Ok(format!("SHA256:{}", hex::encode(Sha256::digest(der))))
}

fn pem_body(pem: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let start = pem.find("-----BEGIN CERTIFICATE-----")? + "-----BEGIN CERTIFICATE-----".len();
    let end = start + pem[start..].find("-----END CERTIFICATE-----")?;
    let b64: String = pem[start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_data_round_trips_and_matches_the_protocol_layout() {
        let data = generate_identity_data("hospital-a").unwrap();
        assert_eq!(
            data.keys().collect::<Vec<_>>(),
            [IDENTITY_KEY, IDENTITY_PUB]
        );
        let id = identity_from_data("Secret ns/x", &data).unwrap();
        assert_eq!(id.name(), "hospital-a");
        // The same bytes, written as files, load with the protocol's loader.
        let dir = tempfile::tempdir().unwrap();
        for (k, v) in &data {
            std::fs::write(dir.path().join(k), &v.0).unwrap();
        }
        let loaded = Identity::load(dir.path()).unwrap();
        assert_eq!(loaded.public(), id.public());
    }

    #[test]
    fn bad_identity_data_names_the_secret_and_key() {
        let mut data = generate_identity_data("a").unwrap();
        data.insert(IDENTITY_KEY.into(), text("zz"));
        let err = identity_from_data("Secret ns/a-identity", &data)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("Secret ns/a-identity: `identity.key`"),
            "{err}"
        );
        let other = generate_identity_data("a").unwrap();
        let mut mixed = generate_identity_data("a").unwrap();
        mixed.insert(IDENTITY_PUB.into(), other[IDENTITY_PUB].clone());
        let err = identity_from_data("S", &mixed).unwrap_err().to_string();
        assert!(err.contains("does not belong"), "{err}");
        let err = identity_from_data("S", &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("no `identity.pub` key"), "{err}");
    }

    #[test]
    fn issued_certificates_chain_to_the_ca_secret() {
        let ca_data = generate_ca_data("hospital-a").unwrap();
        let ca_pem = std::str::from_utf8(&ca_data[CA_CRT].0).unwrap().to_string();
        let party = new_party_data(
            "Secret ns/td-ca",
            &ca_data,
            "fr-aggregator",
            &["fr-aggregator.ns.svc".to_string()],
        )
        .unwrap();
        assert_eq!(
            party.keys().collect::<Vec<_>>(),
            [CA_CRT, IDENTITY_KEY, IDENTITY_PUB, TLS_CRT, TLS_KEY]
        );
        assert_eq!(std::str::from_utf8(&party[CA_CRT].0).unwrap(), ca_pem);
        let fp = certificate_fingerprint("ca", &ca_pem).unwrap();
        assert!(fp.starts_with("SHA256:") && fp.len() == 7 + 64, "{fp}");
        // A different CA gives a different fingerprint.
        let other = generate_ca_data("hospital-a").unwrap();
        let other_pem = std::str::from_utf8(&other[CA_CRT].0).unwrap();
        assert_ne!(certificate_fingerprint("ca", other_pem).unwrap(), fp);
        let err = issue_certificate("Secret ns/td-ca", &BTreeMap::new(), "p", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("Secret ns/td-ca: has no `ca.crt`"), "{err}");
        let err = issue_certificate("S", &ca_data, "p", &["bücher.example".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("certificate for p"), "{err}");
    }
}
