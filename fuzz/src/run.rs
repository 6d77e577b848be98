//! The fuzzing loop: mutate, decode, catch panics. Inputs that reach a new
//! kind of refusal (the error up to its first quoted or variable part,
//! digits stripped: a crude stand-in for coverage) or are accepted join the pool the next mutations start
//! from, so the run works its way past the first checks of a decoder.

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use crate::Target;
use crate::mutate::mutate;

/// How long a target runs.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    Iterations(u64),
    Time(Duration),
}

/// An input that made a decoder panic, and what it said.
#[derive(Debug, Clone)]
pub struct Crash {
    pub input: Vec<u8>,
    pub message: String,
}

/// What one target's run did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub iterations: u64,
    pub accepted: u64,
    pub refused: u64,
    /// Distinct kinds of refusal seen.
    pub refusal_kinds: usize,
    /// Distinct crashes (by message), with the first input of each.
    pub crashes: Vec<Crash>,
}

const POOL: usize = 256;

/// Runs `target` for `budget` with mutations drawn from `seed`.
pub fn fuzz(target: &mut dyn Target, budget: Budget, seed: u64) -> Outcome {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let seeds = target.seeds();
    let mut pool: Vec<Vec<u8>> = seeds.clone();
    let mut kinds = BTreeSet::new();
    let mut crash_messages = BTreeSet::new();
    let mut out = Outcome::default();
    let started = Instant::now();
    // The seeds themselves must decode: a target whose seeds are refused
    // would only be fuzzing its first check.
    for s in &seeds {
        if let Err(e) = target.run(s) {
            out.crashes.push(Crash {
                input: s.clone(),
                message: format!("a seed of {} is refused: {e}", target.name()),
            });
        }
    }
    loop {
        match budget {
            Budget::Iterations(n) if out.iterations >= n => break,
            Budget::Time(t) if started.elapsed() >= t => break,
            _ => {}
        }
        out.iterations += 1;
        let base = &pool[rng.random_range(0..pool.len())];
        let other = &pool[rng.random_range(0..pool.len())];
        let input = mutate(&mut rng, base, other);
        match catch_unwind(AssertUnwindSafe(|| target.run(&input))) {
            Ok(Ok(())) => {
                out.accepted += 1;
                remember(&mut pool, &mut rng, input);
            }
            Ok(Err(e)) => {
                out.refused += 1;
                // The message up to its first quoted or variable part.
                let kind: String = (e.split(['"', '`', ':', '(']).next())
                    .unwrap_or_default()
                    .chars()
                    .filter(|c| !c.is_ascii_digit())
                    .take(48)
                    .collect();
                if kinds.insert(kind) {
                    remember(&mut pool, &mut rng, input);
                }
            }
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(a panic without a message)".into());
                if crash_messages.insert(message.clone()) {
                    out.crashes.push(Crash { input, message });
                }
            }
        }
    }
    out.refusal_kinds = kinds.len();
    out
}

fn remember(pool: &mut Vec<Vec<u8>>, rng: &mut impl Rng, input: Vec<u8>) {
    if pool.len() < POOL {
        pool.push(input);
    } else {
        let i = rng.random_range(0..pool.len());
        pool[i] = input;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A decoder with a planted bug: it indexes past the end when the
    /// first byte claims more than the input holds.
    struct Buggy;

    impl Target for Buggy {
        fn name(&self) -> &'static str {
            "buggy"
        }
        fn seeds(&self) -> Vec<Vec<u8>> {
            vec![vec![2, 10, 20]]
        }
        fn run(&mut self, input: &[u8]) -> Result<(), String> {
            let n = *input.first().ok_or("empty")? as usize;
            let _last = input[n];
            Ok(())
        }
    }

    #[test]
    fn a_planted_out_of_bounds_read_is_found_and_its_input_kept() {
        std::panic::set_hook(Box::new(|_| {}));
        let out = fuzz(&mut Buggy, Budget::Iterations(2_000), 3);
        let _ = std::panic::take_hook();
        assert!(!out.crashes.is_empty(), "{out:?}");
        let crash = &out.crashes[0];
        assert!(
            crash.message.contains("index out of bounds"),
            "{}",
            crash.message
        );
        assert!(
            crash.input.len() <= crash.input[0] as usize,
            "{:?}",
            crash.input
        );
    }
}
