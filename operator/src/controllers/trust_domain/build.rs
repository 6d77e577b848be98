//! The TrustDomain's children, built purely from the TrustDomain and the
//! key material to put in them: the identity Secret `<td>-identity` and
//! the CA Secret `<td>-ca`. Both are immutable Opaque Secrets owned by the
//! TrustDomain; the controller creates them only when missing.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use modelpub_crds::TrustDomain;

use crate::identity::{self, SecretData};
use crate::labels::{self, Component};

/// The key-material Secrets a TrustDomain owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySecret {
    /// `<td>-identity`: this cluster's Ed25519 federation identity.
    Identity,
    /// `<td>-ca`: the CA that issues aggregator and node-agent certificates.
    Ca,
}

impl KeySecret {
    pub const ALL: [KeySecret; 2] = [KeySecret::Identity, KeySecret::Ca];

    pub fn name(self, td: &str) -> String {
        match self {
            KeySecret::Identity => identity_secret_name(td),
            KeySecret::Ca => ca_secret_name(td),
        }
    }

    pub fn component(self) -> Component {
        match self {
            KeySecret::Identity => Component::Identity,
            KeySecret::Ca => Component::Certificates,
        }
    }

    /// Fresh key material for a cluster named `self_name` (random: this is
    /// the one impure step, kept out of [`key_secret`]).
    pub fn generate(self, self_name: &str) -> Result<SecretData, crate::error::Error> {
        match self {
            KeySecret::Identity => identity::generate_identity_data(self_name),
            KeySecret::Ca => identity::generate_ca_data(self_name),
        }
    }

    /// The Event reason when the controller created it.
    pub fn created_reason(self) -> &'static str {
        match self {
            KeySecret::Identity => "IdentityCreated",
            KeySecret::Ca => "CertificateAuthorityCreated",
        }
    }
}

/// `<td>-identity`.
pub fn identity_secret_name(td: &str) -> String {
    format!("{td}-identity")
}

/// `<td>-ca`.
pub fn ca_secret_name(td: &str) -> String {
    format!("{td}-ca")
}

/// The owner reference children of `td` carry (controller, blocking the
/// owner's deletion until they are gone).
pub fn owner_reference(td: &TrustDomain) -> Option<OwnerReference> {
    td.controller_owner_ref(&()).map(|r| OwnerReference {
        block_owner_deletion: Some(true),
        ..r
    })
}

/// The Secret `kind` of `td` holding `data`.
pub fn key_secret(td: &TrustDomain, kind: KeySecret, data: SecretData) -> Secret {
    let td_name = td.name_any();
    Secret {
        metadata: ObjectMeta {
            name: Some(kind.name(&td_name)),
            namespace: td.namespace(),
            labels: Some(labels::trust_domain_child(&td_name, kind.component())),
            owner_references: owner_reference(td).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_string()),
        // Key material never changes in place: a new key is a new Secret.
        immutable: Some(true),
        data: Some(data),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::trust_domain::tests::trust_domain;
    use crate::identity::{CA_CRT, CA_KEY, IDENTITY_KEY, IDENTITY_PUB};

    #[test]
    fn identity_secret_is_immutable_labelled_and_owned() {
        let td = trust_domain();
        let data = KeySecret::Identity.generate("hospital-a").unwrap();
        let s = key_secret(&td, KeySecret::Identity, data.clone());
        assert_eq!(s.metadata.name.as_deref(), Some("fed-identity"));
        assert_eq!(s.metadata.namespace.as_deref(), Some("research"));
        assert_eq!(s.immutable, Some(true));
        assert_eq!(s.type_.as_deref(), Some("Opaque"));
        assert_eq!(s.data.as_ref(), Some(&data));
        assert_eq!(
            data.keys().collect::<Vec<_>>(),
            [IDENTITY_KEY, IDENTITY_PUB]
        );
        let l = s.metadata.labels.unwrap();
        assert_eq!(l[labels::COMPONENT], "identity");
        assert_eq!(l[labels::INSTANCE], "fed");
        assert_eq!(l[labels::TRUST_DOMAIN], "fed");
        assert_eq!(l[labels::MANAGED_BY], "modelpub-operator");
        let owner = &s.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("TrustDomain", "fed", "uid-fed")
        );
        assert_eq!(owner.api_version, "modelpub.io/v1alpha1");
        assert_eq!(
            (owner.controller, owner.block_owner_deletion),
            (Some(true), Some(true))
        );
    }

    #[test]
    fn ca_secret_holds_the_ca_pair() {
        let td = trust_domain();
        let data = KeySecret::Ca.generate("hospital-a").unwrap();
        let s = key_secret(&td, KeySecret::Ca, data);
        assert_eq!(s.metadata.name.as_deref(), Some("fed-ca"));
        let l = s.metadata.labels.unwrap();
        assert_eq!(l[labels::COMPONENT], "certificates");
        let data = s.data.unwrap();
        assert_eq!(data.keys().collect::<Vec<_>>(), [CA_CRT, CA_KEY]);
        assert!(
            std::str::from_utf8(&data[CA_CRT].0)
                .unwrap()
                .contains("BEGIN CERTIFICATE")
        );
        assert!(crate::identity::ca_from_data("x", &data).is_ok());
    }
}
