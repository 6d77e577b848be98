//! Streaming aggregation: updates are folded into one running, example-
//! weighted sum as they arrive, so the aggregator holds the global model,
//! the sum, and at most a bounded number of updates in flight — O(model
//! size), whatever the number of participants.
//!
//! An update is decoded chunk by chunk into a staging buffer (a masked one
//! into a spool file) and joins the sum only once its bytes hash to the
//! digest its signed header announced: a stream that breaks off or was
//! tampered with never touches the sum.

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

/// Words read back from a spooled masked upload at a time (1 MiB).
const SPOOL_CHUNK_WORDS: usize = 1 << 18;

/// Why a masked upload could not be staged.
#[derive(Debug, thiserror::Error)]
pub enum StagingError {
    /// The upload itself is wrong: the sender's fault.
    #[error(transparent)]
    Tensor(#[from] TensorError),
    /// This aggregator could not write or read its spool file.
    #[error("spooling the masked update: {0}")]
    Spool(#[from] std::io::Error),
}

/// A secure-aggregation upload being received: one u32 vector, masked, so
/// the aggregator can only add it to the others. Its bytes go to an
/// unnamed spool file as they arrive (the OS removes it when it is closed,
/// crash included), not to memory: an upload in flight costs a chunk of
/// memory, not a model, so the aggregator holds one model-sized sum however
/// many uploads stream in at once.
pub struct StagedMasked {
    verifier: ChunkVerifier,
    spool: std::io::BufWriter<std::fs::File>,
    _slot: StagingSlot,
}

impl StagedMasked {
    pub fn new(
        announced: &pb::TensorManifest,
        vector_len: u64,
        spool_dir: &std::path::Path,
    ) -> Result<Self, StagingError> {
        let expected = pb::TensorSpec {
            name: MASKED_TENSOR.into(),
            dtype: pb::Dtype::U32 as i32,
            shape: vec![vector_len],
        };
        if announced.tensors != [expected] {
            return Err(TensorError::LayoutMismatch(format!(
                "a masked update is one u32 tensor `{MASKED_TENSOR}` of {vector_len} values"
            ))
            .into());
        }
        let verifier = ChunkVerifier::new(announced)?;
        let file = tempfile::tempfile_in(spool_dir)?;
        Ok(Self {
            verifier,
            spool: std::io::BufWriter::with_capacity(1 << 20, file),
            _slot: StagingSlot::take(),
        })
    }

    pub fn push(&mut self, chunk: &pb::TensorChunk) -> Result<(), StagingError> {
        use std::io::Write;
        self.verifier.accept(chunk)?;
        self.spool.write_all(&chunk.data)?;
        Ok(())
    }

    /// The spooled upload, its digest and its size once the digest matches.
    pub fn finish(self) -> Result<SpooledMasked, StagingError> {
        use std::io::Seek;
        let bytes = self.verifier.bytes();
        let sha256 = self.verifier.finish()?;
        let mut file = self.spool.into_inner().map_err(|e| e.into_error())?;
        file.rewind()?;
        Ok(SpooledMasked {
            file,
            words: bytes / 4,
            sha256,
            bytes,
        })
    }
}

/// A verified masked upload, on disk, ready to be added to the sum.
pub struct SpooledMasked {
    file: std::fs::File,
    words: u64,
    pub sha256: String,
    pub bytes: u64,
}

impl SpooledMasked {
    /// Feeds the words to `add` in order, a chunk at a time, with each
    /// chunk's offset. A read error part-way is reported as
    /// [`SpoolAddError::Read`] after some chunks were added: the caller must
    /// then treat the sum as lost.
    pub fn add_to<E>(
        mut self,
        mut add: impl FnMut(usize, &[u32]) -> Result<(), E>,
    ) -> Result<(), SpoolAddError<E>> {
        use std::io::Read;
        let mut bytes = vec![0u8; SPOOL_CHUNK_WORDS * 4];
        let mut words = Vec::with_capacity(SPOOL_CHUNK_WORDS);
        let mut offset = 0usize;
        let total = self.words as usize;
        while offset < total {
            let n = (total - offset).min(SPOOL_CHUNK_WORDS);
            self.file
                .read_exact(&mut bytes[..n * 4])
                .map_err(SpoolAddError::Read)?;
            words.clear();
            words.extend(
                bytes[..n * 4]
                    .as_chunks::<4>()
                    .0
                    .iter()
                    .map(|w| u32::from_le_bytes(*w)),
            );
            add(offset, &words).map_err(SpoolAddError::Add)?;
            offset += n;
        }
        Ok(())
    }
}

/// Why a spooled upload did not join the sum.
#[derive(Debug)]
pub enum SpoolAddError<E> {
    Read(std::io::Error),
    Add(E),
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
            data: update.tensors[1].data.to_vec(),
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

    fn masked(words: &[u32]) -> TensorSet {
        TensorSet::new(vec![NamedTensor {
            name: MASKED_TENSOR.into(),
            dtype: pb::Dtype::U32,
            shape: vec![words.len() as u64],
            data: words.iter().flat_map(|w| w.to_le_bytes()).collect(),
        }])
        .unwrap()
    }

    /// Pushes `update`'s bytes in pieces of `piece` bytes (so words straddle
    /// chunks), optionally flipping one bit.
    fn spool(update: &TensorSet, dir: &std::path::Path, piece: usize, flip: bool) -> StagedMasked {
        let len = update.tensors[0].shape[0];
        let mut s = StagedMasked::new(&update.manifest(), len, dir).unwrap();
        let mut data = update.tensors[0].data.to_vec();
        if flip {
            data[5] ^= 1;
        }
        for (i, bytes) in data.chunks(piece).enumerate() {
            s.push(&pb::TensorChunk {
                tensor_index: 0,
                offset: (i * piece) as u64,
                data: bytes.to_vec(),
            })
            .unwrap();
        }
        s
    }

    #[test]
    fn a_spooled_masked_upload_comes_back_word_for_word_in_ordered_chunks() {
        let dir = tempfile::tempdir().unwrap();
        // More than one read-back chunk, and not a whole number of them.
        let words: Vec<u32> = (0..SPOOL_CHUNK_WORDS as u32 * 2 + 7)
            .map(|i| i.wrapping_mul(2_654_435_761))
            .collect();
        let update = masked(&words);
        let spooled = spool(&update, dir.path(), 4093, false).finish().unwrap();
        assert_eq!(spooled.bytes, words.len() as u64 * 4);
        assert_eq!(spooled.sha256, update.manifest().content_sha256);
        let mut back = Vec::new();
        spooled
            .add_to(|offset, chunk| {
                assert_eq!(offset, back.len(), "chunks arrive in order, without gaps");
                back.extend_from_slice(chunk);
                Ok::<(), ()>(())
            })
            .unwrap();
        assert_eq!(back, words);
        // The spool file has no name: nothing is left in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_tampered_masked_upload_is_refused_before_it_can_be_added() {
        let dir = tempfile::tempdir().unwrap();
        let update = masked(&[1, 2, 3, 4]);
        let err = spool(&update, dir.path(), 3, true).finish().err().unwrap();
        assert!(
            matches!(
                err,
                StagingError::Tensor(TensorError::DigestMismatch { .. })
            ),
            "{err}"
        );
        let wrong = masked(&[1, 2, 3]);
        let err = StagedMasked::new(&wrong.manifest(), 4, dir.path())
            .err()
            .unwrap();
        assert!(err.to_string().contains("4 values"), "{err}");
    }

    #[test]
    fn an_unusable_spool_directory_is_the_aggregators_error_not_the_senders() {
        let update = masked(&[1, 2]);
        let err = StagedMasked::new(
            &update.manifest(),
            2,
            std::path::Path::new("/nonexistent/spool"),
        )
        .err()
        .unwrap();
        assert!(matches!(err, StagingError::Spool(_)), "{err}");
    }

    #[test]
    fn an_error_from_the_sum_stops_the_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let update = masked(&vec![9; SPOOL_CHUNK_WORDS + 1]);
        let spooled = spool(&update, dir.path(), 1 << 16, false).finish().unwrap();
        let mut calls = 0;
        let result = spooled.add_to(|_, _| {
            calls += 1;
            Err("closed")
        });
        assert!(matches!(result, Err(SpoolAddError::Add("closed"))));
        assert_eq!(calls, 1);
    }
}
