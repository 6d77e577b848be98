//! Named tensors: the model-independent unit that travels on the wire.
//!
//! A [`TensorSet`] is what a model (or an update to one) looks like to the
//! protocol: named, shaped, typed little-endian buffers. It can be described
//! by a [`pb::TensorManifest`], cut into [`pb::TensorChunk`]s of bounded size,
//! and reassembled chunk by chunk with [`TensorAssembler`], which checks
//! every byte against the manifest and the digest.

pub use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::pb;

/// Largest chunk a sender emits; well under gRPC's 4 MiB default frame limit.
pub const MAX_CHUNK_BYTES: usize = 1 << 20;

/// Largest tensor set a receiver accepts (16 GiB): a bound against a peer
/// announcing absurd shapes, not a model-size cap.
pub const MAX_TOTAL_BYTES: u64 = 16 << 30;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TensorError {
    #[error("tensor `{name}` has unsupported dtype {dtype}")]
    UnsupportedDtype { name: String, dtype: i32 },
    #[error(
        "tensor `{name}`: shape {shape:?} with dtype {dtype:?} needs {expected} bytes, got {got}"
    )]
    SizeMismatch {
        name: String,
        shape: Vec<u64>,
        dtype: pb::Dtype,
        expected: u64,
        got: u64,
    },
    #[error("tensor `{name}` is not {wanted:?} but {actual:?}")]
    WrongDtype {
        name: String,
        wanted: pb::Dtype,
        actual: pb::Dtype,
    },
    #[error("manifest announces {0} bytes, more than the {MAX_TOTAL_BYTES}-byte limit")]
    TooLarge(u64),
    #[error("duplicate tensor name `{0}`")]
    DuplicateName(String),
    #[error("chunk for tensor index {index}, but the manifest lists only {count} tensors")]
    UnknownTensorIndex { index: u32, count: usize },
    #[error(
        "chunk for tensor `{name}` at offset {offset}, expected offset {expected} (chunks must arrive in order)"
    )]
    OutOfOrderChunk {
        name: String,
        offset: u64,
        expected: u64,
    },
    #[error("chunk overruns tensor `{name}` ({end} > {len} bytes)")]
    ChunkOverrun { name: String, end: u64, len: u64 },
    #[error("stream ended early: tensor `{name}` has {got} of {expected} bytes")]
    Incomplete {
        name: String,
        got: u64,
        expected: u64,
    },
    #[error("content digest mismatch: manifest says {announced}, bytes hash to {actual}")]
    DigestMismatch { announced: String, actual: String },
    #[error("tensor sets differ: {0}")]
    LayoutMismatch(String),
}

/// Bytes per element of a dtype, or `None` for `Unspecified`.
pub fn dtype_size(dtype: pb::Dtype) -> Option<u64> {
    use pb::Dtype::*;
    match dtype {
        Unspecified => None,
        F32 | I32 | U32 => Some(4),
        F16 | Bf16 => Some(2),
        I64 => Some(8),
        U8 | I8 => Some(1),
    }
}

/// One named tensor: its spec and its little-endian bytes.
///
/// The bytes are shared and immutable ([`Bytes`]): cloning a tensor, or a
/// model held by several streams, copies no data, and the tensors of a model
/// built from one f32 buffer ([`f32_le_bytes`]) can all be views of it.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub dtype: pb::Dtype,
    pub shape: Vec<u64>,
    pub data: Bytes,
}

/// `values` as little-endian f32 bytes, in the allocation they already have.
///
/// The aggregator's new global model is the mean update's own buffer: a copy
/// of the largest tensor at the end of every round would be most of a model
/// (issue 16). On a little-endian machine the byte swap compiles away; on a
/// big-endian one it runs in place.
pub fn f32_le_bytes(values: Vec<f32>) -> Bytes {
    // u32 has f32's size and alignment, so this collect reuses the buffer.
    let words: Vec<u32> = values.into_iter().map(|v| v.to_bits().to_le()).collect();
    Bytes::from_owner(LittleEndianWords(words))
}

/// Owns the words behind [`f32_le_bytes`] and shows them as bytes.
struct LittleEndianWords(Vec<u32>);

impl AsRef<[u8]> for LittleEndianWords {
    fn as_ref(&self) -> &[u8] {
        bytemuck::cast_slice(&self.0)
    }
}

impl NamedTensor {
    pub fn from_f32(name: impl Into<String>, shape: Vec<u64>, values: &[f32]) -> Self {
        let mut data = Vec::with_capacity(values.len() * 4);
        for v in values {
            data.extend_from_slice(&v.to_le_bytes());
        }
        Self {
            name: name.into(),
            dtype: pb::Dtype::F32,
            shape,
            data: data.into(),
        }
    }

    /// The values of an f32 tensor.
    pub fn to_f32(&self) -> Result<Vec<f32>, TensorError> {
        if self.dtype != pb::Dtype::F32 {
            return Err(TensorError::WrongDtype {
                name: self.name.clone(),
                wanted: pb::Dtype::F32,
                actual: self.dtype,
            });
        }
        Ok(self
            .data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }

    fn spec(&self) -> pb::TensorSpec {
        pb::TensorSpec {
            name: self.name.clone(),
            dtype: self.dtype as i32,
            shape: self.shape.clone(),
        }
    }
}

/// An ordered list of named tensors: a model or an update, as the protocol
/// sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TensorSet {
    pub tensors: Vec<NamedTensor>,
}

impl TensorSet {
    pub fn new(tensors: Vec<NamedTensor>) -> Result<Self, TensorError> {
        let mut seen = std::collections::HashSet::new();
        for t in &tensors {
            if !seen.insert(t.name.as_str()) {
                return Err(TensorError::DuplicateName(t.name.clone()));
            }
            let expected = expected_len(&t.spec())?;
            if expected != t.data.len() as u64 {
                return Err(TensorError::SizeMismatch {
                    name: t.name.clone(),
                    shape: t.shape.clone(),
                    dtype: t.dtype,
                    expected,
                    got: t.data.len() as u64,
                });
            }
        }
        Ok(Self { tensors })
    }

    pub fn total_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.data.len() as u64).sum()
    }

    pub fn get(&self, name: &str) -> Option<&NamedTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// SHA-256 of the canonical encoding (see `TensorManifest` in tensor.proto).
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for t in &self.tensors {
            hash_spec(&mut h, &t.spec());
            h.update(&t.data);
        }
        hex::encode(h.finalize())
    }

    pub fn manifest(&self) -> pb::TensorManifest {
        pb::TensorManifest {
            tensors: self.tensors.iter().map(NamedTensor::spec).collect(),
            content_sha256: self.digest(),
        }
    }

    /// Checks that `other` has exactly the same names, dtypes and shapes in
    /// the same order: an update must match the model it updates.
    pub fn check_same_layout(&self, other: &TensorSet) -> Result<(), TensorError> {
        if self.tensors.len() != other.tensors.len() {
            return Err(TensorError::LayoutMismatch(format!(
                "{} tensors vs {}",
                self.tensors.len(),
                other.tensors.len()
            )));
        }
        for (a, b) in self.tensors.iter().zip(&other.tensors) {
            if a.name != b.name || a.dtype != b.dtype || a.shape != b.shape {
                return Err(TensorError::LayoutMismatch(format!(
                    "`{}` {:?} {:?} vs `{}` {:?} {:?}",
                    a.name, a.dtype, a.shape, b.name, b.dtype, b.shape
                )));
            }
        }
        Ok(())
    }

    /// The chunks a sender streams after the manifest, in order.
    pub fn chunks(&self) -> impl Iterator<Item = pb::TensorChunk> + '_ {
        self.tensors.iter().enumerate().flat_map(|(i, t)| {
            t.data
                .chunks(MAX_CHUNK_BYTES)
                .enumerate()
                .map(move |(j, data)| pb::TensorChunk {
                    tensor_index: i as u32,
                    offset: (j * MAX_CHUNK_BYTES) as u64,
                    data: data.to_vec(),
                })
        })
    }
}

fn hash_spec(h: &mut Sha256, spec: &pb::TensorSpec) {
    h.update((spec.name.len() as u32).to_le_bytes());
    h.update(spec.name.as_bytes());
    h.update((spec.dtype as u32).to_le_bytes());
    h.update((spec.shape.len() as u32).to_le_bytes());
    for d in &spec.shape {
        h.update(d.to_le_bytes());
    }
}

fn expected_len(spec: &pb::TensorSpec) -> Result<u64, TensorError> {
    let dtype = pb::Dtype::try_from(spec.dtype).unwrap_or(pb::Dtype::Unspecified);
    let size = dtype_size(dtype).ok_or_else(|| TensorError::UnsupportedDtype {
        name: spec.name.clone(),
        dtype: spec.dtype,
    })?;
    spec.shape
        .iter()
        .try_fold(size, |acc, d| acc.checked_mul(*d))
        .filter(|n| *n <= MAX_TOTAL_BYTES)
        .ok_or(TensorError::TooLarge(u64::MAX))
}

/// Where a received chunk belongs: the tensor, and the byte range in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkPlace {
    pub tensor_index: usize,
    pub offset: u64,
}

/// Checks a chunk stream against its manifest as it arrives and hashes it,
/// without holding the bytes itself: the caller decides where the bytes go
/// (into a buffer, or straight into an accumulator).
pub struct ChunkVerifier {
    specs: Vec<pb::TensorSpec>,
    lens: Vec<u64>,
    announced: String,
    current: usize,
    filled: u64,
    hasher: Sha256,
    spec_hashed: bool,
    bytes: u64,
}

impl ChunkVerifier {
    pub fn new(manifest: &pb::TensorManifest) -> Result<Self, TensorError> {
        let mut seen = std::collections::HashSet::new();
        let mut lens = Vec::with_capacity(manifest.tensors.len());
        let mut total: u64 = 0;
        for spec in &manifest.tensors {
            if !seen.insert(spec.name.as_str()) {
                return Err(TensorError::DuplicateName(spec.name.clone()));
            }
            let len = expected_len(spec)?;
            total = total.saturating_add(len);
            if total > MAX_TOTAL_BYTES {
                return Err(TensorError::TooLarge(total));
            }
            lens.push(len);
        }
        Ok(Self {
            specs: manifest.tensors.clone(),
            lens,
            announced: manifest.content_sha256.clone(),
            current: 0,
            filled: 0,
            hasher: Sha256::new(),
            spec_hashed: false,
            bytes: 0,
        })
    }

    pub fn specs(&self) -> &[pb::TensorSpec] {
        &self.specs
    }

    /// Bytes of tensor data accepted so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Skips past finished (and empty) tensors, hashing their specs.
    fn advance(&mut self) {
        loop {
            if self.current >= self.specs.len() {
                return;
            }
            if !self.spec_hashed {
                hash_spec(&mut self.hasher, &self.specs[self.current]);
                self.spec_hashed = true;
            }
            if self.filled < self.lens[self.current] {
                return;
            }
            self.current += 1;
            self.filled = 0;
            self.spec_hashed = false;
        }
    }

    /// Accepts the next chunk if it is exactly where the stream must continue.
    pub fn accept(&mut self, chunk: &pb::TensorChunk) -> Result<ChunkPlace, TensorError> {
        self.advance();
        let index = chunk.tensor_index as usize;
        if index >= self.specs.len() {
            return Err(TensorError::UnknownTensorIndex {
                index: chunk.tensor_index,
                count: self.specs.len(),
            });
        }
        let name = &self.specs[index].name;
        if index != self.current || chunk.offset != self.filled {
            let expected = if index == self.current {
                self.filled
            } else {
                0
            };
            return Err(TensorError::OutOfOrderChunk {
                name: name.clone(),
                offset: chunk.offset,
                expected,
            });
        }
        let end = self.filled + chunk.data.len() as u64;
        if end > self.lens[index] {
            return Err(TensorError::ChunkOverrun {
                name: name.clone(),
                end,
                len: self.lens[index],
            });
        }
        self.hasher.update(&chunk.data);
        let place = ChunkPlace {
            tensor_index: index,
            offset: self.filled,
        };
        self.filled = end;
        self.bytes += chunk.data.len() as u64;
        Ok(place)
    }

    /// Ends the stream: every tensor complete and the digest as announced.
    pub fn finish(mut self) -> Result<String, TensorError> {
        self.advance();
        if self.current < self.specs.len() {
            return Err(TensorError::Incomplete {
                name: self.specs[self.current].name.clone(),
                got: self.filled,
                expected: self.lens[self.current],
            });
        }
        let actual = hex::encode(self.hasher.finalize());
        if actual != self.announced {
            return Err(TensorError::DigestMismatch {
                announced: self.announced,
                actual,
            });
        }
        Ok(actual)
    }
}

/// Rebuilds a [`TensorSet`] from a manifest and its chunks.
pub struct TensorAssembler {
    verifier: ChunkVerifier,
    buffers: Vec<Vec<u8>>,
}

impl TensorAssembler {
    pub fn new(manifest: &pb::TensorManifest) -> Result<Self, TensorError> {
        let verifier = ChunkVerifier::new(manifest)?;
        let buffers = verifier
            .lens
            .iter()
            .map(|l| Vec::with_capacity(*l as usize))
            .collect();
        Ok(Self { verifier, buffers })
    }

    pub fn push(&mut self, chunk: &pb::TensorChunk) -> Result<(), TensorError> {
        let place = self.verifier.accept(chunk)?;
        self.buffers[place.tensor_index].extend_from_slice(&chunk.data);
        Ok(())
    }

    pub fn bytes(&self) -> u64 {
        self.verifier.bytes()
    }

    pub fn finish(self) -> Result<TensorSet, TensorError> {
        let specs = self.verifier.specs.clone();
        self.verifier.finish()?;
        let tensors = specs
            .into_iter()
            .zip(self.buffers)
            .map(|(spec, data)| NamedTensor {
                dtype: pb::Dtype::try_from(spec.dtype).unwrap_or(pb::Dtype::Unspecified),
                name: spec.name,
                shape: spec.shape,
                data: data.into(),
            })
            .collect();
        Ok(TensorSet { tensors })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TensorSet {
        let big: Vec<f32> = (0..(MAX_CHUNK_BYTES / 4 + 10)).map(|i| i as f32).collect();
        TensorSet::new(vec![
            NamedTensor::from_f32("a.weight", vec![2, 2], &[1.0, 2.0, 3.0, 4.0]),
            NamedTensor::from_f32("empty", vec![0], &[]),
            NamedTensor::from_f32("big", vec![big.len() as u64], &big),
        ])
        .unwrap()
    }

    #[test]
    fn round_trips_through_chunks() {
        let set = sample();
        let mut asm = TensorAssembler::new(&set.manifest()).unwrap();
        let chunks: Vec<_> = set.chunks().collect();
        assert!(chunks.len() >= 3, "the big tensor must span two chunks");
        for c in &chunks {
            assert!(c.data.len() <= MAX_CHUNK_BYTES);
            asm.push(c).unwrap();
        }
        assert_eq!(asm.finish().unwrap(), set);
    }

    #[test]
    fn tampered_byte_fails_digest() {
        let set = sample();
        let mut asm = TensorAssembler::new(&set.manifest()).unwrap();
        for mut c in set.chunks() {
            if c.tensor_index == 0 {
                c.data[0] ^= 1;
            }
            asm.push(&c).unwrap();
        }
        assert!(matches!(
            asm.finish(),
            Err(TensorError::DigestMismatch { .. })
        ));
    }

    #[test]
    fn reordered_and_truncated_streams_are_rejected() {
        let set = sample();
        let chunks: Vec<_> = set.chunks().collect();
        let mut asm = TensorAssembler::new(&set.manifest()).unwrap();
        assert!(matches!(
            asm.push(&chunks[2]),
            Err(TensorError::OutOfOrderChunk { .. })
        ));
        let mut asm = TensorAssembler::new(&set.manifest()).unwrap();
        asm.push(&chunks[0]).unwrap();
        assert!(matches!(asm.finish(), Err(TensorError::Incomplete { .. })));
    }

    #[test]
    fn absurd_manifest_is_refused() {
        let manifest = pb::TensorManifest {
            tensors: vec![pb::TensorSpec {
                name: "x".into(),
                dtype: pb::Dtype::F32 as i32,
                shape: vec![u64::MAX, 4],
            }],
            content_sha256: String::new(),
        };
        assert!(matches!(
            ChunkVerifier::new(&manifest),
            Err(TensorError::TooLarge(_))
        ));
    }

    #[test]
    fn layout_mismatch_is_named() {
        let a = sample();
        let mut b = sample();
        b.tensors[0].shape = vec![4, 1];
        let err = a.check_same_layout(&b).unwrap_err();
        assert!(err.to_string().contains("a.weight"));
    }
}
