//! Server-side aggregation strategies behind one trait.
//!
//! Every strategy sees the same input: the global weights and the
//! example-weighted mean of the participants' updates (local minus global),
//! which the accumulator computes as updates stream in. What differs is how
//! the mean becomes the next global model, and what participants must do
//! locally (FedProx's proximal term).

use crate::config::StrategyConfig;

/// Flat f32 buffers, one per named tensor, in manifest order.
pub type Weights = Vec<Vec<f32>>;

/// A strategy's server state as named flat buffers (checkpoint.rs).
pub type StrategyState = Vec<(String, Vec<f32>)>;

/// A round's mean update: per tensor (plain rounds), or as the one flat
/// vector the secure sum decodes into, with the tensors' lengths, so that
/// unmasking never copies a model to split it.
#[derive(Debug)]
pub enum MeanUpdate {
    PerTensor(Weights),
    Flat {
        values: Vec<f32>,
        lengths: Vec<usize>,
    },
}

pub trait Strategy: Send {
    fn name(&self) -> &'static str;

    /// Weight of the proximal term participants add to their local loss.
    fn proximal_mu(&self) -> f64 {
        0.0
    }

    /// One server step, element by element, over values
    /// [offset, offset + global.len()) of tensor `tensor` (which has
    /// `tensor_len` values): `update` holds the mean update on entry and
    /// the new weights on return. Any split of a tensor into slices gives
    /// the same result, so the aggregator can step a model without a second
    /// copy of it.
    fn step(
        &mut self,
        tensor: usize,
        tensor_len: usize,
        offset: usize,
        global: &[f32],
        update: &mut [f32],
    );

    /// The server state a restarted aggregator needs to step on exactly as
    /// before (checkpoint.rs), as named flat buffers; none by default.
    fn state(&self) -> StrategyState {
        Vec::new()
    }

    /// Takes back what [`Strategy::state`] gave.
    fn restore(&mut self, state: StrategyState) -> Result<(), String> {
        match state.first() {
            None => Ok(()),
            Some((name, _)) => Err(format!(
                "strategy {} keeps no server state, but the checkpoint holds {name:?}",
                self.name()
            )),
        }
    }

    /// Moves `global` given the example-weighted mean update.
    fn apply(&mut self, global: &mut Weights, mean_update: &[&[f32]]) {
        for (i, (g, u)) in global.iter_mut().zip(mean_update).enumerate() {
            let mut next = u.to_vec();
            self.step(i, g.len(), 0, g, &mut next);
            *g = next;
        }
    }
}

pub fn build(config: &StrategyConfig) -> Box<dyn Strategy> {
    match *config {
        StrategyConfig::FedAvg => Box::new(FedAvg),
        StrategyConfig::FedProx { mu } => Box::new(FedProx { mu }),
        StrategyConfig::FedAdam {
            server_learning_rate,
            beta1,
            beta2,
            tau,
        } => Box::new(FedAdam::new(server_learning_rate, beta1, beta2, tau)),
    }
}

/// update ← global + update.
fn add_to_global(global: &[f32], update: &mut [f32]) {
    for (u, g) in update.iter_mut().zip(global) {
        *u += g;
    }
}

/// FedAvg (McMahan et al. 2017): the new model is the example-weighted
/// average of the local models, i.e. global plus the mean update.
pub struct FedAvg;

impl Strategy for FedAvg {
    fn name(&self) -> &'static str {
        "fedavg"
    }
    fn step(&mut self, _: usize, _: usize, _: usize, global: &[f32], update: &mut [f32]) {
        add_to_global(global, update);
    }
}

/// FedProx (Li et al. 2020): averaging as FedAvg; participants add
/// (mu / 2)·‖w − w_global‖² to their local loss.
pub struct FedProx {
    pub mu: f64,
}

impl Strategy for FedProx {
    fn name(&self) -> &'static str {
        "fedprox"
    }
    fn proximal_mu(&self) -> f64 {
        self.mu
    }
    fn step(&mut self, _: usize, _: usize, _: usize, global: &[f32], update: &mut [f32]) {
        add_to_global(global, update);
    }
}

/// FedAdam (Reddi et al. 2021, "Adaptive Federated Optimization"): the mean
/// update is a pseudo-gradient for a server-side Adam step. Its moment
/// buffers are model-sized, so aggregator memory stays O(model).
pub struct FedAdam {
    lr: f32,
    beta1: f32,
    beta2: f32,
    tau: f32,
    m: Weights,
    v: Weights,
}

impl FedAdam {
    pub fn new(lr: f64, beta1: f64, beta2: f64, tau: f64) -> Self {
        Self {
            lr: lr as f32,
            beta1: beta1 as f32,
            beta2: beta2 as f32,
            tau: tau as f32,
            m: Vec::new(),
            v: Vec::new(),
        }
    }
}

impl Strategy for FedAdam {
    fn name(&self) -> &'static str {
        "fedadam"
    }
    fn step(
        &mut self,
        tensor: usize,
        tensor_len: usize,
        offset: usize,
        global: &[f32],
        update: &mut [f32],
    ) {
        if self.m.len() <= tensor {
            self.m.resize_with(tensor + 1, Vec::new);
            self.v.resize_with(tensor + 1, Vec::new);
        }
        if self.m[tensor].len() != tensor_len {
            self.m[tensor] = vec![0.0; tensor_len];
            // Reddi et al. start v at tau^2 so the first steps are not huge.
            self.v[tensor] = vec![self.tau * self.tau; tensor_len];
        }
        let end = (offset + update.len()).min(tensor_len);
        let m = &mut self.m[tensor][offset..end];
        let v = &mut self.v[tensor][offset..end];
        for (((u, g), m), v) in update.iter_mut().zip(global).zip(m).zip(v) {
            *m = self.beta1 * *m + (1.0 - self.beta1) * *u;
            *v = self.beta2 * *v + (1.0 - self.beta2) * *u * *u;
            *u = g + self.lr * *m / (v.sqrt() + self.tau);
        }
    }

    fn state(&self) -> StrategyState {
        let moments = |prefix: &str, w: &Weights| {
            w.iter()
                .enumerate()
                .map(|(i, t)| (format!("{prefix}.{i}"), t.clone()))
                .collect::<Vec<_>>()
        };
        let mut state = moments("m", &self.m);
        state.extend(moments("v", &self.v));
        state
    }

    fn restore(&mut self, state: StrategyState) -> Result<(), String> {
        let (mut m, mut v) = (Vec::new(), Vec::new());
        for (name, values) in state {
            let (which, index) = name
                .split_once('.')
                .and_then(|(w, i)| Some((w.to_string(), i.parse::<usize>().ok()?)))
                .ok_or_else(|| format!("fedadam state {name:?} is not m.<i> or v.<i>"))?;
            let into = match which.as_str() {
                "m" => &mut m,
                "v" => &mut v,
                _ => return Err(format!("fedadam state {name:?} is not m.<i> or v.<i>")),
            };
            if into.len() <= index {
                into.resize_with(index + 1, Vec::new);
            }
            into[index] = values;
        }
        if m.len() != v.len() {
            return Err(format!(
                "fedadam state has {} first and {} second moments",
                m.len(),
                v.len()
            ));
        }
        self.m = m;
        self.v = v;
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    #[test]
    fn fedavg_adds_the_mean_update() {
        let mut g = vec![vec![1.0, 2.0], vec![3.0]];
        FedAvg.apply(&mut g, &[&[0.5, -1.0], &[0.25]]);
        assert_eq!(g, vec![vec![1.5, 1.0], vec![3.25]]);
    }

    #[test]
    fn fedprox_asks_clients_for_its_mu() {
        let s = build(&StrategyConfig::FedProx { mu: 0.1 });
        assert_eq!(s.proximal_mu(), 0.1);
        assert_eq!(build(&StrategyConfig::FedAvg).proximal_mu(), 0.0);
    }

    /// One strategy without server state and one with (Adam's moments).
    pub(in crate::aggregator) fn stepping_strategies() -> [StrategyConfig; 2] {
        [
            StrategyConfig::FedAvg,
            StrategyConfig::FedAdam {
                server_learning_rate: 0.1,
                beta1: 0.9,
                beta2: 0.99,
                tau: 1e-3,
            },
        ]
    }

    #[test]
    fn a_restored_strategy_steps_exactly_as_the_one_it_was_saved_from() {
        for config in stepping_strategies() {
            let mut a = build(&config);
            let mut g = vec![vec![1.0, 2.0, 3.0], vec![0.5]];
            a.apply(&mut g, &[&[0.1, -0.2, 0.3], &[0.05]]);
            let mut b = build(&config);
            b.restore(a.state()).unwrap();
            let (mut ga, mut gb) = (g.clone(), g);
            a.apply(&mut ga, &[&[0.2, 0.1, -0.1], &[0.01]]);
            b.apply(&mut gb, &[&[0.2, 0.1, -0.1], &[0.01]]);
            assert_eq!(ga, gb, "{}", a.name());
        }
        let mut avg = build(&StrategyConfig::FedAvg);
        assert!(avg.restore(vec![("m.0".into(), vec![1.0])]).is_err());
        let mut adam = build(&stepping_strategies()[1]);
        let e = adam.restore(vec![("x.0".into(), vec![1.0])]).unwrap_err();
        assert!(e.contains("x.0"), "{e}");
    }

    #[test]
    fn stepping_a_tensor_in_slices_equals_stepping_it_whole() {
        let global: Vec<f32> = (0..10).map(|i| i as f32 * 0.1).collect();
        let updates: [Vec<f32>; 2] = [
            (0..10).map(|i| (i as f32 - 4.0) * 0.3).collect(),
            (0..10).map(|i| (i as f32).sin()).collect(),
        ];
        for config in stepping_strategies() {
            let (mut whole, mut sliced) = (build(&config), build(&config));
            let (mut a, mut b) = (global.clone(), global.clone());
            for u in &updates {
                let mut next = u.clone();
                whole.step(0, 10, 0, &a, &mut next);
                a = next;
                let mut next = u.clone();
                for (k, (g, part)) in b.chunks(3).zip(next.chunks_mut(3)).enumerate() {
                    sliced.step(0, 10, k * 3, g, part);
                }
                b = next;
            }
            assert_eq!(a, b, "{}", whole.name());
        }
    }

    #[test]
    fn fedadam_steps_along_the_update_bounded_by_its_learning_rate() {
        let mut s = FedAdam::new(0.1, 0.9, 0.99, 1e-3);
        let mut g = vec![vec![0.0, 0.0, 0.0]];
        s.apply(&mut g, &[&[1.0, -1.0, 0.0]]);
        assert!(g[0][0] > 0.0 && g[0][1] < 0.0 && g[0][2] == 0.0);
        // An Adam step is bounded by the learning rate whatever the scale.
        let mut s = FedAdam::new(0.1, 0.9, 0.99, 1e-3);
        let mut g = vec![vec![0.0]];
        s.apply(&mut g, &[&[1e6]]);
        assert!(g[0][0] > 0.0 && g[0][0] <= 0.1 + 1e-4);
    }
}
