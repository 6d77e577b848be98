//! This cluster's side of one TrustDomain: what the federation endpoint
//! and its client need, read from the `<td>-identity` and `<td>-ca`
//! Secrets and the members the TrustDomain trusts now.

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, ResourceExt};
use modelpub_crds::TrustDomain;
use modelpub_protocol::identity::{Identity, Roster};
use modelpub_protocol::tls::{FederationCa, TlsMaterial};

use crate::apply::{self, describe};
use crate::controllers::trust_domain::build::{ca_secret_name, identity_secret_name};
use crate::controllers::trust_domain::peers::{self, Peer, Trust};
use crate::error::Error;
use crate::identity::{self, CA_CRT, SecretData};

/// One TrustDomain as this cluster holds it.
pub struct LocalDomain {
    pub namespace: String,
    /// The TrustDomain's `metadata.name`.
    pub trust_domain: String,
    pub federation: String,
    /// Our identity; its name is `spec.self.name`.
    pub identity: Identity,
    pub ca: FederationCa,
    pub ca_pem: String,
    /// The members trusted now (refused ones are left out).
    pub peers: Vec<Peer>,
}

impl std::fmt::Debug for LocalDomain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalDomain")
            .field("namespace", &self.namespace)
            .field("trust_domain", &self.trust_domain)
            .field("federation", &self.federation)
            .field("self", &self.identity.name())
            .finish_non_exhaustive()
    }
}

impl LocalDomain {
    /// Reads `td`'s key Secrets. Fails (naming the Secret) while the
    /// TrustDomain controller has not issued them yet.
    pub async fn load(client: &Client, td: &TrustDomain, now: i64) -> Result<Self, Error> {
        let ns = td.namespace().unwrap_or_default();
        let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
        let mut data = Vec::new();
        for name in [
            identity_secret_name(&td.name_any()),
            ca_secret_name(&td.name_any()),
        ] {
            let what = describe::<Secret>(Some(&ns), &name);
            let secret = apply::get_opt(&api, Some(&ns), &name)
                .await?
                .and_then(|s| s.data)
                .ok_or_else(|| {
                    Error::MissingReference(format!(
                        "{what} does not exist yet (the TrustDomain controller issues it)"
                    ))
                })?;
            data.push((what, secret));
        }
        let (ca_what, ca_data) = data.pop().unwrap_or_default();
        let (identity_what, identity_data) = data.pop().unwrap_or_default();
        Self::from_parts(
            td,
            (&identity_what, &identity_data),
            (&ca_what, &ca_data),
            now,
        )
    }

    /// The same from Secret data already read (`what` names each Secret).
    pub fn from_parts(
        td: &TrustDomain,
        (identity_what, identity_data): (&str, &SecretData),
        (ca_what, ca_data): (&str, &SecretData),
        now: i64,
    ) -> Result<Self, Error> {
        let identity = identity::identity_from_data(identity_what, identity_data)?;
        let ca = identity::ca_from_data(ca_what, ca_data)?;
        let ca_pem = ca_data
            .get(CA_CRT)
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
            .ok_or_else(|| Error::identity(ca_what, format!("has no UTF-8 `{CA_CRT}`")))?;
        let federation = td.federation_name();
        let previous = td.status.as_ref();
        let peers = td
            .spec
            .members
            .iter()
            .filter_map(|m| {
                let before = previous.and_then(|s| s.members.iter().find(|p| p.name == m.name));
                match peers::resolve(m, &federation, before, now) {
                    Trust::Trusted(p) => Some(p),
                    Trust::Refused(_) => None,
                }
            })
            .collect();
        Ok(Self {
            namespace: td.namespace().unwrap_or_default(),
            trust_domain: td.name_any(),
            federation,
            identity,
            ca,
            ca_pem,
            peers,
        })
    }

    /// Our name in the federation.
    pub fn name(&self) -> &str {
        self.identity.name()
    }

    /// The trusted member called `name`.
    pub fn peer(&self, name: &str) -> Option<&Peer> {
        self.peers.iter().find(|p| p.name == name)
    }

    /// The trusted members pinned by key, as a roster envelopes are
    /// checked against.
    pub fn roster(&self) -> Roster {
        Roster::new(self.peers.iter().filter_map(|p| p.public.clone()))
    }

    /// A fresh certificate from our CA for our federation endpoint name,
    /// used as server and as client certificate.
    pub fn endpoint_certificate(&self) -> Result<TlsMaterial, Error> {
        let name = super::server_name(self.name(), &self.federation);
        self.ca
            .issue(self.name(), &[name.as_str()], &[])
            .map_err(|e| Error::identity(format!("federation endpoint certificate of {name}"), e))
    }
}

/// A domain `self_name` of `federation` with fresh keys and no members.
#[cfg(test)]
pub fn fixture(self_name: &str, federation: &str) -> LocalDomain {
    let td: TrustDomain = serde_json::from_value(serde_json::json!({
        "apiVersion": "modelpub.io/v1alpha1", "kind": "TrustDomain",
        "metadata": {"name": federation, "namespace": "ns"},
        "spec": {"self": {"name": self_name, "endpoint": "https://a.example:7450"}, "members": []}
    }))
    .unwrap();
    let id = identity::generate_identity_data(self_name).unwrap();
    let ca = identity::generate_ca_data(federation).unwrap();
    LocalDomain::from_parts(&td, ("identity", &id), ("ca", &ca), 0).unwrap()
}
