//! Sealing and opening `SignedEnvelope`s exactly as `envelope.proto` specifies.

use prost::{Message, Name};
use sha2::{Digest, Sha256};

use crate::error::ProtocolError;
use crate::identity::{Identity, Roster};
use crate::pb;
use crate::replay::{ReplayGuard, SequenceCounter};

const DOMAIN: &[u8] = b"modelpub/v1/envelope";

/// Which round an incoming message must belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoundRule {
    Any,
    Exactly(u32),
}

/// What the receiver expects of an envelope besides a valid signature.
#[derive(Debug, Clone, Copy)]
pub struct Expectation<'a> {
    pub federation: &'a str,
    pub round: RoundRule,
}

/// A verified, decoded envelope.
#[derive(Debug, Clone)]
pub struct Opened<M> {
    pub sender: String,
    pub round: u32,
    pub sequence: u64,
    pub message: M,
    /// Hex SHA-256 of the payload bytes, for the audit log.
    pub payload_sha256: String,
}

/// The bytes the sender signs, per `envelope.proto`. Lengths prefix every
/// variable field so that no two distinct envelopes share signing bytes.
pub fn signing_bytes(env: &pb::SignedEnvelope) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        DOMAIN.len()
            + 12
            + env.kind.len()
            + env.federation.len()
            + env.sender.len()
            + 20
            + env.payload.len(),
    );
    out.extend_from_slice(DOMAIN);
    for field in [&env.kind, &env.federation, &env.sender] {
        // Strings over 4 GiB cannot arrive through gRPC's message limits;
        // saturating keeps this total and still never verifies.
        let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(field.as_bytes());
    }
    out.extend_from_slice(&env.round.to_le_bytes());
    out.extend_from_slice(&env.sequence.to_le_bytes());
    out.extend_from_slice(&(env.payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&env.payload);
    out
}

/// Builds and signs an envelope carrying `message`.
pub fn seal<M: Message + Name>(
    identity: &Identity,
    federation: &str,
    round: u32,
    sequence: u64,
    message: &M,
) -> pb::SignedEnvelope {
    let mut env = pb::SignedEnvelope {
        kind: M::full_name(),
        federation: federation.to_owned(),
        sender: identity.name().to_owned(),
        round,
        sequence,
        payload: message.encode_to_vec(),
        signature: Vec::new(),
    };
    env.signature = identity.sign(&signing_bytes(&env)).to_vec();
    env
}

/// Verifies and decodes an envelope.
///
/// The checks run cheapest and least revealing first; the replay guard is
/// advanced only once everything else has passed, so a forged or misdirected
/// envelope can never burn a sender's sequence numbers.
pub fn open<M: Message + Name + Default>(
    env: &pb::SignedEnvelope,
    roster: &Roster,
    expect: &Expectation,
    replay: &ReplayGuard,
) -> Result<Opened<M>, ProtocolError> {
    let expected_kind = M::full_name();
    if env.kind != expected_kind {
        return Err(ProtocolError::WrongKind {
            expected: expected_kind,
            got: env.kind.clone(),
        });
    }
    if env.federation != expect.federation {
        return Err(ProtocolError::WrongFederation {
            expected: expect.federation.to_owned(),
            got: env.federation.clone(),
        });
    }
    let sender = roster.get(&env.sender)?;
    sender.verify(&signing_bytes(env), &env.signature)?;
    if let RoundRule::Exactly(round) = expect.round
        && env.round != round
    {
        return Err(ProtocolError::OutOfRound {
            sender: env.sender.clone(),
            expected: round,
            got: env.round,
        });
    }
    // Decoding before recording: a signed but undecodable payload is a bug at
    // the sender, and must not consume its sequence number either.
    let message = M::decode(env.payload.as_slice()).map_err(|e| {
        ProtocolError::Malformed(format!(
            "payload of {expected_kind} from {:?} does not decode: {e}",
            env.sender
        ))
    })?;
    replay.check_and_record(&env.sender, env.sequence)?;
    Ok(Opened {
        sender: env.sender.clone(),
        round: env.round,
        sequence: env.sequence,
        message,
        payload_sha256: hex::encode(Sha256::digest(&env.payload)),
    })
}

/// A party's signing context: identity, federation and sequence counter.
#[derive(Debug)]
pub struct Signer {
    identity: Identity,
    federation: String,
    sequence: SequenceCounter,
}

impl Signer {
    pub fn new(identity: Identity, federation: &str) -> Self {
        Self {
            identity,
            federation: federation.to_owned(),
            sequence: SequenceCounter::new(),
        }
    }

    pub fn seal<M: Message + Name>(&self, round: u32, m: &M) -> pb::SignedEnvelope {
        seal(
            &self.identity,
            &self.federation,
            round,
            self.sequence.next(),
            m,
        )
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn federation(&self) -> &str {
        &self.federation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_bytes_layout() {
        let env = pb::SignedEnvelope {
            kind: "k".into(),
            federation: "fe".into(),
            sender: "s".into(),
            round: 2,
            sequence: 3,
            payload: vec![9],
            signature: vec![1, 2],
        };
        let mut want = b"modelpub/v1/envelope".to_vec();
        want.extend([1, 0, 0, 0, b'k', 2, 0, 0, 0, b'f', b'e', 1, 0, 0, 0, b's']);
        want.extend([
            2, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9,
        ]);
        assert_eq!(signing_bytes(&env), want);
    }
}
