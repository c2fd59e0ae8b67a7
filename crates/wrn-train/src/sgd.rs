//! SGD with (Nesterov) momentum and weight decay on every parameter, written out on tensors so its state
//! can be checkpointed and reset (tch's optimiser exposes neither).
//!
//! Per parameter `p` with gradient `g` (the update of Torch7's `optim.sgd` and `torch.optim.SGD`):
//! `d = g + wd·p`; `buf = d` on the first step, else `buf = momentum·buf + (1 − dampening)·d`;
//! `d = d + momentum·buf` with Nesterov, else `d = buf`; `p = p − lr·d`. Weight decay applies to all
//! parameters, BN γ/β and biases included, as in the official code.
//!
//! All trainable parameters live in one flat buffer, each a view of its span (in its own memory order:
//! a channels-last weight stays channels-last), and the momentum in another laid out alike. On a GPU
//! ([`Update::Flat`]) a step is a handful of operations on the whole buffers instead of eight per parameter
//! tensor: one gather of the gradients, then the update above on flat tensors, writing the parameters
//! through their views; that is what PyTorch's multi-tensor (`foreach`) SGD achieves with kernels tch does
//! not bind: a few launches a step instead of hundreds. On the CPU whole-buffer temporaries cost more than
//! dispatches (WRN-28-10's are 146 MB each, freshly mapped every step: 6.0 images/s at batch 8 against 7.8
//! parameter by parameter, [`Update::PerParameter`]), and the default is libtorch's fused kernel
//! ([`Update::Fused`], `at::_fused_sgd_` through `wrn-torch-ext`): one pass over each parameter's views,
//! no temporaries at all. A step where some parameter has no gradient goes parameter by parameter,
//! skipping it, as `torch.optim.SGD` does. Checkpoints hold the momentum per parameter
//! (`momentum.<name>`), as before.

use std::collections::HashMap;

use tch::nn::VarStore;
use tch::{Kind, Tensor};

use wrn_torch_ext::optim::{fused_sgd, SgdStep};

use crate::config::Optimizer;

/// How a step applies the update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update {
    /// On the whole flat buffers at once (the default on a GPU).
    Flat,
    /// Parameter by parameter, on their views.
    PerParameter,
    /// libtorch's fused kernel (`at::_fused_sgd_`, through `wrn-torch-ext`): each parameter updated in one
    /// pass, no temporaries (the default on the CPU).
    Fused,
}

/// The optimiser: the parameters as views of one flat buffer, and the momentum laid out alike.
#[derive(Debug)]
pub struct Sgd {
    config: Optimizer,
    update: Update,
    /// Trainable variables by name, sorted, each with its span of the flat buffers (offset, length).
    params: Vec<(String, Tensor, (i64, i64))>,
    /// Every parameter's values, back to back: the parameters are views of it.
    flat: Tensor,
    /// The momentum, laid out as `flat`; `None` before the first step and after a reset.
    momentum: Option<Tensor>,
}

/// Prefix of the momentum buffers in a checkpoint.
pub const MOMENTUM_PREFIX: &str = "momentum.";

/// A tensor's values in its memory order, flat: channels-last 4-D tensors as NHWC, others as they are.
fn memory_order(t: &Tensor) -> Tensor {
    if wrn_nets::layout::is_channels_last(t) {
        t.permute([0, 2, 3, 1]).reshape(-1)
    } else {
        t.reshape(-1)
    }
}

/// `span` of a flat buffer viewed as `like`: its shape, and channels-last strides where it has them.
fn view_like(span: &Tensor, like: &Tensor) -> Tensor {
    let size = like.size();
    if wrn_nets::layout::is_channels_last(like) {
        span.view([size[0], size[2], size[3], size[1]]).permute([0, 3, 1, 2])
    } else {
        span.view(size.as_slice())
    }
}

impl Sgd {
    /// Takes the trainable variables of `vs` into a flat buffer (they become views of it, values and
    /// strides unchanged). They must share one dtype and device, as the networks' f32 master weights do.
    pub fn new(vs: &VarStore, config: Optimizer) -> Sgd {
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let (kind, device) = vars.first().map_or((Kind::Float, vs.device()), |(_, t)| (t.kind(), t.device()));
        assert!(
            vars.iter().all(|(_, t)| t.kind() == kind && t.device() == device),
            "the optimiser's parameters share one dtype and device"
        );
        let flat = tch::no_grad(|| {
            let pieces: Vec<Tensor> = vars.iter().map(|(_, t)| memory_order(t)).collect();
            if pieces.is_empty() {
                Tensor::zeros([0], (kind, device))
            } else {
                Tensor::cat(&pieces, 0)
            }
        });
        let mut offset = 0;
        let params = vars
            .into_iter()
            .map(|(name, mut p)| {
                let n = p.numel() as i64;
                let view = view_like(&flat.narrow(0, offset, n), &p);
                tch::no_grad(|| p.set_data(&view));
                offset += n;
                (name, p, (offset - n, n))
            })
            .collect();
        let update = if device.is_cuda() { Update::Flat } else { Update::Fused };
        Sgd { config, update, params, flat, momentum: None }
    }

    /// The same optimiser updating as `update` says instead of its device's default.
    pub fn with_update(mut self, update: Update) -> Sgd {
        self.update = update;
        self
    }

    /// Clears every gradient.
    pub fn zero_grad(&mut self) {
        for (_, p, _) in &mut self.params {
            p.zero_grad();
        }
    }

    /// Applies one update with learning rate `lr` from the gradients in place.
    pub fn step(&mut self, lr: f64) {
        let grads: Vec<Tensor> = self.params.iter().map(|(_, p, _)| p.grad()).collect();
        if self.update == Update::PerParameter || grads.iter().any(|g| !g.defined()) {
            return self.step_each(lr, &grads);
        }
        if self.update == Update::Fused {
            return self.step_fused(lr, &grads);
        }
        if grads.is_empty() {
            return;
        }
        let Optimizer { momentum, dampening, weight_decay, nesterov, .. } = self.config;
        tch::no_grad(|| {
            let g = Tensor::cat(&grads.iter().map(memory_order).collect::<Vec<_>>(), 0);
            let mut d = if weight_decay != 0.0 { g + &self.flat * weight_decay } else { g };
            if momentum != 0.0 {
                let buf = match &mut self.momentum {
                    Some(buf) => {
                        let _ = buf.g_mul_scalar_(momentum).g_add_(&(&d * (1.0 - dampening)));
                        buf
                    }
                    None => self.momentum.insert(d.copy()),
                };
                d = if nesterov { d + &*buf * momentum } else { buf.shallow_clone() };
            }
            let _ = self.flat.g_sub_(&(d * lr));
        });
    }

    /// The update by libtorch's fused kernel, per parameter on its span of the flat buffers and its
    /// gradient in the parameter's memory order, all one-dimensional (a gradient need not have its
    /// parameter's strides; as spans, the three agree element by element whatever the layouts); the
    /// momentum after a reset is filled by the kernel's first step.
    fn step_fused(&mut self, lr: f64, grads: &[Tensor]) {
        let Optimizer { momentum, dampening, weight_decay, nesterov, .. } = self.config;
        let first_step = self.momentum.is_none();
        if momentum != 0.0 && first_step {
            self.momentum = Some(self.flat.zeros_like());
        }
        let spans = |buf: &Tensor| -> Vec<Tensor> {
            self.params.iter().map(|(_, _, (offset, n))| buf.narrow(0, *offset, *n)).collect()
        };
        let buffers = self.momentum.as_ref().map_or(Vec::new(), spans);
        let params = spans(&self.flat);
        let grads: Vec<Tensor> = grads.iter().map(memory_order).collect();
        let step = SgdStep { lr, momentum, dampening, weight_decay, nesterov, first_step };
        if let Err(e) = fused_sgd(&params, &grads, &buffers, step) {
            panic!("libtorch's fused SGD update failed: {e}");
        }
    }

    /// The update parameter by parameter, on their views, skipping those without a gradient (the same
    /// operations on each as the flat update on all).
    fn step_each(&mut self, lr: f64, grads: &[Tensor]) {
        let Optimizer { momentum, dampening, weight_decay, nesterov, .. } = self.config;
        tch::no_grad(|| {
            // The momentum of a parameter first seen is its step (`buf = d`): a zero buffer to fill, and
            // a parameter that has none yet starts from zero, which is the same with dampening 0.
            let fresh = self.momentum.is_none();
            if momentum != 0.0 && fresh {
                self.momentum = Some(self.flat.zeros_like());
            }
            for ((_, p, (offset, n)), grad) in self.params.iter_mut().zip(grads) {
                if !grad.defined() {
                    continue;
                }
                let mut d = if weight_decay != 0.0 { grad + &*p * weight_decay } else { grad.shallow_clone() };
                if let Some(buffers) = &self.momentum {
                    let mut buf = view_like(&buffers.narrow(0, *offset, *n), p);
                    if fresh {
                        buf.copy_(&d);
                    } else {
                        let _ = buf.g_mul_scalar_(momentum).g_add_(&(&d * (1.0 - dampening)));
                    }
                    d = if nesterov { d + &buf * momentum } else { buf };
                }
                let _ = p.g_sub_(&(d * lr));
            }
        });
    }

    /// The trainable parameters, in the optimiser's order (by name: the same on every rank).
    pub fn parameters(&self) -> Vec<Tensor> {
        self.params.iter().map(|(_, p, _)| p.shallow_clone()).collect()
    }

    /// Forgets the momentum, as the official Lua code does at each learning-rate drop.
    pub fn reset_momentum(&mut self) {
        self.momentum = None;
    }

    /// Whether the update keeps momentum buffers (a momentum other than 0).
    pub fn has_momentum(&self) -> bool {
        self.config.momentum != 0.0
    }

    /// Where the momentum buffer lives (none before the first step and after a reset): a step captured
    /// in a CUDA graph writes to that memory.
    pub fn momentum_address(&self) -> Option<usize> {
        self.momentum.as_ref().map(|m| m.data_ptr() as usize)
    }

    /// The momentum buffers, named `momentum.<parameter>` (none before the first step or after a reset).
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let Some(buf) = &self.momentum else { return Vec::new() };
        self.params
            .iter()
            .map(|(name, p, (offset, n))| {
                (format!("{MOMENTUM_PREFIX}{name}"), view_like(&buf.narrow(0, *offset, *n), p))
            })
            .collect()
    }

    /// Restores the momentum buffers from [`Sgd::state`]'s names. Without any, the momentum starts
    /// afresh; a parameter missing from a partial set starts from zero (the same with dampening 0).
    pub fn load_state(&mut self, named: &HashMap<String, Tensor>) {
        let saved: Vec<Option<&Tensor>> =
            self.params.iter().map(|(name, _, _)| named.get(&format!("{MOMENTUM_PREFIX}{name}"))).collect();
        if saved.iter().all(Option::is_none) {
            self.momentum = None;
            return;
        }
        let buf = self.flat.zeros_like();
        tch::no_grad(|| {
            for ((_, p, (offset, n)), t) in self.params.iter().zip(&saved) {
                if let Some(t) = t {
                    view_like(&buf.narrow(0, *offset, *n), p).copy_(&t.to_device(p.device()).to_kind(p.kind()));
                }
            }
        });
        self.momentum = Some(buf);
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

    /// A conv-like weight in channels-last strides, a bias, and a weight the loss may leave out.
    fn three_params() -> (VarStore, [Tensor; 3]) {
        let vs = VarStore::new(Device::Cpu);
        let w = (vs.root() / "a").var("weight", &[4, 3, 2, 2], nn::Init::Randn { mean: 0.0, stdev: 1.0 });
        let b = (vs.root() / "b").var("bias", &[4], nn::Init::Const(0.5));
        let u = (vs.root() / "c").var("unused", &[5], nn::Init::Const(1.0));
        wrn_nets::layout::to_channels_last(&vs);
        (vs, [w, b, u])
    }

    /// The update of one parameter by the formula, in f64.
    fn by_hand(p: f64, g: f64, buf: Option<f64>, c: &Optimizer, lr: f64) -> (f64, f64) {
        let d = g + c.weight_decay * p;
        let buf = buf.map_or(d, |b| c.momentum * b + (1.0 - c.dampening) * d);
        let d = if c.nesterov { d + c.momentum * buf } else { buf };
        (p - lr * d, buf)
    }

    #[test]
    fn both_updates_are_the_formula_and_keep_views_and_strides() {
        both_updates_are_the_formula(Update::Flat);
        both_updates_are_the_formula(Update::PerParameter);
        both_updates_are_the_formula(Update::Fused);
    }

    fn both_updates_are_the_formula(update: Update) {
        let config = Optimizer { lr: 0.1, momentum: 0.9, dampening: 0.0, weight_decay: 5e-4, nesterov: true };
        let (vs, [w, b, u]) = three_params();
        let before: Vec<Vec<f64>> =
            [&w, &b, &u].iter().map(|t| Vec::<f64>::try_from(t.flatten(0, -1)).unwrap()).collect();
        let sgd = Sgd::new(&vs, config.clone());
        assert_eq!(sgd.update, Update::Fused, "the CPU's default");
        let mut sgd = sgd.with_update(update);
        // The values and strides are the variables' own; they are views of one buffer now.
        assert!(
            wrn_nets::layout::is_channels_last(&w) && wrn_nets::layout::is_channels_last(&vs.variables()["a.weight"])
        );
        assert_eq!(Vec::<f64>::try_from(w.flatten(0, -1)).unwrap(), before[0]);
        assert_eq!(w.data_ptr() as usize + 48 * 4, b.data_ptr() as usize, "b follows a in one buffer");
        let grads = |step: f64| {
            // The loss weighs each element differently, so a misplaced span shows.
            let weigh = |t: &Tensor| {
                (t * Tensor::arange(t.numel() as i64, (Kind::Float, Device::Cpu)).view(t.size().as_slice()).sin())
                    .sum(Kind::Float)
            };
            ((weigh(&w) + weigh(&b) + weigh(&u)) * step).backward();
        };
        let (mut want, mut bufs): (Vec<Vec<f64>>, Vec<Option<Vec<f64>>>) = (before.clone(), vec![None; 3]);
        for step in 1..=3 {
            sgd.zero_grad();
            grads(step as f64);
            let g: Vec<Vec<f64>> =
                [&w, &b, &u].iter().map(|t| Vec::<f64>::try_from(t.grad().flatten(0, -1)).unwrap()).collect();
            sgd.step(0.1);
            for k in 0..3 {
                let (mut p, mut nb) = (Vec::new(), Vec::new());
                for (i, (&x, &gi)) in want[k].iter().zip(&g[k]).enumerate() {
                    let (x, buf) = by_hand(x, gi, bufs[k].as_ref().map(|b| b[i]), &config, 0.1);
                    p.push(x);
                    nb.push(buf);
                }
                (want[k], bufs[k]) = (p, Some(nb));
            }
            for (k, t) in [&w, &b, &u].iter().enumerate() {
                let got = Vec::<f64>::try_from(t.flatten(0, -1)).unwrap();
                assert!(
                    got.iter().zip(&want[k]).all(|(a, b)| (a - b).abs() < 1e-5),
                    "{update:?} step {step}, param {k}"
                );
            }
        }
        assert!(wrn_nets::layout::is_channels_last(&w), "the update keeps the layout");
        // The momentum, per parameter and in the parameter's shape and strides, round-trips.
        let state: HashMap<String, Tensor> = sgd.state().into_iter().collect();
        assert_eq!(state.len(), 3);
        assert!(wrn_nets::layout::is_channels_last(&state["momentum.a.weight"]));
        let m: Vec<f64> = Vec::try_from(state["momentum.b.bias"].shallow_clone()).unwrap();
        assert!(m.iter().zip(bufs[1].as_ref().unwrap()).all(|(a, b)| (a - b).abs() < 1e-5));
    }

    #[test]
    fn the_fused_kernel_follows_the_update_op_by_op_through_resets_and_without_momentum() {
        let configs = [
            Optimizer { lr: 0.1, momentum: 0.9, dampening: 0.0, weight_decay: 5e-4, nesterov: true },
            Optimizer { lr: 0.1, momentum: 0.9, dampening: 0.1, weight_decay: 1e-4, nesterov: false },
            Optimizer { lr: 0.1, momentum: 0.0, dampening: 0.0, weight_decay: 5e-4, nesterov: false },
        ];
        for config in configs {
            let run = |update: Update| {
                // The same random weights for both.
                tch::manual_seed(7);
                let (vs, [w, b, u]) = three_params();
                let mut sgd = Sgd::new(&vs, config.clone()).with_update(update);
                for step in 1..=4 {
                    if step == 3 {
                        sgd.reset_momentum();
                    }
                    sgd.zero_grad();
                    ((&w * &w).sum(Kind::Float) * step as f64 + (&b * 3.0).sum(Kind::Float) + u.sum(Kind::Float))
                        .backward();
                    sgd.step(0.05 * step as f64);
                }
                let values = |t: &Tensor| Vec::<f32>::try_from(t.flatten(0, -1)).unwrap();
                let momentum: Vec<Vec<f32>> = sgd.state().iter().map(|(_, t)| values(t)).collect();
                ([&w, &b, &u].map(values), momentum)
            };
            let (fused, by_op) = (run(Update::Fused), run(Update::PerParameter));
            for (a, b) in fused.0.iter().chain(&fused.1).zip(by_op.0.iter().chain(&by_op.1)) {
                assert_eq!(a.len(), b.len());
                let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs() / y.abs().max(1.0)).fold(0.0, f32::max);
                assert!(worst <= 1e-6, "{config:?}: {worst} apart");
            }
            assert_eq!(fused.1.is_empty(), config.momentum == 0.0);
        }
    }

    #[test]
    fn a_parameter_without_a_gradient_is_skipped_as_torch_does() {
        let config = Optimizer { lr: 0.1, momentum: 0.9, dampening: 0.0, weight_decay: 0.5, nesterov: true };
        let (vs, [w, b, u]) = three_params();
        let mut sgd = Sgd::new(&vs, config).with_update(Update::Flat);
        let u_before = Vec::<f64>::try_from(u.shallow_clone()).unwrap();
        let b_before = f64::try_from(b.get(0)).unwrap();
        for _ in 0..2 {
            sgd.zero_grad();
            (w.sum(Kind::Float) + b.sum(Kind::Float)).backward();
            sgd.step(0.1);
        }
        // `u` took no part: untouched (no weight decay either); `b` moved as the formula says.
        assert_eq!(Vec::<f64>::try_from(u.shallow_clone()).unwrap(), u_before);
        let config = &sgd.config;
        let (p1, buf) = by_hand(b_before, 1.0, None, config, 0.1);
        let (p2, _) = by_hand(p1, 1.0, Some(buf), config, 0.1);
        assert!((f64::try_from(b.get(0)).unwrap() - p2).abs() < 1e-6);
    }

    #[test]
    fn parameters_come_in_name_order_as_the_network_s_own_tensors() {
        let config = Optimizer { lr: 0.1, momentum: 0.9, dampening: 0.0, weight_decay: 0.0, nesterov: false };
        let (vs, [w, b, u]) = three_params();
        let sgd = Sgd::new(&vs, config);
        let params = sgd.parameters();
        let sizes: Vec<Vec<i64>> = params.iter().map(Tensor::size).collect();
        assert_eq!(sizes, [w.size(), b.size(), u.size()]);
        // The same tensors (views of the flat buffer), not copies: a gradient on one is the network's.
        (&params[1] * 3.0).sum(Kind::Float).backward();
        assert_eq!(Vec::<f32>::try_from(b.grad()).unwrap(), [3.0; 4]);
        assert!(params.iter().all(|p| p.requires_grad()));
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
