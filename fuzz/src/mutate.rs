//! Structure-blind mutations, the usual ones of AFL and libFuzzer: bit
//! flips, interesting bytes and integers (lengths a decoder may trust),
//! insertions, deletions, duplications, truncation and splices of two
//! inputs. Deterministic from the seed, so a run can be repeated.

use rand::{Rng, RngCore};

const INTERESTING_U8: [u8; 7] = [0, 1, 0x7f, 0x80, 0xff, b'"', b'\n'];
const INTERESTING_U32: [u32; 8] = [0, 1, 0x7f, 0xff, 0xffff, 0x7fff_ffff, 0x8000_0000, u32::MAX];
/// Inputs never grow past this, so a run measures decoders, not memcpy.
pub const MAX_INPUT: usize = 1 << 16;

/// `base` after one to four mutations; `other` is the splice partner.
pub fn mutate(rng: &mut impl RngCore, base: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = base.to_vec();
    let rounds = rng.random_range(1..=4);
    for _ in 0..rounds {
        mutate_once(rng, &mut out, other);
    }
    out.truncate(MAX_INPUT);
    out
}

fn mutate_once(rng: &mut impl RngCore, out: &mut Vec<u8>, other: &[u8]) {
    if out.is_empty() {
        out.push(rng.random());
        return;
    }
    let at = rng.random_range(0..out.len());
    match rng.random_range(0..9) {
        0 => out[at] ^= 1 << rng.random_range(0..8),
        1 => out[at] = INTERESTING_U8[rng.random_range(0..INTERESTING_U8.len())],
        2 => out[at] = rng.random(),
        3 => {
            let v = INTERESTING_U32[rng.random_range(0..INTERESTING_U32.len())];
            let bytes = if rng.random() {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            };
            for (i, b) in bytes.into_iter().enumerate() {
                if let Some(slot) = out.get_mut(at + i) {
                    *slot = b;
                }
            }
        }
        4 => {
            let n = rng.random_range(1..=16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            out.splice(at..at, bytes);
        }
        5 => {
            let end = (at + rng.random_range(1..=64)).min(out.len());
            out.drain(at..end);
        }
        6 => {
            let end = (at + rng.random_range(1..=64)).min(out.len());
            let copy = out[at..end].to_vec();
            let to = rng.random_range(0..=out.len());
            out.splice(to..to, copy);
        }
        7 => out.truncate(at),
        _ => {
            if !other.is_empty() {
                let from = rng.random_range(0..other.len());
                let end = (from + rng.random_range(1..=256)).min(other.len());
                let tail = out.len().min(at + (end - from));
                out.splice(at..tail, other[from..end].iter().copied());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn mutations_change_inputs_are_bounded_and_repeat_from_the_seed() {
        let base = b"the quick brown fox jumps over the lazy dog".to_vec();
        let run = |seed| {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            (0..200)
                .map(|_| mutate(&mut rng, &base, b"0123456789"))
                .collect::<Vec<_>>()
        };
        let a = run(7);
        assert_eq!(a, run(7));
        assert_ne!(a, run(8));
        assert!(a.iter().filter(|m| **m != base).count() > 150);
        assert!(a.iter().all(|m| m.len() <= MAX_INPUT));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        assert!(!mutate(&mut rng, &[], &[]).is_empty());
    }
}
