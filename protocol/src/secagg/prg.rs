//! The mask PRGs: a 32-byte seed expanded into a stream of little-endian
//! `u32` words. Word w is keystream bytes [4w, 4w+4), so any chunk of a mask
//! can be produced by seeking. Two standard stream ciphers, named in the
//! signed round plan (`SecureAggregation.mask_prg`) so every party expands
//! the same seed the same way:
//!
//! - [`MaskPrg::ChaCha20`]: the ChaCha20 (RFC 8439) keystream under the seed
//!   as key, all-zero nonce, block counter from 0. `chacha20` picks its AVX2
//!   or SSE2 backend at run time.
//! - [`MaskPrg::Aes128Ctr`]: AES-128 in CTR mode (NIST SP 800-38A) under
//!   key = seed[0..16], first counter block = seed[16..32], of which the
//!   low 64 bits (seed[24..32], big-endian) count blocks, wrapping mod 2^64,
//!   and the high 64 bits stay fixed (SP 800-38A B.1's "increment the m
//!   least significant bits", m = 64). A mask is at most 2^30 blocks, so
//!   every counter block is distinct; `Ctr64BE` runs 28 % faster than a
//!   128-bit increment here. `aes` picks VAES-512, VAES-256 or AES-NI at
//!   run time (`cpufeatures`), and a constant-time bitsliced software
//!   version where the CPU has no AES instructions — correct everywhere,
//!   fast where [`hardware_aes`] says so.
//!
//! One fixed nonce (ChaCha20) or a seed-derived counter (AES) is safe
//! because no seed is used twice: self-mask seeds are fresh per round and
//! pairwise seeds are derived per round and pair.
//!
//! Masks are applied tile by tile — every mask's keystream for one tile is
//! added before moving on — so the output tile stays in L1 cache and the
//! vector is streamed through memory once, however many masks there are.

use aes::Aes128;
use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};

use zeroize::Zeroizing;

use super::error::SecAggError;

/// Words per tile: 8 KiB of output plus 8 KiB of keystream fit in L1.
pub(crate) const TILE_WORDS: usize = 2048;

/// Which stream cipher expands mask seeds (the wire enum `MaskPrg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum MaskPrg {
    #[serde(rename = "chacha20")]
    ChaCha20,
    #[serde(rename = "aes-128-ctr")]
    Aes128Ctr,
}

impl MaskPrg {
    pub const ALL: [MaskPrg; 2] = [MaskPrg::ChaCha20, MaskPrg::Aes128Ctr];

    /// The name used in configuration, logs and benchmark output.
    pub fn name(self) -> &'static str {
        match self {
            MaskPrg::ChaCha20 => "chacha20",
            MaskPrg::Aes128Ctr => "aes-128-ctr",
        }
    }

    pub fn from_name(name: &str) -> Result<Self, SecAggError> {
        MaskPrg::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| {
                SecAggError::InvalidParams(format!(
                    "unknown mask PRG {name:?}; expected one of: chacha20, aes-128-ctr"
                ))
            })
    }

    /// The PRGs this machine runs at hardware speed: ChaCha20 always (its
    /// vector code needs only SSE2/NEON), AES-128-CTR where the CPU has AES
    /// instructions.
    pub fn fast_here() -> Vec<MaskPrg> {
        let mut out = vec![MaskPrg::ChaCha20];
        if hardware_aes() {
            out.push(MaskPrg::Aes128Ctr);
        }
        out
    }

    /// The PRG for a round whose participants run `fast` at hardware speed
    /// (one list each): AES-128-CTR if every one of them (and this machine,
    /// which regenerates most masks) has AES instructions, else ChaCha20,
    /// which every CPU runs well.
    pub fn fastest_for<'a>(fast: impl IntoIterator<Item = &'a [MaskPrg]>) -> MaskPrg {
        let all_aes = hardware_aes()
            && fast
                .into_iter()
                .all(|prgs| prgs.contains(&MaskPrg::Aes128Ctr));
        if all_aes {
            MaskPrg::Aes128Ctr
        } else {
            MaskPrg::ChaCha20
        }
    }
}

impl From<MaskPrg> for crate::pb::MaskPrg {
    fn from(prg: MaskPrg) -> Self {
        match prg {
            MaskPrg::ChaCha20 => crate::pb::MaskPrg::Chacha20,
            MaskPrg::Aes128Ctr => crate::pb::MaskPrg::Aes128Ctr,
        }
    }
}

impl MaskPrg {
    /// The PRG a round plan names (`SecureAggregation.mask_prg`); a value
    /// from a newer agent is refused by name rather than guessed at.
    pub fn from_wire(value: i32) -> Result<Self, SecAggError> {
        match crate::pb::MaskPrg::try_from(value) {
            Ok(crate::pb::MaskPrg::Chacha20) => Ok(MaskPrg::ChaCha20),
            Ok(crate::pb::MaskPrg::Aes128Ctr) => Ok(MaskPrg::Aes128Ctr),
            Err(_) => Err(SecAggError::InvalidParams(format!(
                "the round plan names mask PRG {value}, which this agent does not know \
                 (it knows chacha20 = 0 and aes-128-ctr = 1); upgrade the agent"
            ))),
        }
    }

    /// Reads a participant's advertised list, skipping values this agent
    /// does not know (a newer participant's extra PRGs).
    pub fn known(values: &[i32]) -> Vec<MaskPrg> {
        values
            .iter()
            .filter_map(|&v| MaskPrg::from_wire(v).ok())
            .collect()
    }
}

impl std::fmt::Display for MaskPrg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether this CPU has AES instructions (AES-NI on x86-64, the ARMv8
/// cryptography extension on aarch64), detected at run time.
pub fn hardware_aes() -> bool {
    #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
    {
        std::arch::is_x86_feature_detected!("aes")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "x86", target_arch = "aarch64")))]
    {
        false
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sign {
    Add,
    Sub,
}

/// One seed's keystream, positioned at a word. (The AES state holds all
/// eleven round keys for every backend, so it is boxed.)
enum Keystream {
    ChaCha20(ChaCha20),
    Aes128Ctr(Box<ctr::Ctr64BE<Aes128>>),
}

impl Keystream {
    fn at(prg: MaskPrg, seed: &[u8; 32], word: usize) -> Result<Self, SecAggError> {
        let mut stream = match prg {
            MaskPrg::ChaCha20 => {
                Keystream::ChaCha20(ChaCha20::new(&(*seed).into(), &[0; 12].into()))
            }
            MaskPrg::Aes128Ctr => {
                let key: [u8; 16] = std::array::from_fn(|i| seed[i]);
                let counter: [u8; 16] = std::array::from_fn(|i| seed[16 + i]);
                Keystream::Aes128Ctr(Box::new(ctr::Ctr64BE::new(&key.into(), &counter.into())))
            }
        };
        let byte = (word as u64).saturating_mul(4);
        let sought = match &mut stream {
            Keystream::ChaCha20(c) => c.try_seek(byte),
            Keystream::Aes128Ctr(c) => c.try_seek(byte),
        };
        sought.map_err(|_| {
            SecAggError::InvalidParams(format!("mask offset {word} beyond the keystream"))
        })?;
        Ok(stream)
    }

    fn fill(&mut self, buf: &mut [u8]) -> Result<(), SecAggError> {
        let written = match self {
            Keystream::ChaCha20(c) => c.try_write_keystream(buf),
            Keystream::Aes128Ctr(c) => c.try_write_keystream(buf),
        };
        written.map_err(|_| SecAggError::InvalidParams("mask longer than the keystream".into()))
    }
}

/// A set of masks to add to (or subtract from) a vector: the seeds, from
/// which each application makes its own keystreams (ciphers are not
/// `Clone`, and each thread needs its own, seeked to its range).
#[derive(Clone)]
pub(crate) struct MaskSet {
    prg: MaskPrg,
    seeds: Vec<(Zeroizing<[u8; 32]>, Sign)>,
}

/// How many threads mask work may use: what this process is allowed
/// (`available_parallelism` honours cgroup CPU quotas, so a pod's limit).
pub(crate) fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl MaskSet {
    pub(crate) fn new(prg: MaskPrg) -> Self {
        MaskSet {
            prg,
            seeds: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, seed: &[u8; 32], sign: Sign) {
        self.seeds.push((Zeroizing::new(*seed), sign));
    }

    /// Applies every mask's words [offset, offset + out.len()) to `out`.
    pub(crate) fn apply(&self, out: &mut [u32], offset: usize) -> Result<(), SecAggError> {
        let mut streams = Vec::with_capacity(self.seeds.len());
        for (seed, sign) in &self.seeds {
            streams.push((Keystream::at(self.prg, seed, offset)?, *sign));
        }
        let mut ks = vec![0u8; TILE_WORDS * 4];
        for tile in out.chunks_mut(TILE_WORDS) {
            let ks = &mut ks[..tile.len() * 4];
            for (stream, sign) in &mut streams {
                stream.fill(ks)?;
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

// `as_chunks` gives fixed-size arrays, so the loop has no bounds checks and
// compiles to vector adds (`chunks_exact(4)` with indexing did not, which
// cost a third on top of the keystream with AES).
fn add_words(out: &mut [u32], ks: &[u8]) {
    for (o, k) in out.iter_mut().zip(ks.as_chunks::<4>().0) {
        *o = o.wrapping_add(u32::from_le_bytes(*k));
    }
}

fn sub_words(out: &mut [u32], ks: &[u8]) {
    for (o, k) in out.iter_mut().zip(ks.as_chunks::<4>().0) {
        *o = o.wrapping_sub(u32::from_le_bytes(*k));
    }
}

/// Generates `words` words of keystream and discards them: the machine's
/// PRG speed, for the benchmark's lower bound.
pub(crate) fn burn_keystream(
    prg: MaskPrg,
    seed: &[u8; 32],
    words: usize,
) -> Result<u32, SecAggError> {
    let mut stream = Keystream::at(prg, seed, 0)?;
    let mut ks = vec![0u8; TILE_WORDS * 4];
    let mut acc = 0u8;
    let mut left = words;
    while left > 0 {
        let n = left.min(TILE_WORDS);
        stream.fill(&mut ks[..n * 4])?;
        // Touch the output so the work cannot be optimised away.
        acc ^= ks[0];
        left -= n;
    }
    Ok(u32::from(acc))
}

/// Fills `out` with mask words [offset, offset + out.len()) of one seed.
pub(crate) fn expand_words(
    prg: MaskPrg,
    seed: &[u8; 32],
    out: &mut [u32],
    offset: usize,
) -> Result<(), SecAggError> {
    out.fill(0);
    let mut set = MaskSet::new(prg);
    set.push(seed, Sign::Add);
    set.apply(out, offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex32(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    fn words_as_bytes(words: &[u32]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// RFC 8439 appendix A.1, test vectors 1 and 2: all-zero key and nonce,
    /// block counters 0 and 1 — exactly our seed-as-key, zero-nonce stream.
    #[test]
    fn chacha20_matches_rfc_8439_a1() {
        let mut words = [0u32; 32];
        expand_words(MaskPrg::ChaCha20, &[0; 32], &mut words, 0).unwrap();
        let block0 = hex32(
            "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7\
             da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586",
        );
        let block1 = hex32(
            "9f07e7be5551387a98ba977c732d080dcb0f29a048e3656912c6533e32ee7aed\
             29b721769ce64e43d57133b074d839d531ed1f28510afb45ace10a1f4b794d6f",
        );
        let bytes = words_as_bytes(&words);
        assert_eq!(&bytes[..64], &block0[..]);
        assert_eq!(&bytes[64..], &block1[..]);
    }

    /// NIST SP 800-38A F.5.1 (CTR-AES128.Encrypt): seed = key ‖ initial
    /// counter block; the keystream is ciphertext XOR plaintext.
    #[test]
    fn aes_128_ctr_matches_nist_sp_800_38a_f51() {
        let seed: [u8; 32] =
            hex32("2b7e151628aed2a6abf7158809cf4f3c f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
                .try_into()
                .unwrap();
        let plain = hex32(
            "6bc1bee22e409f96e93d7e117393172a ae2d8a571e03ac9c9eb76fac45af8e51\
             30c81c46a35ce411e5fbc1191a0a52ef f69f2445df4f9b17ad2b417be66c3710",
        );
        let cipher = hex32(
            "874d6191b620e3261bef6864990db6ce 9806f66b7970fdff8617187bb9fffdff\
             5ae4df3edbd5d35e5b4f09020db03eab 1e031dda2fbe03d1792170a0f3009cee",
        );
        let mut words = [0u32; 16];
        expand_words(MaskPrg::Aes128Ctr, &seed, &mut words, 0).unwrap();
        let keystream: Vec<u8> = plain.iter().zip(&cipher).map(|(p, c)| p ^ c).collect();
        assert_eq!(words_as_bytes(&words), keystream);
        // Seeking to block 2 gives the same words as reading through.
        let mut tail = [0u32; 8];
        expand_words(MaskPrg::Aes128Ctr, &seed, &mut tail, 8).unwrap();
        assert_eq!(tail, words[8..]);
    }

    /// The counter's low 64 bits wrap without carrying into the high 64:
    /// checked against the block cipher itself.
    #[test]
    fn aes_counter_increments_its_low_64_bits_and_wraps() {
        use aes::cipher::{BlockCipherEncrypt, KeyInit};
        let mut seed = [7u8; 32];
        seed[24..].fill(0xff);
        let mut words = [0u32; 8];
        expand_words(MaskPrg::Aes128Ctr, &seed, &mut words, 0).unwrap();
        let cipher = Aes128::new(&<[u8; 16]>::try_from(&seed[..16]).unwrap().into());
        let mut want = Vec::new();
        for low in [[0xffu8; 8], [0u8; 8]] {
            let mut block = [7u8; 16];
            block[8..].copy_from_slice(&low);
            let mut block = block.into();
            cipher.encrypt_block(&mut block);
            want.extend_from_slice(&block);
        }
        assert_eq!(words_as_bytes(&words), want);
    }

    #[test]
    fn the_two_prgs_give_different_masks_and_names_round_trip() {
        let mut a = [0u32; 64];
        let mut b = [0u32; 64];
        expand_words(MaskPrg::ChaCha20, &[9; 32], &mut a, 5).unwrap();
        expand_words(MaskPrg::Aes128Ctr, &[9; 32], &mut b, 5).unwrap();
        assert_ne!(a, b);
        for prg in MaskPrg::ALL {
            assert_eq!(MaskPrg::from_name(prg.name()).unwrap(), prg);
        }
        let err = MaskPrg::from_name("rc4").unwrap_err().to_string();
        assert!(err.contains("rc4") && err.contains("aes-128-ctr"), "{err}");
    }

    #[test]
    fn wire_values_round_trip_and_unknown_ones_are_refused_by_number() {
        for prg in MaskPrg::ALL {
            let wire = crate::pb::MaskPrg::from(prg) as i32;
            assert_eq!(MaskPrg::from_wire(wire).unwrap(), prg);
        }
        // Absent in an old plan: what old agents did.
        assert_eq!(MaskPrg::from_wire(0).unwrap(), MaskPrg::ChaCha20);
        let err = MaskPrg::from_wire(9).unwrap_err().to_string();
        assert!(
            err.contains("mask PRG 9") && err.contains("upgrade"),
            "{err}"
        );
        assert_eq!(
            MaskPrg::known(&[1, 9, 0]),
            [MaskPrg::Aes128Ctr, MaskPrg::ChaCha20]
        );
    }

    #[test]
    fn a_round_uses_aes_only_if_everyone_runs_it_in_hardware() {
        let both = [MaskPrg::ChaCha20, MaskPrg::Aes128Ctr];
        let chacha = [MaskPrg::ChaCha20];
        let here = if hardware_aes() {
            MaskPrg::Aes128Ctr
        } else {
            MaskPrg::ChaCha20
        };
        assert_eq!(MaskPrg::fastest_for([&both[..], &both[..]]), here);
        assert_eq!(
            MaskPrg::fastest_for([&both[..], &chacha[..]]),
            MaskPrg::ChaCha20
        );
        // An old participant that advertises nothing gets ChaCha20.
        assert_eq!(
            MaskPrg::fastest_for([&both[..], &[][..]]),
            MaskPrg::ChaCha20
        );
    }
}
