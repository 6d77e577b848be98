//! The participant-side pieces of client-level DP-FedAvg: clip the whole
//! update, then add this participant's share of the Gaussian noise.

use rand::Rng;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_distr::{Distribution, Normal};

use super::DpError;

/// Scales all tensors of `update` by one common factor so that their joint
/// L2 norm is at most `max_norm`, and returns the norm before clipping.
///
/// One factor for all tensors keeps the update's direction; clipping each
/// tensor separately would not bound the sensitivity the accountant assumes.
/// A non-finite update (diverged training) or a NaN/negative bound leaves an
/// all-zero update: that is the one choice that still respects the bound.
pub fn clip_l2(update: &mut [Vec<f32>], max_norm: f64) -> f64 {
    let norm = update
        .iter()
        .flatten()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt();
    let bound = if max_norm.is_nan() {
        0.0
    } else {
        max_norm.max(0.0)
    };
    if !norm.is_finite() || bound == 0.0 {
        update.iter_mut().flatten().for_each(|x| *x = 0.0);
        return norm;
    }
    if norm <= bound {
        return norm;
    }
    // Rounding each product to f32 can grow the norm by up to 2^-24
    // relative; the margin keeps the result strictly within the bound.
    let scale = bound / norm * (1.0 - 1e-6);
    for x in update.iter_mut().flatten() {
        *x = (f64::from(*x) * scale) as f32;
    }
    norm
}

/// `len` independent samples of N(0, `std_dev`²).
///
/// In production `rng` must be a CSPRNG seeded from the operating system
/// ([`os_rng`]): noise an observer can predict or replay can be subtracted
/// from the released sum, and then it protects nothing. Seeded generators
/// are for reproducible tests only. (Floating-point Gaussian sampling leaks
/// a little through its low bits, Mironov 2012; quantisation for secure
/// aggregation blurs them, and a discrete Gaussian would remove the issue.)
///
/// A negative or non-finite `std_dev` is an error rather than silently
/// producing no noise.
pub fn gaussian_noise(len: usize, std_dev: f64, rng: &mut impl Rng) -> Result<Vec<f32>, DpError> {
    if !std_dev.is_finite() || std_dev < 0.0 {
        return Err(DpError::NoiseStdDev(std_dev));
    }
    let normal = Normal::new(0.0, std_dev).map_err(|_| DpError::NoiseStdDev(std_dev))?;
    Ok((0..len).map(|_| normal.sample(rng) as f32).collect())
}

/// A ChaCha20 generator seeded with 256 bits from the operating system: the
/// generator to use for DP noise (see [`gaussian_noise`]).
pub fn os_rng() -> Result<ChaCha20Rng, DpError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| DpError::Rng(e.to_string()))?;
    Ok(ChaCha20Rng::from_seed(seed))
}

/// Noise standard deviation each participant adds: `z · C / √n`.
///
/// Under secure aggregation nobody sees an individual update, so the noise
/// need only protect the sum: n independent shares of variance z²C²/n add up
/// to the central-DP noise N(0, z²C²) on the sum of clipped updates, whose
/// sensitivity to one participant is C. The aggregator divides the noisy sum
/// by the number of participants afterwards, which post-processing cannot
/// make less private.
///
/// If fewer than `expected_participants` survive, the sum carries less noise
/// than the accountant assumes; pass the secure-aggregation threshold (the
/// fewest participants a round can finish with), not the number invited.
/// Zero is treated as one: a lone participant adds all the noise itself.
pub fn per_participant_noise_std(
    noise_multiplier: f64,
    clip: f64,
    expected_participants: usize,
) -> f64 {
    noise_multiplier * clip / (expected_participants.max(1) as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(update: &[Vec<f32>]) -> f64 {
        update
            .iter()
            .flatten()
            .map(|&x| f64::from(x) * f64::from(x))
            .sum::<f64>()
            .sqrt()
    }

    #[test]
    fn clipping_bounds_the_joint_norm_and_keeps_direction() {
        let original = vec![vec![3.0f32, 0.0], vec![4.0, 0.0, 12.0]];
        let mut update = original.clone();
        let before = clip_l2(&mut update, 1.0);
        assert!((before - 13.0).abs() < 1e-9);
        let after = norm(&update);
        assert!(after <= 1.0 && after > 0.999, "{after}");
        // Same direction: every coordinate scaled by the same positive factor.
        for (a, b) in original.iter().flatten().zip(update.iter().flatten()) {
            assert!((f64::from(*b) - f64::from(*a) / 13.0).abs() < 1e-6);
        }
    }

    #[test]
    fn clipping_is_a_no_op_under_the_bound() {
        let original = vec![vec![0.3f32, -0.4]];
        let mut update = original.clone();
        let before = clip_l2(&mut update, 1.0);
        assert!((before - 0.5).abs() < 1e-7);
        assert_eq!(update, original);
    }

    #[test]
    fn clipping_never_exceeds_the_bound() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        for _ in 0..200 {
            let mut update: Vec<Vec<f32>> = (0..3)
                .map(|_| (0..50).map(|_| rng.random_range(-10.0f32..10.0)).collect())
                .collect();
            let bound = rng.random_range(0.01..5.0);
            clip_l2(&mut update, bound);
            assert!(norm(&update) <= bound);
        }
    }

    #[test]
    fn clipping_zeroes_non_finite_updates_and_bad_bounds() {
        let mut update = vec![vec![1.0f32, f32::NAN]];
        assert!(clip_l2(&mut update, 1.0).is_nan());
        assert_eq!(update, vec![vec![0.0, 0.0]]);
        let mut update = vec![vec![1.0f32, 2.0]];
        clip_l2(&mut update, f64::NAN);
        assert_eq!(update, vec![vec![0.0, 0.0]]);
    }

    #[test]
    fn noise_has_the_requested_moments() {
        let mut rng = ChaCha20Rng::seed_from_u64(42);
        let std_dev = 2.5;
        let noise = gaussian_noise(100_000, std_dev, &mut rng).unwrap();
        assert_eq!(noise.len(), 100_000);
        let n = noise.len() as f64;
        let mean = noise.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let var = noise
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / n;
        // Standard error of the mean is 2.5/√1e5 ≈ 0.008.
        assert!(mean.abs() < 0.04, "mean {mean}");
        assert!(
            (var.sqrt() / std_dev - 1.0).abs() < 0.02,
            "std {}",
            var.sqrt()
        );
    }

    #[test]
    fn noise_rejects_bad_std_dev() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                gaussian_noise(3, bad, &mut rng),
                Err(DpError::NoiseStdDev(_))
            ));
        }
        assert_eq!(gaussian_noise(2, 0.0, &mut rng).unwrap(), vec![0.0, 0.0]);
    }

    #[test]
    fn os_rng_is_seeded_differently_each_time() {
        let mut a = os_rng().unwrap();
        let mut b = os_rng().unwrap();
        assert_ne!(a.random::<u64>(), b.random::<u64>());
    }

    #[test]
    fn participant_shares_sum_to_the_central_variance() {
        let (z, clip, n) = (1.1, 0.5, 40);
        let share = per_participant_noise_std(z, clip, n);
        let total_var = n as f64 * share * share;
        assert!((total_var - (z * clip).powi(2)).abs() < 1e-12);
        assert_eq!(per_participant_noise_std(z, clip, 0), z * clip);

        // And empirically: summing n participants' noise gives std z·C.
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let len = 20_000;
        let mut sum = vec![0.0f64; len];
        for _ in 0..n {
            let noise = gaussian_noise(len, share, &mut rng).unwrap();
            for (s, x) in sum.iter_mut().zip(noise) {
                *s += f64::from(x);
            }
        }
        let std = (sum.iter().map(|x| x * x).sum::<f64>() / len as f64).sqrt();
        assert!((std / (z * clip) - 1.0).abs() < 0.03, "{std}");
    }
}
