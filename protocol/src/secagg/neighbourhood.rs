//! The neighbour count k and threshold t, derived from the conditions of
//! Bell et al. (CCS 2020, §3–4) for the roster size and the dropout and
//! corruption the round must tolerate, instead of a fixed formula. The
//! argument, and the k this picks per n, are in docs/secagg.md.
//!
//! For one participant, its k neighbours on the seeded random ring are a
//! uniformly random k-subset of the other n − 1, so the number of corrupt
//! (or dropped) ones is hypergeometric. With C = ⌊γn⌋ corrupt and
//! D = ⌊δn⌋ dropped participants, k and t must give, by union bounds over
//! the n participants (and ring positions):
//!
//! 1. **Privacy**: no participant has t or more corrupt share holders, so
//!    the server and the corrupt clients never hold t shares of both of an
//!    honest participant's secrets: n·P[Hyp(n−1, C, k) ≥ t] ≤ 2^−σ.
//! 2. **No partial sums**: the graph of honest survivors stays connected,
//!    so the server learns only the sum over all of them. On the circulant
//!    graph removing nodes disconnects it only where k/2 consecutive ring
//!    positions are corrupt or dropped: n·P[k/2 given positions all
//!    removed] ≤ 2^−σ (conservative: one such run leaves a path, two are
//!    needed to split it).
//! 3. **Correctness**: every participant keeps at least t surviving
//!    holders, so its secret can be reconstructed:
//!    n·P[Hyp(n−1, D, k) > k − t] ≤ 2^−η.
//!
//! plus our rule that t is a strict majority of the k + 1 holders
//! (`Params::default_threshold`). The smallest even k (or the complete
//! graph, k = n − 1, where the conditions are exact counts) that meets all
//! three wins; fewer neighbours is less masking work only because the
//! argument still holds.

use super::error::SecAggError;
use super::params::{MAX_NEIGHBOURS, Params};

/// Statistical security: a privacy failure is at most 2^−40 likely.
pub const SECURITY_BITS: f64 = 40.0;
/// A round fails for lack of shares at most 2^−30 of the time.
pub const CORRECTNESS_BITS: f64 = 30.0;

/// What a round must tolerate: the fraction of the roster that may drop
/// between sharing keys and unmasking, and the fraction that may collude
/// with the server.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    pub dropout: f64,
    pub corruption: f64,
}

impl Tolerance {
    /// 30 % dropout (a round must survive it, as the threshold's majority
    /// rule already assumes) and 5 % of participants colluding with the
    /// server.
    pub const DEFAULT: Tolerance = Tolerance {
        dropout: 0.3,
        corruption: 0.05,
    };
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance::DEFAULT
    }
}

/// The chosen k and t, and the bounds they achieve (log₂ of the failure
/// probabilities; −∞ where a condition holds outright).
#[derive(Debug, Clone, PartialEq)]
pub struct Neighbourhood {
    pub neighbours: usize,
    pub threshold: usize,
    pub log2_privacy_failure: f64,
    pub log2_partial_sum: f64,
    pub log2_round_failure: f64,
}

/// The cheapest (k, t) meeting the three conditions for `n` participants.
pub fn choose(n: usize, tolerance: Tolerance) -> Result<Neighbourhood, SecAggError> {
    let Tolerance {
        dropout,
        corruption,
    } = tolerance;
    if !(0.0..1.0).contains(&dropout) || !(0.0..1.0).contains(&corruption) {
        return Err(SecAggError::InvalidParams(format!(
            "tolerated dropout {dropout} and corruption {corruption} must each be in [0, 1)"
        )));
    }
    if n < 2 {
        return Err(SecAggError::InvalidParams(format!(
            "{n} participants; secure aggregation needs at least 2"
        )));
    }
    let corrupt = (corruption * n as f64).floor() as usize;
    let dropped = (dropout * n as f64).floor() as usize;
    let mut candidates: Vec<usize> = (2..n - 1).step_by(2).collect();
    candidates.push(n - 1);
    for k in candidates.into_iter().filter(|&k| k <= MAX_NEIGHBOURS) {
        if let Some(found) = check(n, k, corrupt, dropped) {
            return Ok(found);
        }
    }
    Err(SecAggError::InvalidParams(format!(
        "no neighbour count up to {} keeps {n} participants private (2^-{SECURITY_BITS}) and \
         complete (2^-{CORRECTNESS_BITS}) at {:.0} % dropout and {:.0} % corruption; lower the \
         tolerated dropout or corruption, or set neighbours and threshold explicitly",
        MAX_NEIGHBOURS.min(n - 1),
        dropout * 100.0,
        corruption * 100.0
    )))
}

/// The smallest majority t that k supports, if any.
fn check(n: usize, k: usize, corrupt: usize, dropped: usize) -> Option<Neighbourhood> {
    let complete = k == n - 1;
    let others = n - 1;
    let union = (n as f64).log2();
    let security = -SECURITY_BITS;
    let correctness = -CORRECTNESS_BITS;
    let partial_sum = if complete {
        f64::NEG_INFINITY
    } else {
        union + log2_all_removed(n, corrupt + dropped, k / 2)
    };
    if partial_sum > security {
        return None;
    }
    let first = Params::default_threshold(k);
    for t in first..=k + 1 {
        let (privacy, failure) = if complete {
            // Exact: the counts are known, not drawn.
            let private = corrupt < t;
            let complete_enough = n.saturating_sub(dropped) >= t;
            (
                if private { f64::NEG_INFINITY } else { 0.0 },
                if complete_enough {
                    f64::NEG_INFINITY
                } else {
                    0.0
                },
            )
        } else {
            (
                union + log2_hyper_at_least(others, corrupt, k, t),
                union + log2_hyper_at_least(others, dropped, k, k + 1 - t),
            )
        };
        if privacy > security {
            // A larger t is more private but needs more survivors.
            continue;
        }
        if failure > correctness {
            return None;
        }
        return Some(Neighbourhood {
            neighbours: k,
            threshold: t,
            log2_privacy_failure: privacy,
            log2_partial_sum: partial_sum,
            log2_round_failure: failure,
        });
    }
    None
}

fn ln_choose(n: usize, k: usize) -> f64 {
    let f = |x: usize| libm::lgamma(x as f64 + 1.0);
    f(n) - f(k) - f(n - k)
}

/// log₂ P[X ≥ at] for X ~ Hypergeometric(population, marked, draws).
fn log2_hyper_at_least(population: usize, marked: usize, draws: usize, at: usize) -> f64 {
    let lo = at.max(draws.saturating_sub(population - marked));
    let hi = marked.min(draws);
    if lo > hi {
        return f64::NEG_INFINITY;
    }
    let total = ln_choose(population, draws);
    let terms: Vec<f64> = (lo..=hi)
        .map(|x| ln_choose(marked, x) + ln_choose(population - marked, draws - x) - total)
        .collect();
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = terms.iter().map(|t| (t - max).exp()).sum();
    (max + sum.ln()) / std::f64::consts::LN_2
}

/// log₂ of the chance that `run` given ring positions are all among the
/// `removed` of `n` (drawn without replacement).
fn log2_all_removed(n: usize, removed: usize, run: usize) -> f64 {
    if run > removed {
        return f64::NEG_INFINITY;
    }
    (ln_choose(removed, run) - ln_choose(n, run)) / std::f64::consts::LN_2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hyper_exact(population: usize, marked: usize, draws: usize, at: usize) -> f64 {
        // Small cases by direct counting with u128 binomials.
        fn c(n: usize, k: usize) -> u128 {
            if k > n {
                return 0;
            }
            (0..k).fold(1u128, |acc, i| acc * (n - i) as u128 / (i as u128 + 1))
        }
        let hits: u128 = (at..=draws)
            .map(|x| c(marked, x) * c(population - marked, draws - x))
            .sum();
        hits as f64 / c(population, draws) as f64
    }

    #[test]
    fn the_hypergeometric_tail_matches_direct_counting() {
        for (pop, marked, draws, at) in [
            (20, 5, 6, 2),
            (99, 30, 40, 20),
            (49, 2, 10, 1),
            (30, 0, 5, 1),
        ] {
            let got = log2_hyper_at_least(pop, marked, draws, at).exp2();
            let want = hyper_exact(pop, marked, draws, at);
            assert!(
                (got - want).abs() <= 1e-9 * want.max(1e-300),
                "{pop} {marked} {draws} {at}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn every_choice_meets_its_three_bounds_and_one_neighbour_less_would_not() {
        for n in [3, 5, 10, 20, 50, 100, 200, 500] {
            let tol = Tolerance::DEFAULT;
            let got = choose(n, tol).unwrap();
            assert!(got.log2_privacy_failure <= -SECURITY_BITS, "{n}: {got:?}");
            assert!(got.log2_partial_sum <= -SECURITY_BITS, "{n}: {got:?}");
            assert!(got.log2_round_failure <= -CORRECTNESS_BITS, "{n}: {got:?}");
            let params_ok = got.neighbours.is_multiple_of(2) || got.neighbours == n - 1;
            assert!(
                params_ok && got.threshold > got.neighbours.div_ceil(2),
                "{n}: {got:?}"
            );
            let corrupt = (tol.corruption * n as f64).floor() as usize;
            let dropped = (tol.dropout * n as f64).floor() as usize;
            if got.neighbours >= 4 && got.neighbours != n - 1 {
                assert!(
                    check(n, got.neighbours - 2, corrupt, dropped).is_none(),
                    "{n}"
                );
            }
        }
    }

    #[test]
    fn more_tolerance_costs_more_neighbours() {
        let k = |dropout, corruption| {
            choose(
                100,
                Tolerance {
                    dropout,
                    corruption,
                },
            )
            .unwrap()
            .neighbours
        };
        assert!(k(0.1, 0.0) < k(0.3, 0.0));
        assert!(k(0.1, 0.0) <= k(0.1, 0.1));
    }

    #[test]
    fn impossible_tolerances_are_refused_with_what_to_change() {
        let err = choose(
            100,
            Tolerance {
                dropout: 0.6,
                corruption: 0.0,
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("60 % dropout") && err.contains("set neighbours"),
            "{err}"
        );
        assert!(
            choose(
                100,
                Tolerance {
                    dropout: 1.0,
                    corruption: 0.0
                }
            )
            .is_err()
        );
        assert!(choose(1, Tolerance::DEFAULT).is_err());
    }
}
