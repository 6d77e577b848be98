//! The mask PRG: the ChaCha20 (RFC 8439) keystream under the seed as key and
//! an all-zero nonce, read as little-endian `u32` words. Word w is keystream
//! bytes [4w, 4w+4), so any chunk of a mask can be produced by seeking.
//!
//! The fixed nonce is safe because no seed is used twice: self-mask seeds
//! are fresh per round and pairwise seeds are derived per round and pair.
//!
//! Speed: `chacha20` picks its AVX2 or SSE2 backend at run time (via
//! `cpufeatures`), so no build flags are needed for the common x86-64
//! targets; AVX-512 would need `--cfg chacha20_avx512` and is left off.
//! Masks are applied tile by tile — every mask's keystream for one tile is
//! added before moving on — so the output tile stays in L1 cache and the
//! vector is streamed through memory once, however many masks there are.

use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};

use zeroize::Zeroizing;

use super::error::SecAggError;

/// Words per tile: 8 KiB of output plus 8 KiB of keystream fit in L1.
pub(crate) const TILE_WORDS: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sign {
    Add,
    Sub,
}

/// A set of masks to add to (or subtract from) a vector: the seeds, from
/// which each application makes its own keystreams (ciphers are not
/// `Clone`, and each thread needs its own, seeked to its range).
#[derive(Clone)]
pub(crate) struct MaskSet {
    seeds: Vec<(Zeroizing<[u8; 32]>, Sign)>,
}

fn stream(seed: &[u8; 32]) -> ChaCha20 {
    ChaCha20::new(&(*seed).into(), &Default::default())
}

fn seek(cipher: &mut ChaCha20, word: usize) -> Result<(), SecAggError> {
    let byte = (word as u64).saturating_mul(4);
    cipher
        .try_seek(byte)
        .map_err(|_| SecAggError::InvalidParams(format!("mask offset {word} beyond the keystream")))
}

fn fill(cipher: &mut ChaCha20, buf: &mut [u8]) -> Result<(), SecAggError> {
    cipher
        .try_write_keystream(buf)
        .map_err(|_| SecAggError::InvalidParams("mask longer than the keystream".into()))
}

/// How many threads mask work may use: what this process is allowed
/// (`available_parallelism` honours cgroup CPU quotas, so a pod's limit).
pub(crate) fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl MaskSet {
    pub(crate) fn new() -> Self {
        MaskSet { seeds: Vec::new() }
    }

    pub(crate) fn push(&mut self, seed: &[u8; 32], sign: Sign) {
        self.seeds.push((Zeroizing::new(*seed), sign));
    }

    /// Applies every mask's words [offset, offset + out.len()) to `out`.
    pub(crate) fn apply(&self, out: &mut [u32], offset: usize) -> Result<(), SecAggError> {
        let mut streams = Vec::with_capacity(self.seeds.len());
        for (seed, sign) in &self.seeds {
            let mut cipher = stream(seed);
            seek(&mut cipher, offset)?;
            streams.push((cipher, *sign));
        }
        let mut ks = vec![0u8; TILE_WORDS * 4];
        for tile in out.chunks_mut(TILE_WORDS) {
            let ks = &mut ks[..tile.len() * 4];
            for (cipher, sign) in &mut streams {
                fill(cipher, ks)?;
                match sign {
                    Sign::Add => add_words(tile, ks),
                    Sign::Sub => sub_words(tile, ks),
                }
            }
        }
        Ok(())
    }

    /// [`MaskSet::apply`] on up to `threads` threads: each takes one
    /// contiguous range of `out` (whole tiles) and makes its own keystreams,
    /// seeked to that range, so nothing is shared and no mask is
    /// materialised. Addition mod 2^32 commutes, so the result is bit for
    /// bit the single-threaded one.
    pub(crate) fn apply_parallel(
        &self,
        out: &mut [u32],
        offset: usize,
        threads: usize,
    ) -> Result<(), SecAggError> {
        let per = out
            .len()
            .div_ceil(threads.max(1))
            .next_multiple_of(TILE_WORDS);
        if per >= out.len() {
            return self.apply(out, offset);
        }
        std::thread::scope(|scope| {
            let handles: Vec<_> = out
                .chunks_mut(per)
                .enumerate()
                .map(|(i, part)| scope.spawn(move || self.apply(part, offset + i * per)))
                .collect();
            handles
                .into_iter()
                .try_for_each(|h| h.join().unwrap_or(Err(SecAggError::WorkerPanicked)))
        })
    }
}

fn add_words(out: &mut [u32], ks: &[u8]) {
    for (o, k) in out.iter_mut().zip(ks.chunks_exact(4)) {
        *o = o.wrapping_add(u32::from_le_bytes([k[0], k[1], k[2], k[3]]));
    }
}

fn sub_words(out: &mut [u32], ks: &[u8]) {
    for (o, k) in out.iter_mut().zip(ks.chunks_exact(4)) {
        *o = o.wrapping_sub(u32::from_le_bytes([k[0], k[1], k[2], k[3]]));
    }
}

/// Generates `words` words of keystream and discards them: the machine's
/// ChaCha20 speed, for the benchmark's lower bound.
pub(crate) fn burn_keystream(seed: &[u8; 32], words: usize) -> Result<u32, SecAggError> {
    let mut cipher = stream(seed);
    let mut ks = vec![0u8; TILE_WORDS * 4];
    let mut acc = 0u8;
    let mut left = words;
    while left > 0 {
        let n = left.min(TILE_WORDS);
        fill(&mut cipher, &mut ks[..n * 4])?;
        // Touch the output so the work cannot be optimised away.
        acc ^= ks[0];
        left -= n;
    }
    Ok(u32::from(acc))
}

/// Fills `out` with mask words [offset, offset + out.len()) of one seed.
pub(crate) fn expand_words(
    seed: &[u8; 32],
    out: &mut [u32],
    offset: usize,
) -> Result<(), SecAggError> {
    out.fill(0);
    let mut set = MaskSet::new();
    set.push(seed, Sign::Add);
    set.apply(out, offset)
}
