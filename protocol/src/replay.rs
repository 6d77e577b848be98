//! Sequence numbers: senders number their envelopes strictly increasingly,
//! receivers refuse any number not above the last one they accepted.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

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

/// Receiver side: the last accepted sequence per sender.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    last: Mutex<HashMap<String, u64>>,
}

impl ReplayGuard {
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts `sequence` only if it is strictly greater than the last one
    /// accepted from `sender`, and then remembers it.
    pub fn check_and_record(&self, sender: &str, sequence: u64) -> Result<(), ProtocolError> {
        // A poisoned lock only means another thread panicked mid-update of a
        // plain map of integers; the data is still consistent.
        let mut map = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match map.get_mut(sender) {
            Some(last) if sequence <= *last => Err(ProtocolError::Replayed {
                sender: sender.to_owned(),
                sequence,
                last: *last,
            }),
            Some(last) => {
                *last = sequence;
                Ok(())
            }
            None => {
                map.insert(sender.to_owned(), sequence);
                Ok(())
            }
        }
    }

    /// The last accepted sequence from `sender`, if any.
    pub fn last(&self, sender: &str) -> Option<u64> {
        let map = self.last.lock().unwrap_or_else(|p| p.into_inner());
        map.get(sender).copied()
    }
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
}
