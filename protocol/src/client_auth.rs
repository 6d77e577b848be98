//! Mutual-TLS servers that can say whom they refused.
//!
//! rustls verifies a client certificate inside the handshake and reports
//! only that it failed. [`server_config`] wraps the WebPKI client verifier
//! so that the certificate it was shown ([`Presented`]: common name and
//! SHA-256) is kept in a slot the caller reads when the handshake fails:
//! the aggregator writes it into its audit log and `/status`, the
//! operator's federation endpoint into the TrustDomain status.

use std::sync::{Arc, Mutex};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::error::ProtocolError;

/// What a client presented: its certificate's common name and SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented {
    pub common_name: Option<String>,
    pub sha256: String,
}

impl Presented {
    pub fn from_der(der: &[u8]) -> Self {
        let common_name = x509_parser::parse_x509_certificate(der)
            .ok()
            .and_then(|(_, cert)| {
                cert.subject()
                    .iter_common_name()
                    .next()
                    .and_then(|cn| cn.as_str().ok().map(str::to_owned))
            });
        Self {
            common_name,
            sha256: hex::encode(Sha256::digest(der)),
        }
    }

    /// The common name, or a placeholder saying there was none.
    pub fn name(&self) -> String {
        self.common_name
            .clone()
            .unwrap_or_else(|| "(no common name)".into())
    }
}

/// Where one handshake's verifier leaves what the client presented.
pub type PresentedSlot = Arc<Mutex<Option<Presented>>>;

/// What the slot holds now.
pub fn presented(slot: &PresentedSlot) -> Option<Presented> {
    slot.lock().ok().and_then(|s| s.clone())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM bundle; an error names `what` when it holds
/// none or one does not parse.
pub fn certificates(what: &str, pem: &str) -> Result<Vec<CertificateDer<'static>>, ProtocolError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ProtocolError::Tls(format!("{what}: {e}")))?;
    if certs.is_empty() {
        return Err(ProtocolError::Tls(format!(
            "{what} holds no PEM certificate"
        )));
    }
    Ok(certs)
}

/// A server presenting `cert_pem`/`key_pem`, demanding a client
/// certificate that chains to one of `client_roots` (PEM bundles), for
/// gRPC (ALPN `h2`), recording each client certificate into `seen`.
pub fn server_config(
    client_roots: &[&str],
    cert_pem: &str,
    key_pem: &str,
    seen: PresentedSlot,
) -> Result<rustls::ServerConfig, ProtocolError> {
    let mut roots = rustls::RootCertStore::empty();
    for bundle in client_roots {
        for cert in certificates("client CA bundle", bundle)? {
            roots
                .add(cert)
                .map_err(|e| ProtocolError::Tls(format!("client CA: {e}")))?;
        }
    }
    let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| ProtocolError::Tls(format!("client verifier: {e}")))?;
    let chain = certificates("server certificate", cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| ProtocolError::Tls(format!("server key: {e}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ProtocolError::Tls(e.to_string()))?
        .with_client_cert_verifier(Arc::new(Recording { inner, seen }))
        .with_single_cert(chain, key)
        .map_err(|e| ProtocolError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Whether the certificate `der` is signed by a certificate in `ca_pem`.
pub fn issued_by(der: &[u8], ca_pem: &str) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return false;
    };
    certificates("ca", ca_pem)
        .unwrap_or_default()
        .iter()
        .any(|ca| {
            x509_parser::parse_x509_certificate(ca).is_ok_and(|(_, ca)| {
                cert.issuer() == ca.subject()
                    && cert.verify_signature(Some(ca.public_key())).is_ok()
            })
        })
}

/// WebPKI client verification that remembers the certificate it was shown.
#[derive(Debug)]
struct Recording {
    inner: Arc<dyn ClientCertVerifier>,
    seen: PresentedSlot,
}

impl ClientCertVerifier for Recording {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if let Ok(mut slot) = self.seen.lock() {
            *slot = Some(Presented::from_der(end_entity));
        }
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
