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
/// and decoded as its chunks arrive. Tensors may travel as f32, or
/// compressed as f16 or int8 (with one dequantisation scale per tensor).
pub struct StagedUpdate {
    verifier: ChunkVerifier,
    decoders: Vec<Decoder>,
    values: Weights,
    /// Bytes of a value split across two chunks.
    carry: Vec<u8>,
    weight: f64,
    _slot: StagingSlot,
}

#[derive(Clone, Copy)]
enum Decoder {
    F32,
    F16,
    Int8(f32),
}

impl Decoder {
    fn width(self) -> usize {
        match self {
            Decoder::F32 => 4,
            Decoder::F16 => 2,
            Decoder::Int8(_) => 1,
        }
    }

    fn decode(self, b: &[u8]) -> f32 {
        match self {
            Decoder::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            Decoder::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
            Decoder::Int8(scale) => f32::from(b[0] as i8) * scale,
        }
    }
}

/// Counts a staging buffer for as long as it lives.
struct StagingSlot;

impl StagingSlot {
    fn take() -> Self {
        let now = STAGED_NOW.fetch_add(1, Ordering::SeqCst) + 1;
        STAGED_PEAK.fetch_max(now, Ordering::SeqCst);
        StagingSlot
    }
}

impl Drop for StagingSlot {
    fn drop(&mut self) {
        STAGED_NOW.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An update whose bytes matched its signed digest.
pub struct VerifiedUpdate {
    pub values: Weights,
    pub weight: f64,
    pub sha256: String,
    pub bytes: u64,
}

fn layout_error(announced: &pb::TensorManifest, expected: &pb::TensorManifest) -> Option<String> {
    if announced.tensors.len() != expected.tensors.len() {
        return Some(format!(
            "update has {} tensors, the model {}",
            announced.tensors.len(),
            expected.tensors.len()
        ));
    }
    announced
        .tensors
        .iter()
        .zip(&expected.tensors)
        .find(|(a, e)| a.name != e.name || a.shape != e.shape)
        .map(|(a, e)| {
            format!(
                "update tensor `{}` {:?} does not match model tensor `{}` {:?}",
                a.name, a.shape, e.name, e.shape
            )
        })
}

impl StagedUpdate {
    /// `expected` is the global model's manifest: an update must have the
    /// same tensors, in the same order and shapes. `int8_scales` gives the
    /// dequantisation scale of each int8 tensor, by tensor index.
    pub fn new(
        announced: &pb::TensorManifest,
        expected: &pb::TensorManifest,
        weight: f64,
        int8_scales: &[f32],
    ) -> Result<Self, TensorError> {
        if let Some(detail) = layout_error(announced, expected) {
            return Err(TensorError::LayoutMismatch(detail));
        }
        let decoders = announced
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| match pb::Dtype::try_from(t.dtype) {
                Ok(pb::Dtype::F32) => Ok(Decoder::F32),
                Ok(pb::Dtype::F16) => Ok(Decoder::F16),
                Ok(pb::Dtype::I8) => match int8_scales.get(i) {
                    Some(s) if s.is_finite() && *s >= 0.0 => Ok(Decoder::Int8(*s)),
                    _ => Err(TensorError::LayoutMismatch(format!(
                        "int8 tensor `{}` has no valid dequantisation scale",
                        t.name
                    ))),
                },
                other => Err(TensorError::WrongDtype {
                    name: t.name.clone(),
                    wanted: pb::Dtype::F32,
                    actual: other.unwrap_or(pb::Dtype::Unspecified),
                }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let verifier = ChunkVerifier::new(announced)?;
        let values = announced
            .tensors
            .iter()
            .map(|t| Vec::with_capacity(t.shape.iter().product::<u64>() as usize))
            .collect();
        Ok(Self {
            verifier,
            decoders,
            values,
            carry: Vec::with_capacity(4),
            weight,
            _slot: StagingSlot::take(),
        })
    }

    pub fn push(&mut self, chunk: &pb::TensorChunk) -> Result<(), TensorError> {
        let place = self.verifier.accept(chunk)?;
        if place.offset == 0 {
            self.carry.clear();
        }
        let decoder = self.decoders[place.tensor_index];
        let out = &mut self.values[place.tensor_index];
        decode_words(&mut self.carry, &chunk.data, decoder.width(), |w| {
            out.push(decoder.decode(w))
        });
        Ok(())
    }

    pub fn bytes(&self) -> u64 {
        self.verifier.bytes()
    }

    pub fn finish(self) -> Result<VerifiedUpdate, TensorError> {
        let bytes = self.verifier.bytes();
        let sha256 = self.verifier.finish()?;
        if let Some(bad) = self.values.iter().flatten().find(|v| !v.is_finite()) {
            return Err(TensorError::LayoutMismatch(format!(
                "update contains a non-finite value ({bad})"
            )));
        }
        Ok(VerifiedUpdate {
            values: self.values,
            weight: self.weight,
            sha256,
            bytes,
        })
    }
}

/// Feeds `emit` every whole `width`-byte word of `data`, keeping a word
/// split across chunks in `carry` until its other bytes arrive.
fn decode_words(carry: &mut Vec<u8>, mut data: &[u8], width: usize, mut emit: impl FnMut(&[u8])) {
    if !carry.is_empty() {
        let take = (width - carry.len()).min(data.len());
        carry.extend_from_slice(&data[..take]);
        data = &data[take..];
        if carry.len() == width {
            emit(carry);
            carry.clear();
        }
    }
    let mut words = data.chunks_exact(width);
    for w in words.by_ref() {
        emit(w);
    }
    carry.extend_from_slice(words.remainder());
}

/// Name of the single tensor a masked (secure-aggregation) upload carries.
pub const MASKED_TENSOR: &str = "secagg.masked";

/// A secure-aggregation upload being received: one u32 vector, masked, so
/// the aggregator can only add it to the others.
pub struct StagedMasked {
    verifier: ChunkVerifier,
    values: Vec<u32>,
    carry: Vec<u8>,
    _slot: StagingSlot,
}

impl StagedMasked {
    pub fn new(announced: &pb::TensorManifest, vector_len: u64) -> Result<Self, TensorError> {
        let expected = pb::TensorSpec {
            name: MASKED_TENSOR.into(),
            dtype: pb::Dtype::U32 as i32,
            shape: vec![vector_len],
        };
        if announced.tensors != [expected] {
            return Err(TensorError::LayoutMismatch(format!(
                "a masked update is one u32 tensor `{MASKED_TENSOR}` of {vector_len} values"
            )));
        }
        Ok(Self {
            verifier: ChunkVerifier::new(announced)?,
            values: Vec::with_capacity(vector_len as usize),
            carry: Vec::with_capacity(4),
            _slot: StagingSlot::take(),
        })
    }

    pub fn push(&mut self, chunk: &pb::TensorChunk) -> Result<(), TensorError> {
        self.verifier.accept(chunk)?;
        let out = &mut self.values;
        decode_words(&mut self.carry, &chunk.data, 4, |w| {
            out.push(u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
        });
        Ok(())
    }

    /// The masked vector, its digest and its size once the digest matches.
    pub fn finish(self) -> Result<(Vec<u32>, String, u64), TensorError> {
        let bytes = self.verifier.bytes();
        let sha = self.verifier.finish()?;
        Ok((self.values, sha, bytes))
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
        let mut s = StagedUpdate::new(&update.manifest(), &model.manifest(), weight, &[]).unwrap();
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
        let mut s = StagedUpdate::new(&update.manifest(), &model.manifest(), 1.0, &[]).unwrap();
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
        let err = StagedUpdate::new(&update.manifest(), &model.manifest(), 1.0, &[])
            .err()
            .unwrap();
        assert!(err.to_string().contains("`a`"), "{err}");
    }

    #[test]
    fn tampered_update_never_reaches_the_sum() {
        let model = set(&[0.0, 0.0], &[0.0]);
        let update = set(&[1.0, 2.0], &[3.0]);
        let mut s = StagedUpdate::new(&update.manifest(), &model.manifest(), 1.0, &[]).unwrap();
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
        let mut s = StagedUpdate::new(&update.manifest(), &model.manifest(), 1.0, &[]).unwrap();
        for c in update.chunks() {
            s.push(&c).unwrap();
        }
        assert!(s.finish().is_err());
    }
}
