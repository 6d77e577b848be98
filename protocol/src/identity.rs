//! Party identities (Ed25519 keys with a name) and the federation roster.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::error::ProtocolError;

const KEY_FILE: &str = "identity.key";
const PUB_FILE: &str = "identity.pub";

/// A party's name and private signing key.
#[derive(Clone)]
pub struct Identity {
    name: String,
    key: SigningKey,
}

// Hand-written so that a stray `{:?}` can never print the secret key.
impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("name", &self.name)
            .field(
                "public_key",
                &hex::encode(self.key.verifying_key().as_bytes()),
            )
            .finish_non_exhaustive()
    }
}

impl Identity {
    pub fn generate(name: &str) -> Result<Self, ProtocolError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| ProtocolError::Randomness(e.to_string()))?;
        Ok(Self::from_secret_bytes(name, secret))
    }

    pub fn from_secret_bytes(name: &str, secret: [u8; 32]) -> Self {
        Self {
            name: name.to_owned(),
            key: SigningKey::from_bytes(&secret),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn public(&self) -> PublicIdentity {
        PublicIdentity {
            name: self.name.clone(),
            public_key: hex::encode(self.key.verifying_key().as_bytes()),
        }
    }

    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.key.sign(msg).to_bytes()
    }

    /// Writes `DIR/identity.key` (hex secret, owner-only) and `DIR/identity.pub`
    /// (JSON [`PublicIdentity`], meant to be handed to the federation).
    pub fn save(&self, dir: &Path) -> Result<(), ProtocolError> {
        fs::create_dir_all(dir).map_err(|e| ProtocolError::io(dir, e))?;
        let key_path = dir.join(KEY_FILE);
        write_private_file(&key_path, hex::encode(self.key.to_bytes()).as_bytes())?;
        let pub_path = dir.join(PUB_FILE);
        let json = serde_json::to_string_pretty(&self.public())
            .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
        fs::write(&pub_path, json + "\n").map_err(|e| ProtocolError::io(pub_path, e))
    }

    /// Loads what [`Identity::save`] wrote; the name comes from `identity.pub`,
    /// which must match the secret key.
    pub fn load(dir: &Path) -> Result<Self, ProtocolError> {
        let public = PublicIdentity::load(&dir.join(PUB_FILE))?;
        let key_path = dir.join(KEY_FILE);
        let text = fs::read_to_string(&key_path).map_err(|e| ProtocolError::io(&key_path, e))?;
        let secret: [u8; 32] = hex::decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                ProtocolError::Malformed(format!(
                    "{}: not a hex-encoded 32-byte Ed25519 secret key",
                    key_path.display()
                ))
            })?;
        let id = Self::from_secret_bytes(&public.name, secret);
        if id.public() != public {
            return Err(ProtocolError::Malformed(format!(
                "{} does not belong to the key in {}",
                dir.join(PUB_FILE).display(),
                key_path.display()
            )));
        }
        Ok(id)
    }
}

/// Writes a secret so that only the owner can read it.
pub(crate) fn write_private_file(path: &Path, bytes: &[u8]) -> Result<(), ProtocolError> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| ProtocolError::io(path, e))?;
    // `mode` only applies on creation; an existing file may be too permissive.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(|e| ProtocolError::io(path, e))?;
    }
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| ProtocolError::io(path, e))
}

/// What the federation knows about a party: its name and public key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PublicIdentity {
    pub name: String,
    /// Hex of the 32-byte Ed25519 public key.
    pub public_key: String,
}

impl PublicIdentity {
    pub fn verifying_key(&self) -> Result<VerifyingKey, ProtocolError> {
        let bytes: [u8; 32] = hex::decode(&self.public_key)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                ProtocolError::Malformed(format!(
                    "public key of {:?} is not 32 hex-encoded bytes",
                    self.name
                ))
            })?;
        VerifyingKey::from_bytes(&bytes).map_err(|_| {
            ProtocolError::Malformed(format!(
                "public key of {:?} is not a valid Ed25519 point",
                self.name
            ))
        })
    }

    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> Result<(), ProtocolError> {
        let key = self.verifying_key()?;
        let bad = || ProtocolError::BadSignature {
            sender: self.name.clone(),
        };
        let sig = Signature::from_slice(sig).map_err(|_| bad())?;
        // Strict verification rejects malleable and small-order encodings, so
        // a signature is only ever valid in one byte form.
        key.verify_strict(msg, &sig).map_err(|_| bad())
    }

    pub fn fingerprint(&self) -> String {
        let raw = hex::decode(&self.public_key).unwrap_or_default();
        format!("SHA256:{}", hex::encode(Sha256::digest(raw)))
    }

    pub fn load(path: &Path) -> Result<Self, ProtocolError> {
        let text = fs::read_to_string(path).map_err(|e| ProtocolError::io(path, e))?;
        let id: Self = serde_json::from_str(&text).map_err(|e| {
            ProtocolError::Malformed(format!("{}: not a public identity: {e}", path.display()))
        })?;
        id.verifying_key()
            .map_err(|e| ProtocolError::Malformed(format!("{}: {e}", path.display())))?;
        Ok(id)
    }
}

/// The federation roster: who may send us what.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Roster {
    members: BTreeMap<String, PublicIdentity>,
}

impl Roster {
    pub fn new(members: impl IntoIterator<Item = PublicIdentity>) -> Self {
        let mut r = Self::default();
        for m in members {
            r.insert(m);
        }
        r
    }

    pub fn get(&self, name: &str) -> Result<&PublicIdentity, ProtocolError> {
        self.members
            .get(name)
            .ok_or_else(|| ProtocolError::UnknownSender(name.to_owned()))
    }

    pub fn names(&self) -> Vec<String> {
        self.members.keys().cloned().collect()
    }

    /// Adds or replaces the member with this name.
    pub fn insert(&mut self, id: PublicIdentity) {
        self.members.insert(id.name.clone(), id);
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_reject_tampering() {
        let id = Identity::from_secret_bytes("alice", [7; 32]);
        let sig = id.sign(b"hello");
        id.public().verify(b"hello", &sig).unwrap();
        assert!(matches!(
            id.public().verify(b"hellO", &sig),
            Err(ProtocolError::BadSignature { .. })
        ));
        assert!(matches!(
            id.public().verify(b"hello", &sig[..63]),
            Err(ProtocolError::BadSignature { .. })
        ));
        assert!(id.public().fingerprint().starts_with("SHA256:"));
    }

    #[test]
    fn save_load_round_trip_and_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let id = Identity::generate("bank-a").unwrap();
        id.save(dir.path()).unwrap();
        let back = Identity::load(dir.path()).unwrap();
        assert_eq!(back.public(), id.public());
        assert_eq!(
            PublicIdentity::load(&dir.path().join("identity.pub")).unwrap(),
            id.public()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join("identity.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        fs::write(dir.path().join("identity.key"), "zz").unwrap();
        let err = Identity::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("identity.key"), "{err}");
        let empty = tempfile::tempdir().unwrap();
        let err = Identity::load(empty.path()).unwrap_err().to_string();
        assert!(err.contains("identity.pub"), "{err}");
    }

    #[test]
    fn roster_lookup() {
        let a = Identity::from_secret_bytes("a", [1; 32]).public();
        let r = Roster::new([a.clone()]);
        assert_eq!(r.get("a").unwrap(), &a);
        assert!(matches!(r.get("b"), Err(ProtocolError::UnknownSender(_))));
        assert_eq!(r.names(), vec!["a".to_string()]);
    }
}
