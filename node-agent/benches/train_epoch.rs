//! One local training epoch: the default digits MLP over the digits train
//! split, and the default char transformer for a fixed number of batches.
//! Threads: `MODELPUB_BENCH_THREADS` (default 1).
//! `bench/compare_train_epoch.sh` compares the same work with PyTorch.

use criterion::{Criterion, criterion_group, criterion_main};

#[path = "common/mod.rs"]
mod common;

fn train_epoch(c: &mut Criterion) {
    tch::set_num_threads(common::threads_from_env());
    let mut digits = common::Workload::digits();
    let mut seed = 0;
    c.bench_function("digits_mlp_epoch", |b| {
        b.iter(|| {
            seed += 1;
            digits.epoch(seed)
        })
    });
    let mut text = common::Workload::shakespeare();
    c.bench_function("char_transformer_10_batches", |b| {
        b.iter(|| {
            seed += 1;
            text.epoch(seed)
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = train_epoch
}
criterion_main!(benches);
