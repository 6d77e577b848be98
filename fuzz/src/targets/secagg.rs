//! SecAgg+ messages as peers send them: advertised keys, encrypted shares
//! and revealed shares, each behind its one-byte tag.

use modelpub_protocol::secagg::{AdvertisedKeys, EncryptedShare, RevealedShare};

use crate::Target;

pub struct SecAggMessages {
    seeds: Vec<Vec<u8>>,
}

impl SecAggMessages {
    pub fn new() -> anyhow::Result<Self> {
        let keys = AdvertisedKeys {
            c_public: [7; 32],
            s_public: [9; 32],
        };
        let share = EncryptedShare {
            from: "inst-0".into(),
            to: "inst-1".into(),
            ciphertext: (0..120).collect(),
        };
        let reveal = RevealedShare {
            owner: "inst-2".into(),
            kind: modelpub_protocol::secagg::ShareKind::MaskKey,
            share: [5; 32],
        };
        Ok(Self {
            seeds: vec![keys.to_bytes(), share.to_bytes(), reveal.to_bytes()],
        })
    }
}

impl Target for SecAggMessages {
    fn name(&self) -> &'static str {
        "secagg-messages"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        self.seeds.clone()
    }

    fn run(&mut self, input: &[u8]) -> Result<(), String> {
        let keys = AdvertisedKeys::from_bytes(input).map(|_| ());
        let share = EncryptedShare::from_bytes(input).map(|_| ());
        let reveal = RevealedShare::from_bytes(input).map(|_| ());
        // Accepted when one of them accepts it (the tag picks at most one).
        keys.or(share).or(reveal).map_err(|e| e.to_string())
    }
}
