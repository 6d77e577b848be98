//! Where things live in a node-agent pod: the contract between the pods the
//! operator builds and `modelpub aggregator|participant --config --secrets`
//! and `modelpub vault seal` inside them.
//!
//! Secrets and ConfigMaps are mounted read-only; the party directory is a
//! writable emptyDir the node-agent copies its identity into (the audit log
//! and the global model are written next to it).

/// The writable party directory (emptyDir): identity copy, audit log,
/// rounds file, global model, and the sealed demo vault.
pub const PARTY_DIR: &str = "/var/lib/modelpub";
/// The party's Secret, mounted flat: [`IDENTITY_KEY`], [`IDENTITY_PUB`],
/// [`CA_CERT`], [`TLS_CERT`], [`TLS_KEY`] (and [`VAULT_KEY`] for the
/// aggregator's evaluation vault).
pub const SECRETS_DIR: &str = "/etc/modelpub/secrets";
/// The role's ConfigMap, holding [`CONFIG_FILE`].
pub const CONFIG_DIR: &str = "/etc/modelpub/config";
/// A participant's vault key Secret (`spec.data.vaults[].keySecretRef`),
/// projected to [`VAULT_KEY`].
pub const VAULT_KEY_DIR: &str = "/etc/modelpub/vault-key";
/// Where a participant's PersistentVolumeClaim is mounted.
pub const VAULT_VOLUME_DIR: &str = "/mnt/vault";
/// The shipped data sets in the node-agent image.
pub const DATA_DIR: &str = "/usr/share/modelpub/data";

/// The JSON config file name in [`CONFIG_DIR`] and the party directory.
pub const CONFIG_FILE: &str = "config.json";
pub const IDENTITY_KEY: &str = "identity.key";
pub const IDENTITY_PUB: &str = "identity.pub";
pub const CA_CERT: &str = "ca.crt";
pub const TLS_CERT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";
pub const VAULT_KEY: &str = "vault.key";
/// Secret files that are private keys (copied owner-only).
pub const PRIVATE_FILES: [&str; 3] = [IDENTITY_KEY, TLS_KEY, VAULT_KEY];

/// Mutual-TLS gRPC port of the aggregator.
pub const FEDERATION_PORT: u16 = 7443;
/// Plain-HTTP /metrics, /healthz, /readyz and /status port.
pub const METRICS_PORT: u16 = 9464;

/// Environment variable with the number of threads libtorch may use on
/// the CPU. Without it libtorch takes one per core the node has, which in
/// a container limited to a few CPUs only buys throttling.
pub const TORCH_THREADS_ENV: &str = "MODELPUB_TORCH_THREADS";

/// Subdirectory of the party directory holding the demo vault.
pub const VAULT_SUBDIR: &str = "vault";

/// `PARTY_DIR/vault`: the vault an init container seals demo data into.
pub fn demo_vault_dir() -> String {
    format!("{PARTY_DIR}/{VAULT_SUBDIR}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_do_not_overlap() {
        let dirs = [
            PARTY_DIR,
            SECRETS_DIR,
            CONFIG_DIR,
            VAULT_KEY_DIR,
            VAULT_VOLUME_DIR,
            DATA_DIR,
        ];
        for (i, a) in dirs.iter().enumerate() {
            for b in &dirs[i + 1..] {
                assert!(
                    !a.starts_with(b) && !b.starts_with(a),
                    "{a} and {b} overlap: one mount would hide the other"
                );
            }
        }
        assert_eq!(demo_vault_dir(), "/var/lib/modelpub/vault");
    }
}
