//! Parameter creation with initial values drawn from a seeded ChaCha
//! stream rather than libtorch's global generator, so a model's initial
//! weights depend only on its config and seed, even when several models
//! are built at once on different threads.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use tch::{Tensor, nn};

pub(crate) enum Init {
    /// U(-bound, bound): PyTorch's default for `nn.Linear`
    /// (bound = 1/sqrt(fan_in)).
    Uniform(f64),
    Normal(f64),
    Const(f32),
}

pub(crate) fn param(
    path: &nn::Path<'_>,
    name: &str,
    shape: &[i64],
    init: Init,
    rng: &mut ChaCha8Rng,
) -> Tensor {
    let n: i64 = shape.iter().product();
    let values: Vec<f32> = match init {
        Init::Uniform(bound) => (0..n)
            .map(|_| rng.random_range(-bound..=bound) as f32)
            .collect(),
        Init::Normal(std) => match Normal::new(0.0, std) {
            Ok(normal) => (0..n).map(|_| normal.sample(rng) as f32).collect(),
            Err(_) => vec![0.0; n as usize],
        },
        Init::Const(c) => vec![c; n as usize],
    };
    path.var_copy(name, &Tensor::from_slice(&values).view(shape))
}
