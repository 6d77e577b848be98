//! The aggregator's side of a SecAgg+ round.
//!
//! Masked inputs are summed as their chunks arrive into one vector of
//! `vector_len` words: no per-client vector is ever held, and unmasking
//! subtracts the reconstructed masks from that same vector tile by tile.
//! Besides the sum the server keeps only O(n·k) small items (keys, routed
//! share ciphertexts, revealed shares).
//!
//! A client that uploads part of its vector and then stops leaves words in
//! the sum that can be neither kept nor removed without learning its input
//! (removing them needs both of its secrets). Such a round fails with
//! `IncompleteUpload`; a transport that must tolerate drops mid-upload
//! buffers each upload (e.g. on disk) and feeds it here once complete.

use std::collections::{BTreeMap, BTreeSet};

use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::error::SecAggError;
use super::graph::Graph;
use super::keys::{self, AdvertisedKeys};
use super::params::Params;
use super::prg::{MaskSet, Sign};
use super::shares::{self, EncryptedShare, PAIR_LEN, RevealedShare, ShareKind};

type Seeds = Vec<(Zeroizing<[u8; 32]>, Sign)>;

/// ChaCha20-Poly1305 appends a 16-byte tag.
const SHARE_CIPHERTEXT_LEN: usize = PAIR_LEN + 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Keys,
    Shares,
    Input,
    Unmasking,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Keys => "advertise-keys",
            Stage::Shares => "share-keys",
            Stage::Input => "masked-input",
            Stage::Unmasking => "unmasking",
        }
    }
}

#[derive(Clone)]
pub struct Server {
    params: Params,
    graph: Graph,
    stage: Stage,
    keys: BTreeMap<usize, AdvertisedKeys>,
    shares: BTreeMap<usize, Vec<EncryptedShare>>,
    u2: BTreeSet<usize>,
    sum: Vec<u32>,
    /// Next expected offset of each client that started uploading.
    received: BTreeMap<usize, usize>,
    completed: BTreeSet<usize>,
    dropped: BTreeSet<usize>,
    revealers: BTreeSet<usize>,
    /// owner -> (evaluation point, share) of the one secret being recovered.
    reveals: BTreeMap<usize, Vec<(u8, [u8; 32])>>,
    /// Threads unmasking may use (default: all this process may use).
    threads: usize,
}

impl Server {
    pub fn new(params: Params) -> Result<Self, SecAggError> {
        params.validate()?;
        Ok(Server {
            graph: Graph::new(&params),
            sum: vec![0; params.vector_len],
            params,
            stage: Stage::Keys,
            keys: BTreeMap::new(),
            shares: BTreeMap::new(),
            u2: BTreeSet::new(),
            received: BTreeMap::new(),
            completed: BTreeSet::new(),
            dropped: BTreeSet::new(),
            revealers: BTreeSet::new(),
            reveals: BTreeMap::new(),
            threads: super::prg::default_threads(),
        })
    }

    /// Caps the threads unmasking uses (at least one); the sum is the same
    /// for any count.
    pub fn set_threads(&mut self, threads: usize) {
        self.threads = threads.max(1);
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

    fn name_of(&self, i: usize) -> &str {
        &self.params.participants[i]
    }

    fn names(&self, set: impl IntoIterator<Item = usize>) -> Vec<String> {
        set.into_iter()
            .map(|i| self.name_of(i).to_owned())
            .collect()
    }

    fn member(
        &self,
        who: &str,
        set: &BTreeSet<usize>,
        name: &'static str,
    ) -> Result<usize, SecAggError> {
        let i = self.params.index_of(who)?;
        if set.contains(&i) {
            Ok(i)
        } else {
            Err(SecAggError::NotInSet {
                who: who.into(),
                set: name,
            })
        }
    }

    pub fn receive_keys(&mut self, from: &str, keys: AdvertisedKeys) -> Result<(), SecAggError> {
        self.expect(Stage::Keys)?;
        let i = self.params.index_of(from)?;
        if self.keys.insert(i, keys).is_some() {
            return Err(SecAggError::Duplicate {
                what: "advertised keys",
                who: from.into(),
            });
        }
        Ok(())
    }

    /// Everyone's advertised keys (U1), to broadcast to every client.
    pub fn advertised(&self) -> BTreeMap<String, AdvertisedKeys> {
        self.keys
            .iter()
            .map(|(&i, k)| (self.name_of(i).to_owned(), *k))
            .collect()
    }

    /// Accepts one client's encrypted shares; the first call closes U1.
    pub fn receive_shares(
        &mut self,
        from: &str,
        shares: Vec<EncryptedShare>,
    ) -> Result<(), SecAggError> {
        if self.stage == Stage::Keys {
            self.stage = Stage::Shares;
        }
        self.expect(Stage::Shares)?;
        let u1: BTreeSet<usize> = self.keys.keys().copied().collect();
        let i = self.member(from, &u1, "U1")?;
        if self.shares.contains_key(&i) {
            return Err(SecAggError::Duplicate {
                what: "encrypted shares",
                who: from.into(),
            });
        }
        let mut seen = BTreeSet::new();
        for share in &shares {
            if share.from != from {
                return Err(SecAggError::Malformed {
                    what: "encrypted share",
                    reason: format!("{from:?} sent a share labelled as from {:?}", share.from),
                });
            }
            let to = self.member(&share.to, &u1, "U1")?;
            if !self.graph.are_neighbours(i, to) {
                return Err(SecAggError::NotANeighbour {
                    from: from.into(),
                    to: share.to.clone(),
                });
            }
            if !seen.insert(to) {
                return Err(SecAggError::Duplicate {
                    what: "encrypted share",
                    who: format!("{from} to {}", share.to),
                });
            }
            if share.ciphertext.len() != SHARE_CIPHERTEXT_LEN {
                return Err(SecAggError::Malformed {
                    what: "encrypted share",
                    reason: format!(
                        "{} ciphertext bytes from {from:?}, expected {SHARE_CIPHERTEXT_LEN}",
                        share.ciphertext.len()
                    ),
                });
            }
        }
        let missing = self
            .graph
            .neighbours_of(i)
            .into_iter()
            .find(|j| u1.contains(j) && !seen.contains(j));
        if let Some(j) = missing {
            return Err(SecAggError::MissingShare {
                from: from.into(),
                to: self.name_of(j).into(),
            });
        }
        self.shares.insert(i, shares);
        Ok(())
    }

    /// Closes U2 (the clients whose shares reached all their neighbours) and
    /// returns it. Call once all shares are in, before routing them.
    pub fn close_shares(&mut self) -> Result<Vec<String>, SecAggError> {
        if self.stage == Stage::Keys {
            self.stage = Stage::Shares;
        }
        self.expect(Stage::Shares)?;
        let u2: BTreeSet<usize> = self.shares.keys().copied().collect();
        if u2.len() < self.params.threshold {
            return Err(SecAggError::BelowThreshold {
                subject: "clients that shared keys (U2)".into(),
                have: u2.len(),
                need: self.params.threshold,
            });
        }
        self.u2 = u2;
        self.stage = Stage::Input;
        Ok(self.u2())
    }

    /// U2 once closed; before that, the clients whose shares arrived so far.
    pub fn u2(&self) -> Vec<String> {
        if self.stage == Stage::Keys || self.stage == Stage::Shares {
            self.names(self.shares.keys().copied())
        } else {
            self.names(self.u2.iter().copied())
        }
    }

    /// The shares addressed to `to`, from senders in U2.
    pub fn shares_for(&self, to: &str) -> Vec<EncryptedShare> {
        let closed = !(self.stage == Stage::Keys || self.stage == Stage::Shares);
        self.shares
            .iter()
            .filter(|(i, _)| !closed || self.u2.contains(i))
            .flat_map(|(_, v)| v.iter().filter(|s| s.to == to).cloned())
            .collect()
    }

    /// Adds one chunk of `from`'s masked input to the running sum. Chunks of
    /// one client must arrive in order and without gaps, which rules out
    /// counting a chunk twice.
    pub fn add_masked_chunk(
        &mut self,
        from: &str,
        offset: usize,
        chunk: &[u32],
    ) -> Result<(), SecAggError> {
        self.expect(Stage::Input)?;
        let i = self.member(from, &self.u2, "U2")?;
        if self.completed.contains(&i) {
            return Err(SecAggError::Duplicate {
                what: "masked input",
                who: from.into(),
            });
        }
        let expected = self.received.get(&i).copied().unwrap_or(0);
        if offset != expected {
            return Err(SecAggError::UnexpectedOffset {
                who: from.into(),
                offset,
                expected,
            });
        }
        self.params.check_range(offset, chunk.len())?;
        for (s, c) in self.sum[offset..offset + chunk.len()].iter_mut().zip(chunk) {
            *s = s.wrapping_add(*c);
        }
        self.received.insert(i, offset + chunk.len());
        Ok(())
    }

    /// Marks `from`'s masked input as complete; it becomes a survivor (U3).
    pub fn complete_input(&mut self, from: &str) -> Result<(), SecAggError> {
        self.expect(Stage::Input)?;
        let i = self.member(from, &self.u2, "U2")?;
        let received = self.received.get(&i).copied().unwrap_or(0);
        if received != self.params.vector_len {
            return Err(SecAggError::IncompleteUpload {
                who: from.into(),
                received,
                vector_len: self.params.vector_len,
            });
        }
        if !self.completed.insert(i) {
            return Err(SecAggError::Duplicate {
                what: "masked input",
                who: from.into(),
            });
        }
        Ok(())
    }

    /// Closes U3 and returns (survivors U3, dropped D = U2 \ U3) to send to
    /// every survivor. Repeated calls return the same lists.
    pub fn unmask_request(&mut self) -> Result<(Vec<String>, Vec<String>), SecAggError> {
        if self.stage == Stage::Input {
            if let Some((&i, &received)) = self
                .received
                .iter()
                .find(|(i, _)| !self.completed.contains(i))
            {
                return Err(SecAggError::IncompleteUpload {
                    who: self.name_of(i).into(),
                    received,
                    vector_len: self.params.vector_len,
                });
            }
            if self.completed.len() < self.params.threshold {
                return Err(SecAggError::BelowThreshold {
                    subject: "survivors (U3)".into(),
                    have: self.completed.len(),
                    need: self.params.threshold,
                });
            }
            self.dropped = self.u2.difference(&self.completed).copied().collect();
            self.stage = Stage::Unmasking;
        }
        self.expect(Stage::Unmasking)?;
        Ok((
            self.names(self.completed.iter().copied()),
            self.names(self.dropped.iter().copied()),
        ))
    }

    /// Accepts one survivor's revealed shares: of its neighbours' secrets
    /// and of its own self-mask seed (a participant holds one share of its
    /// own secrets). The whole message is checked before any of it is kept.
    pub fn receive_reveal(
        &mut self,
        from: &str,
        shares: Vec<RevealedShare>,
    ) -> Result<(), SecAggError> {
        self.expect(Stage::Unmasking)?;
        let holder = self.member(from, &self.completed, "U3")?;
        if self.revealers.contains(&holder) {
            return Err(SecAggError::Duplicate {
                what: "revealed shares",
                who: from.into(),
            });
        }
        let mut accepted = BTreeMap::new();
        for share in shares {
            let owner = self.member(&share.owner, &self.u2, "U2")?;
            let expected = if self.completed.contains(&owner) {
                ShareKind::SelfMask
            } else {
                ShareKind::MaskKey
            };
            if share.kind != expected {
                return Err(SecAggError::WrongShareKind {
                    who: from.into(),
                    owner: share.owner,
                    kind: share.kind.name(),
                });
            }
            let Some(point) = self
                .graph
                .share_point(owner, holder)
                .and_then(|x| u8::try_from(x).ok())
            else {
                return Err(SecAggError::NotANeighbour {
                    from: share.owner,
                    to: from.into(),
                });
            };
            if accepted.insert(owner, (point, share.share)).is_some() {
                return Err(SecAggError::Duplicate {
                    what: "revealed share",
                    who: format!("{from} for {}", share.owner),
                });
            }
        }
        for (owner, point) in accepted {
            self.reveals.entry(owner).or_default().push(point);
        }
        self.revealers.insert(holder);
        Ok(())
    }

    /// Reconstructs the survivors' self-mask seeds and the dropped clients'
    /// mask keys, removes every remaining mask from the sum, and returns the
    /// wrapping sum of the survivors' inputs.
    pub fn finish(mut self) -> Result<Vec<u32>, SecAggError> {
        self.expect(Stage::Unmasking)?;
        let owners: Vec<usize> = self
            .completed
            .iter()
            .chain(&self.dropped)
            .copied()
            .collect();
        // Reconstruction and the X25519 agreements are independent per owner
        // and dominate for short vectors, so they use every core.
        let threads = self.threads;
        let per_thread = owners.len().div_ceil(threads).max(1);
        let this = &self;
        let batches: Vec<Result<Vec<Seeds>, SecAggError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = owners
                .chunks(per_thread)
                .map(|batch| {
                    scope.spawn(move || batch.iter().map(|&i| this.owner_masks(i)).collect())
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(Err(SecAggError::WorkerPanicked)))
                .collect()
        });
        let mut masks = MaskSet::new(self.params.prg);
        for batch in batches {
            for seeds in batch? {
                for (seed, sign) in &seeds {
                    masks.push(seed, *sign);
                }
            }
        }
        // Then the masks, fused: each thread regenerates every keystream for
        // its own range of the sum and subtracts it tile by tile.
        masks.apply_parallel(&mut self.sum, 0, threads)?;
        Ok(self.sum)
    }

    /// The masks to subtract on behalf of one owner: its self mask if it
    /// survived, or the pairwise masks its surviving neighbours applied with
    /// it if it dropped.
    fn owner_masks(&self, i: usize) -> Result<Seeds, SecAggError> {
        let t = self.params.threshold;
        let points = self.reveals.get(&i).map_or(&[][..], Vec::as_slice);
        let owner = self.name_of(i);
        if self.completed.contains(&i) {
            let seed = shares::combine(t, points, || format!("self-mask shares of {owner:?}"))?;
            return Ok(vec![(seed, Sign::Sub)]);
        }
        let secret = shares::combine(t, points, || format!("mask-key shares of {owner:?}"))?;
        let secret = StaticSecret::from(*secret);
        if PublicKey::from(&secret).to_bytes() != self.keys[&i].s_public {
            return Err(SecAggError::BadReconstruction { who: owner.into() });
        }
        let mut out = Vec::new();
        for j in self.graph.neighbours_of(i) {
            if !self.completed.contains(&j) {
                continue;
            }
            let peer = self.name_of(j);
            let shared = keys::agree(&secret, &self.keys[&j].s_public, peer)?;
            let seed = keys::mask_seed(&self.params, &shared, owner, peer);
            // Survivor j applied +mask if i > j, −mask otherwise; undo it.
            out.push((seed, if i > j { Sign::Sub } else { Sign::Add }));
        }
        Ok(out)
    }

    /// Words of aggregation state held: the single running sum, whatever n.
    pub fn working_set_len(&self) -> usize {
        self.sum.len()
    }

    /// Survivors' self masks plus pairwise masks of dropped clients that
    /// `finish` will remove (known once the unmask request is out).
    pub fn masks_to_remove(&self) -> usize {
        let pairwise: usize = (self.dropped.iter())
            .map(|&i| {
                (self.graph.neighbours_of(i).into_iter())
                    .filter(|j| self.completed.contains(j))
                    .count()
            })
            .sum();
        self.completed.len() + pairwise
    }
}
