//! Mutual TLS of the federation endpoint, pinned in both directions.
//!
//! The server presents a certificate from its trust domain's CA for
//! [`super::server_name`]; it admits a client only if the client's
//! certificate chains to a CA pinned for one of the domain's trusted
//! members. The client trusts only the CA pinned for the member it calls.
//! A refused client's certificate is recorded ([`Presented`]) so the
//! refusal can name it.

use std::sync::{Arc, Mutex};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha2::{Digest, Sha256};
use tonic::transport::{Certificate, ClientTlsConfig, Identity as TlsIdentity};

use super::domain::LocalDomain;
use crate::controllers::trust_domain::peers::Peer;
use crate::error::Error;

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
}

/// Where one handshake's verifier leaves what the client presented.
pub type PresentedSlot = Arc<Mutex<Option<Presented>>>;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(what: &str, pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what} holds no PEM certificate"));
    }
    Ok(certs)
}

/// The server side for `domain`: our endpoint certificate, clients from
/// the members' pinned CAs only. `None` when no member has a pinned CA:
/// then no client can be admitted, and the caller refuses the connection.
pub fn server_config(
    domain: &LocalDomain,
    seen: PresentedSlot,
) -> Result<Option<rustls::ServerConfig>, Error> {
    let what = |m: &str| Error::identity(format!("federation endpoint of {}", domain.name()), m);
    let mut roots = rustls::RootCertStore::empty();
    for peer in &domain.peers {
        let Some(bundle) = &peer.ca_bundle else {
            continue;
        };
        // A member whose pinned CA is unusable is reported by the
        // TrustDomain probe; it is simply not admitted here.
        for cert in certificates(&format!("caBundle of {}", peer.name), bundle).unwrap_or_default()
        {
            let _ = roots.add(cert);
        }
    }
    if roots.is_empty() {
        return Ok(None);
    }
    let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| what(&format!("client verifier: {e}")))?;
    let leaf = domain.endpoint_certificate()?;
    let chain = certificates("endpoint certificate", &leaf.cert_pem).map_err(|e| what(&e))?;
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes())
        .map_err(|e| what(&format!("endpoint key: {e}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| what(&e.to_string()))?
        .with_client_cert_verifier(Arc::new(Recording { inner, seen }))
        .with_single_cert(chain, key)
        .map_err(|e| what(&e.to_string()))?;
    // gRPC runs over HTTP/2 only.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Some(config))
}

/// The client side for calling `peer`: its pinned CA only, its endpoint
/// name, our endpoint certificate as client certificate.
pub fn client_config(domain: &LocalDomain, peer: &Peer) -> Result<ClientTlsConfig, String> {
    let bundle = peer.ca_bundle.as_deref().ok_or_else(|| {
        format!(
            "member {} has no pinned CA (give its joinToken or caBundle)",
            peer.name
        )
    })?;
    certificates(&format!("caBundle of {}", peer.name), bundle)?;
    let leaf = domain.endpoint_certificate().map_err(|e| e.to_string())?;
    modelpub_protocol::tls::install_crypto_provider();
    Ok(ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(bundle))
        .identity(TlsIdentity::from_pem(&leaf.cert_pem, &leaf.key_pem))
        .domain_name(super::server_name(&peer.name, &domain.federation)))
}

/// Whether the certificate `der` is signed by a certificate in `ca_pem`:
/// binds a connection's client certificate to the member whose envelope
/// it carries (any member's CA gets a client through the handshake).
pub fn issued_by(der: &[u8], ca_pem: &str) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return false;
    };
    certificates("ca", ca_pem)
        .unwrap_or_default()
        .iter()
        .any(|ca| {
            x509_parser::parse_x509_certificate(ca).is_ok_and(|(_, ca)| {
                cert.verify_signature(Some(ca.public_key())).is_ok()
                    && cert.issuer() == ca.subject()
            })
        })
}

/// WebPKI client verification that remembers the certificate it was
/// shown, so a refusal can say who was refused.
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
