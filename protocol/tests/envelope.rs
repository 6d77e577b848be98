//! Signed envelopes: every way of tampering, replaying or misdirecting one is
//! refused with the right reason.

use modelpub_protocol::envelope::{Expectation, Opened, RoundRule, Signer, open, seal};
use modelpub_protocol::error::ProtocolError;
use modelpub_protocol::identity::{Identity, Roster};
use modelpub_protocol::pb;
use modelpub_protocol::replay::ReplayGuard;
use proptest::prelude::*;

const FED: &str = "fed-test";

fn alice() -> Identity {
    Identity::from_secret_bytes("alice", [11; 32])
}

fn roster() -> Roster {
    Roster::new([
        alice().public(),
        Identity::from_secret_bytes("bob", [12; 32]).public(),
    ])
}

fn any_round() -> Expectation<'static> {
    Expectation {
        federation: FED,
        round: RoundRule::Any,
    }
}

fn request() -> pb::JoinRequest {
    pb::JoinRequest {
        agent_version: "1.2.3".into(),
        num_examples: 600,
        device: "cpu".into(),
        fast_mask_prgs: vec![],
    }
}

fn open_join(
    env: &pb::SignedEnvelope,
    expect: &Expectation,
    guard: &ReplayGuard,
) -> Result<Opened<pb::JoinRequest>, ProtocolError> {
    open(env, &roster(), expect, guard)
}

#[test]
fn round_trip() {
    let env = seal(&alice(), FED, 0, 42, &request());
    assert_eq!(env.kind, "modelpub.v1.JoinRequest");
    let o = open_join(&env, &any_round(), &ReplayGuard::new()).unwrap();
    assert_eq!(o.sender, "alice");
    assert_eq!(o.sequence, 42);
    assert_eq!(o.message, request());
    assert_eq!(o.payload_sha256.len(), 64);
}

#[test]
fn signer_numbers_increase() {
    let signer = Signer::new(alice(), FED);
    let guard = ReplayGuard::new();
    for _ in 0..3 {
        open_join(&signer.seal(0, &request()), &any_round(), &guard).unwrap();
    }
    assert_eq!(signer.federation(), FED);
    assert_eq!(signer.identity().name(), "alice");
}

#[test]
fn replay_is_rejected() {
    let env = seal(&alice(), FED, 0, 7, &request());
    let guard = ReplayGuard::new();
    open_join(&env, &any_round(), &guard).unwrap();
    let err = open_join(&env, &any_round(), &guard).unwrap_err();
    assert!(
        matches!(
            err,
            ProtocolError::Replayed {
                sequence: 7,
                last: 7,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("replayed or re-ordered"));
}

#[test]
fn reordering_is_rejected() {
    let older = seal(&alice(), FED, 0, 7, &request());
    let newer = seal(&alice(), FED, 0, 8, &request());
    let guard = ReplayGuard::new();
    open_join(&newer, &any_round(), &guard).unwrap();
    let err = open_join(&older, &any_round(), &guard).unwrap_err();
    assert!(
        matches!(
            err,
            ProtocolError::Replayed {
                sequence: 7,
                last: 8,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn tampered_payload_is_bad_signature() {
    let mut env = seal(&alice(), FED, 0, 1, &request());
    env.payload[0] ^= 1;
    let err = open_join(&env, &any_round(), &ReplayGuard::new()).unwrap_err();
    assert!(matches!(err, ProtocolError::BadSignature { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("signature") && msg.contains("tampered or forged"),
        "{msg}"
    );
}

#[test]
fn tampered_round_is_bad_signature() {
    let mut env = seal(&alice(), FED, 3, 1, &request());
    env.round = 4;
    let err = open_join(&env, &any_round(), &ReplayGuard::new()).unwrap_err();
    assert!(matches!(err, ProtocolError::BadSignature { .. }), "{err}");
}

#[test]
fn wrong_round_is_out_of_round() {
    let env = seal(&alice(), FED, 3, 1, &request());
    let expect = Expectation {
        federation: FED,
        round: RoundRule::Exactly(4),
    };
    let err = open_join(&env, &expect, &ReplayGuard::new()).unwrap_err();
    assert!(
        matches!(
            err,
            ProtocolError::OutOfRound {
                expected: 4,
                got: 3,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("round"));
}

#[test]
fn wrong_kind_is_rejected() {
    let env = seal(&alice(), FED, 0, 1, &pb::RoundRequest { after_round: 1 });
    let err = open_join(&env, &any_round(), &ReplayGuard::new()).unwrap_err();
    assert!(matches!(err, ProtocolError::WrongKind { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "expected a modelpub.v1.JoinRequest, got a modelpub.v1.RoundRequest"
    );
}

#[test]
fn wrong_federation_is_rejected() {
    let env = seal(&alice(), "other-fed", 0, 1, &request());
    let err = open_join(&env, &any_round(), &ReplayGuard::new()).unwrap_err();
    assert!(
        matches!(err, ProtocolError::WrongFederation { .. }),
        "{err}"
    );
}

#[test]
fn unknown_sender_is_rejected() {
    let mallory = Identity::from_secret_bytes("mallory", [13; 32]);
    let env = seal(&mallory, FED, 0, 1, &request());
    let err = open_join(&env, &any_round(), &ReplayGuard::new()).unwrap_err();
    assert!(
        matches!(err, ProtocolError::UnknownSender(ref n) if n == "mallory"),
        "{err}"
    );
}

#[test]
fn impostor_key_under_known_name_is_bad_signature() {
    let impostor = Identity::from_secret_bytes("alice", [14; 32]);
    let env = seal(&impostor, FED, 0, 1, &request());
    let err = open_join(&env, &any_round(), &ReplayGuard::new()).unwrap_err();
    assert!(matches!(err, ProtocolError::BadSignature { .. }), "{err}");
}

#[test]
fn rejected_envelope_does_not_advance_the_guard() {
    let guard = ReplayGuard::new();
    let mut forged = seal(&alice(), FED, 0, 100, &request());
    forged.payload[0] ^= 1;
    assert!(open_join(&forged, &any_round(), &guard).is_err());
    let out_of_round = seal(&alice(), FED, 3, 101, &request());
    let expect = Expectation {
        federation: FED,
        round: RoundRule::Exactly(4),
    };
    assert!(open_join(&out_of_round, &expect, &guard).is_err());
    assert_eq!(guard.last("alice"), None);
    open_join(
        &seal(&alice(), FED, 0, 50, &request()),
        &any_round(),
        &guard,
    )
    .unwrap();
}

#[test]
fn status_carries_the_reason() {
    let mut env = seal(&alice(), FED, 0, 1, &request());
    env.payload[0] ^= 1;
    let err = open_join(&env, &any_round(), &ReplayGuard::new()).unwrap_err();
    let status: tonic::Status = err.into();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(status.message().contains("tampered or forged"));
}

fn flip(bytes: &mut [u8], bit: usize) {
    let i = bit % (bytes.len() * 8);
    bytes[i / 8] ^= 1 << (i % 8);
}

proptest! {
    #[test]
    fn any_single_bit_flip_is_rejected(field in 0usize..5, bit in 0usize..4096) {
        let mut env = seal(&alice(), FED, 3, 1_000_000, &request());
        match field {
            0 => flip(&mut env.payload, bit),
            1 => {
                let mut s = env.sender.into_bytes();
                flip(&mut s, bit);
                // A flip that breaks UTF-8 cannot even be put on the wire.
                env.sender = String::from_utf8_lossy(&s).into_owned();
            }
            2 => env.round ^= 1 << (bit % 32),
            3 => env.sequence ^= 1 << (bit % 64),
            _ => flip(&mut env.signature, bit),
        }
        let guard = ReplayGuard::new();
        prop_assert!(open_join(&env, &any_round(), &guard).is_err());
        prop_assert_eq!(guard.last("alice"), None);
    }
}
