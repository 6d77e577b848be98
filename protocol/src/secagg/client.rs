//! A participant's side of one SecAgg+ round, as a state machine that
//! refuses steps out of order.

use std::collections::{BTreeMap, BTreeSet};

use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::error::SecAggError;
use super::graph::Graph;
use super::keys::{self, AdvertisedKeys};
use super::params::Params;
use super::prg::{MaskSet, Sign};
use super::shares::{self, EncryptedShare, PAIR_LEN, RevealedShare, ShareKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Advertised,
    SharedKeys,
    Masking,
    Unmasking,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Advertised => "advertise-keys",
            Stage::SharedKeys => "share-keys",
            Stage::Masking => "masked-input",
            Stage::Unmasking => "unmasking",
        }
    }
}

pub struct Client {
    params: Params,
    me: usize,
    neighbours: Vec<usize>,
    /// Holders of this client's shares: its neighbours and itself, sorted;
    /// the rank here plus one is a holder's evaluation point.
    holders: Vec<usize>,
    c_secret: StaticSecret,
    s_secret: StaticSecret,
    advertised: AdvertisedKeys,
    self_seed: Zeroizing<[u8; 32]>,
    stage: Stage,
    /// U1: who advertised keys, with the keys of those that are neighbours.
    u1: BTreeSet<usize>,
    peer_keys: BTreeMap<usize, AdvertisedKeys>,
    u2: BTreeSet<usize>,
    /// The share pair each U2 neighbour dealt to this client, and the one
    /// this client dealt to itself (kept locally, never sent).
    held: BTreeMap<usize, Zeroizing<[u8; PAIR_LEN]>>,
    own_pair: Option<Zeroizing<[u8; PAIR_LEN]>>,
    masks: Vec<(Zeroizing<[u8; 32]>, Sign)>,
    /// Which kind of share was revealed for each peer, so a later request
    /// for the other kind is refused.
    revealed: BTreeMap<usize, ShareKind>,
    /// Threads masking may use (default: all this process may use).
    threads: usize,
}

impl Client {
    pub fn new(params: Params, me: &str) -> Result<Self, SecAggError> {
        params.validate()?;
        let me = params.index_of(me)?;
        let graph = Graph::new(&params);
        let neighbours = graph.neighbours_of(me);
        let holders = graph.holders_of(me);
        let c_secret = keys::random_secret()?;
        let s_secret = keys::random_secret()?;
        let advertised = AdvertisedKeys {
            c_public: PublicKey::from(&c_secret).to_bytes(),
            s_public: PublicKey::from(&s_secret).to_bytes(),
        };
        Ok(Client {
            params,
            me,
            neighbours,
            holders,
            c_secret,
            s_secret,
            advertised,
            self_seed: keys::random32()?,
            stage: Stage::Advertised,
            u1: BTreeSet::new(),
            peer_keys: BTreeMap::new(),
            u2: BTreeSet::new(),
            held: BTreeMap::new(),
            own_pair: None,
            masks: Vec::new(),
            revealed: BTreeMap::new(),
            threads: super::prg::default_threads(),
        })
    }

    /// Caps the threads masking uses (at least one); the masked words are
    /// the same for any count.
    pub fn set_threads(&mut self, threads: usize) {
        self.threads = threads.max(1);
    }

    pub fn name(&self) -> &str {
        &self.params.participants[self.me]
    }

    /// This client's neighbours in the round's graph, sorted by name.
    pub fn neighbours(&self) -> Vec<String> {
        self.neighbours
            .iter()
            .map(|&j| self.name_of(j).to_owned())
            .collect()
    }

    pub fn advertise(&self) -> AdvertisedKeys {
        self.advertised
    }

    fn name_of(&self, i: usize) -> &str {
        &self.params.participants[i]
    }

    fn expect(&self, stage: Stage) -> Result<(), SecAggError> {
        if self.stage == stage {
            Ok(())
        } else {
            Err(SecAggError::WrongStage {
                expected: stage.name(),
                actual: self.stage.name(),
            })
        }
    }

    fn not_in(&self, who: usize, set: &'static str) -> SecAggError {
        SecAggError::NotInSet {
            who: self.name_of(who).into(),
            set,
        }
    }

    /// Shamir-shares the self-mask seed and the mask key among the holders
    /// that advertised keys (U1): the neighbours, each pair encrypted to its
    /// holder, and this client itself, whose pair stays here. `keys` is the
    /// server's list of everyone's advertised keys.
    pub fn share_keys(
        &mut self,
        keys: &BTreeMap<String, AdvertisedKeys>,
    ) -> Result<Vec<EncryptedShare>, SecAggError> {
        self.expect(Stage::Advertised)?;
        let mut u1 = BTreeSet::new();
        for (name, k) in keys {
            let i = self.params.index_of(name)?;
            if i == self.me && *k != self.advertised {
                return Err(SecAggError::KeyMismatch { who: name.clone() });
            }
            u1.insert(i);
        }
        if !u1.contains(&self.me) {
            return Err(self.not_in(self.me, "U1"));
        }
        let t = self.params.threshold;
        let holders: Vec<(usize, usize)> = (self.holders.iter().copied().enumerate())
            .filter(|(_, j)| u1.contains(j))
            .collect();
        if holders.len() < t {
            return Err(SecAggError::BelowThreshold {
                subject: format!(
                    "share holders of {:?} (neighbours and itself) that advertised keys",
                    self.name()
                ),
                have: holders.len(),
                need: t,
            });
        }
        let count = self.holders.len();
        let b_shares = shares::deal(&self.self_seed, t, count)?;
        let s_shares = shares::deal(&self.s_secret.to_bytes(), t, count)?;
        let me = self.name().to_owned();
        let mut out = Vec::with_capacity(holders.len());
        let mut peer_keys = BTreeMap::new();
        let mut own_pair = None;
        for (m, j) in holders {
            let mut plain = Zeroizing::new([0u8; PAIR_LEN]);
            plain[..32].copy_from_slice(b_shares[m].as_ref());
            plain[32..].copy_from_slice(s_shares[m].as_ref());
            if j == self.me {
                own_pair = Some(plain);
                continue;
            }
            let to = self.name_of(j).to_owned();
            let theirs = keys[&to];
            let shared = keys::agree(&self.c_secret, &theirs.c_public, &to)?;
            let key = keys::share_key(&self.params, &shared, &me, &to);
            let aad = keys::share_aad(&self.params, &me, &to);
            out.push(EncryptedShare {
                from: me.clone(),
                ciphertext: shares::seal(&key, &aad, &plain),
                to,
            });
            peer_keys.insert(j, theirs);
        }
        self.u1 = u1;
        self.peer_keys = peer_keys;
        self.own_pair = own_pair;
        self.stage = Stage::SharedKeys;
        Ok(out)
    }

    /// Takes U2 (who dealt shares to everyone) and the shares addressed to
    /// this client, and derives the masks.
    pub fn receive_shares(
        &mut self,
        u2: &[String],
        shares: &[EncryptedShare],
    ) -> Result<(), SecAggError> {
        self.expect(Stage::SharedKeys)?;
        let mut set = BTreeSet::new();
        for name in u2 {
            let i = self.params.index_of(name)?;
            if !self.u1.contains(&i) {
                return Err(self.not_in(i, "U1"));
            }
            set.insert(i);
        }
        if !set.contains(&self.me) {
            return Err(self.not_in(self.me, "U2"));
        }
        let me = self.name().to_owned();
        let mut held = BTreeMap::new();
        for share in shares {
            if share.to != me {
                return Err(SecAggError::Malformed {
                    what: "encrypted share",
                    reason: format!("addressed to {:?}, delivered to {me:?}", share.to),
                });
            }
            let from = self.params.index_of(&share.from)?;
            let Some(theirs) = self.peer_keys.get(&from) else {
                return Err(SecAggError::NotANeighbour {
                    from: share.from.clone(),
                    to: me,
                });
            };
            if !set.contains(&from) {
                return Err(self.not_in(from, "U2"));
            }
            if held.contains_key(&from) {
                return Err(SecAggError::Duplicate {
                    what: "encrypted share",
                    who: share.from.clone(),
                });
            }
            let shared = keys::agree(&self.c_secret, &theirs.c_public, &share.from)?;
            let key = keys::share_key(&self.params, &shared, &share.from, &me);
            let aad = keys::share_aad(&self.params, &share.from, &me);
            let plain = shares::open(&key, &aad, &share.ciphertext).ok_or_else(|| {
                SecAggError::TamperedShare {
                    from: share.from.clone(),
                    to: me.clone(),
                }
            })?;
            held.insert(from, plain);
        }
        let mut masks = vec![(self.self_seed.clone(), Sign::Add)];
        for (&j, theirs) in &self.peer_keys {
            if !set.contains(&j) {
                continue;
            }
            if !held.contains_key(&j) {
                return Err(SecAggError::MissingShare {
                    from: self.name_of(j).into(),
                    to: me,
                });
            }
            let peer = self.name_of(j);
            let shared = keys::agree(&self.s_secret, &theirs.s_public, peer)?;
            let seed = keys::mask_seed(&self.params, &shared, &me, peer);
            // The lower-indexed party adds, the higher subtracts: they cancel in the sum.
            masks.push((seed, if j > self.me { Sign::Add } else { Sign::Sub }));
        }
        self.u2 = set;
        self.held = held;
        self.masks = masks;
        self.stage = Stage::Masking;
        Ok(())
    }

    /// Masks coordinates [offset, offset + input.len()) of this client's
    /// quantised input in place, so a large vector can be streamed.
    pub fn mask_chunk(&self, input: &mut [u32], offset: usize) -> Result<(), SecAggError> {
        self.expect(Stage::Masking)?;
        self.params.check_range(offset, input.len())?;
        let mut set = MaskSet::new(self.params.prg);
        for (seed, sign) in &self.masks {
            set.push(seed, *sign);
        }
        set.apply_parallel(input, offset, self.threads)
    }

    /// Number of masks (self mask plus pairwise masks) this client applies.
    pub fn mask_count(&self) -> usize {
        self.masks.len()
    }

    /// Reveals, for each neighbour in U2, its self-mask share if it survived
    /// or its mask-key share if it dropped — never both for one peer, across
    /// all calls: revealing both would unmask that peer's individual input.
    /// It also reveals its own self-mask share (it is a survivor); its own
    /// mask-key share is never revealed.
    pub fn unmask(
        &mut self,
        survivors: &[String],
        dropped: &[String],
    ) -> Result<Vec<RevealedShare>, SecAggError> {
        if self.stage != Stage::Unmasking {
            self.expect(Stage::Masking)?;
        }
        let u3 = self.index_set(survivors)?;
        let d = self.index_set(dropped)?;
        if let Some(&peer) = u3.intersection(&d).next() {
            return Err(SecAggError::BothSharesRequested {
                peer: self.name_of(peer).into(),
            });
        }
        if !u3.contains(&self.me) {
            return Err(self.not_in(self.me, "U3"));
        }
        if let Some(&who) = u3.union(&d).find(|i| !self.u2.contains(i)) {
            return Err(self.not_in(who, "U2"));
        }
        if u3.len() < self.params.threshold {
            return Err(SecAggError::BelowThreshold {
                subject: "survivors".into(),
                have: u3.len(),
                need: self.params.threshold,
            });
        }
        let mut plan = Vec::new();
        for j in self.held.keys().copied().chain(std::iter::once(self.me)) {
            let kind = if u3.contains(&j) {
                ShareKind::SelfMask
            } else if d.contains(&j) {
                ShareKind::MaskKey
            } else {
                continue;
            };
            match self.revealed.get(&j) {
                Some(&before) if before != kind => {
                    return Err(SecAggError::BothSharesRequested {
                        peer: self.name_of(j).into(),
                    });
                }
                _ => plan.push((j, kind)),
            }
        }
        let mut out = Vec::with_capacity(plan.len());
        for (j, kind) in plan {
            let pair = if j == self.me {
                // Defence in depth: this client is in U3 and not in D, so
                // only its self-mask share can be planned here.
                if kind != ShareKind::SelfMask {
                    return Err(self.not_in(j, "U3"));
                }
                self.own_pair
                    .as_ref()
                    .ok_or_else(|| SecAggError::MissingShare {
                        from: self.name_of(j).into(),
                        to: self.name_of(j).into(),
                    })?
            } else {
                &self.held[&j]
            };
            let range = match kind {
                ShareKind::SelfMask => 0..32,
                ShareKind::MaskKey => 32..PAIR_LEN,
            };
            let mut share = [0u8; 32];
            share.copy_from_slice(&pair[range]);
            self.revealed.insert(j, kind);
            out.push(RevealedShare {
                owner: self.name_of(j).into(),
                kind,
                share,
            });
        }
        self.stage = Stage::Unmasking;
        Ok(out)
    }

    fn index_set(&self, names: &[String]) -> Result<BTreeSet<usize>, SecAggError> {
        names.iter().map(|n| self.params.index_of(n)).collect()
    }
}
