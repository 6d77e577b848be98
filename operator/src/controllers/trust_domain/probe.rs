//! Member reachability: can this cluster reach a member's federation
//! endpoint, and does it present a certificate from the CA the member is
//! pinned to? Behind a trait so scenario tests use canned answers
//! (`testing::FakeProbe`) and the operator the network ([`NetworkProbe`]).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;

use super::peers::Peer;
use crate::federation::client::{NetworkLink, PeerLink};
use crate::federation::domain::LocalDomain;

/// What a probe found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeOutcome {
    pub reachable: bool,
    /// Whether it completed the signed handshake of its federation
    /// endpoint (not only a TCP or TLS connection).
    #[serde(default)]
    pub handshake: bool,
    /// What it answered, or why it did not.
    pub message: String,
}

impl ProbeOutcome {
    pub fn reachable(message: impl Into<String>) -> Self {
        Self {
            reachable: true,
            handshake: false,
            message: message.into(),
        }
    }

    /// Reachable, and the signed handshake completed.
    pub fn handshake(message: impl Into<String>) -> Self {
        Self {
            handshake: true,
            ..Self::reachable(message)
        }
    }

    pub fn unreachable(message: impl Into<String>) -> Self {
        Self {
            reachable: false,
            handshake: false,
            message: message.into(),
        }
    }
}

/// Probes one member; `us` is this cluster's side of the trust domain,
/// for the signed handshake.
pub trait MemberProbe: Send + Sync {
    fn probe<'a>(&'a self, us: &'a LocalDomain, member: &'a Peer) -> BoxFuture<'a, ProbeOutcome>;
}

/// A member pinned by key and CA (a join token pins both) gets the signed
/// handshake of its federation endpoint (`peering.proto` `Hello`: mutual
/// TLS to its pinned CA, a welcome signed by its pinned key). Others: a
/// TCP connection to the endpoint (port 443 when none) and, with a
/// `caBundle`, a TLS handshake whose certificate must chain to it for the
/// endpoint's host name. Everything within `timeout`.
#[derive(Debug)]
pub struct NetworkProbe {
    pub timeout: Duration,
    link: NetworkLink,
}

impl Default for NetworkProbe {
    fn default() -> Self {
        Self::new(Duration::from_secs(5))
    }
}

impl NetworkProbe {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            link: NetworkLink::default(),
        }
    }
}

impl MemberProbe for NetworkProbe {
    fn probe<'a>(&'a self, us: &'a LocalDomain, member: &'a Peer) -> BoxFuture<'a, ProbeOutcome> {
        Box::pin(async move {
            let secs = self.timeout.as_secs();
            if member.public.is_some() && member.ca_bundle.is_some() {
                return match tokio::time::timeout(self.timeout, self.link.hello(us, member)).await {
                    Ok(Ok(message)) => ProbeOutcome::handshake(message),
                    Ok(Err(message)) => ProbeOutcome::unreachable(message),
                    Err(_) => ProbeOutcome::unreachable(format!(
                        "no handshake with {} within {secs} s",
                        member.endpoint
                    )),
                };
            }
            match tokio::time::timeout(self.timeout, probe(member)).await {
                Ok(Ok(message)) => ProbeOutcome::reachable(message),
                Ok(Err(message)) => ProbeOutcome::unreachable(message),
                Err(_) => ProbeOutcome::unreachable(format!(
                    "no answer from {} within {secs} s",
                    member.endpoint
                )),
            }
        })
    }
}

async fn probe(member: &Peer) -> Result<String, String> {
    let address = socket_address(&member.endpoint)?;
    let tcp = TcpStream::connect(&address)
        .await
        .map_err(|e| format!("cannot connect to {address}: {e}"))?;
    let Some(bundle) = &member.ca_bundle else {
        return Ok(format!("TCP connection to {address} opened"));
    };
    let connector = tls_connector(bundle)?;
    let host = host_of(&address);
    let server_name = ServerName::try_from(host.to_string())
        .map_err(|_| format!("{host:?} is not a valid TLS server name"))?;
    connector
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {address} failed: {e}"))?;
    Ok(format!(
        "TLS certificate of {address} verified against caBundle"
    ))
}

/// A TLS client trusting only the certificates in `bundle` (PEM).
fn tls_connector(bundle: &str) -> Result<tokio_rustls::TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(bundle.as_bytes()) {
        let cert = cert.map_err(|e| format!("caBundle: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("caBundle holds an unusable certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("caBundle holds no PEM certificate".into());
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS configuration: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// The host of a `host:port` address, without IPv6 brackets.
fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// `host:port` of an `https://host[:port][/path]` endpoint (port 443 by
/// default; IPv6 hosts in brackets).
pub fn socket_address(endpoint: &str) -> Result<String, String> {
    let rest = endpoint
        .strip_prefix("https://")
        .ok_or_else(|| format!("endpoint {endpoint:?} does not start with https://"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() {
        return Err(format!("endpoint {endpoint:?} has no host"));
    }
    let has_port = match authority.rfind(']') {
        Some(close) => authority[close..].contains(':'),
        None => authority.contains(':'),
    };
    if has_port {
        let (_, port) = authority.rsplit_once(':').unwrap_or((authority, ""));
        port.parse::<u16>()
            .map_err(|_| format!("endpoint {endpoint:?} has an invalid port {port:?}"))?;
        Ok(authority.to_string())
    } else {
        Ok(format!("{authority}:443"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelpub_protocol::tls::FederationCa;
    use rustls::pki_types::PrivateKeyDer;

    fn member(endpoint: String, ca_bundle: Option<String>) -> Peer {
        Peer {
            name: "b".into(),
            endpoint,
            public: None,
            fingerprint: Some(format!("SHA256:{}", "0".repeat(64))),
            ca_bundle,
            reason: crate::controllers::trust_domain::peers::PINNED,
            accepted_token_sha256: None,
        }
    }

    #[test]
    fn endpoints_become_socket_addresses() {
        assert_eq!(
            socket_address("https://b.example:7443").unwrap(),
            "b.example:7443"
        );
        assert_eq!(
            socket_address("https://b.example/fed").unwrap(),
            "b.example:443"
        );
        assert_eq!(
            socket_address("https://[::1]:8443/x").unwrap(),
            "[::1]:8443"
        );
        assert_eq!(socket_address("https://[::1]").unwrap(), "[::1]:443");
        assert!(
            socket_address("http://b.example")
                .unwrap_err()
                .contains("https://")
        );
        assert!(
            socket_address("https://b:99999")
                .unwrap_err()
                .contains("invalid port")
        );
        assert!(
            socket_address("https:///x")
                .unwrap_err()
                .contains("no host")
        );
        assert_eq!(host_of("[::1]:8443"), "::1");
        assert_eq!(host_of("b.example:443"), "b.example");
    }

    #[tokio::test]
    async fn tcp_probe_sees_a_listener_and_its_absence() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let probe = NetworkProbe::default();
        let us = crate::federation::domain::fixture("hospital-a", "fed");
        let m = member(format!("https://127.0.0.1:{port}"), None);
        let up = probe.probe(&us, &m).await;
        assert!(up.reachable, "{up:?}");
        drop(listener);
        let down = probe.probe(&us, &m).await;
        assert!(
            !down.reachable && down.message.contains("cannot connect"),
            "{down:?}"
        );
    }

    /// A TLS server presenting a certificate for `localhost` from `ca`,
    /// answering one handshake at a time.
    async fn tls_server(ca: &FederationCa) -> u16 {
        let leaf = ca.issue("hospital-b", &["localhost"], &[]).unwrap();
        let certs = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = acceptor.accept(tcp).await;
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn tls_probe_requires_a_certificate_from_the_pinned_ca() {
        let ca = FederationCa::generate("b").unwrap();
        let port = tls_server(&ca).await;
        let endpoint = format!("https://localhost:{port}");
        let probe = NetworkProbe::default();
        let us = crate::federation::domain::fixture("hospital-a", "fed");
        let ok = probe
            .probe(&us, &member(endpoint.clone(), Some(ca.cert_pem())))
            .await;
        assert!(ok.reachable, "{ok:?}");
        assert!(ok.message.contains("verified against caBundle"), "{ok:?}");
        let other = FederationCa::generate("impostor").unwrap();
        let bad = probe
            .probe(&us, &member(endpoint.clone(), Some(other.cert_pem())))
            .await;
        assert!(!bad.reachable, "{bad:?}");
        assert!(bad.message.contains("TLS handshake"), "{bad:?}");
        let junk = probe
            .probe(&us, &member(endpoint, Some("not pem".into())))
            .await;
        assert_eq!(junk.message, "caBundle holds no PEM certificate");
    }
}
