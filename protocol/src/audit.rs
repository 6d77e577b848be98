//! The hash-chained, signed audit log of a party.
//!
//! Every entry records hashes and metadata, never data. Each entry commits to
//! its predecessor (`prev_hash`) and is signed by the party, so editing,
//! deleting, inserting or re-signing an entry with another key is detected by
//! [`verify`]. Truncating the tail is not detectable from the file alone;
//! compare [`AuditReport::head`] with a copy kept elsewhere for that.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::error::ProtocolError;
use crate::identity::{Identity, PublicIdentity};

pub const LOG_FILE: &str = "audit.log";
const PUB_FILE: &str = "identity.pub";
const DOMAIN: &[u8] = b"modelpub/v1/audit-entry";
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Sent,
    Received,
    Local,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::Sent => "sent",
            Direction::Received => "received",
            Direction::Local => "local",
        }
    }
}

/// Something that happened, as the caller describes it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AuditEvent {
    pub direction: Direction,
    /// Message kind, e.g. "modelpub.v1.UpdateHeader", or a local event name.
    pub kind: String,
    pub peer: String,
    pub round: u32,
    /// Hex SHA-256 of the data concerned.
    pub sha256: String,
    pub note: String,
}

/// One line of `audit.log`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    /// 1-based, equal to the line number.
    index: u64,
    /// Milliseconds since the UNIX epoch.
    time_ms: u64,
    direction: Direction,
    kind: String,
    peer: String,
    round: u32,
    sha256: String,
    note: String,
    prev_hash: String,
    entry_hash: String,
    signature: String,
}

impl Entry {
    /// Length-prefixed so that moving bytes between fields changes the hash.
    fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = DOMAIN.to_vec();
        out.extend_from_slice(&self.index.to_le_bytes());
        out.extend_from_slice(&self.time_ms.to_le_bytes());
        for s in [
            self.direction.as_str(),
            &self.kind,
            &self.peer,
            &self.round.to_string(),
            &self.sha256,
            &self.note,
            &self.prev_hash,
        ] {
            out.extend_from_slice(&(s.len() as u64).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        out
    }

    fn compute_hash(&self) -> [u8; 32] {
        Sha256::digest(self.canonical_bytes()).into()
    }

    /// The reason this entry is bad on its own, if it is.
    fn self_check(&self, signer: &PublicIdentity) -> Result<(), String> {
        let hash = self.compute_hash();
        if hex::encode(hash) != self.entry_hash {
            return Err("content altered (entry_hash mismatch)".into());
        }
        let sig = hex::decode(&self.signature).unwrap_or_default();
        signer
            .verify(&hash, &sig)
            .map_err(|_| format!("forged (signature invalid for {})", signer.name))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("entry {line}: {reason}")]
    Broken { line: usize, reason: String },
    #[error("cannot establish the log's signer: {0}")]
    Signer(#[source] ProtocolError),
}

/// Result of a successful [`verify`].
#[derive(Debug, Clone)]
pub struct AuditReport {
    pub entries: usize,
    pub signer: PublicIdentity,
    /// `entry_hash` of the last entry (64 zeros for an empty log).
    pub head: String,
}

struct Inner {
    path: PathBuf,
    file: File,
    identity: Identity,
    next_index: u64,
    prev_hash: String,
}

/// Appends signed entries to `DIR/audit.log`. Cheap to clone; clones share
/// one file handle and one chain.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl AuditLog {
    /// Creates the log, or resumes it after its last entry. Refuses to resume
    /// a log whose last line does not parse or is not ours, since appending
    /// to it would produce a chain nobody can verify.
    pub fn open(dir: &Path, identity: Identity) -> Result<Self, ProtocolError> {
        fs::create_dir_all(dir).map_err(|e| ProtocolError::io(dir, e))?;
        let path = dir.join(LOG_FILE);
        let (next_index, prev_hash) = match File::open(&path) {
            Ok(f) => {
                let mut last = None;
                for line in BufReader::new(f).lines() {
                    last = Some(line.map_err(|e| ProtocolError::io(&path, e))?);
                }
                match last {
                    None => (1, GENESIS.to_owned()),
                    Some(line) => {
                        let entry: Entry = serde_json::from_str(&line).map_err(|e| {
                            ProtocolError::Audit(format!(
                                "{}: last entry does not parse ({e}); refusing to extend it",
                                path.display()
                            ))
                        })?;
                        entry.self_check(&identity.public()).map_err(|why| {
                            ProtocolError::Audit(format!(
                                "{}: last entry {why}; refusing to extend it",
                                path.display()
                            ))
                        })?;
                        (entry.index.saturating_add(1), entry.entry_hash)
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (1, GENESIS.to_owned()),
            Err(e) => return Err(ProtocolError::io(&path, e)),
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| ProtocolError::io(&path, e))?;
        Ok(Self {
            inner: Arc::new(Mutex::new(Inner {
                path,
                file,
                identity,
                next_index,
                prev_hash,
            })),
        })
    }

    /// Appends one signed entry and flushes it.
    pub fn record(&self, event: AuditEvent) -> Result<(), ProtocolError> {
        // The chain state is only advanced after a successful write, so a
        // poisoned lock still holds a consistent chain.
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut entry = Entry {
            index: inner.next_index,
            time_ms: now_ms(),
            direction: event.direction,
            kind: event.kind,
            peer: event.peer,
            round: event.round,
            sha256: event.sha256,
            note: event.note,
            prev_hash: inner.prev_hash.clone(),
            entry_hash: String::new(),
            signature: String::new(),
        };
        let hash = entry.compute_hash();
        entry.entry_hash = hex::encode(hash);
        entry.signature = hex::encode(inner.identity.sign(&hash));
        let mut line =
            serde_json::to_vec(&entry).map_err(|e| ProtocolError::Audit(e.to_string()))?;
        line.push(b'\n');
        // One write of the whole line so that concurrent readers never see
        // half an entry followed by another one.
        let path = inner.path.clone();
        inner
            .file
            .write_all(&line)
            .and_then(|()| inner.file.flush())
            .map_err(|e| ProtocolError::io(path, e))?;
        inner.next_index = inner.next_index.saturating_add(1);
        inner.prev_hash = entry.entry_hash;
        Ok(())
    }

    pub fn path(&self) -> PathBuf {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .path
            .clone()
    }
}

/// Verifies `DIR/audit.log` against `pinned`, or else `DIR/identity.pub`.
/// Pin the key from an independent source when the directory itself might
/// have been tampered with, since whoever can rewrite the log can also
/// replace `identity.pub`.
pub fn verify(dir: &Path, pinned: Option<&PublicIdentity>) -> Result<AuditReport, AuditError> {
    let signer = match pinned {
        Some(p) => p.clone(),
        None => PublicIdentity::load(&dir.join(PUB_FILE)).map_err(AuditError::Signer)?,
    };
    signer.verifying_key().map_err(AuditError::Signer)?;
    let path = dir.join(LOG_FILE);
    let io = |source| AuditError::Io {
        path: path.clone(),
        source,
    };
    let file = File::open(&path).map_err(io)?;
    let mut prev_hash = GENESIS.to_owned();
    let mut entries = 0usize;
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line_no = i + 1;
        let broken = |reason: String| AuditError::Broken {
            line: line_no,
            reason,
        };
        let line = line.map_err(io)?;
        let entry: Entry =
            serde_json::from_str(&line).map_err(|e| broken(format!("does not parse ({e})")))?;
        entry.self_check(&signer).map_err(broken)?;
        if entry.prev_hash != prev_hash {
            return Err(broken(if line_no == 1 {
                "chain broken (first entry does not start from the genesis hash)".into()
            } else {
                format!(
                    "chain broken (prev_hash does not match entry {})",
                    line_no - 1
                )
            }));
        }
        if entry.index != line_no as u64 {
            return Err(broken(format!(
                "index out of sequence (index {}, expected {line_no})",
                entry.index
            )));
        }
        prev_hash = entry.entry_hash;
        entries = line_no;
    }
    Ok(AuditReport {
        entries,
        signer,
        head: prev_hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u32) -> AuditEvent {
        AuditEvent {
            direction: Direction::Received,
            kind: "modelpub.v1.UpdateHeader".into(),
            peer: "bank-b".into(),
            round: n,
            sha256: hex::encode(Sha256::digest(n.to_le_bytes())),
            note: format!("update {n}"),
        }
    }

    fn good_log(n: u32) -> (tempfile::TempDir, Identity) {
        let dir = tempfile::tempdir().unwrap();
        let id = Identity::from_secret_bytes("bank-a", [3; 32]);
        id.save(dir.path()).unwrap();
        let log = AuditLog::open(dir.path(), id.clone()).unwrap();
        for i in 1..=n {
            log.record(event(i)).unwrap();
        }
        (dir, id)
    }

    fn lines(dir: &Path) -> Vec<String> {
        fs::read_to_string(dir.join(LOG_FILE))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn write_lines(dir: &Path, lines: &[String]) {
        fs::write(dir.join(LOG_FILE), lines.join("\n") + "\n").unwrap();
    }

    fn rewrite(dir: &Path, line: usize, f: impl FnOnce(&mut Entry)) {
        let mut ls = lines(dir);
        let mut e: Entry = serde_json::from_str(&ls[line - 1]).unwrap();
        f(&mut e);
        ls[line - 1] = serde_json::to_string(&e).unwrap();
        write_lines(dir, &ls);
    }

    fn err(dir: &Path, pinned: Option<&PublicIdentity>) -> String {
        verify(dir, pinned).unwrap_err().to_string()
    }

    #[test]
    fn good_log_verifies_and_resumes() {
        let (dir, id) = good_log(3);
        let r = verify(dir.path(), None).unwrap();
        assert_eq!(r.entries, 3);
        assert_eq!(r.signer, id.public());
        let log = AuditLog::open(dir.path(), id.clone()).unwrap();
        log.record(event(4)).unwrap();
        assert_eq!(verify(dir.path(), Some(&id.public())).unwrap().entries, 4);
    }

    #[test]
    fn edited_field_is_content_altered() {
        let (dir, _) = good_log(3);
        rewrite(dir.path(), 2, |e| e.note = "nothing to see".into());
        let e = err(dir.path(), None);
        assert!(e.starts_with("entry 2: content altered"), "{e}");
    }

    #[test]
    fn rehashed_without_key_is_forged() {
        let (dir, _) = good_log(3);
        rewrite(dir.path(), 2, |e| {
            e.round = 99;
            e.entry_hash = hex::encode(e.compute_hash());
        });
        let e = err(dir.path(), None);
        assert!(e.starts_with("entry 2: forged"), "{e}");
    }

    #[test]
    fn deleted_middle_line_breaks_chain() {
        let (dir, _) = good_log(3);
        let mut ls = lines(dir.path());
        ls.remove(1);
        write_lines(dir.path(), &ls);
        let e = err(dir.path(), None);
        assert!(
            e.starts_with("entry 2: chain broken (prev_hash does not match entry 1)"),
            "{e}"
        );
    }

    #[test]
    fn other_signer_is_forged_at_entry_1() {
        let (dir, _) = good_log(2);
        let other = Identity::from_secret_bytes("bank-a", [4; 32]).public();
        let e = err(dir.path(), Some(&other));
        assert!(e.starts_with("entry 1: forged"), "{e}");
    }

    #[test]
    fn garbage_line_does_not_parse_and_blocks_resume() {
        let (dir, id) = good_log(2);
        let mut ls = lines(dir.path());
        ls.push("{not json".into());
        write_lines(dir.path(), &ls);
        let e = err(dir.path(), None);
        assert!(e.starts_with("entry 3: does not parse"), "{e}");
        assert!(AuditLog::open(dir.path(), id).is_err());
    }

    #[test]
    fn foreign_log_is_not_resumed() {
        let (dir, _) = good_log(1);
        let other = Identity::from_secret_bytes("bank-a", [4; 32]);
        assert!(AuditLog::open(dir.path(), other).is_err());
    }
}
