//! Shamir sharing of the two 32-byte secrets, the encrypted share a client
//! deals to each neighbour, and the share it reveals during unmasking.
//!
//! Sharing is byte-wise over GF(2^8) by `vsss-rs` (audited, maintained; not
//! `sharks`, whose advisory was polynomial coefficients drawn from 1..=255).
//! The evaluation point of a holder's share is its position in the
//! dealer's sorted holder list (its neighbours and itself) plus one, which
//! every party derives from the graph, so points never travel and cannot be
//! duplicated by a sender. The dealer's own share never travels either.

use chacha20::rand_core::SeedableRng;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use vsss_rs::Gf256;
use zeroize::Zeroizing;

use super::codec::{Reader, Writer};
use super::error::SecAggError;
use super::keys::random32;

const TAG_ENCRYPTED_SHARE: u8 = 0x52;
const TAG_REVEALED_SHARE: u8 = 0x53;
/// Plaintext of an encrypted share: the self-mask seed's share then the mask
/// key's share, both at the same evaluation point.
pub(crate) const PAIR_LEN: usize = 64;

/// Which of a participant's secrets a revealed share belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ShareKind {
    /// The seed b of the self mask: revealed for participants that survived.
    SelfMask,
    /// The X25519 mask key s: revealed for participants that dropped.
    MaskKey,
}

impl ShareKind {
    pub fn name(self) -> &'static str {
        match self {
            ShareKind::SelfMask => "self-mask",
            ShareKind::MaskKey => "mask-key",
        }
    }
}

/// One neighbour's pair of shares, encrypted to it; the server only routes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedShare {
    pub from: String,
    pub to: String,
    pub ciphertext: Vec<u8>,
}

impl EncryptedShare {
    pub fn to_bytes(&self) -> Vec<u8> {
        Writer::new(TAG_ENCRYPTED_SHARE)
            .bytes(self.from.as_bytes())
            .bytes(self.to.as_bytes())
            .bytes(&self.ciphertext)
            .finish()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SecAggError> {
        let mut r = Reader::new("encrypted share", TAG_ENCRYPTED_SHARE, bytes)?;
        let share = EncryptedShare {
            from: r.string()?,
            to: r.string()?,
            ciphertext: r.bytes()?.to_vec(),
        };
        r.end()?;
        Ok(share)
    }
}

/// A share a surviving client hands to the server during unmasking. The
/// revealer is the authenticated sender of the message that carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevealedShare {
    /// Whose secret this is a share of.
    pub owner: String,
    pub kind: ShareKind,
    pub share: [u8; 32],
}

impl RevealedShare {
    pub fn to_bytes(&self) -> Vec<u8> {
        let kind = match self.kind {
            ShareKind::SelfMask => 0,
            ShareKind::MaskKey => 1,
        };
        Writer::new(TAG_REVEALED_SHARE)
            .bytes(self.owner.as_bytes())
            .u8(kind)
            .fixed(&self.share)
            .finish()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SecAggError> {
        let mut r = Reader::new("revealed share", TAG_REVEALED_SHARE, bytes)?;
        let owner = r.string()?;
        let kind = match r.u8()? {
            0 => ShareKind::SelfMask,
            1 => ShareKind::MaskKey,
            other => return Err(r.err(format!("unknown share kind {other}"))),
        };
        let share = r.array()?;
        r.end()?;
        Ok(RevealedShare { owner, kind, share })
    }
}

/// Deals `count` shares of `secret` with threshold `t`; share `m` is the
/// polynomial at x = m + 1.
pub(crate) fn deal(
    secret: &[u8; 32],
    t: usize,
    count: usize,
) -> Result<Vec<Zeroizing<[u8; 32]>>, SecAggError> {
    // Seeded from the OS per dealing so the polynomial coefficients never
    // depend on a process-wide RNG's state.
    let rng = chacha20::ChaCha20Rng::from_seed(*random32()?);
    let dealt = Gf256::split_bytes(t, count, secret, rng).map_err(|e| {
        SecAggError::InvalidParams(format!(
            "cannot deal {count} shares with threshold {t}: {e}"
        ))
    })?;
    let mut shares = Vec::with_capacity(count);
    for (m, share) in dealt.into_iter().enumerate() {
        let share = Zeroizing::new(share);
        // Sequential identifiers from 1 are the library's default; the
        // evaluation points the rest of the protocol derives rely on it.
        if share.len() != 33 || usize::from(share[0]) != m + 1 {
            return Err(SecAggError::InvalidParams(format!(
                "Shamir dealer returned share {} at an unexpected point",
                m + 1
            )));
        }
        let mut y = Zeroizing::new([0u8; 32]);
        y.copy_from_slice(&share[1..]);
        shares.push(y);
    }
    Ok(shares)
}

/// Reconstructs a secret from at least `t` shares at distinct non-zero
/// points. Callers derive the points from the graph, so they are distinct.
pub(crate) fn combine(
    t: usize,
    points: &[(u8, [u8; 32])],
    subject: impl FnOnce() -> String,
) -> Result<Zeroizing<[u8; 32]>, SecAggError> {
    if points.len() < t || t == 0 {
        return Err(SecAggError::BelowThreshold {
            subject: subject(),
            have: points.len(),
            need: t,
        });
    }
    // A degree t-1 polynomial is fixed by any t points; more only cost time.
    // vsss-rs computes the Lagrange coefficients once per point set and
    // reuses them for all 32 bytes (blahaj recomputed them per byte, which
    // dominated unmasking for short vectors).
    let shares: Zeroizing<Vec<Vec<u8>>> = Zeroizing::new(
        points[..t]
            .iter()
            .map(|(x, y)| {
                let mut raw = Vec::with_capacity(33);
                raw.push(*x);
                raw.extend_from_slice(y);
                raw
            })
            .collect(),
    );
    let secret = Zeroizing::new(Gf256::combine_bytes(shares.as_slice()).map_err(|e| {
        SecAggError::Malformed {
            what: "Shamir share set",
            reason: e.to_string(),
        }
    })?);
    if secret.len() != 32 {
        return Err(SecAggError::Malformed {
            what: "Shamir share set",
            reason: format!("reconstructed {} bytes, expected 32", secret.len()),
        });
    }
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&secret);
    Ok(out)
}

// Each key encrypts exactly one message (the direction is in the key
// derivation), so the all-zero nonce is never reused under one key.
fn cipher(key: &[u8; 32]) -> ChaCha20Poly1305 {
    ChaCha20Poly1305::new(key.into())
}

pub(crate) fn seal(key: &[u8; 32], aad: &[u8], plaintext: &[u8; PAIR_LEN]) -> Vec<u8> {
    let payload = Payload {
        msg: plaintext,
        aad,
    };
    // Encryption of a 64-byte message cannot exceed the AEAD's length limit.
    match cipher(key).encrypt(&Nonce::default(), payload) {
        Ok(ct) => ct,
        Err(_) => unreachable!("ChaCha20-Poly1305 encrypts 64 bytes"),
    }
}

pub(crate) fn open(
    key: &[u8; 32],
    aad: &[u8],
    ciphertext: &[u8],
) -> Option<Zeroizing<[u8; PAIR_LEN]>> {
    let payload = Payload {
        msg: ciphertext,
        aad,
    };
    let plain = Zeroizing::new(cipher(key).decrypt(&Nonce::default(), payload).ok()?);
    let mut out = Zeroizing::new([0u8; PAIR_LEN]);
    if plain.len() != PAIR_LEN {
        return None;
    }
    out.copy_from_slice(&plain);
    Some(out)
}
