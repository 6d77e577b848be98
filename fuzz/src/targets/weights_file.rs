//! Weights files (safetensors) read back from disk: the published global
//! model and a participant's sealed local model.

use modelpub_node_agent::weights_file;
use modelpub_protocol::tensor::{NamedTensor, TensorSet};

use crate::Target;

pub struct WeightsFiles {
    seed: Vec<u8>,
}

impl WeightsFiles {
    pub fn new() -> anyhow::Result<Self> {
        let weights: Vec<f32> = (0..64).map(|i| i as f32 / 64.0).collect();
        let set = TensorSet::new(vec![
            NamedTensor::from_f32("fc.bias", vec![4], &[0.0, 0.5, -0.5, 1.0]),
            NamedTensor::from_f32("fc.weight", vec![4, 16], &weights),
        ])?;
        Ok(Self {
            seed: weights_file::encode(&set)?,
        })
    }
}

impl Target for WeightsFiles {
    fn name(&self) -> &'static str {
        "weights-file"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        vec![self.seed.clone()]
    }

    fn run(&mut self, input: &[u8]) -> Result<(), String> {
        weights_file::decode(input)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
