//! The Personal Vault: a folder of blobs sealed with XChaCha20-Poly1305, so
//! data and model state are encrypted at rest and only the node-agent
//! holding the key can read them.
//!
//! Layout: `DIR/vault.json` (format version, random vault id, key check)
//! and one `DIR/<name>.sealed` per blob: magic, 24-byte random nonce,
//! ciphertext. The associated data is the vault id and the blob name, so a
//! blob copied into another vault, or renamed to another name, fails to
//! authenticate instead of being read as something it is not.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

const META_FILE: &str = "vault.json";
const FORMAT: &str = "modelpub-vault";
const VERSION: u32 = 1;
const BLOB_MAGIC: &[u8; 4] = b"MPV1";
const NONCE_LEN: usize = 24;
const KEY_CHECK_PLAINTEXT: &[u8] = b"modelpub vault key check v1";
const MAX_NAME_LEN: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("vault key file `{}`: {source}", path.display())]
    KeyIo {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("vault key file `{}`: {reason}", path.display())]
    BadKey { path: PathBuf, reason: String },
    #[error("no system randomness: {0}")]
    Random(String),
    #[error("vault {}: {source}", dir.display())]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("vault {}: already exists ({META_FILE} is present)", dir.display())]
    AlreadyExists { dir: PathBuf },
    #[error("{} is not a vault: {reason}", dir.display())]
    NotAVault { dir: PathBuf, reason: String },
    #[error("vault {}: wrong key (the key check does not decrypt)", dir.display())]
    WrongKey { dir: PathBuf },
    #[error(
        "vault {}: invalid blob name `{name}` (use 1-{MAX_NAME_LEN} of A-Z a-z 0-9 . _ -, not starting with `.`)",
        dir.display()
    )]
    InvalidName { dir: PathBuf, name: String },
    #[error("vault {}: no blob `{name}`", dir.display())]
    Missing { dir: PathBuf, name: String },
    #[error("vault {}: `{name}` is corrupted ({reason})", dir.display())]
    Corrupted {
        dir: PathBuf,
        name: String,
        reason: &'static str,
    },
}

/// A 256-bit vault key. Its `Debug` output is redacted so it cannot leak
/// into logs.
#[derive(Clone, PartialEq, Eq)]
pub struct VaultKey([u8; 32]);

impl fmt::Debug for VaultKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VaultKey(<redacted>)")
    }
}

impl VaultKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn generate() -> Result<Self, VaultError> {
        Ok(Self(random()?))
    }

    /// Writes the key as hex, readable by the owner only (0600).
    pub fn save(&self, path: &Path) -> Result<(), VaultError> {
        let io = |source| VaultError::KeyIo {
            path: path.to_path_buf(),
            source,
        };
        let text = format!("{}\n", hex::encode(self.0));
        write_atomic(path, text.as_bytes(), 0o600).map_err(io)
    }

    pub fn load(path: &Path) -> Result<Self, VaultError> {
        let text = fs::read_to_string(path).map_err(|source| VaultError::KeyIo {
            path: path.to_path_buf(),
            source,
        })?;
        let bad = |reason: String| VaultError::BadKey {
            path: path.to_path_buf(),
            reason,
        };
        let hex_text = text.trim();
        if hex_text.len() != 64 {
            return Err(bad(format!(
                "expected 64 hex digits (32 bytes), found {} characters",
                hex_text.len()
            )));
        }
        let bytes = hex::decode(hex_text).map_err(|e| bad(format!("not hex: {e}")))?;
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes);
        Ok(Self(key))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&Key::from(self.0))
    }
}

#[derive(Serialize, Deserialize)]
struct VaultMeta {
    format: String,
    version: u32,
    vault_id: String,
    key_check_nonce: String,
    key_check: String,
}

pub struct Vault {
    dir: PathBuf,
    key: VaultKey,
    vault_id: String,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("dir", &self.dir)
            .field("vault_id", &self.vault_id)
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// Makes `dir` (0700) a new vault sealed with `key`.
    pub fn create(dir: &Path, key: VaultKey) -> Result<Self, VaultError> {
        let io = |source| VaultError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir).map_err(io)?;
        set_mode(dir, 0o700).map_err(io)?;
        let meta_path = dir.join(META_FILE);
        if meta_path.exists() {
            return Err(VaultError::AlreadyExists {
                dir: dir.to_path_buf(),
            });
        }
        let vault_id = hex::encode(random::<16>()?);
        let nonce = random::<NONCE_LEN>()?;
        let check = key
            .cipher()
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: KEY_CHECK_PLAINTEXT,
                    aad: key_check_aad(&vault_id).as_bytes(),
                },
            )
            .map_err(|_| VaultError::Random("encryption failed".into()))?;
        let meta = VaultMeta {
            format: FORMAT.into(),
            version: VERSION,
            vault_id: vault_id.clone(),
            key_check_nonce: hex::encode(nonce),
            key_check: hex::encode(check),
        };
        let json = serde_json::to_vec_pretty(&meta).unwrap_or_default();
        write_atomic(&meta_path, &json, 0o600).map_err(io)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            key,
            vault_id,
        })
    }

    /// Opens an existing vault, checking that `key` is its key.
    pub fn open(dir: &Path, key: VaultKey) -> Result<Self, VaultError> {
        let not_a_vault = |reason: String| VaultError::NotAVault {
            dir: dir.to_path_buf(),
            reason,
        };
        let meta_path = dir.join(META_FILE);
        let bytes = fs::read(&meta_path)
            .map_err(|e| not_a_vault(format!("cannot read {}: {e}", meta_path.display())))?;
        let meta: VaultMeta = serde_json::from_slice(&bytes)
            .map_err(|e| not_a_vault(format!("{META_FILE} is not valid: {e}")))?;
        if meta.format != FORMAT {
            return Err(not_a_vault(format!(
                "{META_FILE} has format `{}`",
                meta.format
            )));
        }
        if meta.version != VERSION {
            return Err(not_a_vault(format!(
                "unsupported vault version {} (this build reads {VERSION})",
                meta.version
            )));
        }
        let nonce: [u8; NONCE_LEN] = hex::decode(&meta.key_check_nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(|| not_a_vault(format!("{META_FILE}: bad key check nonce")))?;
        let check = hex::decode(&meta.key_check)
            .map_err(|_| not_a_vault(format!("{META_FILE}: key check is not hex")))?;
        let plain = key.cipher().decrypt(
            &XNonce::from(nonce),
            Payload {
                msg: &check,
                aad: key_check_aad(&meta.vault_id).as_bytes(),
            },
        );
        if plain.as_deref() != Ok(KEY_CHECK_PLAINTEXT) {
            return Err(VaultError::WrongKey {
                dir: dir.to_path_buf(),
            });
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            key,
            vault_id: meta.vault_id,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Seals `plaintext` as blob `name`, replacing any previous one
    /// atomically (a crash leaves the old blob or the new, never half).
    pub fn put(&self, name: &str, plaintext: &[u8]) -> Result<(), VaultError> {
        let path = self.blob_path(name)?;
        let nonce = random::<NONCE_LEN>()?;
        let aad = self.blob_aad(name);
        let sealed = self
            .key
            .cipher()
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| VaultError::Random("encryption failed".into()))?;
        let mut blob = Vec::with_capacity(BLOB_MAGIC.len() + NONCE_LEN + sealed.len());
        blob.extend_from_slice(BLOB_MAGIC);
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&sealed);
        write_atomic(&path, &blob, 0o600).map_err(|source| VaultError::Io {
            dir: self.dir.clone(),
            source,
        })
    }

    pub fn get(&self, name: &str) -> Result<Vec<u8>, VaultError> {
        let path = self.blob_path(name)?;
        let blob = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(VaultError::Missing {
                    dir: self.dir.clone(),
                    name: name.into(),
                });
            }
            Err(source) => {
                return Err(VaultError::Io {
                    dir: self.dir.clone(),
                    source,
                });
            }
        };
        let corrupted = |reason| VaultError::Corrupted {
            dir: self.dir.clone(),
            name: name.into(),
            reason,
        };
        let header = BLOB_MAGIC.len() + NONCE_LEN;
        if blob.len() < header || &blob[..BLOB_MAGIC.len()] != BLOB_MAGIC {
            return Err(corrupted("not a sealed blob"));
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&blob[BLOB_MAGIC.len()..header]);
        self.key
            .cipher()
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &blob[header..],
                    aad: &self.blob_aad(name),
                },
            )
            .map_err(|_| corrupted("authentication failed"))
    }

    /// Whether blob `name` exists (without decrypting it).
    pub fn contains(&self, name: &str) -> Result<bool, VaultError> {
        Ok(self.blob_path(name)?.is_file())
    }

    fn blob_path(&self, name: &str) -> Result<PathBuf, VaultError> {
        let valid = !name.is_empty()
            && name.len() <= MAX_NAME_LEN
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !valid {
            return Err(VaultError::InvalidName {
                dir: self.dir.clone(),
                name: name.into(),
            });
        }
        Ok(self.dir.join(format!("{name}.sealed")))
    }

    fn blob_aad(&self, name: &str) -> Vec<u8> {
        format!("modelpub-vault-blob\0{}\0{name}", self.vault_id).into_bytes()
    }
}

fn key_check_aad(vault_id: &str) -> String {
    format!("modelpub-vault-key-check\0{vault_id}")
}

fn random<const N: usize>() -> Result<[u8; N], VaultError> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| VaultError::Random(e.to_string()))?;
    Ok(buf)
}

/// Writes a sibling temporary file (created with `mode`), syncs it and
/// renames it over `path`.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let suffix = random::<8>().map(hex::encode).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.{suffix}.tmp"));
    let result = (|| {
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, mode);
        #[cfg(not(unix))]
        let _ = mode;
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn set_mode(dir: &Path, mode: u32) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = (dir, mode);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_vault() -> (tempfile::TempDir, Vault, VaultKey) {
        let dir = tempfile::tempdir().unwrap();
        let key = VaultKey::generate().unwrap();
        let v = Vault::create(&dir.path().join("v"), key.clone()).unwrap();
        (dir, v, key)
    }

    #[test]
    fn put_get_and_reopen() {
        let (_d, v, key) = new_vault();
        v.put("dataset", b"rows").unwrap();
        v.put("dataset", b"rows v2").unwrap();
        let v2 = Vault::open(v.dir(), key).unwrap();
        assert_eq!(v2.get("dataset").unwrap(), b"rows v2");
        assert!(v2.contains("dataset").unwrap());
        let raw = fs::read(v.dir().join("dataset.sealed")).unwrap();
        assert!(!raw.windows(7).any(|w| w == b"rows v2"));
        let e = v2.get("model").unwrap_err().to_string();
        assert!(e.contains("no blob `model`"), "{e}");
        assert!(matches!(
            v.put("../escape", b"x"),
            Err(VaultError::InvalidName { .. })
        ));
        let leftovers = fs::read_dir(v.dir())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".tmp")
            })
            .count();
        assert_eq!(leftovers, 0);
        assert!(Vault::create(v.dir(), VaultKey::generate().unwrap()).is_err());
    }

    #[test]
    fn wrong_key_is_named() {
        let (_d, v, _key) = new_vault();
        let e = Vault::open(v.dir(), VaultKey::generate().unwrap()).unwrap_err();
        assert!(matches!(e, VaultError::WrongKey { .. }));
        let msg = e.to_string();
        assert!(
            msg.ends_with(": wrong key (the key check does not decrypt)")
                && msg.contains(&v.dir().display().to_string()),
            "{msg}"
        );
    }

    #[test]
    fn corrupted_blob_is_named() {
        let (_d, v, _key) = new_vault();
        v.put("dataset", b"some rows").unwrap();
        let p = v.dir().join("dataset.sealed");
        let mut raw = fs::read(&p).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        fs::write(&p, raw).unwrap();
        let msg = v.get("dataset").unwrap_err().to_string();
        assert!(
            msg.ends_with(": `dataset` is corrupted (authentication failed)"),
            "{msg}"
        );
        fs::write(&p, b"xx").unwrap();
        assert!(matches!(
            v.get("dataset"),
            Err(VaultError::Corrupted { .. })
        ));
    }

    #[test]
    fn swapped_blobs_fail_to_authenticate() {
        let (_d, v, key) = new_vault();
        v.put("a", b"alpha").unwrap();
        v.put("b", b"beta").unwrap();
        fs::copy(v.dir().join("a.sealed"), v.dir().join("b.sealed")).unwrap();
        assert!(matches!(v.get("b"), Err(VaultError::Corrupted { .. })));

        // Same key, other vault: the vault id in the AAD keeps blobs apart.
        let other = Vault::create(&v.dir().with_file_name("w"), key).unwrap();
        fs::copy(v.dir().join("a.sealed"), other.dir().join("a.sealed")).unwrap();
        assert!(matches!(other.get("a"), Err(VaultError::Corrupted { .. })));
    }

    #[test]
    fn key_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        let key = VaultKey::generate().unwrap();
        key.save(&p).unwrap();
        assert_eq!(VaultKey::load(&p).unwrap(), key);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert!(!format!("{key:?}").contains(&hex::encode(key.0)));

        let e = VaultKey::load(&dir.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope"), "{e}");
        fs::write(&p, "abcd").unwrap();
        let e = VaultKey::load(&p).unwrap_err().to_string();
        assert!(e.contains("expected 64 hex digits"), "{e}");
        fs::write(&p, "z".repeat(64)).unwrap();
        let e = VaultKey::load(&p).unwrap_err().to_string();
        assert!(e.contains("not hex"), "{e}");
    }

    #[test]
    fn not_a_vault() {
        let dir = tempfile::tempdir().unwrap();
        let e = Vault::open(dir.path(), VaultKey::generate().unwrap()).unwrap_err();
        assert!(matches!(e, VaultError::NotAVault { .. }), "{e}");
        fs::write(dir.path().join(META_FILE), "{ nope").unwrap();
        let e = Vault::open(dir.path(), VaultKey::generate().unwrap()).unwrap_err();
        assert!(matches!(e, VaultError::NotAVault { .. }), "{e}");
    }
}
