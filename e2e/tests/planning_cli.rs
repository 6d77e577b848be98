//! The planning tools: `modelpub privacy` agrees with Google's dp_accounting,
//! `modelpub bench secagg` sizes a round; both refuse nonsense, naming it.

use modelpub_e2e::{assert_fails_with, modelpub, text};

fn number_after(out: &str, marker: &str) -> f64 {
    let rest = &out[out
        .find(marker)
        .unwrap_or_else(|| panic!("`{marker}` in {out}"))
        + marker.len()..];
    rest.split_whitespace()
        .next()
        .unwrap()
        .trim_end_matches(',')
        .parse()
        .unwrap()
}

#[test]
fn epsilon_for_a_noise_level() {
    let out = modelpub(&[
        "privacy",
        "epsilon",
        "--sampling-rate",
        "0.01",
        "--noise-multiplier",
        "1.0",
        "--rounds",
        "1000",
        "--delta",
        "1e-5",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let eps = number_after(&text(&out), "ε = ");
    assert!((eps - 2.108).abs() / 2.108 < 0.01, "ε = {eps}");
}

#[test]
fn noise_for_a_budget_round_trips() {
    let out = modelpub(&[
        "privacy",
        "noise",
        "--sampling-rate",
        "0.1",
        "--rounds",
        "100",
        "--epsilon",
        "7.9",
        "--delta",
        "1e-5",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let z = number_after(&text(&out), "noise multiplier ");
    assert!((z - 1.0).abs() < 0.01, "z = {z}");
}

#[test]
fn invalid_plans_are_named() {
    let out = modelpub(&[
        "privacy",
        "epsilon",
        "--sampling-rate",
        "1.5",
        "--noise-multiplier",
        "1",
        "--rounds",
        "10",
    ]);
    assert_fails_with(&out, &["sampling rate", "1.5"]);
}

#[test]
fn secagg_benchmark_reports_a_correct_round_as_json() {
    let out = modelpub(&[
        "bench",
        "secagg",
        "--participants",
        "5",
        "--params",
        "2000",
        "--dropout",
        "0.2",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["correct"], true);
    assert_eq!(report["participants"], 5);
    assert_eq!(report["dropped"], 1);
    for key in [
        "client_mask_seconds",
        "server_unmask_seconds",
        "client_keystream_bound_seconds",
        "server_keystream_bound_seconds",
        "bytes_per_participant",
    ] {
        assert!(report[key].as_f64().unwrap() > 0.0, "{key}");
    }
    assert_fails_with(
        &modelpub(&["bench", "secagg", "--dropout", "1.5"]),
        &["dropout", "1.5"],
    );
}

#[test]
fn secagg_benchmark_runs_the_same_work_at_any_neighbour_count() {
    let run = |k: &str| {
        let out = modelpub(&[
            "bench",
            "secagg",
            "--participants",
            "12",
            "--params",
            "1000",
            "--dropout",
            "0.1",
            "--neighbours",
            k,
        ]);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    // 4 is a sparse ring, 11 the complete graph (n = 12 derives k = 8).
    let sparse = run("4");
    assert_eq!(sparse["neighbours"], 4);
    assert_eq!(sparse["threshold"], 3);
    assert_eq!(sparse["correct"], true);
    assert!(sparse["client_masks"].as_f64().unwrap() <= 5.0);
    assert_eq!(run("11")["neighbours"], 11);
    // Odd and not n - 1: no circulant graph has that degree.
    assert_fails_with(
        &modelpub(&[
            "bench",
            "secagg",
            "--participants",
            "12",
            "--neighbours",
            "5",
        ]),
        &["k = 5", "even"],
    );
}

#[test]
fn secagg_planner_prints_the_derived_neighbourhood_and_refuses_the_impossible() {
    let out = modelpub(&["secagg", "neighbours", "--participants", "3,100"]);
    assert!(out.status.success(), "{}", text(&out));
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("30 % dropout, 5 % corruption"), "{table}");
    assert!(table.contains("| 3 | 2 | 2 |"), "{table}");
    assert!(table.contains("| 100 | 62 | 32 |"), "{table}");
    assert_fails_with(
        &modelpub(&[
            "secagg",
            "neighbours",
            "--participants",
            "100",
            "--dropout",
            "0.6",
        ]),
        &[
            "no neighbour count",
            "60 % dropout",
            "set neighbours and threshold",
        ],
    );
}

#[test]
fn secagg_benchmark_runs_either_prg_and_says_which() {
    for prg in ["chacha20", "aes-128-ctr"] {
        let out = modelpub(&[
            "bench",
            "secagg",
            "--participants",
            "5",
            "--params",
            "3000",
            "--dropout",
            "0.2",
            "--prg",
            prg,
        ]);
        assert!(out.status.success(), "{}", text(&out));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["prg"], prg);
        assert_eq!(report["correct"], true);
    }
    assert_fails_with(
        &modelpub(&["bench", "secagg", "--prg", "rc4"]),
        &["rc4", "aes-128-ctr", "chacha20"],
    );
}
