//! Sequence numbers: senders number their envelopes strictly increasingly,
//! receivers refuse any number not above the last one they accepted.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::ProtocolError;

fn now_micros() -> u64 {
    // A clock before 1970 only costs us the time component; `last + 1` still
    // keeps the sequence strictly increasing.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Sender side. Seeding from the wall clock means a restarted sender never
/// reuses a number it sent before the restart.
#[derive(Debug, Default)]
pub struct SequenceCounter {
    last: AtomicU64,
}

impl SequenceCounter {
    pub fn new() -> Self {
        Self::default()
    }

    /// `max(last + 1, now in microseconds since the UNIX epoch)`.
    pub fn next(&self) -> u64 {
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let next = last.saturating_add(1).max(now_micros());
            match self
                .last
                .compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }
}

/// Receiver side: the last accepted sequence per sender, in memory or, for
/// a receiver that must refuse replays across its own restarts (the
/// aggregator), also in a journal on disk.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    last: HashMap<String, u64>,
    journal: Option<Journal>,
}

/// One JSON line per accepted envelope, appended before the envelope is
/// acted on: a restarted receiver that reads the journal back refuses
/// whatever it had accepted before.
#[derive(Debug)]
struct Journal {
    path: PathBuf,
    file: File,
    /// Lines appended since the journal was last rewritten as the map.
    appended: usize,
}

#[derive(Serialize, Deserialize)]
struct JournalLine {
    sender: String,
    sequence: u64,
}

/// A journal grown past this many lines beyond one per sender is rewritten
/// as the map alone, so it stays as small as the set of senders.
const COMPACT_AFTER: usize = 10_000;

impl ReplayGuard {
    pub fn new() -> Self {
        Self::default()
    }

    /// A guard whose memory survives restarts: it reads `path` back (an
    /// absent file is a fresh start), rewrites it compactly and appends
    /// every sequence it accepts from then on.
    ///
    /// Each line is written with one `write` before the envelope it guards
    /// is acted on, so a process that crashes, is OOM-killed or has its
    /// container restarted keeps every line it acted on (the kernel holds
    /// them). No fsync: the aggregator's journal lives in its pod's
    /// emptyDir, which a machine crash takes with it anyway. A last line
    /// cut short by a crash mid-write is dropped (its envelope was never
    /// acted on); any other unreadable line is an error naming it.
    pub fn persistent(path: impl Into<PathBuf>) -> Result<Self, ProtocolError> {
        let path = path.into();
        let last = match std::fs::read(&path) {
            Ok(bytes) => read_journal(&path, &bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => return Err(ProtocolError::io(&path, e)),
        };
        let file = rewrite(&path, &last)?;
        Ok(Self {
            inner: Mutex::new(Inner {
                last,
                journal: Some(Journal {
                    path,
                    file,
                    appended: 0,
                }),
            }),
        })
    }

    /// Accepts `sequence` only if it is strictly greater than the last one
    /// accepted from `sender`, and then remembers it (on disk first, for a
    /// persistent guard: a sequence it could not write down is refused, as
    /// the guard could not refuse its replay after a restart).
    pub fn check_and_record(&self, sender: &str, sequence: u64) -> Result<(), ProtocolError> {
        // A poisoned lock only means another thread panicked mid-update of a
        // plain map of integers; the data is still consistent.
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&last) = inner.last.get(sender)
            && sequence <= last
        {
            return Err(ProtocolError::Replayed {
                sender: sender.to_owned(),
                sequence,
                last,
            });
        }
        let Inner { last, journal } = &mut *inner;
        if let Some(journal) = journal {
            journal.append(sender, sequence)?;
        }
        last.insert(sender.to_owned(), sequence);
        if let Some(journal) = journal
            && journal.appended > COMPACT_AFTER
        {
            journal.file = rewrite(&journal.path, last)?;
            journal.appended = 0;
        }
        Ok(())
    }

    /// The last accepted sequence from `sender`, if any.
    pub fn last(&self, sender: &str) -> Option<u64> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.last.get(sender).copied()
    }
}

impl Journal {
    fn append(&mut self, sender: &str, sequence: u64) -> Result<(), ProtocolError> {
        let mut line = serde_json::to_vec(&JournalLine {
            sender: sender.to_owned(),
            sequence,
        })
        .map_err(|e| ProtocolError::Malformed(format!("replay journal line: {e}")))?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .map_err(|e| ProtocolError::io(&self.path, e))?;
        self.appended += 1;
        Ok(())
    }
}

/// The highest sequence per sender that a journal's lines record.
fn read_journal(path: &Path, bytes: &[u8]) -> Result<HashMap<String, u64>, ProtocolError> {
    let mut last = HashMap::new();
    let complete = bytes.last().is_none_or(|b| *b == b'\n');
    let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    let count = lines.len();
    for (i, line) in lines.into_iter().enumerate() {
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<JournalLine>(line) {
            Ok(l) => {
                let seen = last.entry(l.sender).or_insert(l.sequence);
                *seen = (*seen).max(l.sequence);
            }
            // Cut short by a crash in the middle of its write.
            Err(_) if i + 1 == count && !complete => {}
            Err(e) => {
                return Err(ProtocolError::ReplayJournal {
                    path: path.to_owned(),
                    line: i + 1,
                    reason: e.to_string(),
                });
            }
        }
    }
    Ok(last)
}

/// Replaces the journal at `path` by one line per sender (written aside,
/// then renamed over it) and opens it for appending.
fn rewrite(path: &Path, last: &HashMap<String, u64>) -> Result<File, ProtocolError> {
    let mut text = Vec::new();
    let mut senders: Vec<_> = last.iter().collect();
    senders.sort();
    for (sender, sequence) in senders {
        serde_json::to_writer(
            &mut text,
            &JournalLine {
                sender: sender.clone(),
                sequence: *sequence,
            },
        )
        .map_err(|e| ProtocolError::Malformed(format!("replay journal line: {e}")))?;
        text.push(b'\n');
    }
    let mut aside = path.as_os_str().to_owned();
    aside.push(".tmp");
    let aside = PathBuf::from(aside);
    std::fs::write(&aside, &text).map_err(|e| ProtocolError::io(&aside, e))?;
    std::fs::rename(&aside, path).map_err(|e| ProtocolError::io(path, e))?;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| ProtocolError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_is_strictly_increasing_and_time_based() {
        let c = SequenceCounter::new();
        let a = c.next();
        let b = c.next();
        assert!(b > a);
        assert!(a >= 1_600_000_000_000_000);
    }

    #[test]
    fn guard_rejects_equal_and_older() {
        let g = ReplayGuard::new();
        g.check_and_record("a", 5).unwrap();
        assert!(g.check_and_record("a", 5).is_err());
        assert!(g.check_and_record("a", 4).is_err());
        g.check_and_record("b", 1).unwrap();
        g.check_and_record("a", 6).unwrap();
        assert_eq!(g.last("a"), Some(6));
    }

    #[test]
    fn a_persistent_guard_refuses_after_a_restart_what_it_accepted_before() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay.jsonl");
        let g = ReplayGuard::persistent(&path).unwrap();
        g.check_and_record("inst-0", 10).unwrap();
        g.check_and_record("inst-0", 11).unwrap();
        g.check_and_record("inst-1", 7).unwrap();
        drop(g);
        let g = ReplayGuard::persistent(&path).unwrap();
        let e = g.check_and_record("inst-0", 11).unwrap_err();
        assert!(matches!(e, ProtocolError::Replayed { last: 11, .. }), "{e}");
        assert!(g.check_and_record("inst-1", 7).is_err());
        g.check_and_record("inst-0", 12).unwrap();
        drop(g);
        // Rewritten on open: one line per sender, then what came after.
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert_eq!(
            ReplayGuard::persistent(&path).unwrap().last("inst-0"),
            Some(12)
        );
    }

    #[test]
    fn a_last_line_cut_short_is_dropped_and_any_other_bad_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay.jsonl");
        std::fs::write(
            &path,
            "{\"sender\":\"a\",\"sequence\":5}\n{\"sender\":\"a\",\"seq",
        )
        .unwrap();
        let g = ReplayGuard::persistent(&path).unwrap();
        assert_eq!(g.last("a"), Some(5));
        drop(g);
        std::fs::write(
            &path,
            "{\"sender\":\"a\",\"sequence\":5}\nnot json\n{\"sender\":\"a\",\"sequence\":6}\n",
        )
        .unwrap();
        let e = ReplayGuard::persistent(&path).unwrap_err();
        assert!(
            matches!(e, ProtocolError::ReplayJournal { line: 2, .. }),
            "{e}"
        );
        assert!(
            e.to_string().contains("replay.jsonl") && e.to_string().contains("line 2"),
            "{e}"
        );
        // Nothing lost: the journal is left as it was for someone to look at.
        assert!(std::fs::read_to_string(&path).unwrap().contains("not json"));
    }

    #[test]
    fn a_sequence_that_cannot_be_written_down_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay.jsonl");
        let g = ReplayGuard::persistent(&path).unwrap();
        // Swap the journal's file for one opened read-only: writes fail.
        {
            let mut inner = g.inner.lock().unwrap();
            inner.journal.as_mut().unwrap().file = File::open(&path).unwrap();
        }
        assert!(matches!(
            g.check_and_record("a", 1),
            Err(ProtocolError::Io { .. })
        ));
        assert_eq!(g.last("a"), None);
    }

    #[test]
    fn a_long_journal_is_compacted_as_it_grows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay.jsonl");
        let g = ReplayGuard::persistent(&path).unwrap();
        for s in 1..=(COMPACT_AFTER as u64 + 5) {
            g.check_and_record(if s % 2 == 0 { "a" } else { "b" }, s)
                .unwrap();
        }
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert!(lines < 10, "{lines} lines after compaction");
        drop(g);
        let g = ReplayGuard::persistent(&path).unwrap();
        assert_eq!(g.last("b"), Some(COMPACT_AFTER as u64 + 5));
        assert_eq!(g.last("a"), Some(COMPACT_AFTER as u64 + 4));
    }
}
