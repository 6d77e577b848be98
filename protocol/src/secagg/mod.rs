//! Secure aggregation: Bonawitz et al. (CCS 2017) with the sparse neighbour
//! graph of SecAgg+ (Bell et al., CCS 2020), as a pure in-memory library.
//! The caller moves the messages (each has `to_bytes`/`from_bytes`) and signs
//! them in envelopes; nothing here touches the network.
//!
//! One round, for n participants named in [`Params`]:
//!
//! 1. **AdvertiseKeys** — each [`Client`] makes two X25519 key pairs and
//!    sends [`AdvertisedKeys`]; the [`Server`] collects them (U1) and
//!    broadcasts [`Server::advertised`].
//! 2. **ShareKeys** — each client Shamir-shares (t of k + 1) its self-mask
//!    seed b and its mask key s among its holders in U1: its k graph
//!    neighbours, one ChaCha20-Poly1305 [`EncryptedShare`] each, and itself
//!    (as in Bonawitz et al., where a client shares among all of U1
//!    including itself); the dealer's own pair never leaves it. The
//!    threshold counts all k + 1 holders, so with 3 participants the round
//!    survives one dropout. The server closes U2
//!    ([`Server::close_shares`]) and routes shares ([`Server::shares_for`]).
//! 3. **MaskedInput** — y = x + PRG(b) + Σ_{j>i} PRG(s_ij) − Σ_{j<i}
//!    PRG(s_ij) mod 2^32 over neighbours j in U2, streamed chunk by chunk
//!    ([`Client::mask_chunk`], [`Server::add_masked_chunk`]).
//! 4. **Unmasking** — the server names survivors U3 and dropped D = U2 \ U3
//!    ([`Server::unmask_request`]); each survivor reveals b-shares of
//!    surviving neighbours and of itself, and s-shares of dropped
//!    neighbours, never both for one peer ([`Client::unmask`]);
//!    [`Server::finish`] reconstructs and removes the masks.
//!
//! Security model: honest-but-curious server and clients, plus the refusal
//! rule against a server that asks for both shares of one peer. The
//! consistency round and signatures of the fully malicious variant are the
//! caller's envelopes' job; a malicious revealer can corrupt the sum (but not
//! learn an input), which the s-key reconstruction detects for dropped
//! clients only.

mod client;
mod codec;
mod error;
mod graph;
mod keys;
pub mod neighbourhood;
mod params;
mod prg;
mod quantize;
mod server;
mod shares;

pub mod bench;

pub use client::Client;
pub use error::SecAggError;
pub use graph::neighbours;
pub use keys::AdvertisedKeys;
pub use params::{MAX_NEIGHBOURS, MAX_VECTOR_LEN, Params};
pub use prg::{MaskPrg, hardware_aes};
pub use quantize::Quantizer;
pub use server::Server;
pub use shares::{EncryptedShare, RevealedShare, ShareKind};

/// The mask PRG's word stream for `seed`, words [offset, offset + out.len()):
/// exposed so the caller (and tests) can check masks independently.
pub fn prg_words(
    prg: MaskPrg,
    seed: &[u8; 32],
    out: &mut [u32],
    offset: usize,
) -> Result<(), SecAggError> {
    prg::expand_words(prg, seed, out, offset)
}
