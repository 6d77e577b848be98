//! A tensor stream as it arrives: a manifest, then chunks, each protobuf,
//! reassembled and checked against the manifest's digest. The input is
//! length-prefixed pieces (big-endian u32 lengths): the manifest first,
//! then one chunk per piece.

use modelpub_protocol::pb;
use modelpub_protocol::tensor::{NamedTensor, TensorAssembler, TensorSet};
use prost::Message;

use crate::Target;

pub struct TensorChunks {
    model: TensorSet,
}

impl TensorChunks {
    pub fn new() -> anyhow::Result<Self> {
        let weights: Vec<f32> = (0..300).map(|i| i as f32 * 0.01).collect();
        let model = TensorSet::new(vec![
            NamedTensor::from_f32("layer.bias", vec![3], &[0.1, -0.2, 0.3]),
            NamedTensor::from_f32("layer.weight", vec![3, 100], &weights),
        ])?;
        Ok(Self { model })
    }
}

fn piece(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Splits `input` into its pieces; a short tail ends the list.
fn pieces(mut input: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some((len, rest)) = input.split_first_chunk::<4>() {
        let len = u32::from_be_bytes(*len) as usize;
        if len > rest.len() {
            out.push(rest);
            break;
        }
        let (head, tail) = rest.split_at(len);
        out.push(head);
        input = tail;
    }
    out
}

impl Target for TensorChunks {
    fn name(&self) -> &'static str {
        "tensor-chunks"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        let mut seed = Vec::new();
        piece(&mut seed, &self.model.manifest().encode_to_vec());
        for chunk in self.model.chunks() {
            piece(&mut seed, &chunk.encode_to_vec());
        }
        vec![seed]
    }

    fn run(&mut self, input: &[u8]) -> Result<(), String> {
        let pieces = pieces(input);
        let Some((manifest, chunks)) = pieces.split_first() else {
            return Err("no manifest".into());
        };
        let manifest = pb::TensorManifest::decode(*manifest).map_err(|e| e.to_string())?;
        let mut assembler = TensorAssembler::new(&manifest).map_err(|e| e.to_string())?;
        for chunk in chunks {
            let chunk = pb::TensorChunk::decode(*chunk).map_err(|e| e.to_string())?;
            assembler.push(&chunk).map_err(|e| e.to_string())?;
        }
        let set = assembler.finish().map_err(|e| e.to_string())?;
        for t in &set.tensors {
            t.to_f32().map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}
