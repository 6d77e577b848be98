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
    let var = path.zeros(name, shape);
    let normal = match init {
        Init::Normal(std) => Normal::new(0.0, std).ok(),
        _ => None,
    };
    // Drawn and copied a slice at a time (same draws in the same order as
    // one pass), so a large layer costs a few MiB beside itself, not two
    // more copies of it.
    tch::no_grad(|| {
        let flat = var.view([-1]);
        let mut start = 0;
        while start < n {
            let len = (n - start).min(INIT_SLICE);
            let values: Vec<f32> = match (&init, &normal) {
                (Init::Uniform(bound), _) => (0..len)
                    .map(|_| rng.random_range(-*bound..=*bound) as f32)
                    .collect(),
                (Init::Normal(_), Some(normal)) => {
                    (0..len).map(|_| normal.sample(rng) as f32).collect()
                }
                (Init::Normal(_), None) => vec![0.0; len as usize],
                (Init::Const(c), _) => vec![*c; len as usize],
            };
            flat.narrow(0, start, len)
                .copy_(&Tensor::from_slice(&values));
            start += len;
        }
    });
    var
}

/// Values drawn and copied into a parameter at a time.
const INIT_SLICE: i64 = 1 << 20;
