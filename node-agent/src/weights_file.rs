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
    #[error("cannot write {0}: {1}")]
    Write(String, #[source] std::io::Error),
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
    safetensors::serialize(views(set)?, None).map_err(|e| WeightsFileError::Format(e.to_string()))
}

/// Writes `set` to `path` tensor by tensor, without building the whole file
/// in memory first (a model-sized buffer at the aggregator's peak).
pub fn write(set: &TensorSet, path: &std::path::Path) -> Result<(), WeightsFileError> {
    safetensors::serialize_to_file(views(set)?, None, path).map_err(|e| match e {
        safetensors::SafeTensorError::IoError(e) => {
            WeightsFileError::Write(path.display().to_string(), e)
        }
        other => WeightsFileError::Format(other.to_string()),
    })
}

fn views(set: &TensorSet) -> Result<Vec<(String, TensorView<'_>)>, WeightsFileError> {
    set.tensors
        .iter()
        .map(|t| {
            let dtype = to_safetensors_dtype(t.dtype)
                .ok_or_else(|| WeightsFileError::Format(format!("`{}` has no dtype", t.name)))?;
            let shape = t.shape.iter().map(|d| *d as usize).collect();
            let view = TensorView::new(dtype, shape, &t.data)
                .map_err(|e| WeightsFileError::Format(format!("`{}`: {e}", t.name)))?;
            Ok((t.name.clone(), view))
        })
        .collect()
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
                data: view.data().to_vec().into(),
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
    fn a_written_file_is_the_encoding_and_an_unwritable_path_is_named() {
        let set =
            TensorSet::new(vec![NamedTensor::from_f32("w", vec![3], &[1.0, 2.0, 3.0])]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        write(&set, &path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), encode(&set).unwrap());
        let missing = dir.path().join("no-such-dir/m.safetensors");
        let e = write(&set, &missing).unwrap_err();
        assert!(matches!(e, WeightsFileError::Write(..)), "{e:?}");
        assert!(e.to_string().contains("no-such-dir"), "{e}");
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(decode(b"not safetensors at all").is_err());
    }
}
