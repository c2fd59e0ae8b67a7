//! SGD with (Nesterov) momentum and weight decay on every parameter, written out on tensors so its state
//! can be checkpointed and reset (tch's optimiser exposes neither).
//!
//! Per parameter `p` with gradient `g` (the update of Torch7's `optim.sgd` and `torch.optim.SGD`):
//! `d = g + wd·p`; `buf = d` on the first step, else `buf = momentum·buf + (1 − dampening)·d`;
//! `d = d + momentum·buf` with Nesterov, else `d = buf`; `p = p − lr·d`. Weight decay applies to all
//! parameters, BN γ/β and biases included, as in the official code.

use std::collections::HashMap;

use tch::nn::VarStore;
use tch::Tensor;

use crate::config::Optimizer;

/// The optimiser and its momentum buffers, one per trainable variable.
#[derive(Debug)]
pub struct Sgd {
    config: Optimizer,
    /// Trainable variables by name, sorted.
    params: Vec<(String, Tensor)>,
    buffers: Vec<Option<Tensor>>,
}

/// Prefix of the momentum buffers in a checkpoint.
pub const MOMENTUM_PREFIX: &str = "momentum.";

impl Sgd {
    pub fn new(vs: &VarStore, config: Optimizer) -> Sgd {
        let mut params: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let buffers = params.iter().map(|_| None).collect();
        Sgd { config, params, buffers }
    }

    /// Clears every gradient.
    pub fn zero_grad(&mut self) {
        for (_, p) in &mut self.params {
            p.zero_grad();
        }
    }

    /// Applies one update with learning rate `lr` from the gradients in place.
    pub fn step(&mut self, lr: f64) {
        let Optimizer { momentum, dampening, weight_decay, nesterov, .. } = self.config;
        tch::no_grad(|| {
            for ((_, p), buffer) in self.params.iter_mut().zip(&mut self.buffers) {
                let grad = p.grad();
                if !grad.defined() {
                    continue;
                }
                let mut d = if weight_decay != 0.0 { &grad + &*p * weight_decay } else { grad };
                if momentum != 0.0 {
                    let buf = match buffer {
                        Some(buf) => {
                            let _ = buf.g_mul_scalar_(momentum).g_add_(&(&d * (1.0 - dampening)));
                            buf
                        }
                        None => buffer.insert(d.copy()),
                    };
                    d = if nesterov { d + &*buf * momentum } else { buf.shallow_clone() };
                }
                let _ = p.g_sub_(&(d * lr));
            }
        });
    }

    /// Forgets the momentum, as the official Lua code does at each learning-rate drop.
    pub fn reset_momentum(&mut self) {
        self.buffers.iter_mut().for_each(|b| *b = None);
    }

    /// The momentum buffers, named `momentum.<parameter>` (absent before the first step or after a reset).
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .zip(&self.buffers)
            .filter_map(|((name, _), b)| b.as_ref().map(|b| (format!("{MOMENTUM_PREFIX}{name}"), b.shallow_clone())))
            .collect()
    }

    /// Restores the momentum buffers from [`Sgd::state`]'s names; parameters without one start afresh.
    pub fn load_state(&mut self, named: &HashMap<String, Tensor>) {
        for ((name, p), buffer) in self.params.iter().zip(&mut self.buffers) {
            *buffer = named
                .get(&format!("{MOMENTUM_PREFIX}{name}"))
                .map(|t| t.to_device(p.device()).to_kind(p.kind()).copy());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device, Kind};

    fn one_param(value: f64) -> (VarStore, Tensor) {
        let vs = VarStore::new(Device::Cpu);
        let p = vs.root().var("w", &[1], nn::Init::Const(value));
        (vs, p)
    }

    fn grad_step(sgd: &mut Sgd, p: &Tensor, g: f64, lr: f64) {
        sgd.zero_grad();
        (p * g).sum(Kind::Float).backward();
        sgd.step(lr);
    }

    #[test]
    fn nesterov_with_weight_decay_by_hand() {
        let config = Optimizer { lr: 0.1, momentum: 0.9, dampening: 0.0, weight_decay: 0.5, nesterov: true };
        let (vs, p) = one_param(1.0);
        let mut sgd = Sgd::new(&vs, config);
        // Step 1: d = 2 + 0.5·1 = 2.5, buf = 2.5, d = 2.5 + 0.9·2.5 = 4.75, p = 1 − 0.475 = 0.525.
        grad_step(&mut sgd, &p, 2.0, 0.1);
        assert!((f64::try_from(&p).unwrap() - 0.525).abs() < 1e-6);
        // Step 2: d = 2 + 0.2625 = 2.2625, buf = 2.25 + 2.2625 = 4.5125, d = 2.2625 + 4.06125 = 6.32375.
        grad_step(&mut sgd, &p, 2.0, 0.1);
        assert!((f64::try_from(&p).unwrap() - (0.525 - 0.632375)).abs() < 1e-6);
        assert_eq!(sgd.state().len(), 1);
        sgd.reset_momentum();
        assert!(sgd.state().is_empty());
    }

    #[test]
    fn state_round_trips_through_names() {
        let config = Optimizer { lr: 0.1, momentum: 0.9, dampening: 0.0, weight_decay: 0.0, nesterov: false };
        let (vs, p) = one_param(1.0);
        let mut sgd = Sgd::new(&vs, config.clone());
        grad_step(&mut sgd, &p, 1.0, 0.1);
        let saved: HashMap<String, Tensor> = sgd.state().into_iter().collect();
        assert_eq!(saved.keys().collect::<Vec<_>>(), ["momentum.w"]);
        let (vs2, p2) = one_param(f64::try_from(&p).unwrap());
        let mut restored = Sgd::new(&vs2, config);
        restored.load_state(&saved);
        grad_step(&mut sgd, &p, 1.0, 0.1);
        grad_step(&mut restored, &p2, 1.0, 0.1);
        assert_eq!(f64::try_from(&p).unwrap(), f64::try_from(&p2).unwrap());
    }
}
