//! Streaming aggregation: updates are folded into one running, example-
//! weighted sum as they arrive, so the aggregator holds the global model,
//! the sum, and at most a bounded number of updates in flight — O(model
//! size), whatever the number of participants.
//!
//! An update is decoded chunk by chunk into a staging buffer and joins the
//! sum only once its bytes hash to the digest its signed header announced:
//! a stream that breaks off or was tampered with never touches the sum.

use std::sync::atomic::{AtomicUsize, Ordering};

use modelpub_protocol::pb;
use modelpub_protocol::tensor::{ChunkVerifier, TensorError};

use super::strategy::Weights;

/// Staging buffers alive now, and the most ever alive at once in this
/// process: the number that, times the model size, bounds what uploads cost
/// the aggregator in memory.
static STAGED_NOW: AtomicUsize = AtomicUsize::new(0);
static STAGED_PEAK: AtomicUsize = AtomicUsize::new(0);

/// The most updates this process ever held in staging at the same time.
pub fn peak_staged_updates() -> usize {
    STAGED_PEAK.load(Ordering::SeqCst)
}

/// The running example-weighted sum of one round's verified updates.
pub struct RoundSum {
    sum: Vec<Vec<f64>>,
    total_weight: f64,
    contributors: usize,
}

impl RoundSum {
    pub fn new(lengths: &[usize]) -> Self {
        Self {
            sum: lengths.iter().map(|n| vec![0.0; *n]).collect(),
            total_weight: 0.0,
            contributors: 0,
        }
    }

    pub fn add(&mut self, update: &VerifiedUpdate) {
        let w = update.weight;
        for (s, u) in self.sum.iter_mut().zip(&update.values) {
            for (s, u) in s.iter_mut().zip(u) {
                *s += w * f64::from(*u);
            }
        }
        self.total_weight += w;
        self.contributors += 1;
    }

    pub fn contributors(&self) -> usize {
        self.contributors
    }

    /// The example-weighted mean update, or `None` if nothing was added.
    pub fn mean(&self) -> Option<Weights> {
        (self.total_weight > 0.0).then(|| {
            self.sum
                .iter()
                .map(|s| s.iter().map(|v| (v / self.total_weight) as f32).collect())
                .collect()
        })
    }
}

/// An update being received: checked against the expected layout, hashed
/// and decoded as its chunks arrive.
pub struct StagedUpdate {
    verifier: ChunkVerifier,
    values: Weights,
    /// Bytes of a value split across two chunks.
    carry: Vec<u8>,
    weight: f64,
}

/// An update whose bytes matched its signed digest.
pub struct VerifiedUpdate {
    pub values: Weights,
    pub weight: f64,
    pub sha256: String,
    pub bytes: u64,
}

impl StagedUpdate {
    /// `expected` is the global model's manifest: an update must have the
    /// same tensors, in the same order, all f32.
    pub fn new(
        announced: &pb::TensorManifest,
        expected: &pb::TensorManifest,
        weight: f64,
    ) -> Result<Self, TensorError> {
        if announced.tensors != expected.tensors {
            let detail = announced
                .tensors
                .iter()
                .zip(&expected.tensors)
                .find(|(a, e)| a != e)
                .map(|(a, e)| {
                    format!(
                        "update tensor `{}` {:?} does not match model tensor `{}` {:?}",
                        a.name, a.shape, e.name, e.shape
                    )
                })
                .unwrap_or_else(|| {
                    format!(
                        "update has {} tensors, the model {}",
                        announced.tensors.len(),
                        expected.tensors.len()
                    )
                });
            return Err(TensorError::LayoutMismatch(detail));
        }
        if let Some(t) = announced
            .tensors
            .iter()
            .find(|t| t.dtype != pb::Dtype::F32 as i32)
        {
            return Err(TensorError::WrongDtype {
                name: t.name.clone(),
                wanted: pb::Dtype::F32,
                actual: pb::Dtype::try_from(t.dtype).unwrap_or(pb::Dtype::Unspecified),
            });
        }
        let verifier = ChunkVerifier::new(announced)?;
        let now = STAGED_NOW.fetch_add(1, Ordering::SeqCst) + 1;
        STAGED_PEAK.fetch_max(now, Ordering::SeqCst);
        let values = announced
            .tensors
            .iter()
            .map(|t| Vec::with_capacity(t.shape.iter().product::<u64>() as usize))
            .collect();
        Ok(Self {
            verifier,
            values,
            carry: Vec::with_capacity(4),
            weight,
        })
    }

    pub fn push(&mut self, chunk: &pb::TensorChunk) -> Result<(), TensorError> {
        let place = self.verifier.accept(chunk)?;
        if place.offset == 0 {
            self.carry.clear();
        }
        let out = &mut self.values[place.tensor_index];
        let mut data = chunk.data.as_slice();
        if !self.carry.is_empty() {
            let need = 4 - self.carry.len();
            let take = need.min(data.len());
            self.carry.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.carry.len() == 4 {
                out.push(f32::from_le_bytes([
                    self.carry[0],
                    self.carry[1],
                    self.carry[2],
                    self.carry[3],
                ]));
                self.carry.clear();
            }
        }
        let mut words = data.chunks_exact(4);
        out.extend(
            words
                .by_ref()
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
        self.carry.extend_from_slice(words.remainder());
        Ok(())
    }

    pub fn bytes(&self) -> u64 {
        self.verifier.bytes()
    }

    pub fn finish(mut self) -> Result<VerifiedUpdate, TensorError> {
        let bytes = self.verifier.bytes();
        let verifier = std::mem::replace(
            &mut self.verifier,
            ChunkVerifier::new(&pb::TensorManifest::default())?,
        );
        let sha256 = verifier.finish()?;
        if let Some(bad) = self.values.iter().flatten().find(|v| !v.is_finite()) {
            return Err(TensorError::LayoutMismatch(format!(
                "update contains a non-finite value ({bad})"
            )));
        }
        Ok(VerifiedUpdate {
            values: std::mem::take(&mut self.values),
            weight: self.weight,
            sha256,
            bytes,
        })
    }
}

impl Drop for StagedUpdate {
    fn drop(&mut self) {
        STAGED_NOW.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelpub_protocol::tensor::{NamedTensor, TensorSet};

    fn set(a: &[f32], b: &[f32]) -> TensorSet {
        TensorSet::new(vec![
            NamedTensor::from_f32("a", vec![a.len() as u64], a),
            NamedTensor::from_f32("b", vec![b.len() as u64], b),
        ])
        .unwrap()
    }

    fn stage(update: &TensorSet, model: &TensorSet, weight: f64) -> VerifiedUpdate {
        let mut s = StagedUpdate::new(&update.manifest(), &model.manifest(), weight).unwrap();
        for c in update.chunks() {
            s.push(&c).unwrap();
        }
        s.finish().unwrap()
    }

    #[test]
    fn weighted_mean_of_streamed_updates() {
        let model = set(&[0.0, 0.0], &[0.0]);
        let mut sum = RoundSum::new(&[2, 1]);
        sum.add(&stage(&set(&[1.0, 2.0], &[3.0]), &model, 1.0));
        sum.add(&stage(&set(&[4.0, 5.0], &[6.0]), &model, 2.0));
        assert_eq!(sum.contributors(), 2);
        assert_eq!(sum.mean().unwrap(), vec![vec![3.0, 4.0], vec![5.0]]);
    }

    #[test]
    fn values_split_across_chunks_are_reassembled() {
        let model = set(&[0.0, 0.0], &[0.0]);
        let update = set(&[1.5, -2.25], &[7.0]);
        let mut s = StagedUpdate::new(&update.manifest(), &model.manifest(), 1.0).unwrap();
        let bytes = &update.tensors[0].data;
        for (off, piece) in [(0usize, &bytes[..3]), (3, &bytes[3..6]), (6, &bytes[6..])] {
            s.push(&pb::TensorChunk {
                tensor_index: 0,
                offset: off as u64,
                data: piece.to_vec(),
            })
            .unwrap();
        }
        s.push(&pb::TensorChunk {
            tensor_index: 1,
            offset: 0,
            data: update.tensors[1].data.clone(),
        })
        .unwrap();
        assert_eq!(
            s.finish().unwrap().values,
            vec![vec![1.5, -2.25], vec![7.0]]
        );
    }

    #[test]
    fn mismatched_layout_is_refused_before_any_byte() {
        let model = set(&[0.0, 0.0], &[0.0]);
        let update = set(&[1.0, 2.0, 3.0], &[0.0]);
        let err = StagedUpdate::new(&update.manifest(), &model.manifest(), 1.0)
            .err()
            .unwrap();
        assert!(err.to_string().contains("`a`"), "{err}");
    }

    #[test]
    fn tampered_update_never_reaches_the_sum() {
        let model = set(&[0.0, 0.0], &[0.0]);
        let update = set(&[1.0, 2.0], &[3.0]);
        let mut s = StagedUpdate::new(&update.manifest(), &model.manifest(), 1.0).unwrap();
        for mut c in update.chunks() {
            c.data[0] ^= 0x40;
            s.push(&c).unwrap();
        }
        assert!(matches!(
            s.finish(),
            Err(TensorError::DigestMismatch { .. })
        ));
    }

    #[test]
    fn non_finite_update_is_refused() {
        let model = set(&[0.0, 0.0], &[0.0]);
        let update = set(&[f32::NAN, 2.0], &[3.0]);
        let mut s = StagedUpdate::new(&update.manifest(), &model.manifest(), 1.0).unwrap();
        for c in update.chunks() {
            s.push(&c).unwrap();
        }
        assert!(s.finish().is_err());
    }
}
