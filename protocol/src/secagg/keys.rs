//! X25519 key pairs, the AdvertiseKeys message, and the HKDF derivations
//! that turn Diffie–Hellman outputs into share-encryption keys and
//! pairwise-mask seeds.

use hkdf::Hkdf;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::codec::{Reader, Writer};
use super::error::SecAggError;
use super::params::Params;

const TAG_ADVERTISED_KEYS: u8 = 0x51;
const SHARE_KEY_LABEL: &str = "modelpub/secagg/share-key";
const MASK_SEED_LABEL: &str = "modelpub/secagg/pairwise-mask";

/// The two public keys a participant advertises in round stage 1: `c` for
/// share encryption, `s` for pairwise masks. Separate keys keep a revealed
/// mask key (of a dropped participant) from decrypting its share traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdvertisedKeys {
    pub c_public: [u8; 32],
    pub s_public: [u8; 32],
}

impl AdvertisedKeys {
    /// The bytes the caller signs (Ed25519 envelope) and sends.
    pub fn to_bytes(&self) -> Vec<u8> {
        Writer::new(TAG_ADVERTISED_KEYS)
            .fixed(&self.c_public)
            .fixed(&self.s_public)
            .finish()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SecAggError> {
        let mut r = Reader::new("advertised keys", TAG_ADVERTISED_KEYS, bytes)?;
        let keys = AdvertisedKeys {
            c_public: r.array()?,
            s_public: r.array()?,
        };
        r.end()?;
        Ok(keys)
    }
}

/// 32 bytes from the operating system's CSPRNG.
pub(crate) fn random32() -> Result<Zeroizing<[u8; 32]>, SecAggError> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    getrandom::fill(bytes.as_mut()).map_err(|e| SecAggError::Rng(e.to_string()))?;
    Ok(bytes)
}

pub(crate) fn random_secret() -> Result<StaticSecret, SecAggError> {
    Ok(StaticSecret::from(*random32()?))
}

/// X25519 with a contributory check: a low-order public key would make the
/// shared secret a constant known to everyone.
pub(crate) fn agree(
    mine: &StaticSecret,
    theirs: &[u8; 32],
    peer: &str,
) -> Result<Zeroizing<[u8; 32]>, SecAggError> {
    let shared = mine.diffie_hellman(&PublicKey::from(*theirs));
    if !shared.was_contributory() {
        return Err(SecAggError::WeakKey { peer: peer.into() });
    }
    Ok(Zeroizing::new(shared.to_bytes()))
}

fn expand(ikm: &[u8; 32], info: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut okm = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's 255·32-byte limit, so expand cannot fail.
    if Hkdf::<Sha256>::new(None, ikm)
        .expand(info, okm.as_mut())
        .is_err()
    {
        unreachable!("HKDF-SHA256 can always expand 32 bytes");
    }
    okm
}

fn round_info(label: &str, params: &Params) -> Writer {
    let mut w = Writer::label(label);
    w.bytes(params.federation.as_bytes()).u32(params.round);
    w
}

/// The AEAD key for the share `from` deals to `to`. The direction is part of
/// the derivation, so each key encrypts exactly one message and a fixed nonce
/// is safe.
pub(crate) fn share_key(
    params: &Params,
    shared: &[u8; 32],
    from: &str,
    to: &str,
) -> Zeroizing<[u8; 32]> {
    let info = round_info(SHARE_KEY_LABEL, params)
        .bytes(from.as_bytes())
        .bytes(to.as_bytes())
        .finish();
    expand(shared, &info)
}

/// The seed of the pairwise mask between `a` and `b`; symmetric in the pair
/// because the names go in sorted order.
pub(crate) fn mask_seed(
    params: &Params,
    shared: &[u8; 32],
    a: &str,
    b: &str,
) -> Zeroizing<[u8; 32]> {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    let info = round_info(MASK_SEED_LABEL, params)
        .bytes(lo.as_bytes())
        .bytes(hi.as_bytes())
        .finish();
    expand(shared, &info)
}

/// Associated data binding a share ciphertext to its round and endpoints.
pub(crate) fn share_aad(params: &Params, from: &str, to: &str) -> Vec<u8> {
    round_info("modelpub/secagg/share-aad", params)
        .bytes(from.as_bytes())
        .bytes(to.as_bytes())
        .finish()
}
