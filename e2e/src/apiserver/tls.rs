//! The serving certificate: a throwaway CA and a leaf for `localhost` and
//! `127.0.0.1` signed by it; clients trust the CA through the kubeconfig.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub struct ServingCert {
    pub ca_pem: String,
    leaf_der: Vec<u8>,
    ca_der: Vec<u8>,
    key_der: Vec<u8>,
}

impl ServingCert {
    pub fn generate() -> Result<Self, String> {
        let e = |e: rcgen::Error| e.to_string();
        let ca_key = KeyPair::generate().map_err(e)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "modelpub-e2e-ca");
        let ca = ca_params.self_signed(&ca_key).map_err(e)?;
        let issuer = Issuer::from_params(&ca_params, &ca_key);

        let key = KeyPair::generate().map_err(e)?;
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).map_err(e)?;
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kube-apiserver");
        let leaf = params.signed_by(&key, &issuer).map_err(e)?;
        Ok(Self {
            ca_pem: ca.pem(),
            leaf_der: leaf.der().to_vec(),
            ca_der: ca.der().to_vec(),
            key_der: key.serialize_der(),
        })
    }

    /// A TLS acceptor speaking HTTP/1.1 (what ALPN offers).
    pub fn acceptor(&self) -> Result<tokio_rustls::TlsAcceptor, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(
                vec![
                    CertificateDer::from(self.leaf_der.clone()),
                    CertificateDer::from(self.ca_der.clone()),
                ],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone())),
            )
            .map_err(|e| e.to_string())?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}
