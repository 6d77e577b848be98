//! The parties' Secrets: each holds an Ed25519 identity and a mutual-TLS
//! certificate issued from the TrustDomain's CA (the aggregator's also
//! the key of its evaluation vault). They are generated once: the
//! controller creates the missing ones and never rewrites one that exists
//! (a new identity mid-run would lock a party out of its own round), and
//! reads the public identities back from them to render the configs.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use modelpub_agent_config::pod::VAULT_KEY;
use modelpub_protocol::identity::PublicIdentity;

use super::{Round, names};
use crate::error::Error;
use crate::identity::{self, SecretData};
use crate::labels::Component;

/// One party's Secret, before its key material exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartySecret {
    /// The Secret's name: `<fr>-aggregator` or `<fr>-agent-<vault>`.
    pub name: String,
    /// The identity's and certificate's name.
    pub party: String,
    /// DNS names on the certificate.
    pub dns_names: Vec<String>,
    /// Whether it also carries a vault key (the aggregator's evaluation
    /// vault).
    pub vault_key: bool,
}

/// The Secrets of this cluster's parties: the aggregator first (when it
/// runs here), then one per vault held here, in `spec.data.vaults` order.
/// The aggregator's certificate names its Service the ways a client in
/// the cluster may reach it (participants elsewhere verify the same name
/// through the load balancer).
pub fn planned(round: &Round) -> Vec<PartySecret> {
    let aggregator = names::aggregator(&round.name);
    let ns = &round.namespace;
    let mut plan = Vec::new();
    if round.remote_coordinator().is_none() {
        plan.push(PartySecret {
            name: aggregator.clone(),
            party: aggregator.clone(),
            dns_names: vec![
                aggregator.clone(),
                format!("{aggregator}.{ns}"),
                format!("{aggregator}.{ns}.svc"),
                format!("{aggregator}.{ns}.svc.cluster.local"),
            ],
            vault_key: true,
        });
    }
    for vault in round.local_vaults() {
        let name = names::agent(&round.name, &vault.name);
        plan.push(PartySecret {
            dns_names: vec![name.clone()],
            name,
            party: vault.name.clone(),
            vault_key: false,
        });
    }
    plan
}

/// Fresh key material for `plan`: identity, certificate from the CA in
/// `ca_data` (the `<td>-ca` Secret, named `ca_what` in errors) and, for
/// the aggregator, a random vault key.
pub fn generate(
    plan: &PartySecret,
    ca_what: &str,
    ca_data: &SecretData,
) -> Result<SecretData, Error> {
    let mut data = identity::new_party_data(ca_what, ca_data, &plan.party, &plan.dns_names)?;
    if plan.vault_key {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| {
            Error::identity(
                format!("vault key of {}", plan.party),
                format!("no randomness: {e}"),
            )
        })?;
        data.insert(
            VAULT_KEY.into(),
            ByteString(format!("{}\n", hex::encode(key)).into_bytes()),
        );
    }
    Ok(data)
}

/// The Secret object for `plan` holding `data`. Immutable: the API server
/// refuses any change, so the material can only be replaced by deleting
/// the round.
pub fn secret(round: &Round, plan: &PartySecret, data: SecretData) -> Secret {
    Secret {
        metadata: round.child_meta(plan.name.clone(), Component::Identity),
        type_: Some("Opaque".into()),
        immutable: Some(true),
        data: Some(data),
        ..Secret::default()
    }
}

/// The public identity in an existing party Secret; the public half must
/// belong to the secret key and carry the planned party name.
pub fn public_identity(
    round: &Round,
    plan: &PartySecret,
    secret: &Secret,
) -> Result<PublicIdentity, Error> {
    let what = format!("Secret {}/{}", round.namespace, plan.name);
    let empty = BTreeMap::new();
    let data = secret.data.as_ref().unwrap_or(&empty);
    let identity = identity::identity_from_data(&what, data)?;
    if identity.name() != plan.party {
        return Err(Error::identity(
            what,
            format!(
                "holds the identity of `{}`, expected `{}`",
                identity.name(),
                plan.party
            ),
        ));
    }
    Ok(identity.public())
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::round_fixture;
    use super::*;

    #[test]
    fn one_secret_per_party_with_service_names_for_the_aggregator() {
        let fr = round_fixture();
        let round = Round::new(&fr).unwrap();
        let plan = planned(&round);
        let names: Vec<_> = plan.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "mnist-aggregator",
                "mnist-agent-hospital-a",
                "mnist-agent-hospital-b",
                "mnist-agent-hospital-c"
            ]
        );
        assert!(
            plan[0]
                .dns_names
                .contains(&"mnist-aggregator.lab.svc".to_string())
        );
        assert!(plan[0].vault_key);
        assert_eq!(plan[1].party, "hospital-a");
        assert!(!plan[1].vault_key);
    }

    #[test]
    fn generated_material_reads_back_and_is_immutable() {
        let fr = round_fixture();
        let round = Round::new(&fr).unwrap();
        let ca = identity::generate_ca_data("hospitals").unwrap();
        let plan = planned(&round);
        let data = generate(&plan[0], "Secret lab/hospitals-ca", &ca).unwrap();
        assert_eq!(
            data.keys().collect::<Vec<_>>(),
            [
                "ca.crt",
                "identity.key",
                "identity.pub",
                "tls.crt",
                "tls.key",
                "vault.key"
            ]
        );
        assert_eq!(data["vault.key"].0.len(), 65, "64 hex digits and a newline");
        let s = secret(&round, &plan[0], data);
        assert_eq!(s.immutable, Some(true));
        assert_eq!(s.metadata.name.as_deref(), Some("mnist-aggregator"));
        let id = public_identity(&round, &plan[0], &s).unwrap();
        assert_eq!(id.name, "mnist-aggregator");

        let agent = generate(&plan[1], "ca", &ca).unwrap();
        assert!(!agent.contains_key("vault.key"));
        let s = secret(&round, &plan[1], agent);
        let err = public_identity(&round, &plan[2], &s)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Secret lab/mnist-agent-hospital-b: holds the identity of `hospital-a`"),
            "{err}"
        );
        let err = public_identity(&round, &plan[1], &Secret::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("no `identity.pub`"), "{err}");
    }
}
