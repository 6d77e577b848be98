//! Client-level differential privacy for DP-FedAvg (McMahan et al. 2018).
//!
//! Each round the aggregator samples participants with probability `q`,
//! every participant clips its update to L2 norm `C` and adds its share of
//! Gaussian noise ([`mechanism`]); secure aggregation reveals only the noisy
//! sum. The [`accountant`] turns (q, noise multiplier z, rounds) into an
//! (ε, δ) guarantee, and a [`PrivacyBudget`] stops training before a round
//! would overspend.

pub mod accountant;
pub mod mechanism;

pub use accountant::{
    DEFAULT_ORDERS, RdpAccountant, epsilon, epsilon_and_order, epsilon_from_rdp,
    noise_multiplier_for, rdp_subsampled_gaussian,
};
pub use mechanism::{clip_l2, gaussian_noise, os_rng, per_participant_noise_std};

use accountant::{check_delta, check_epsilon, check_noise_multiplier, check_sampling_rate};

/// Why a differential-privacy computation was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DpError {
    #[error("sampling rate {0} is outside (0, 1]")]
    SamplingRate(f64),
    #[error("noise multiplier {0} must be positive and finite")]
    NoiseMultiplier(f64),
    #[error("delta {0} is outside (0, 1)")]
    Delta(f64),
    #[error("epsilon {0} must be positive and finite")]
    Epsilon(f64),
    #[error("the number of rounds must be at least 1, got 0")]
    ZeroSteps,
    #[error("noise standard deviation {0} must be non-negative and finite")]
    NoiseStdDev(f64),
    #[error(
        "ε = {epsilon} at δ = {delta} over {steps} rounds at sampling rate {q} is unreachable: even noise multiplier {max_noise_multiplier} gives ε = {best}"
    )]
    Unreachable {
        epsilon: f64,
        delta: f64,
        q: f64,
        steps: u64,
        best: f64,
        max_noise_multiplier: f64,
    },
    #[error("cannot seed the noise generator from the operating system: {0}")]
    Rng(String),
}

/// An (ε, δ) budget for one federation, spent round by round.
#[derive(Debug, Clone, PartialEq)]
pub struct PrivacyBudget {
    epsilon: f64,
    delta: f64,
    accountant: RdpAccountant,
    q: f64,
    z: f64,
    // One round's RDP, cached: `would_exceed` runs before every round.
    step_rdp: Vec<f64>,
    steps: u64,
}

impl PrivacyBudget {
    pub fn new(epsilon: f64, delta: f64, q: f64, z: f64) -> Result<Self, DpError> {
        check_epsilon(epsilon)?;
        check_delta(delta)?;
        check_sampling_rate(q)?;
        check_noise_multiplier(z)?;
        let accountant = RdpAccountant::new();
        let step_rdp = accountant::step_rdp(accountant.orders(), q, z);
        Ok(Self {
            epsilon,
            delta,
            accountant,
            q,
            z,
            step_rdp,
            steps: 0,
        })
    }

    /// ε spent so far at this budget's δ.
    pub fn spent(&self) -> f64 {
        self.accountant.epsilon(self.delta)
    }

    /// Whether running `extra_steps` more rounds would take ε past the budget.
    pub fn would_exceed(&self, extra_steps: u64) -> bool {
        let mut next = self.accountant.clone();
        next.add_scaled(&self.step_rdp, extra_steps);
        let eps = next.epsilon(self.delta);
        // A NaN ε (numerical trouble) counts as exceeding.
        eps.is_nan() || eps > self.epsilon
    }

    /// Records a round that has run. It never refuses: the noisy update is
    /// already out, so hiding it from the ledger would understate ε. Ask
    /// [`would_exceed`](Self::would_exceed) first.
    pub fn record_step(&mut self) {
        self.accountant.add_scaled(&self.step_rdp, 1);
        self.steps += 1;
    }

    /// How many more rounds fit in the budget.
    pub fn remaining_steps(&self) -> u64 {
        if self.would_exceed(1) {
            return 0;
        }
        let (mut lo, mut hi) = (1u64, 2u64);
        while !self.would_exceed(hi) {
            lo = hi;
            match hi.checked_mul(2) {
                Some(next) => hi = next,
                None => return u64::MAX,
            }
        }
        // Invariant: `lo` rounds fit, `hi` rounds do not.
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.would_exceed(mid) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        lo
    }

    pub fn steps(&self) -> u64 {
        self.steps
    }
    pub fn epsilon(&self) -> f64 {
        self.epsilon
    }
    pub fn delta(&self) -> f64 {
        self.delta
    }
    pub fn sampling_rate(&self) -> f64 {
        self.q
    }
    pub fn noise_multiplier(&self) -> f64 {
        self.z
    }
}

/// One line for `modelpub privacy epsilon`.
pub fn describe_epsilon(q: f64, z: f64, steps: u64, delta: f64) -> Result<String, DpError> {
    let (eps, order) = epsilon_and_order(q, z, steps, delta)?;
    Ok(format!(
        "ε = {eps:.3} at δ = {} after {steps} {} (sampling rate {q}, noise multiplier {z}, best RDP order {order})",
        sci(delta),
        rounds(steps),
    ))
}

/// One line for `modelpub privacy noise`.
pub fn describe_noise(q: f64, steps: u64, eps: f64, delta: f64) -> Result<String, DpError> {
    let z = noise_multiplier_for(q, steps, eps, delta)?;
    let (achieved, order) = epsilon_and_order(q, z, steps, delta)?;
    Ok(format!(
        "noise multiplier {z:.4} keeps ε ≤ {eps} at δ = {} over {steps} {} (sampling rate {q}; achieves ε = {achieved:.3}, best RDP order {order})",
        sci(delta),
        rounds(steps),
    ))
}

fn rounds(steps: u64) -> &'static str {
    if steps == 1 { "round" } else { "rounds" }
}

/// Python's `str()` for small floats ("1e-05"): what users paste from
/// dp_accounting and papers, so the CLI echoes it in the same form.
fn sci(x: f64) -> String {
    if x != 0.0 && x.abs() < 1e-4 {
        let s = format!("{x:e}");
        if let Some((mantissa, exp)) = s.split_once('e') {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ("-", d),
                None => ("+", exp),
            };
            return format!("{mantissa}e{sign}{digits:0>2}");
        }
    }
    format!("{x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_epsilon_reads_like_the_cli_example() {
        let line = describe_epsilon(0.01, 1.0, 1000, 1e-5).unwrap();
        assert!(line.starts_with("ε = 2.10"), "{line}");
        assert!(line.contains("at δ = 1e-05 after 1000 rounds"), "{line}");
        assert!(
            line.contains("(sampling rate 0.01, noise multiplier 1, best RDP order 7.8)"),
            "{line}"
        );
    }

    #[test]
    fn describe_noise_names_the_multiplier() {
        let line = describe_noise(0.01, 1000, 2.0, 1e-5).unwrap();
        assert!(line.starts_with("noise multiplier 1.0"), "{line}");
        assert!(describe_noise(0.0, 1000, 2.0, 1e-5).is_err());
    }

    #[test]
    fn sci_matches_python() {
        assert_eq!(sci(1e-5), "1e-05");
        assert_eq!(sci(2.5e-7), "2.5e-07");
        assert_eq!(sci(1e-120), "1e-120");
        assert_eq!(sci(0.001), "0.001");
    }

    #[test]
    fn budget_stops_before_overspending() {
        let mut budget = PrivacyBudget::new(2.0, 1e-5, 0.01, 1.0).unwrap();
        assert_eq!(budget.spent(), 0.0);
        let fit = budget.remaining_steps();
        assert!(fit > 100 && fit < 1000, "{fit}");
        while !budget.would_exceed(1) {
            budget.record_step();
        }
        assert_eq!(budget.steps(), fit);
        assert!(budget.spent() <= 2.0);
        assert!(epsilon(0.01, 1.0, fit + 1, 1e-5).unwrap() > 2.0);
        assert_eq!(budget.remaining_steps(), 0);
    }

    #[test]
    fn budget_rejects_bad_parameters() {
        assert_eq!(
            PrivacyBudget::new(0.0, 1e-5, 0.1, 1.0),
            Err(DpError::Epsilon(0.0))
        );
        assert_eq!(
            PrivacyBudget::new(1.0, 1.0, 0.1, 1.0),
            Err(DpError::Delta(1.0))
        );
        assert_eq!(
            PrivacyBudget::new(1.0, 1e-5, 1.5, 1.0),
            Err(DpError::SamplingRate(1.5))
        );
        assert!(matches!(
            PrivacyBudget::new(1.0, 1e-5, 0.1, f64::NAN),
            Err(DpError::NoiseMultiplier(_))
        ));
    }
}
