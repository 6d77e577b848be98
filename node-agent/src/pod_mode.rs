//! Running a role in a pod: the identity, certificate and config arrive as
//! read-only mounts (a Secret, a ConfigMap) and the party directory is a
//! writable emptyDir. `modelpub aggregator|participant --dir D --config C
//! --secrets S` copies them into `D` in the layout of [`PartyDir`], so
//! the roles run unchanged and write their audit log next to the copy.
//!
//! The Secret is mounted flat (Secret keys cannot contain `/`):
//! `identity.key identity.pub ca.crt tls.crt tls.key` (see
//! `modelpub_agent_config::pod`).

use std::path::Path;

use anyhow::{Context, bail};
use modelpub_agent_config::pod::{
    CA_CERT, IDENTITY_KEY, IDENTITY_PUB, PRIVATE_FILES, TLS_CERT, TLS_KEY,
};

use crate::party::PartyDir;

/// Copies `config` to `DIR/config.json` and the Secret files in `secrets`
/// to `DIR/identity.*` and `DIR/tls/*` (private keys owner-only). Either
/// may be absent: then `DIR` must already hold that part.
pub fn prepare(
    dir: &Path,
    config: Option<&Path>,
    secrets: Option<&Path>,
) -> anyhow::Result<PartyDir> {
    let party = PartyDir::new(dir);
    // Every input is checked before anything is written: a mistyped path
    // must not leave a new, empty party directory behind.
    if let Some(config) = config
        && !config.is_file()
    {
        bail!("--config {} is not a file", config.display());
    }
    if let Some(secrets) = secrets {
        if !secrets.is_dir() {
            bail!("--secrets {} is not a directory", secrets.display());
        }
        let missing: Vec<&str> = [IDENTITY_KEY, IDENTITY_PUB, CA_CERT, TLS_CERT, TLS_KEY]
            .into_iter()
            .filter(|f| !secrets.join(f).is_file())
            .collect();
        if !missing.is_empty() {
            bail!(
                "--secrets {} lacks {} (expected identity.key, identity.pub, ca.crt, tls.crt, tls.key)",
                secrets.display(),
                missing.join(", ")
            );
        }
    }
    if config.is_none() && secrets.is_none() {
        if !dir.is_dir() {
            bail!(
                "--dir {} is not a directory; without --config and --secrets it must already hold a party (config.json, identity.key, identity.pub, tls/)",
                dir.display()
            );
        }
        return Ok(party);
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the party directory {}", dir.display()))?;
    if let Some(config) = config {
        copy(config, &party.config(), false)?;
    }
    if let Some(secrets) = secrets {
        for f in [IDENTITY_KEY, IDENTITY_PUB] {
            copy(
                &secrets.join(f),
                &party.root().join(f),
                PRIVATE_FILES.contains(&f),
            )?;
        }
        std::fs::create_dir_all(party.tls())
            .with_context(|| format!("cannot create {}", party.tls().display()))?;
        for f in [CA_CERT, TLS_CERT, TLS_KEY] {
            copy(
                &secrets.join(f),
                &party.tls().join(f),
                PRIVATE_FILES.contains(&f),
            )?;
        }
    }
    Ok(party)
}

/// Copies the bytes (a mounted Secret file is a symlink into `..data/`;
/// its read-only mode must not follow it), owner-only for private keys.
fn copy(from: &Path, to: &Path, private: bool) -> anyhow::Result<()> {
    let bytes = std::fs::read(from).with_context(|| format!("cannot read {}", from.display()))?;
    // A previous copy may be read-only; replace it rather than write through.
    if to.exists() {
        std::fs::remove_file(to).with_context(|| format!("cannot replace {}", to.display()))?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    use std::io::Write;
    opts.open(to)
        .and_then(|mut f| f.write_all(&bytes))
        .with_context(|| format!("cannot write {}", to.display()))
}
