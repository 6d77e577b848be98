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

pub trait Strategy: Send {
    fn name(&self) -> &'static str;

    /// Weight of the proximal term participants add to their local loss.
    fn proximal_mu(&self) -> f64 {
        0.0
    }

    /// Moves `global` given the example-weighted mean update.
    fn apply(&mut self, global: &mut Weights, mean_update: &[Vec<f32>]);
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

fn add_in_place(global: &mut Weights, update: &[Vec<f32>]) {
    for (g, u) in global.iter_mut().zip(update) {
        for (g, u) in g.iter_mut().zip(u) {
            *g += u;
        }
    }
}

/// FedAvg (McMahan et al. 2017): the new model is the example-weighted
/// average of the local models, i.e. global plus the mean update.
pub struct FedAvg;

impl Strategy for FedAvg {
    fn name(&self) -> &'static str {
        "fedavg"
    }
    fn apply(&mut self, global: &mut Weights, mean_update: &[Vec<f32>]) {
        add_in_place(global, mean_update);
    }
}

/// FedProx (Li et al. 2020): averaging as FedAvg; participants add
/// `mu/2 * ||w - w_global||^2` to their loss, which keeps heterogeneous
/// clients from drifting apart.
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
    fn apply(&mut self, global: &mut Weights, mean_update: &[Vec<f32>]) {
        add_in_place(global, mean_update);
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
    fn apply(&mut self, global: &mut Weights, mean_update: &[Vec<f32>]) {
        if self.m.is_empty() {
            self.m = mean_update.iter().map(|u| vec![0.0; u.len()]).collect();
            // Reddi et al. start v at tau^2 so the first steps are not huge.
            let v0 = self.tau * self.tau;
            self.v = mean_update.iter().map(|u| vec![v0; u.len()]).collect();
        }
        for (((g, u), m), v) in global
            .iter_mut()
            .zip(mean_update)
            .zip(&mut self.m)
            .zip(&mut self.v)
        {
            for (((g, u), m), v) in g.iter_mut().zip(u).zip(m.iter_mut()).zip(v.iter_mut()) {
                *m = self.beta1 * *m + (1.0 - self.beta1) * u;
                *v = self.beta2 * *v + (1.0 - self.beta2) * u * u;
                *g += self.lr * *m / (v.sqrt() + self.tau);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fedavg_adds_the_mean_update() {
        let mut g = vec![vec![1.0, 2.0], vec![3.0]];
        FedAvg.apply(&mut g, &[vec![0.5, -1.0], vec![0.25]]);
        assert_eq!(g, vec![vec![1.5, 1.0], vec![3.25]]);
    }

    #[test]
    fn fedprox_asks_clients_for_its_mu() {
        let s = build(&StrategyConfig::FedProx { mu: 0.1 });
        assert_eq!(s.proximal_mu(), 0.1);
        assert_eq!(build(&StrategyConfig::FedAvg).proximal_mu(), 0.0);
    }

    #[test]
    fn fedadam_steps_along_the_update_bounded_by_its_learning_rate() {
        let mut s = FedAdam::new(0.1, 0.9, 0.99, 1e-3);
        let mut g = vec![vec![0.0, 0.0, 0.0]];
        s.apply(&mut g, &[vec![1.0, -1.0, 0.0]]);
        assert!(g[0][0] > 0.0 && g[0][1] < 0.0 && g[0][2] == 0.0);
        // An Adam step is bounded by the learning rate whatever the scale.
        let mut s = FedAdam::new(0.1, 0.9, 0.99, 1e-3);
        let mut g = vec![vec![0.0]];
        s.apply(&mut g, &[vec![1e6]]);
        assert!(g[0][0] > 0.0 && g[0][0] <= 0.1 + 1e-4);
    }
}
