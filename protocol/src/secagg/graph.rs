//! The SecAgg+ neighbour graph: a Harary (circulant) graph H(k, n) laid over
//! a pseudo-random ring order of the roster.
//!
//! Bell et al. (2020) analyse a random k-regular-style graph; the circulant
//! graph over a seeded random permutation is the construction their
//! deployment (and Flower's SecAgg+) uses: every vertex has exactly k
//! neighbours (k/2 either side on the ring), the graph is symmetric, and the
//! adversary cannot pick its position because the ring order depends on a
//! seed fixed in the signed round plan. The ring position of each participant
//! is the rank of SHA-256(label ‖ seed ‖ name), so every party derives the
//! same graph from the plan alone, independently of any RNG library version.

use sha2::{Digest, Sha256};

use super::error::SecAggError;
use super::params::Params;

const RING_LABEL: &[u8] = b"modelpub/secagg/graph-ring";

#[derive(Debug, Clone)]
pub(crate) struct Graph {
    /// ring position -> participant index
    ring: Vec<usize>,
    /// participant index -> ring position
    position: Vec<usize>,
    half: usize,
    complete: bool,
}

impl Graph {
    pub(crate) fn new(params: &Params) -> Self {
        let n = params.n();
        let mut keyed: Vec<([u8; 32], usize)> = params
            .participants
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let mut h = Sha256::new();
                h.update(RING_LABEL);
                h.update(params.graph_seed);
                h.update(name.as_bytes());
                (h.finalize().into(), i)
            })
            .collect();
        keyed.sort();
        let ring: Vec<usize> = keyed.into_iter().map(|(_, i)| i).collect();
        let mut position = vec![0; n];
        for (pos, &i) in ring.iter().enumerate() {
            position[i] = pos;
        }
        Graph {
            ring,
            position,
            half: params.neighbours / 2,
            complete: params.neighbours + 1 >= n,
        }
    }

    /// Neighbours of participant `i`, as sorted participant indices.
    pub(crate) fn neighbours_of(&self, i: usize) -> Vec<usize> {
        let n = self.ring.len();
        let mut out: Vec<usize> = if self.complete {
            (0..n).filter(|&j| j != i).collect()
        } else {
            let p = self.position[i];
            (1..=self.half)
                .flat_map(|d| [self.ring[(p + d) % n], self.ring[(p + n - d) % n]])
                .collect()
        };
        out.sort_unstable();
        out
    }

    /// The holders of participant `i`'s shares: its neighbours and `i`
    /// itself (the dealer keeps one share, as in Bonawitz et al.), as sorted
    /// participant indices. The position in this list (plus one) is the
    /// Shamir evaluation point of the share `i` deals to that holder.
    pub(crate) fn holders_of(&self, i: usize) -> Vec<usize> {
        let mut out = self.neighbours_of(i);
        let at = out.partition_point(|&j| j < i);
        out.insert(at, i);
        out
    }

    /// The Shamir evaluation point (1-based rank in `owner`'s sorted holder
    /// list, see [`Graph::holders_of`]) of the share `owner` dealt to
    /// `holder` (possibly itself), in O(k) without building the list.
    pub(crate) fn share_point(&self, owner: usize, holder: usize) -> Option<usize> {
        if owner != holder && !self.are_neighbours(owner, holder) {
            return None;
        }
        if self.complete {
            return Some(holder + 1);
        }
        let n = self.ring.len();
        let p = self.position[owner];
        let below = (1..=self.half)
            .flat_map(|d| [self.ring[(p + d) % n], self.ring[(p + n - d) % n]])
            .chain(std::iter::once(owner))
            .filter(|&j| j < holder)
            .count();
        Some(below + 1)
    }

    pub(crate) fn are_neighbours(&self, i: usize, j: usize) -> bool {
        if i == j {
            return false;
        }
        if self.complete {
            return true;
        }
        let n = self.ring.len();
        let d = (self.position[i] + n - self.position[j]) % n;
        d.min(n - d) <= self.half
    }
}

/// The neighbours of `who` in this round, sorted by name.
pub fn neighbours(params: &Params, who: &str) -> Result<Vec<String>, SecAggError> {
    params.validate()?;
    let i = params.index_of(who)?;
    Ok(Graph::new(params)
        .neighbours_of(i)
        .into_iter()
        .map(|j| params.participants[j].clone())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_points_are_ranks_among_the_holders_including_the_dealer() {
        for (n, k) in [(3, 2), (7, 6), (16, 10), (40, 8)] {
            let participants: Vec<String> = (0..n).map(|i| format!("p{i:03}")).collect();
            let params = Params {
                round: 1,
                federation: "f".into(),
                participants,
                neighbours: k,
                threshold: Params::default_threshold(k),
                graph_seed: [3; 32],
                vector_len: 1,
                prg: crate::secagg::MaskPrg::ChaCha20,
            };
            params.validate().unwrap();
            let g = Graph::new(&params);
            for owner in 0..n {
                let holders = g.holders_of(owner);
                assert_eq!(holders.len(), k + 1);
                assert!(holders.windows(2).all(|w| w[0] < w[1]));
                for h in 0..n {
                    let want = holders.iter().position(|&x| x == h).map(|r| r + 1);
                    assert_eq!(g.share_point(owner, h), want, "n={n} owner={owner} h={h}");
                }
            }
        }
    }
}
