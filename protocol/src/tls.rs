//! A per-federation certificate authority and the mutual-TLS configuration
//! that makes every gRPC connection prove federation membership both ways.

use std::fs;
use std::net::IpAddr;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::error::ProtocolError;
use crate::identity::write_private_file;

const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const TLS_CERT: &str = "tls.crt";
const TLS_KEY: &str = "tls.key";

// A CA outlives many deployments; leaves are re-issued cheaply, so a short
// life bounds the damage of a leaked party key.
const CA_LIFETIME: Duration = Duration::days(3650);
const LEAF_LIFETIME: Duration = Duration::days(365);
// Tolerates clocks between parties that disagree by a little.
const CLOCK_SKEW: Duration = Duration::hours(1);

fn tls_err(what: &str) -> impl Fn(rcgen::Error) -> ProtocolError + '_ {
    move |e| ProtocolError::Tls(format!("{what}: {e}"))
}

/// Installs ring as rustls' process-wide crypto provider. Idempotent; the
/// config constructors below call it, so callers normally need not.
pub fn install_crypto_provider() {
    // Err only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn read(dir: &Path, file: &str) -> Result<String, ProtocolError> {
    let path = dir.join(file);
    fs::read_to_string(&path).map_err(|e| ProtocolError::io(path, e))
}

fn write(dir: &Path, file: &str, text: &str) -> Result<(), ProtocolError> {
    fs::create_dir_all(dir).map_err(|e| ProtocolError::io(dir, e))?;
    let path = dir.join(file);
    fs::write(&path, text).map_err(|e| ProtocolError::io(path, e))
}

/// The certificate authority of one federation.
pub struct FederationCa {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for FederationCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FederationCa").finish_non_exhaustive()
    }
}

impl FederationCa {
    pub fn generate(federation: &str) -> Result<Self, ProtocolError> {
        let key = KeyPair::generate().map_err(tls_err("generating the CA key"))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            format!("ModelPub federation {federation} CA"),
        );
        dn.push(DnType::OrganizationName, federation);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + CA_LIFETIME;
        let cert = params
            .self_signed(&key)
            .map_err(tls_err("self-signing the CA"))?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// Writes `DIR/ca.crt` and `DIR/ca.key` (owner-only).
    pub fn save(&self, dir: &Path) -> Result<(), ProtocolError> {
        write(dir, CA_CERT, &self.cert_pem)?;
        write_private_file(
            &dir.join(CA_KEY),
            self.issuer.key().serialize_pem().as_bytes(),
        )
    }

    /// The CA's private key as PKCS#8 PEM, for storing it (e.g. in a
    /// Kubernetes Secret); [`FederationCa::from_pem`] reads it back.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Rebuilds a CA from its certificate and private key PEM, as
    /// [`FederationCa::cert_pem`] and [`FederationCa::key_pem`] give them.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, ProtocolError> {
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| ProtocolError::Tls(format!("CA private key: {e}")))?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)
            .map_err(|e| ProtocolError::Tls(format!("CA certificate: {e}")))?;
        Ok(Self {
            cert_pem: cert_pem.to_string(),
            issuer,
        })
    }

    pub fn load(dir: &Path) -> Result<Self, ProtocolError> {
        let cert_pem = read(dir, CA_CERT)?;
        let key_pem = read(dir, CA_KEY)?;
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| ProtocolError::Tls(format!("{}: {e}", dir.join(CA_KEY).display())))?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
            .map_err(|e| ProtocolError::Tls(format!("{}: {e}", dir.join(CA_CERT).display())))?;
        Ok(Self { cert_pem, issuer })
    }

    /// Issues a leaf certificate for `party` (CN = party), valid for the
    /// given DNS names and IP addresses, for both server and client auth.
    pub fn issue(
        &self,
        party: &str,
        dns_names: &[&str],
        ips: &[IpAddr],
    ) -> Result<TlsMaterial, ProtocolError> {
        let key = KeyPair::generate().map_err(tls_err("generating a party key"))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, party);
        params.distinguished_name = dn;
        for name in dns_names {
            let ia5 = (*name).try_into().map_err(|e| {
                ProtocolError::Tls(format!("{name:?} is not a valid DNS name: {e}"))
            })?;
            params.subject_alt_names.push(SanType::DnsName(ia5));
        }
        params
            .subject_alt_names
            .extend(ips.iter().copied().map(SanType::IpAddress));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + LEAF_LIFETIME;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(tls_err("signing the party certificate"))?;
        Ok(TlsMaterial {
            ca_pem: self.cert_pem.clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// What one party needs for mutual TLS: the federation CA and its own leaf.
#[derive(Clone)]
pub struct TlsMaterial {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial").finish_non_exhaustive()
    }
}

impl TlsMaterial {
    /// Writes `DIR/ca.crt`, `DIR/tls.crt` and `DIR/tls.key` (owner-only).
    pub fn save(&self, dir: &Path) -> Result<(), ProtocolError> {
        write(dir, CA_CERT, &self.ca_pem)?;
        write(dir, TLS_CERT, &self.cert_pem)?;
        write_private_file(&dir.join(TLS_KEY), self.key_pem.as_bytes())
    }

    pub fn load(dir: &Path) -> Result<Self, ProtocolError> {
        Ok(Self {
            ca_pem: read(dir, CA_CERT)?,
            cert_pem: read(dir, TLS_CERT)?,
            key_pem: read(dir, TLS_KEY)?,
        })
    }

    fn identity(&self) -> Identity {
        Identity::from_pem(&self.cert_pem, &self.key_pem)
    }

    /// Serves our certificate and admits only clients with a certificate
    /// issued by the federation CA.
    pub fn server_config(&self) -> ServerTlsConfig {
        install_crypto_provider();
        ServerTlsConfig::new()
            .identity(self.identity())
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
            .client_auth_optional(false)
    }

    /// Trusts only the federation CA (not the system roots) and presents our
    /// certificate.
    pub fn client_config(&self, server_name: &str) -> ClientTlsConfig {
        install_crypto_provider();
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(self.identity())
            .domain_name(server_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_round_trips_through_pem() {
        let ca = FederationCa::generate("fed").unwrap();
        let again = FederationCa::from_pem(&ca.cert_pem(), &ca.key_pem()).unwrap();
        assert_eq!(again.cert_pem(), ca.cert_pem());
        assert!(again.issue("p", &["localhost"], &[]).is_ok());
        let err = FederationCa::from_pem(&ca.cert_pem(), "junk").unwrap_err();
        assert!(err.to_string().contains("CA private key"), "{err}");
    }

    #[test]
    fn ca_and_material_round_trip_through_disk() {
        let dir = tempfile::tempdir().unwrap();
        let ca = FederationCa::generate("fed").unwrap();
        ca.save(dir.path()).unwrap();
        let ca2 = FederationCa::load(dir.path()).unwrap();
        assert_eq!(ca2.cert_pem(), ca.cert_pem());
        let m = ca2.issue("bank-a", &["localhost"], &[]).unwrap();
        let mdir = dir.path().join("bank-a");
        m.save(&mdir).unwrap();
        let back = TlsMaterial::load(&mdir).unwrap();
        assert_eq!(back.cert_pem, m.cert_pem);
        fs::remove_file(mdir.join("tls.key")).unwrap();
        let err = TlsMaterial::load(&mdir).unwrap_err().to_string();
        assert!(err.contains("tls.key"), "{err}");
    }
}
