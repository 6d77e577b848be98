//! The server step that closes a round: the strategy moves the global
//! model by the round's mean update, in place, and the result becomes the
//! next global model. It is the aggregator's memory peak (issue 16), so it
//! works in the mean's own buffer and in slices of the global model.

use anyhow::bail;
use modelpub_protocol::pb;
use modelpub_protocol::tensor::{Bytes, NamedTensor, TensorSet, f32_le_bytes};

use super::state::GlobalModel;
use super::strategy::{MeanUpdate, Strategy};

/// Values of the global model decoded at a time while stepping it.
const STEP_SLICE: usize = 1 << 20;

/// The next global model: the strategy's step of `global` by `mean`, taken
/// in the mean's own buffers, which then become the new model's tensors
/// without a copy. Beside the current global model this holds the mean
/// and one slice of decoded weights, so closing a round costs the two
/// models and nothing that grows with them.
pub(super) fn step_model(
    strategy: &mut dyn Strategy,
    global: &GlobalModel,
    layout: &[(String, Vec<u64>)],
    mean: MeanUpdate,
) -> anyhow::Result<TensorSet> {
    let mismatch = || anyhow::anyhow!("the mean update does not match the global model's tensors");
    let step = |strategy: &mut dyn Strategy, i: usize, update: &mut [f32]| -> anyhow::Result<()> {
        let tensor = &global.set.tensors[i];
        if tensor.dtype != pb::Dtype::F32 || tensor.data.len() != update.len() * 4 {
            bail!(
                "tensor {} of the global model does not match the mean update",
                tensor.name
            );
        }
        let len = update.len();
        let mut decoded = Vec::with_capacity(STEP_SLICE.min(len));
        for (k, (bytes, part)) in (tensor.data.chunks(STEP_SLICE * 4))
            .zip(update.chunks_mut(STEP_SLICE))
            .enumerate()
        {
            decoded.clear();
            decoded.extend(
                bytes
                    .as_chunks::<4>()
                    .0
                    .iter()
                    .map(|b| f32::from_le_bytes(*b)),
            );
            strategy.step(i, len, k * STEP_SLICE, &decoded, part);
        }
        if update.iter().any(|v| !v.is_finite()) {
            bail!(
                "the new global model has non-finite weights in {}",
                tensor.name
            );
        }
        Ok(())
    };
    if layout.len() != global.set.tensors.len() {
        return Err(mismatch());
    }
    let mut encoded = Vec::with_capacity(layout.len());
    match mean {
        MeanUpdate::PerTensor(tensors) => {
            if tensors.len() != layout.len() {
                return Err(mismatch());
            }
            for (i, mut update) in tensors.into_iter().enumerate() {
                step(strategy, i, &mut update)?;
                let (name, shape) = &layout[i];
                encoded.push(new_tensor(name, shape, f32_le_bytes(update)));
            }
        }
        MeanUpdate::Flat {
            mut values,
            lengths,
        } => {
            if lengths.len() != layout.len() || lengths.iter().sum::<usize>() != values.len() {
                return Err(mismatch());
            }
            let mut at = 0;
            for (i, &len) in lengths.iter().enumerate() {
                step(strategy, i, &mut values[at..at + len])?;
                at += len;
            }
            // The new model is the mean's buffer itself, each tensor a view
            // of it: no tensor is copied, so the step never holds more than
            // the old model and this one (docs/benchmarks.md, issue 16).
            let shared = f32_le_bytes(values);
            let mut at = 0;
            for (&len, (name, shape)) in lengths.iter().zip(layout) {
                encoded.push(new_tensor(
                    name,
                    shape,
                    shared.slice(at * 4..(at + len) * 4),
                ));
                at += len;
            }
        }
    }
    Ok(TensorSet::new(encoded)?)
}

fn new_tensor(name: &str, shape: &[u64], data: Bytes) -> NamedTensor {
    NamedTensor {
        name: name.to_owned(),
        dtype: pb::Dtype::F32,
        shape: shape.to_vec(),
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregator::strategy::{FedAvg, build};

    fn global(values: &[&[f32]]) -> GlobalModel {
        let tensors = values
            .iter()
            .enumerate()
            .map(|(i, v)| NamedTensor::from_f32(format!("t{i}"), vec![v.len() as u64], v))
            .collect();
        let set = TensorSet::new(tensors).unwrap();
        GlobalModel {
            manifest: set.manifest(),
            set,
        }
    }

    fn layout(g: &GlobalModel) -> Vec<(String, Vec<u64>)> {
        g.set
            .tensors
            .iter()
            .map(|t| (t.name.clone(), t.shape.clone()))
            .collect()
    }

    #[test]
    fn a_flat_mean_steps_like_a_per_tensor_one_and_becomes_the_new_model_without_a_copy() {
        // More than one slice per tensor, and tensors of different lengths.
        let a: Vec<f32> = (0..STEP_SLICE + 7).map(|i| i as f32 * 1e-3).collect();
        let b: Vec<f32> = (0..5).map(|i| -(i as f32)).collect();
        let g = global(&[&a, &b]);
        let ua: Vec<f32> = (0..a.len())
            .map(|i| ((i % 13) as f32 - 6.0) * 0.01)
            .collect();
        let ub = vec![0.5f32; b.len()];
        for config in crate::aggregator::strategy::tests::stepping_strategies() {
            let per_tensor = step_model(
                build(&config).as_mut(),
                &g,
                &layout(&g),
                MeanUpdate::PerTensor(vec![ua.clone(), ub.clone()]),
            )
            .unwrap();
            let flat = step_model(
                build(&config).as_mut(),
                &g,
                &layout(&g),
                MeanUpdate::Flat {
                    values: [ua.clone(), ub.clone()].concat(),
                    lengths: vec![a.len(), b.len()],
                },
            )
            .unwrap();
            assert_eq!(flat, per_tensor, "{config:?}");
            // Both tensors are views of the one buffer the mean arrived in.
            let (t0, t1) = (&flat.tensors[0].data, &flat.tensors[1].data);
            assert_eq!(t0.as_ptr().wrapping_add(t0.len()), t1.as_ptr());
        }
        let fedavg = step_model(
            &mut FedAvg,
            &g,
            &layout(&g),
            MeanUpdate::PerTensor(vec![ua.clone(), ub.clone()]),
        )
        .unwrap();
        assert_eq!(
            fedavg.tensors[1].to_f32().unwrap(),
            [0.5, -0.5, -1.5, -2.5, -3.5]
        );
        assert_eq!(fedavg.tensors[0].to_f32().unwrap()[20], a[20] + ua[20]);
    }

    #[test]
    fn a_mean_that_does_not_fit_the_model_or_diverges_is_refused_by_name() {
        let g = global(&[&[1.0, 2.0], &[3.0]]);
        let short = MeanUpdate::Flat {
            values: vec![0.0; 2],
            lengths: vec![2, 1],
        };
        let e = step_model(&mut FedAvg, &g, &layout(&g), short).unwrap_err();
        assert!(e.to_string().contains("does not match"), "{e}");
        let wrong = MeanUpdate::PerTensor(vec![vec![0.0; 2], vec![0.0; 2]]);
        let e = step_model(&mut FedAvg, &g, &layout(&g), wrong).unwrap_err();
        assert!(e.to_string().contains("tensor t1"), "{e}");
        let inf = MeanUpdate::PerTensor(vec![vec![f32::INFINITY, 0.0], vec![0.0]]);
        let e = step_model(&mut FedAvg, &g, &layout(&g), inf).unwrap_err();
        assert!(e.to_string().contains("non-finite weights in t0"), "{e}");
    }
}
