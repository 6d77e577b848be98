//! Update compression for plain (non-secure) aggregation: f16 halves the
//! bytes on the wire, symmetric int8 quarters them. The aggregator decodes
//! as the chunks arrive (`aggregator::accumulator`), so compression never
//! costs it a second copy of an update.

use modelpub_protocol::pb::{self, Compression};
use modelpub_protocol::tensor::{NamedTensor, TensorError, TensorSet};

/// The update as it travels, and the int8 scale of each tensor (empty
/// unless int8).
pub fn encode(update: &TensorSet, how: Compression) -> Result<(TensorSet, Vec<f32>), TensorError> {
    let mut scales = Vec::new();
    let tensors = update
        .tensors
        .iter()
        .map(|t| {
            let values = t.to_f32()?;
            Ok(match how {
                Compression::None => t.clone(),
                Compression::F16 => NamedTensor {
                    name: t.name.clone(),
                    dtype: pb::Dtype::F16,
                    shape: t.shape.clone(),
                    data: values
                        .iter()
                        .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                        .collect(),
                },
                Compression::Int8 => {
                    let max = values.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let scale = if max > 0.0 { max / 127.0 } else { 0.0 };
                    scales.push(scale);
                    NamedTensor {
                        name: t.name.clone(),
                        dtype: pb::Dtype::I8,
                        shape: t.shape.clone(),
                        data: values
                            .iter()
                            .map(|v| {
                                let q = if scale > 0.0 {
                                    (v / scale).round()
                                } else {
                                    0.0
                                };
                                (q.clamp(-127.0, 127.0) as i8) as u8
                            })
                            .collect(),
                    }
                }
            })
        })
        .collect::<Result<Vec<_>, TensorError>>()?;
    Ok((TensorSet::new(tensors)?, scales))
}

pub fn parse(name: &str) -> Result<Compression, String> {
    match name {
        "none" => Ok(Compression::None),
        "f16" | "16" => Ok(Compression::F16),
        "int8" | "8" => Ok(Compression::Int8),
        other => Err(format!(
            "unknown compression `{other}`; choose none, f16 or int8"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregator::accumulator::StagedUpdate;

    fn roundtrip(how: Compression) -> (Vec<f32>, u64) {
        let values: Vec<f32> = (0..1000)
            .map(|i| ((i as f32) * 0.37).sin() * 0.02)
            .collect();
        let update = TensorSet::new(vec![NamedTensor::from_f32("w", vec![1000], &values)]).unwrap();
        let (wire, scales) = encode(&update, how).unwrap();
        let mut staged =
            StagedUpdate::new(&wire.manifest(), &update.manifest(), 1.0, &scales).unwrap();
        for c in wire.chunks() {
            staged.push(&c).unwrap();
        }
        let v = staged.finish().unwrap();
        let err = v.values[0]
            .iter()
            .zip(&values)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        (vec![err], wire.total_bytes())
    }

    #[test]
    fn compressed_updates_decode_close_to_the_original() {
        let (exact, full) = roundtrip(Compression::None);
        assert_eq!(exact[0], 0.0);
        let (err16, b16) = roundtrip(Compression::F16);
        assert!(err16[0] < 2e-5, "f16 error {}", err16[0]);
        assert_eq!(b16 * 2, full);
        let (err8, b8) = roundtrip(Compression::Int8);
        assert!(err8[0] <= 0.02 / 127.0 * 0.51, "int8 error {}", err8[0]);
        assert_eq!(b8 * 4, full);
    }

    #[test]
    fn int8_without_scale_is_refused() {
        let update =
            TensorSet::new(vec![NamedTensor::from_f32("w", vec![2], &[1.0, 2.0])]).unwrap();
        let (wire, _) = encode(&update, Compression::Int8).unwrap();
        assert!(StagedUpdate::new(&wire.manifest(), &update.manifest(), 1.0, &[]).is_err());
    }
}
