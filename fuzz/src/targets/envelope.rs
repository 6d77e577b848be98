//! Signed envelopes as a peer sends them: protobuf bytes, then the checks
//! of `envelope::open` (kind, federation, roster, signature, round,
//! replay). A roster member can also sign any payload it likes, so the
//! payloads are decoded on their own too.

use modelpub_protocol::envelope::{Expectation, RoundRule, open, seal};
use modelpub_protocol::identity::{Identity, Roster};
use modelpub_protocol::pb;
use modelpub_protocol::replay::ReplayGuard;
use prost::Message;

use crate::Target;

const FEDERATION: &str = "fuzz-federation";

pub struct Envelopes {
    roster: Roster,
    alice: Identity,
}

impl Envelopes {
    pub fn new() -> Self {
        let alice = Identity::from_secret_bytes("alice", [11; 32]);
        let bob = Identity::from_secret_bytes("bob", [12; 32]);
        Self {
            roster: Roster::new([alice.public(), bob.public()]),
            alice,
        }
    }
}

impl Target for Envelopes {
    fn name(&self) -> &'static str {
        "envelope"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        let join = pb::JoinRequest {
            agent_version: "0.1.0".into(),
            num_examples: 600,
            device: "cpu".into(),
            fast_mask_prgs: vec![1],
        };
        let result = pb::RoundResultRequest { round: 3 };
        vec![
            seal(&self.alice, FEDERATION, 0, 1_000_000, &join).encode_to_vec(),
            seal(&self.alice, FEDERATION, 3, 1_000_001, &result).encode_to_vec(),
        ]
    }

    fn run(&mut self, input: &[u8]) -> Result<(), String> {
        let env = pb::SignedEnvelope::decode(input).map_err(|e| e.to_string())?;
        let expect = Expectation {
            federation: FEDERATION,
            round: RoundRule::Any,
        };
        // A fresh guard: the seeds' sequence numbers must stay acceptable.
        let replay = ReplayGuard::new();
        let _ = pb::JoinRequest::decode(env.payload.as_slice());
        let _ = pb::UpdateHeader::decode(env.payload.as_slice());
        let _ = pb::UnmaskRequest::decode(env.payload.as_slice());
        let _ = pb::Reveal::decode(env.payload.as_slice());
        match env.kind.as_str() {
            "modelpub.v1.RoundResultRequest" => {
                open::<pb::RoundResultRequest>(&env, &self.roster, &expect, &replay).map(|_| ())
            }
            _ => open::<pb::JoinRequest>(&env, &self.roster, &expect, &replay).map(|_| ()),
        }
        .map_err(|e| e.to_string())
    }
}
