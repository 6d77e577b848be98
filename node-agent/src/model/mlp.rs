//! The tabular classifier: Linear+ReLU hidden layers and a linear output.

use rand_chacha::ChaCha8Rng;
use tch::{Tensor, nn};

use super::init::{Init, param};

#[derive(Debug)]
pub(crate) struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    /// `[out, in]` weight and `[out]` bias, both U(-1/sqrt(in), 1/sqrt(in))
    /// as PyTorch's `nn.Linear` initialises them.
    pub(crate) fn new(path: nn::Path<'_>, inputs: i64, outputs: i64, rng: &mut ChaCha8Rng) -> Self {
        let bound = 1.0 / (inputs as f64).sqrt();
        Self {
            weight: param(
                &path,
                "weight",
                &[outputs, inputs],
                Init::Uniform(bound),
                rng,
            ),
            bias: param(&path, "bias", &[outputs], Init::Uniform(bound), rng),
        }
    }

    /// GPT-2 style: N(0, std) weight, zero bias.
    pub(crate) fn normal(
        path: nn::Path<'_>,
        inputs: i64,
        outputs: i64,
        std: f64,
        rng: &mut ChaCha8Rng,
    ) -> Self {
        Self {
            weight: param(&path, "weight", &[outputs, inputs], Init::Normal(std), rng),
            bias: param(&path, "bias", &[outputs], Init::Const(0.0), rng),
        }
    }

    pub(crate) fn forward(&self, xs: &Tensor) -> Tensor {
        xs.linear(&self.weight, Some(&self.bias))
    }
}

#[derive(Debug)]
pub(crate) struct Mlp {
    hidden: Vec<Linear>,
    out: Linear,
}

impl Mlp {
    /// Variables `hidden.<i>.{weight,bias}` and `out.{weight,bias}`.
    pub(crate) fn new(
        root: &nn::Path<'_>,
        inputs: i64,
        hidden: &[i64],
        classes: i64,
        rng: &mut ChaCha8Rng,
    ) -> Self {
        let mut layers = Vec::with_capacity(hidden.len());
        let mut prev = inputs;
        for (i, &h) in hidden.iter().enumerate() {
            layers.push(Linear::new(root / "hidden" / i, prev, h, rng));
            prev = h;
        }
        Self {
            hidden: layers,
            out: Linear::new(root / "out", prev, classes, rng),
        }
    }

    /// `[batch, inputs]` (already scaled) to `[batch, classes]` logits.
    pub(crate) fn forward(&self, xs: &Tensor) -> Tensor {
        let mut h = xs.shallow_clone();
        for l in &self.hidden {
            h = l.forward(&h).relu();
        }
        self.out.forward(&h)
    }
}
