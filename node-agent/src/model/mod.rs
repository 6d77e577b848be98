//! The two model families, in libtorch (tch). The protocol never sees a
//! model class: only [`ModelConfig`] (as JSON) and the weights as a
//! [`TensorSet`] of named f32 tensors sorted by name.

mod char_transformer;
mod config;
mod init;
mod mlp;

use modelpub_protocol::tensor::{NamedTensor, TensorError, TensorSet};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor, nn};

use char_transformer::CharTransformer;
pub use config::{BYTE_VOCAB, DataShape, MAX_PARAMETERS, ModelConfig, ModelConfigError};
use mlp::Mlp;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Config(#[from] ModelConfigError),
    #[error("weights lack tensor `{0}` that the model has")]
    MissingTensor(String),
    #[error("weights have tensor `{0}` that the model does not have")]
    UnexpectedTensor(String),
    #[error("tensor `{name}` has shape {got:?}, the model expects {expected:?}")]
    ShapeMismatch {
        name: String,
        expected: Vec<u64>,
        got: Vec<u64>,
    },
    #[error(transparent)]
    Tensor(#[from] TensorError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

#[derive(Debug)]
enum Net {
    Mlp(Mlp),
    Char(CharTransformer),
}

/// A model's variables and architecture.
#[derive(Debug)]
pub struct Model {
    vs: nn::VarStore,
    config: ModelConfig,
    net: Net,
}

impl Model {
    /// Builds the model on `device` with initial weights determined by
    /// `config` and `seed` alone.
    pub fn new(config: &ModelConfig, device: Device, seed: u64) -> Result<Self, ModelError> {
        config.validate()?;
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let net = match config {
            ModelConfig::Mlp {
                inputs,
                hidden,
                classes,
            } => Net::Mlp(Mlp::new(&root, *inputs, hidden, *classes, &mut rng)),
            ModelConfig::CharTransformer {
                vocab,
                context,
                embed,
                heads,
                layers,
            } => Net::Char(CharTransformer::new(
                &root, *vocab, *context, *embed, *heads, *layers, &mut rng,
            )),
        };
        Ok(Self {
            vs,
            config: config.clone(),
            net,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    pub(crate) fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// The context length of a char transformer, `None` for other families.
    pub(crate) fn context(&self) -> Option<i64> {
        match &self.net {
            Net::Char(c) => Some(c.context()),
            Net::Mlp(_) => None,
        }
    }

    /// Logits: `[batch, classes]` for the MLP (input `[batch, inputs]`
    /// f32, scaled), `[batch, t, vocab]` for the transformer (input
    /// `[batch, t]` int64).
    pub(crate) fn forward(&self, xs: &Tensor) -> Tensor {
        match &self.net {
            Net::Mlp(m) => m.forward(xs),
            Net::Char(c) => c.forward(xs),
        }
    }

    /// The trainable variables sorted by name, as f32 CPU copies.
    pub fn weights(&self) -> TensorSet {
        let tensors = self
            .sorted_variables()
            .into_iter()
            .map(|(name, t)| {
                let t = t
                    .detach()
                    .to_device(Device::Cpu)
                    .to_kind(Kind::Float)
                    .contiguous();
                let shape: Vec<u64> = t.size().iter().map(|d| *d as u64).collect();
                let n = t.numel();
                let mut values = vec![0f32; n];
                t.copy_data(&mut values, n);
                NamedTensor::from_f32(name, shape, &values)
            })
            .collect();
        // Names are unique (variable names) and sizes follow from shapes, so
        // the checks of `TensorSet::new` hold by construction.
        TensorSet { tensors }
    }

    /// Replaces every variable with the tensor of the same name in `w`.
    /// Names and shapes must match exactly; nothing is changed on error.
    pub fn load_weights(&mut self, w: &TensorSet) -> Result<(), ModelError> {
        let vars = self.sorted_variables();
        let mut sources = Vec::with_capacity(vars.len());
        for (name, var) in &vars {
            let src = w
                .get(name)
                .ok_or_else(|| ModelError::MissingTensor(name.clone()))?;
            let expected: Vec<u64> = var.size().iter().map(|d| *d as u64).collect();
            if src.shape != expected {
                return Err(ModelError::ShapeMismatch {
                    name: name.clone(),
                    expected,
                    got: src.shape.clone(),
                });
            }
            if src.dtype != modelpub_protocol::pb::Dtype::F32 {
                // Named by `to_f32`'s error.
                src.to_f32()?;
            }
            sources.push(src);
        }
        if let Some(extra) = w
            .tensors
            .iter()
            .find(|t| !vars.iter().any(|(n, _)| *n == t.name))
        {
            return Err(ModelError::UnexpectedTensor(extra.name.clone()));
        }
        // A slice of a tensor at a time, straight from its little-endian
        // bytes where the host is little-endian: loading costs a few MiB
        // beside the model, not a decoded copy of it.
        const SLICE_VALUES: usize = 1 << 20;
        tch::no_grad(|| -> Result<(), ModelError> {
            for ((_, var), src) in vars.iter().zip(sources) {
                let flat = var.shallow_clone().f_view([-1])?;
                for (i, bytes) in src.data.chunks(SLICE_VALUES * 4).enumerate() {
                    let n = (bytes.len() / 4) as i64;
                    let part = if cfg!(target_endian = "little") {
                        Tensor::f_from_data_size(bytes, &[n], Kind::Float)?
                    } else {
                        let values: Vec<f32> = (bytes.as_chunks::<4>().0.iter())
                            .map(|b| f32::from_le_bytes(*b))
                            .collect();
                        Tensor::from_slice(&values)
                    };
                    flat.f_narrow(0, (i * SLICE_VALUES) as i64, n)?
                        .f_copy_(&part)?;
                }
            }
            Ok(())
        })
    }

    fn sorted_variables(&self) -> Vec<(String, Tensor)> {
        let mut vars: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }
}

/// `Cuda(0)` when preferred and available, else the CPU.
pub fn pick_device(prefer_cuda: bool) -> Device {
    if prefer_cuda && tch::Cuda::is_available() {
        Device::Cuda(0)
    } else {
        Device::Cpu
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mlp_config() -> ModelConfig {
        ModelConfig::Mlp {
            inputs: 5,
            hidden: vec![7, 6],
            classes: 3,
        }
    }

    fn tiny_char() -> ModelConfig {
        ModelConfig::CharTransformer {
            vocab: 256,
            context: 8,
            embed: 16,
            heads: 2,
            layers: 2,
        }
    }

    #[test]
    fn init_is_deterministic_per_seed() {
        for c in [mlp_config(), tiny_char()] {
            let a = Model::new(&c, Device::Cpu, 1).unwrap().weights();
            let b = Model::new(&c, Device::Cpu, 1).unwrap().weights();
            let d = Model::new(&c, Device::Cpu, 2).unwrap().weights();
            assert_eq!(a, b);
            assert_ne!(a, d);
            let count: u64 = a.tensors.iter().map(|t| t.numel()).sum();
            assert_eq!(count as i64, c.parameter_count().unwrap());
        }
    }

    #[test]
    fn weights_round_trip_exactly_and_sorted() {
        let src = Model::new(&tiny_char(), Device::Cpu, 3).unwrap().weights();
        let names: Vec<&str> = src.tensors.iter().map(|t| t.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert!(names.contains(&"blocks.1.attn.qkv.weight"), "{names:?}");
        let mut m = Model::new(&tiny_char(), Device::Cpu, 4).unwrap();
        m.load_weights(&src).unwrap();
        assert_eq!(m.weights(), src);
    }

    #[test]
    fn load_weights_names_the_bad_tensor() {
        let mut m = Model::new(&mlp_config(), Device::Cpu, 0).unwrap();
        let before = m.weights();
        let mut w = before.clone();
        let t = w.tensors.iter_mut().find(|t| t.shape.len() == 2).unwrap();
        let name = t.name.clone();
        t.shape = vec![t.numel()];
        let e = m.load_weights(&w).unwrap_err().to_string();
        assert!(
            e.contains(&format!("`{name}`")) && e.contains("shape"),
            "{e}"
        );

        let mut w = before.clone();
        w.tensors.pop();
        let e = m.load_weights(&w).unwrap_err().to_string();
        assert!(e.contains("out.weight"), "{e}");

        let mut w = before.clone();
        w.tensors
            .push(NamedTensor::from_f32("extra", vec![1], &[0.0]));
        let e = m.load_weights(&w).unwrap_err().to_string();
        assert!(e.contains("`extra`"), "{e}");
        assert_eq!(m.weights(), before);
    }

    #[test]
    fn forward_shapes() {
        let m = Model::new(&tiny_char(), Device::Cpu, 0).unwrap();
        let x = Tensor::zeros([3, 5], (Kind::Int64, Device::Cpu));
        assert_eq!(m.forward(&x).size(), vec![3, 5, 256]);
        let m = Model::new(&mlp_config(), Device::Cpu, 0).unwrap();
        let x = Tensor::zeros([4, 5], (Kind::Float, Device::Cpu));
        assert_eq!(m.forward(&x).size(), vec![4, 3]);
        assert_eq!(pick_device(false), Device::Cpu);
    }
}
