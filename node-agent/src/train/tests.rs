use tch::Device;

use super::*;
use crate::data::testutil::repo_data_dir;
use crate::data::{
    Partition, TextCorpus, TextDoc, load_digits, load_shakespeare, partition, split_train_test,
};

fn digits_split() -> (Dataset, Dataset) {
    let ds = Dataset::Tabular(load_digits(&repo_data_dir()).unwrap());
    split_train_test(&ds, 0.2, 42).unwrap()
}

fn no_progress() -> impl FnMut(u32, u64) {
    |_, _| {}
}

#[test]
fn mlp_learns_digits() {
    tch::set_num_threads(2);
    let (train_set, test_set) = digits_split();
    let mut model = Model::new(&ModelConfig::default_for(&train_set), Device::Cpu, 0).unwrap();
    let cfg = TrainConfig {
        local_epochs: 5,
        ..default_train_config(&train_set)
    };
    let mut calls = 0u64;
    let out = train(&mut model, &train_set, &cfg, &mut |_, _| calls += 1).unwrap();
    assert_eq!(out.num_examples, train_set.len() as u64);
    assert_eq!(out.batches, calls);
    assert_eq!(out.batches, 5 * (train_set.len() as u64).div_ceil(32));
    let eval = evaluate(&model, &test_set).unwrap();
    assert!(eval.accuracy > 0.9, "{eval:?}");
    assert_eq!(eval.examples, test_set.len() as u64);
}

#[test]
fn mlp_on_four_digits_cannot_pass_the_full_test() {
    let (train_set, test_set) = digits_split();
    let shares = partition(&train_set, 3, &Partition::Label, 0).unwrap();
    let mut model = Model::new(&ModelConfig::default_for(&train_set), Device::Cpu, 0).unwrap();
    let cfg = TrainConfig {
        local_epochs: 5,
        ..default_train_config(&train_set)
    };
    train(&mut model, &shares[0], &cfg, &mut no_progress()).unwrap();
    let eval = evaluate(&model, &test_set).unwrap();
    assert!(eval.accuracy <= 0.5, "{eval:?}");
    assert!(evaluate(&model, &shares[0]).unwrap().accuracy > 0.9);
}

#[test]
fn training_is_deterministic_for_a_seed() {
    let (train_set, _) = digits_split();
    let config = ModelConfig::default_for(&train_set);
    let cfg = TrainConfig {
        max_batches_per_epoch: 5,
        ..default_train_config(&train_set)
    };
    let run = |seed| {
        let mut m = Model::new(&config, Device::Cpu, 0).unwrap();
        let cfg = TrainConfig {
            seed,
            ..cfg.clone()
        };
        let out = train(&mut m, &train_set, &cfg, &mut no_progress()).unwrap();
        assert_eq!(out.batches, 5);
        assert_eq!(out.num_examples, 5 * 32);
        m.weights()
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

#[test]
fn fedprox_stays_closer_to_the_global_weights() {
    let (train_set, _) = digits_split();
    let config = ModelConfig::default_for(&train_set);
    let start = Model::new(&config, Device::Cpu, 0).unwrap().weights();
    let distance = |mu| {
        let mut m = Model::new(&config, Device::Cpu, 0).unwrap();
        let cfg = TrainConfig {
            proximal_mu: mu,
            local_epochs: 2,
            ..default_train_config(&train_set)
        };
        train(&mut m, &train_set, &cfg, &mut no_progress()).unwrap();
        let w = m.weights();
        w.tensors
            .iter()
            .zip(&start.tensors)
            .flat_map(|(a, b)| {
                let (a, b) = (a.to_f32().unwrap(), b.to_f32().unwrap());
                a.into_iter()
                    .zip(b)
                    .map(|(x, y)| ((x - y) as f64).powi(2))
                    .collect::<Vec<_>>()
            })
            .sum::<f64>()
    };
    assert!(distance(1.0) < distance(0.0));
}

fn small_text() -> TextCorpus {
    let full = load_shakespeare(&repo_data_dir().join("tinyshakespeare.txt")).unwrap();
    TextCorpus {
        docs: full.docs.into_iter().take(300).collect(),
    }
}

#[test]
fn char_transformer_loss_decreases() {
    tch::set_num_threads(2);
    let text = Dataset::Text(small_text());
    let config = ModelConfig::CharTransformer {
        vocab: 256,
        context: 32,
        embed: 32,
        heads: 2,
        layers: 1,
    };
    let mut model = Model::new(&config, Device::Cpu, 0).unwrap();
    let before = evaluate(&model, &text).unwrap();
    assert!((before.loss - (256f64).ln()).abs() < 0.5, "{before:?}");
    let cfg = TrainConfig {
        max_batches_per_epoch: 30,
        local_epochs: 2,
        ..default_train_config(&text)
    };
    let out = train(&mut model, &text, &cfg, &mut no_progress()).unwrap();
    assert_eq!(out.batches, 60);
    let after = evaluate(&model, &text).unwrap();
    assert!(after.loss < before.loss - 1.5, "{before:?} -> {after:?}");
    assert!(after.examples <= (eval::MAX_EVAL_TOKENS + 32) as u64);
}

#[test]
fn short_text_uses_a_shorter_window() {
    let text = Dataset::Text(TextCorpus {
        docs: vec![TextDoc {
            role: "a".into(),
            text: b"abcab".to_vec(),
        }],
    });
    let mut model = Model::new(&ModelConfig::default_for(&text), Device::Cpu, 0).unwrap();
    let cfg = default_train_config(&text);
    train(&mut model, &text, &cfg, &mut no_progress()).unwrap();
    let eval = evaluate(&model, &text).unwrap();
    assert_eq!(eval.examples, 4);
}

#[test]
fn mismatches_and_empty_data_are_errors() {
    let (train_set, _) = digits_split();
    let text = Dataset::Text(small_text());
    let mut mlp = Model::new(&ModelConfig::default_for(&train_set), Device::Cpu, 0).unwrap();
    let e = train(
        &mut mlp,
        &text,
        &default_train_config(&text),
        &mut no_progress(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("mlp") && e.contains("text"), "{e}");
    let char_model = Model::new(&ModelConfig::default_for(&text), Device::Cpu, 0).unwrap();
    let e = evaluate(&char_model, &train_set).unwrap_err().to_string();
    assert!(
        e.contains("char-transformer") && e.contains("tabular"),
        "{e}"
    );

    let Dataset::Tabular(t) = &train_set else {
        unreachable!()
    };
    let empty = Dataset::Tabular(t.subset(&[]));
    assert!(matches!(
        train(
            &mut mlp,
            &empty,
            &default_train_config(&empty),
            &mut no_progress()
        ),
        Err(TrainError::NoExamples)
    ));
    let bad = TrainConfig {
        batch_size: 0,
        ..default_train_config(&train_set)
    };
    assert!(matches!(
        train(&mut mlp, &train_set, &bad, &mut no_progress()),
        Err(TrainError::InvalidConfig(_))
    ));
    let other = Model::new(
        &ModelConfig::Mlp {
            inputs: 3,
            hidden: vec![],
            classes: 10,
        },
        Device::Cpu,
        0,
    )
    .unwrap();
    let e = evaluate(&other, &train_set).unwrap_err().to_string();
    assert!(e.contains("3 features") && e.contains("64"), "{e}");
}
