//! Training steps replayed from a CUDA graph (`cuda_graphs = true`): forward, backward and the SGD update
//! of a full batch captured once and replayed with one launch, which frees small networks from the
//! host's kernel launches.
//!
//! A captured step reads its batch from static input tensors (each batch is copied into them, after the
//! loader's copy to the GPU) and writes its loss and correct count to static outputs; what the host
//! passed when it was captured (the learning rate, the momentum buffer's memory) is baked in, so the
//! step is captured again when either changes (a learning-rate drop, a momentum reset). Dropout stays
//! right under replay: the step's seed is set before each replay, and libtorch's CUDA generator hands the
//! graph that seed and a fresh offset, as it hands eager kernels. Batch-norm statistics are updated in
//! place by the captured kernels. The first steps run eagerly on the graph's side stream (cuDNN's
//! autotuning and the first gradients allocate, which a capture may not); so does the step after a
//! momentum reset (it allocates the buffer) and the last, partial batch of an epoch (said once).

use tch::{Kind, Tensor};

use crate::sgd::Sgd;

/// Eager steps before the first capture, as PyTorch's CUDA-graph recipe warms up on the side stream.
pub const WARM_UP_STEPS: usize = 3;

/// What captured training needs of a CUDA graph ([`wrn_torch_ext::cuda::CudaGraph`] on a GPU).
pub trait StepGraph {
    /// Runs `work` now, on the stream captures use.
    fn warm_up(&mut self, work: &mut dyn FnMut()) -> Result<(), String>;
    /// Records the GPU work of `work` (running none of it).
    fn capture(&mut self, work: &mut dyn FnMut()) -> Result<(), String>;
    /// Runs the captured work again. `captured` is that work, for a graph that cannot record it.
    fn replay(&mut self, captured: &mut dyn FnMut()) -> Result<(), String>;
    /// Forgets the capture (and frees its memory), so that another can be made.
    fn clear(&mut self) -> Result<(), String>;
}

/// A CUDA graph of the extension's CUDA part.
pub struct DeviceGraph {
    ext: &'static wrn_torch_ext::cuda::CudaExt,
    graph: wrn_torch_ext::cuda::CudaGraph,
}

impl DeviceGraph {
    pub fn new(ext: &'static wrn_torch_ext::cuda::CudaExt) -> Result<DeviceGraph, String> {
        Ok(DeviceGraph { ext, graph: ext.graph().map_err(|e| e.0)? })
    }
}

impl StepGraph for DeviceGraph {
    fn warm_up(&mut self, work: &mut dyn FnMut()) -> Result<(), String> {
        self.graph.on_side_stream(work).map_err(|e| e.0)
    }

    fn capture(&mut self, work: &mut dyn FnMut()) -> Result<(), String> {
        self.graph.capture(work).map_err(|e| e.0)
    }

    fn replay(&mut self, _captured: &mut dyn FnMut()) -> Result<(), String> {
        self.graph.replay().map_err(|e| e.0)
    }

    fn clear(&mut self) -> Result<(), String> {
        self.graph = self.ext.graph().map_err(|e| e.0)?;
        Ok(())
    }
}

/// The step's loss (f32, mean over the batch) and correct predictions (f64).
struct Outputs {
    loss: Tensor,
    correct: Tensor,
}

/// What a capture baked in: the learning rate's bits and the momentum buffer's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Baked {
    lr: u64,
    momentum: usize,
}

struct Captured {
    baked: Baked,
    x: Tensor,
    y: Tensor,
    out: Outputs,
}

/// What kind of step [`GraphedSteps::step`] took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// Run eagerly on the side stream (warm-up, or the first after a momentum reset).
    Eager,
    /// Captured (and replayed once to run it).
    Captured,
    Replayed,
    /// A batch of another size than the captured one, run eagerly.
    Partial,
}

/// Training steps of `batch` images through a [`StepGraph`].
pub struct GraphedSteps<G> {
    graph: G,
    batch: i64,
    warm_up_left: usize,
    captured: Option<Captured>,
    partial_said: bool,
}

/// Forward, backward and update on `(x, y)`, the loss and correct count written to `out`.
fn step_into(net: &wrn_nets::Network, sgd: &mut Sgd, lr: f64, (x, y): (&Tensor, &Tensor), out: &mut Outputs) {
    let (loss, correct) = crate::step::local_sgd_step((net, sgd), lr, (x, y));
    tch::no_grad(|| {
        out.loss.copy_(&loss);
        out.correct.copy_(&correct);
    });
}

impl<G: StepGraph> GraphedSteps<G> {
    /// Steps of `batch` images (per process) through `graph`, the first [`WARM_UP_STEPS`] eager.
    pub fn new(graph: G, batch: i64) -> GraphedSteps<G> {
        GraphedSteps { graph, batch, warm_up_left: WARM_UP_STEPS, captured: None, partial_said: false }
    }

    /// One training step at `lr` on `(x, y)` with libtorch's generator seeded `seed`: eager, captured or
    /// replayed as the state says. Returns the batch's mean loss, its correct count and what kind of step
    /// it was. The returned tensors are the graph's outputs: read them before the next step.
    pub fn step(
        &mut self,
        (net, sgd): (&wrn_nets::Network, &mut Sgd),
        seed: i64,
        lr: f64,
        (x, y): (&Tensor, &Tensor),
    ) -> Result<(Tensor, Tensor, StepKind), String> {
        let outputs = || Outputs {
            loss: Tensor::zeros([], (Kind::Float, x.device())),
            correct: Tensor::zeros([], (Kind::Double, x.device())),
        };
        tch::manual_seed(seed);
        if x.size()[0] != self.batch {
            if !self.partial_said {
                tracing::info!(
                    "CUDA graphs: a batch of {} images (the captured step takes {}) runs eagerly",
                    x.size()[0],
                    self.batch
                );
                self.partial_said = true;
            }
            let mut out = outputs();
            step_into(net, sgd, lr, (x, y), &mut out);
            return Ok((out.loss, out.correct, StepKind::Partial));
        }
        let momentum = sgd.momentum_address();
        if self.warm_up_left > 0 || (momentum.is_none() && sgd.has_momentum()) {
            self.warm_up_left = self.warm_up_left.saturating_sub(1);
            let mut out = outputs();
            self.graph.warm_up(&mut || step_into(net, sgd, lr, (x, y), &mut out))?;
            return Ok((out.loss, out.correct, StepKind::Eager));
        }
        let baked = Baked { lr: lr.to_bits(), momentum: momentum.unwrap_or(0) };
        if self.captured.as_ref().is_some_and(|c| c.baked != baked) {
            self.captured = None;
            self.graph.clear()?;
        }
        let kind = match &mut self.captured {
            Some(c) => {
                tch::no_grad(|| {
                    c.x.copy_(x);
                    c.y.copy_(y);
                });
                StepKind::Replayed
            }
            None => {
                // Static inputs, allocated outside the capture so they outlive the graph's pool.
                let mut c = Captured { baked, x: x.copy(), y: y.copy(), out: outputs() };
                let Captured { x: cx, y: cy, out, .. } = &mut c;
                self.graph.capture(&mut || step_into(net, sgd, lr, (cx, cy), out))?;
                self.captured = Some(c);
                StepKind::Captured
            }
        };
        let c = self.captured.as_mut().expect("a captured step");
        let Captured { baked, x: cx, y: cy, out } = c;
        let lr = f64::from_bits(baked.lr);
        self.graph.replay(&mut || step_into(net, sgd, lr, (cx, cy), out))?;
        Ok((out.loss.shallow_clone(), out.correct.shallow_clone(), kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Optimizer;
    use tch::{nn, Device};

    /// A graph that cannot record GPU work, so it runs at replay what was captured (and nothing at
    /// capture, as a real capture runs nothing): what the host hands the captured step must come from
    /// the capture, not from the step being replayed.
    #[derive(Default)]
    struct Rerun {
        calls: Vec<&'static str>,
    }

    impl StepGraph for Rerun {
        fn warm_up(&mut self, work: &mut dyn FnMut()) -> Result<(), String> {
            self.calls.push("warm_up");
            work();
            Ok(())
        }
        fn capture(&mut self, _work: &mut dyn FnMut()) -> Result<(), String> {
            self.calls.push("capture");
            Ok(())
        }
        fn replay(&mut self, captured: &mut dyn FnMut()) -> Result<(), String> {
            self.calls.push("replay");
            captured();
            Ok(())
        }
        fn clear(&mut self) -> Result<(), String> {
            self.calls.push("clear");
            Ok(())
        }
    }

    /// WRN-10-1 with the weights of `like` (if given), and its optimiser. Without dropout: tests run in
    /// parallel threads that share libtorch's generator, so only the batches may come from it.
    fn model(like: Option<&nn::VarStore>) -> (nn::VarStore, wrn_nets::Network, Sgd) {
        let mut vs = nn::VarStore::new(Device::Cpu);
        let net = "wrn-10-1".parse::<wrn_nets::Arch>().unwrap().with_classes(10).build(&vs.root());
        if let Some(like) = like {
            vs.copy(like).unwrap();
        }
        let recipe = Optimizer { lr: 0.1, momentum: 0.9, dampening: 0.0, weight_decay: 5e-4, nesterov: true };
        let sgd = Sgd::new(&vs, recipe);
        (vs, net, sgd)
    }

    #[test]
    fn graphed_steps_train_as_eager_steps_through_captures_lr_drops_resets_and_a_partial_batch() {
        let batches: Vec<(Tensor, Tensor)> = [8, 8, 8, 8, 8, 8, 8, 8, 5]
            .iter()
            .map(|&n| {
                (
                    Tensor::randn([n, 3, 32, 32], (Kind::Float, Device::Cpu)),
                    Tensor::randint(10, [n], (Kind::Int64, Device::Cpu)),
                )
            })
            .collect();
        // lr drops before step 6 with a momentum reset, as at a milestone of the recipe.
        let lr_at = |i: usize| if i < 6 { 0.1 } else { 0.02 };

        let (eager_vs, eager_net, mut eager_sgd) = model(None);
        let (vs, net, mut sgd) = model(Some(&eager_vs));
        let mut eager_losses = Vec::new();
        for (i, (x, y)) in batches.iter().enumerate() {
            if i == 6 {
                eager_sgd.reset_momentum();
            }
            let mut out = Outputs {
                loss: Tensor::zeros([], (Kind::Float, Device::Cpu)),
                correct: Tensor::zeros([], (Kind::Double, Device::Cpu)),
            };
            step_into(&eager_net, &mut eager_sgd, lr_at(i), (x, y), &mut out);
            eager_losses.push((out.loss.double_value(&[]), out.correct.double_value(&[])));
        }

        let mut steps = GraphedSteps::new(Rerun::default(), 8);
        let (mut losses, mut kinds) = (Vec::new(), Vec::new());
        for (i, (x, y)) in batches.iter().enumerate() {
            if i == 6 {
                sgd.reset_momentum();
            }
            let (loss, correct, kind) = steps.step((&net, &mut sgd), 100 + i as i64, lr_at(i), (x, y)).unwrap();
            losses.push((loss.double_value(&[]), correct.double_value(&[])));
            kinds.push(kind);
        }
        use StepKind::*;
        assert_eq!(kinds, [Eager, Eager, Eager, Captured, Replayed, Replayed, Eager, Captured, Partial]);
        assert_eq!(
            steps.graph.calls,
            [
                "warm_up", "warm_up", "warm_up", "capture", "replay", "replay", "replay", "warm_up", "clear",
                "capture", "replay"
            ]
        );
        assert_eq!(losses, eager_losses);
        for (name, t) in eager_vs.variables() {
            assert!(t.equal(&vs.variables()[&name]), "{name} differs");
        }
    }
}
