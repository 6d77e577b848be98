//! Mutual TLS of the federation endpoint, pinned in both directions.
//!
//! The server presents a certificate from its trust domain's CA for
//! [`super::server_name`]; it admits a client only if the client's
//! certificate chains to a CA pinned for one of the domain's trusted
//! members. The client trusts only the CA pinned for the member it calls.
//! A refused client's certificate is recorded ([`Presented`]) so the
//! refusal can name it.

use modelpub_protocol::client_auth;
pub use modelpub_protocol::client_auth::{Presented, PresentedSlot, issued_by};
use tonic::transport::{Certificate, ClientTlsConfig, Identity as TlsIdentity};

use super::domain::LocalDomain;
use crate::controllers::trust_domain::peers::Peer;
use crate::error::Error;

fn certificates(
    what: &str,
    pem: &str,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    client_auth::certificates(what, pem).map_err(|e| e.to_string())
}

/// The server side for `domain`: our endpoint certificate, clients from
/// the members' pinned CAs only. `None` when no member has a pinned CA:
/// then no client can be admitted, and the caller refuses the connection.
pub fn server_config(
    domain: &LocalDomain,
    seen: PresentedSlot,
) -> Result<Option<rustls::ServerConfig>, Error> {
    // A member whose pinned CA is unusable is reported by the TrustDomain
    // probe; it is simply not admitted here.
    let roots: Vec<&str> = domain
        .peers
        .iter()
        .filter_map(|p| p.ca_bundle.as_deref())
        .filter(|b| client_auth::certificates("caBundle", b).is_ok())
        .collect();
    if roots.is_empty() {
        return Ok(None);
    }
    let leaf = domain.endpoint_certificate()?;
    client_auth::server_config(&roots, &leaf.cert_pem, &leaf.key_pem, seen)
        .map(Some)
        .map_err(|e| Error::identity(format!("federation endpoint of {}", domain.name()), e))
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject as _;

    use super::*;
    use crate::controllers::trust_domain::peers::{PINNED, Peer};
    use crate::federation::domain::fixture;

    fn pin(domain: &LocalDomain) -> Peer {
        Peer {
            name: domain.name().to_string(),
            endpoint: "https://unused.example:7450".into(),
            public: Some(domain.identity.public()),
            fingerprint: None,
            ca_bundle: Some(domain.ca_pem.clone()),
            reason: PINNED,
            accepted_token_sha256: None,
        }
    }

    /// A handshake of a `client` domain against `server`'s endpoint; what
    /// the server's verifier saw, and whether the handshake completed.
    async fn handshake(server: &LocalDomain, client: &LocalDomain) -> (Option<Presented>, bool) {
        use rustls::pki_types::ServerName;
        let seen = PresentedSlot::default();
        let config = server_config(server, seen.clone()).unwrap().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let (a, b) = tokio::io::duplex(64 * 1024);
        let served = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            match acceptor.accept(a).await {
                Ok(mut s) => s.write_all(b"k").await.is_ok() && s.flush().await.is_ok(),
                Err(_) => false,
            }
        });
        // The client side as tonic would configure it, in rustls terms.
        let leaf = client.endpoint_certificate().unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for c in certificates("ca", &server.ca_pem).unwrap() {
            roots.add(c).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            certificates("leaf", &leaf.cert_pem).unwrap(),
            PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap(),
        )
        .unwrap();
        let name = ServerName::try_from(crate::federation::server_name(
            server.name(),
            &server.federation,
        ))
        .unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let client_ok = match connector.connect(name, b).await {
            // TLS 1.3: the client finishes before the server has checked
            // its certificate; the server's first byte shows it kept it.
            Ok(mut s) => {
                use tokio::io::AsyncReadExt;
                let mut buf = [0u8; 1];
                matches!(
                    tokio::time::timeout(std::time::Duration::from_secs(2), s.read(&mut buf)).await,
                    Ok(Ok(1))
                ) && buf == *b"k"
            }
            Err(_) => false,
        };
        let server_ok = served.await.unwrap();
        let presented = seen.lock().unwrap().clone();
        (presented, server_ok && client_ok)
    }

    #[tokio::test]
    async fn only_clients_of_a_pinned_ca_get_through_and_a_refused_one_is_named() {
        let mut a = fixture("hospital-a", "fed");
        let b = fixture("hospital-b", "fed");
        let rogue = fixture("rogue", "fed");
        assert!(
            server_config(&a, PresentedSlot::default())
                .unwrap()
                .is_none(),
            "no member pinned: nobody can be admitted"
        );
        a.peers.push(pin(&b));
        let (seen, ok) = handshake(&a, &b).await;
        assert!(ok, "hospital-b's certificate chains to its pinned CA");
        assert_eq!(seen.unwrap().common_name.as_deref(), Some("hospital-b"));
        let (seen, ok) = handshake(&a, &rogue).await;
        assert!(!ok, "a never-peered cluster is refused in the handshake");
        let seen = seen.unwrap();
        assert_eq!(seen.common_name.as_deref(), Some("rogue"));
        assert_eq!(seen.sha256.len(), 64);
        // Re-keyed: the same name with a new CA is just as unknown.
        let rekeyed = fixture("hospital-b", "fed");
        let (_, ok) = handshake(&a, &rekeyed).await;
        assert!(!ok, "hospital-b with a new CA is refused");
    }

    #[test]
    fn issued_by_binds_a_certificate_to_its_ca_only() {
        let b = fixture("hospital-b", "fed");
        let other = fixture("hospital-c", "fed");
        let leaf = b.endpoint_certificate().unwrap();
        let der = certificates("leaf", &leaf.cert_pem).unwrap().remove(0);
        assert!(issued_by(&der, &b.ca_pem));
        assert!(!issued_by(&der, &other.ca_pem));
        assert!(!issued_by(b"junk", &b.ca_pem));
        let both = format!("{}\n{}", other.ca_pem, b.ca_pem);
        assert!(issued_by(&der, &both));
    }

    #[test]
    fn the_client_needs_a_pinned_ca() {
        let a = fixture("hospital-a", "fed");
        let mut peer = pin(&fixture("hospital-b", "fed"));
        assert!(client_config(&a, &peer).is_ok());
        peer.ca_bundle = None;
        let e = client_config(&a, &peer).unwrap_err();
        assert!(e.contains("no pinned CA"), "{e}");
        peer.ca_bundle = Some("not pem".into());
        assert!(
            client_config(&a, &peer)
                .unwrap_err()
                .contains("no PEM certificate")
        );
    }
}
