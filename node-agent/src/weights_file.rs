//! Model weights at rest, in the safetensors format, so a published model
//! opens in any framework that reads safetensors.

use modelpub_protocol::pb;
use modelpub_protocol::tensor::{NamedTensor, TensorSet};
use safetensors::tensor::{Dtype, TensorView};

#[derive(Debug, thiserror::Error)]
pub enum WeightsFileError {
    #[error("not a valid safetensors file: {0}")]
    Format(String),
    #[error("tensor `{name}` has dtype {dtype:?}, which the protocol does not carry")]
    Dtype { name: String, dtype: Dtype },
}

fn to_safetensors_dtype(d: pb::Dtype) -> Option<Dtype> {
    use pb::Dtype::*;
    Some(match d {
        F32 => Dtype::F32,
        F16 => Dtype::F16,
        Bf16 => Dtype::BF16,
        I32 => Dtype::I32,
        U32 => Dtype::U32,
        I64 => Dtype::I64,
        U8 => Dtype::U8,
        I8 => Dtype::I8,
        Unspecified => return None,
    })
}

fn from_safetensors_dtype(d: Dtype) -> Option<pb::Dtype> {
    use pb::Dtype::*;
    Some(match d {
        Dtype::F32 => F32,
        Dtype::F16 => F16,
        Dtype::BF16 => Bf16,
        Dtype::I32 => I32,
        Dtype::U32 => U32,
        Dtype::I64 => I64,
        Dtype::U8 => U8,
        Dtype::I8 => I8,
        _ => return None,
    })
}

pub fn encode(set: &TensorSet) -> Result<Vec<u8>, WeightsFileError> {
    let views = set
        .tensors
        .iter()
        .map(|t| {
            let dtype = to_safetensors_dtype(t.dtype)
                .ok_or_else(|| WeightsFileError::Format(format!("`{}` has no dtype", t.name)))?;
            let shape = t.shape.iter().map(|d| *d as usize).collect();
            let view = TensorView::new(dtype, shape, &t.data)
                .map_err(|e| WeightsFileError::Format(format!("`{}`: {e}", t.name)))?;
            Ok((t.name.clone(), view))
        })
        .collect::<Result<Vec<_>, WeightsFileError>>()?;
    safetensors::serialize(views, None).map_err(|e| WeightsFileError::Format(e.to_string()))
}

/// Tensors come back sorted by name, the order models export them in.
pub fn decode(bytes: &[u8]) -> Result<TensorSet, WeightsFileError> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| WeightsFileError::Format(e.to_string()))?;
    let mut tensors = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let dtype = from_safetensors_dtype(view.dtype()).ok_or(WeightsFileError::Dtype {
                name: name.clone(),
                dtype: view.dtype(),
            })?;
            Ok(NamedTensor {
                name,
                dtype,
                shape: view.shape().iter().map(|d| *d as u64).collect(),
                data: view.data().to_vec(),
            })
        })
        .collect::<Result<Vec<_>, WeightsFileError>>()?;
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    TensorSet::new(tensors).map_err(|e| WeightsFileError::Format(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_every_byte() {
        let set = TensorSet::new(vec![
            NamedTensor::from_f32("a", vec![2], &[1.0, -2.0]),
            NamedTensor::from_f32("b", vec![1, 3], &[0.5, 0.25, 0.125]),
        ])
        .unwrap();
        let back = decode(&encode(&set).unwrap()).unwrap();
        assert_eq!(back, set);
        assert_eq!(back.digest(), set.digest());
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(decode(b"not safetensors at all").is_err());
    }
}
