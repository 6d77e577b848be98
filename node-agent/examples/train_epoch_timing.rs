//! Median seconds per local training epoch, as JSON on stdout, for
//! `bench/compare_train_epoch.sh` (the criterion bench `train_epoch`
//! measures the same work but prints no machine-readable median).
//! Threads: `MODELPUB_BENCH_THREADS` (default 1); repetitions:
//! `MODELPUB_BENCH_REPEATS` (default 30).

use std::time::Instant;

#[path = "../benches/common/mod.rs"]
mod common;

fn median_seconds(w: &mut common::Workload, repeats: usize) -> f64 {
    for seed in 0..3 {
        w.epoch(seed);
    }
    let mut times: Vec<f64> = (0..repeats)
        .map(|i| {
            let t = Instant::now();
            w.epoch(100 + i as u64);
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    let threads = common::threads_from_env();
    tch::set_num_threads(threads);
    let repeats = std::env::var("MODELPUB_BENCH_REPEATS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(30);
    let digits = median_seconds(&mut common::Workload::digits(), repeats);
    let text = median_seconds(&mut common::Workload::shakespeare(), repeats);
    println!(
        "{{\"impl\":\"rust-tch\",\"threads\":{threads},\"digits_mlp_epoch_s\":{digits:.6},\"char_transformer_epoch_s\":{text:.6}}}"
    );
}
