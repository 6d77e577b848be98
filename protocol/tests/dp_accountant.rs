//! The RDP accountant against Google's `dp_accounting`.
//!
//! Reference values come from dp-accounting 0.6.0 (scipy 1.17.1, numpy
//! 2.4.6) in a scratch venv outside the repository:
//!
//!     python3 -m venv /tmp/dpvenv && /tmp/dpvenv/bin/pip install dp-accounting
//!     /tmp/dpvenv/bin/python -c '
//!     import dp_accounting as dpa
//!     from dp_accounting import rdp
//!     def eps(q, z, T, d):
//!         acc = rdp.RdpAccountant()
//!         acc.compose(dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(z)), T)
//!         return acc.get_epsilon_and_optimal_order(d)
//!     print(eps(0.01, 1.0, 1000, 1e-5))'
//!
//! Single-step RDP values: `rdp_privacy_accountant
//! ._compute_rdp_poisson_subsampled_gaussian(q, z, [order])`. Noise
//! multipliers: `mechanism_calibration.calibrate_dp_mechanism(
//! rdp.RdpAccountant, lambda z: dpa.SelfComposedDpEvent(
//! dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(z)), T), eps, d, tol=1e-7)`.

use modelpub_protocol::dp::{
    DEFAULT_ORDERS, DpError, RdpAccountant, epsilon, epsilon_and_order, epsilon_from_rdp,
    noise_multiplier_for, rdp_subsampled_gaussian,
};

fn rel(a: f64, b: f64) -> f64 {
    ((a - b) / b).abs()
}

/// The four points the design requires within 1%. (These expected values
/// predate dp-accounting 0.6.0, which gives 2.1014, 7.9039, 5.6320, 7.0774,
/// all inside the 1%; the exact 0.6.0 values are checked below.)
#[test]
fn required_points_within_one_percent() {
    for (q, z, steps, want) in [
        (0.01, 1.0, 1000, 2.108),
        (0.1, 1.0, 100, 7.973),
        (0.01, 1.1, 10000, 5.654),
        (1.0, 5.0, 50, 7.088),
    ] {
        let got = epsilon(q, z, steps, 1e-5).unwrap();
        assert!(
            rel(got, want) < 0.01,
            "q={q} z={z} T={steps}: {got} vs {want}"
        );
    }
}

/// (q, z, T, δ, ε, best order) exactly as dp-accounting 0.6.0 prints them.
/// Fractional best orders (7.8, 3.2, 2.5, 2.0 via the 1+x/10 list, ...)
/// exercise the `_compute_log_a_frac` series; several of these also hit its
/// 1000-term give-up for small orders, which must exclude the same orders.
const DP_ACCOUNTING: &[(f64, f64, u64, f64, f64, f64)] = &[
    (0.01, 1.0, 1000, 1e-5, 2.101366525420273, 7.8),
    (0.1, 1.0, 100, 1e-5, 7.903850223578231, 3.2),
    (0.01, 1.1, 10000, 1e-5, 5.632010670081592, 4.7),
    (1.0, 5.0, 50, 1e-5, 7.077391578166641, 4.2),
    (0.01, 4.0, 100, 1e-5, 0.08970576194554777, 128.0),
    (0.001, 3.0, 10, 1e-5, 0.10290454802976245, 63.0),
    (0.05, 2.0, 500, 1e-6, 3.1018682574376335, 8.2),
    (0.2, 0.8, 20, 1e-5, 11.268595757280785, 2.5),
    (0.02, 0.6, 2000, 1e-5, 22.15696872897047, 2.0),
    (0.5, 10.0, 1, 1e-5, 0.19607016235976793, 63.0),
    (0.005, 1.3, 50000, 1e-6, 5.306532238552423, 5.8),
    (0.1, 5.0, 100, 1e-3, 0.5527496544044903, 15.0),
    (0.3, 3.0, 5, 1e-5, 1.1443278772601697, 13.0),
    (0.01, 2.0, 100, 1e-5, 0.2571292377435293, 36.0),
    (0.001, 0.5, 1000, 1e-5, 4.382144962527826, 3.4),
    (0.1, 20.0, 10, 1e-5, 0.053512130517678586, 256.0),
];

#[test]
fn matches_dp_accounting_closely() {
    for &(q, z, steps, delta, want, want_order) in DP_ACCOUNTING {
        let (got, order) = epsilon_and_order(q, z, steps, delta).unwrap();
        assert!(
            rel(got, want) < 1e-6,
            "q={q} z={z} T={steps} δ={delta}: {got} vs {want}"
        );
        assert_eq!(order, want_order, "q={q} z={z} T={steps} δ={delta}");
    }
}

#[test]
fn single_step_rdp_matches_dp_accounting() {
    for (q, z, order, want) in [
        (0.01, 1.0, 14.0, 2.0408275189351572),
        (0.01, 1.0, 14.5, 2.3038520957716617),
        (0.1, 1.0, 2.5, 0.02385328594777003),
        (0.1, 1.0, 3.0, 0.03171230030337645),
        (0.01, 4.0, 1.1, 3.950852349596324e-06),
        (0.001, 3.0, 1.5, 8.848334818450043e-08),
        (0.5, 0.7, 7.3, 6.6458120707611945),
        (0.01, 1.1, 1024.0, 418.53082404914505),
        (0.2, 0.8, 10.9, 6.743618444533255),
        (0.01, 30.0, 63.0, 3.5042990296937664e-06),
    ] {
        let got = rdp_subsampled_gaussian(q, z, order);
        assert!(
            rel(got, want) < 1e-8,
            "q={q} z={z} α={order}: {got} vs {want}"
        );
    }
}

#[test]
fn edge_cases_of_one_step() {
    assert_eq!(rdp_subsampled_gaussian(0.0, 1.0, 2.0), 0.0);
    assert_eq!(rdp_subsampled_gaussian(1.0, 2.0, 3.0), 3.0 / 8.0);
    assert_eq!(rdp_subsampled_gaussian(0.5, 0.0, 3.0), f64::INFINITY);
    // Nonsense claims no privacy rather than a wrong finite number.
    assert_eq!(rdp_subsampled_gaussian(1.5, 1.0, 3.0), f64::INFINITY);
    assert_eq!(rdp_subsampled_gaussian(0.5, -1.0, 3.0), f64::INFINITY);
    assert_eq!(rdp_subsampled_gaussian(0.5, 1.0, 1.0), f64::INFINITY);
    assert_eq!(rdp_subsampled_gaussian(0.5, 1.0, f64::NAN), f64::INFINITY);
}

#[test]
fn default_orders_are_dp_accountings() {
    assert_eq!(DEFAULT_ORDERS.len(), 156);
    assert_eq!(&DEFAULT_ORDERS[..3], &[1.1, 1.2, 1.3]);
    assert_eq!(DEFAULT_ORDERS[98], 10.9);
    assert_eq!(&DEFAULT_ORDERS[99..101], &[11.0, 12.0]);
    assert_eq!(
        &DEFAULT_ORDERS[150..],
        &[62.0, 63.0, 128.0, 256.0, 512.0, 1024.0]
    );
    assert!(DEFAULT_ORDERS.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn epsilon_from_rdp_follows_compute_epsilon() {
    // Nothing spent: ε = 0 via the KL shortcut.
    assert_eq!(epsilon_from_rdp(&[2.0, 3.0], &[0.0, 0.0], 1e-5).0, 0.0);
    // One order: r + log(1 - 1/a) - log(δa)/(a - 1).
    let (eps, order) = epsilon_from_rdp(&[4.0], &[1.0], 1e-5);
    let want = 1.0 + (0.75f64).ln() - (4e-5f64).ln() / 3.0;
    assert!((eps - want).abs() < 1e-12);
    assert_eq!(order, 4.0);
    // Orders ≤ 1.01 cannot certify anything.
    assert_eq!(epsilon_from_rdp(&[1.005], &[1.0], 1e-5).0, f64::INFINITY);
    // Malformed input claims no privacy.
    assert_eq!(epsilon_from_rdp(&[2.0], &[1.0, 2.0], 1e-5).0, f64::INFINITY);
    assert_eq!(epsilon_from_rdp(&[0.5], &[1.0], 1e-5).0, f64::INFINITY);
    assert_eq!(epsilon_from_rdp(&[2.0], &[1.0], 0.0).0, f64::INFINITY);
    assert_eq!(epsilon_from_rdp(&[2.0], &[1.0], f64::NAN).0, f64::INFINITY);
}

#[test]
fn accountant_composes_additively() {
    let mut acc = RdpAccountant::new();
    acc.compose_subsampled_gaussian(0.01, 1.0, 400).unwrap();
    acc.compose_subsampled_gaussian(0.01, 1.0, 600).unwrap();
    let direct = epsilon(0.01, 1.0, 1000, 1e-5).unwrap();
    assert!(rel(acc.epsilon(1e-5), direct) < 1e-12);
    assert_eq!(
        acc.compose_subsampled_gaussian(0.0, 1.0, 1),
        Err(DpError::SamplingRate(0.0))
    );
}

#[test]
fn noise_multiplier_matches_dp_accounting_calibration() {
    for (q, steps, eps, delta, want) in [
        (0.01, 1000, 2.0, 1e-5, 1.0222898455164913),
        (0.1, 100, 8.0, 1e-5, 0.993726094037818),
        (1.0, 50, 1.0, 1e-5, 28.605194368302044),
        (0.05, 500, 3.0, 1e-6, 2.0518304664663165),
    ] {
        let z = noise_multiplier_for(q, steps, eps, delta).unwrap();
        assert!(
            rel(z, want) < 1e-5,
            "q={q} T={steps} ε={eps}: {z} vs {want}"
        );
        assert!(epsilon(q, z, steps, delta).unwrap() <= eps);
    }
}

#[test]
fn noise_multiplier_round_trips() {
    for &(q, z, steps, delta, _, _) in DP_ACCOUNTING {
        let eps = epsilon(q, z, steps, delta).unwrap();
        let back = noise_multiplier_for(q, steps, eps, delta).unwrap();
        assert!(rel(back, z) < 1e-4, "q={q} z={z} T={steps}: got {back}");
    }
}

#[test]
fn noise_multiplier_rejects_bad_inputs() {
    assert_eq!(
        noise_multiplier_for(0.0, 10, 1.0, 1e-5),
        Err(DpError::SamplingRate(0.0))
    );
    assert_eq!(
        noise_multiplier_for(1.01, 10, 1.0, 1e-5),
        Err(DpError::SamplingRate(1.01))
    );
    assert_eq!(
        noise_multiplier_for(0.1, 0, 1.0, 1e-5),
        Err(DpError::ZeroSteps)
    );
    assert_eq!(
        noise_multiplier_for(0.1, 10, 0.0, 1e-5),
        Err(DpError::Epsilon(0.0))
    );
    assert_eq!(
        noise_multiplier_for(0.1, 10, 1.0, 0.0),
        Err(DpError::Delta(0.0))
    );
    assert_eq!(
        noise_multiplier_for(0.1, 10, 1.0, 1.0),
        Err(DpError::Delta(1.0))
    );
    assert!(matches!(
        noise_multiplier_for(0.1, 10, f64::NAN, 1e-5),
        Err(DpError::Epsilon(_))
    ));
    assert!(matches!(
        epsilon(0.1, 0.0, 10, 1e-5),
        Err(DpError::NoiseMultiplier(_))
    ));
}

#[test]
fn unreachable_budget_is_an_error_naming_the_target() {
    let err = noise_multiplier_for(1.0, 1_000_000, 1e-9, 1e-5).unwrap_err();
    assert!(matches!(err, DpError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains("0.000000001"), "{err}");
}
