//! Test fixtures: a three-vault digits round and its parties' identities.

use modelpub_crds::FederationRound;
use modelpub_protocol::identity::PublicIdentity;

use super::Identities;

/// `lab/mnist` in trust domain `hospitals`: digits over three vaults
/// (`hospital-c` on a PersistentVolumeClaim), 5 rounds, at least 2
/// participants, secure aggregation on, one GPU each.
pub fn round_fixture() -> FederationRound {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "modelpub.io/v1alpha1",
        "kind": "FederationRound",
        "metadata": {"name": "mnist", "namespace": "lab", "uid": "uid-mnist", "generation": 1,
                     "annotations": {"modelpub.io/consent": "granted"}},
        "spec": {
            "trustDomain": "hospitals",
            "model": {"architecture": "mlp", "hiddenSizes": [32], "licence": "Apache-2.0"},
            "data": {
                "dataset": "digits",
                "dataClass": "research",
                "vaults": [
                    {"name": "hospital-a", "keySecretRef": {"name": "hospital-a-vault"}},
                    {"name": "hospital-b", "keySecretRef": {"name": "hospital-b-vault", "key": "key"}},
                    {"name": "hospital-c", "keySecretRef": {"name": "hospital-c-vault"},
                     "volumeClaimName": "hospital-c-data", "path": "vault"}
                ]
            },
            "rounds": 5,
            "participants": {"min": 2},
            "resources": {"gpus": 1, "cpu": "2", "memory": "4Gi"}
        }
    }))
    .expect("valid FederationRound fixture")
}

pub fn identity(name: &str, byte: u8) -> PublicIdentity {
    PublicIdentity {
        name: name.to_string(),
        public_key: hex::encode([byte; 32]),
    }
}

/// Identities named as the controller names them: `<fr>-aggregator` and
/// each vault's name.
pub fn identities(fr: &FederationRound) -> Identities {
    Identities {
        aggregator: identity("mnist-aggregator", 0xa0),
        agents: fr
            .spec
            .data
            .vaults
            .iter()
            .enumerate()
            .map(|(i, v)| identity(&v.name, i as u8 + 1))
            .collect(),
    }
}
