//! FedAvg experiments that chose the defaults of `default_train_config`
//! and `ModelConfig::default_for`, in process, without the protocol: the
//! digits one runs with the unit tests (under a second). Shakespeare is
//! checked end to end through `modelpub simulate` (e2e/tests).
//! `MP_EXP_*` environment variables override the settings under study.

use std::time::Instant;

use modelpub_protocol::tensor::{NamedTensor, TensorSet};
use tch::Device;

use super::*;
use crate::data::testutil::repo_data_dir;
use crate::data::{Partition, load_digits, partition, split_train_test};

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The example-weighted mean of the institutions' weights.
fn weighted_average(updates: &[(TensorSet, u64)]) -> TensorSet {
    let total: f64 = updates.iter().map(|(_, n)| *n as f64).sum();
    let first = &updates[0].0;
    let tensors = first
        .tensors
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut acc = vec![0f64; t.numel() as usize];
            for (w, n) in updates {
                for (a, v) in acc.iter_mut().zip(w.tensors[i].to_f32().unwrap()) {
                    *a += v as f64 * (*n as f64 / total);
                }
            }
            let acc: Vec<f32> = acc.into_iter().map(|v| v as f32).collect();
            NamedTensor::from_f32(t.name.clone(), t.shape.clone(), &acc)
        })
        .collect();
    TensorSet::new(tensors).unwrap()
}

struct Run {
    federated: Vec<Evaluation>,
    local: Vec<Evaluation>,
    seconds: f64,
}

fn fedavg(
    config: &ModelConfig,
    shares: &[Dataset],
    test: &Dataset,
    cfg: &TrainConfig,
    rounds: u32,
) -> Run {
    let t0 = Instant::now();
    let device = Device::Cpu;
    let init_seed = env("MP_EXP_INIT", 7u64);
    let mut global = Model::new(config, device, init_seed).unwrap();
    let prepared: Vec<PreparedData> = shares
        .iter()
        .map(|s| PreparedData::new(&global, s).unwrap())
        .collect();
    let test_prepared = PreparedData::new(&global, test).unwrap();
    let mut local = Model::new(config, device, init_seed).unwrap();
    let mut federated = Vec::new();
    for round in 0..rounds {
        let start = global.weights();
        let mut updates = Vec::new();
        for (i, data) in prepared.iter().enumerate() {
            local.load_weights(&start).unwrap();
            let cfg = TrainConfig {
                seed: cfg.seed ^ ((round as u64) << 8 | i as u64),
                ..cfg.clone()
            };
            let out = train_prepared(&mut local, data, &cfg, &mut |_, _| {}).unwrap();
            updates.push((local.weights(), out.num_examples));
        }
        global.load_weights(&weighted_average(&updates)).unwrap();
        let e = evaluate_prepared(&global, &test_prepared).unwrap();
        println!(
            "  round {round}: accuracy {:.4} loss {:.4}",
            e.accuracy, e.loss
        );
        federated.push(e);
    }
    let seconds = t0.elapsed().as_secs_f64();
    let local_results = prepared
        .iter()
        .enumerate()
        .map(|(i, data)| {
            let mut m = Model::new(config, device, init_seed).unwrap();
            let cfg = TrainConfig {
                local_epochs: cfg.local_epochs * rounds,
                seed: cfg.seed ^ i as u64,
                ..cfg.clone()
            };
            train_prepared(&mut m, data, &cfg, &mut |_, _| {}).unwrap();
            let e = evaluate_prepared(&m, &test_prepared).unwrap();
            println!(
                "  local-only {i}: accuracy {:.4} loss {:.4}",
                e.accuracy, e.loss
            );
            e
        })
        .collect();
    Run {
        federated,
        local: local_results,
        seconds,
    }
}

#[test]
fn digits_by_label_fedavg() {
    tch::set_num_threads(env("MP_EXP_THREADS", 2));
    let ds = Dataset::Tabular(load_digits(&repo_data_dir()).unwrap());
    let (train_set, test_set) = split_train_test(&ds, 0.2, 42).unwrap();
    let shares = partition(&train_set, 3, &Partition::Label, 0).unwrap();
    let base = default_train_config(&train_set);
    let cfg = TrainConfig {
        local_epochs: env("MP_EXP_EPOCHS", base.local_epochs),
        batch_size: env("MP_EXP_BS", base.batch_size),
        learning_rate: env("MP_EXP_LR", base.learning_rate),
        proximal_mu: env("MP_EXP_MU", base.proximal_mu),
        max_batches_per_epoch: env("MP_EXP_MAXB", base.max_batches_per_epoch),
        ..base
    };
    let mut config = ModelConfig::default_for(&train_set);
    if let ModelConfig::Mlp { hidden, .. } = &mut config {
        let h: String = env("MP_EXP_HIDDEN", "64".to_string());
        *hidden = h
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect();
    }
    let rounds = env("MP_EXP_ROUNDS", 10);
    println!("digits by label, {cfg:?}, {rounds} rounds");
    let run = fedavg(&config, &shares, &test_set, &cfg, rounds);
    let last = run.federated.last().unwrap();
    println!(
        "federated accuracy {:.4} in {:.1} s; local-only {:?}",
        last.accuracy,
        run.seconds,
        run.local.iter().map(|e| e.accuracy).collect::<Vec<_>>()
    );
    assert!(last.accuracy >= 0.92);
    assert!(run.local.iter().all(|e| e.accuracy <= 0.5));
}
