//! Numerical parity of a device with the CPU, on the code paths training uses: the same weights and
//! batch give the same logits and gradients on the CPU and the device (fp32 within TF32's tolerance),
//! bf16 compute stays within a few percent of fp32, channels-last equals NCHW, `u8` pixels normalised on
//! the device equal the CPU's bit for bit, a checkpoint written from the device reloads on the CPU
//! unchanged, DDP's Reducer over a world of one rank on this machine (NCCL for CUDA tensors, Gloo on
//! the CPU) hands back the gradients it was given, and on a GPU a captured CUDA graph's replayed training
//! steps equal the same steps run eagerly. `wrn doctor --parity` runs it; on the CPU it compares the CPU with itself, which still checks
//! bf16, channels-last and the checkpoint round trip.

use serde::Serialize;
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};
use wrn_augment::ValueStep;
use wrn_nets::Arch;

use crate::run::{Progress, RunDir};

/// One comparison: `value` (a relative or absolute difference, as `what` says) against `tolerance`.
#[derive(Debug, Clone, Serialize)]
pub struct ParityCheck {
    pub name: String,
    pub what: String,
    pub value: f64,
    pub tolerance: f64,
    pub pass: bool,
}

/// Errors of the parity checks (libtorch failing, or the checkpoint files).
#[derive(Debug, thiserror::Error)]
pub enum ParityError {
    #[error("parity check on {device}: libtorch: {source}")]
    Torch { device: String, source: tch::TchError },
    #[error("parity check on {device}: {source}")]
    Run { device: String, source: crate::run::RunError },
    #[error("parity check on {device}: {source}")]
    Io { device: String, source: std::io::Error },
    #[error("parity check on {device}: {source}")]
    Dist { device: String, source: crate::world::WorldError },
    #[error("parity check on {device}: the CUDA extension: {detail}")]
    Extension { device: String, detail: String },
}

/// Relative tolerance of fp32 on a GPU against the CPU: cuDNN convolutions may use TF32 (10-bit
/// mantissa), which libtorch allows by default.
pub const TF32_TOLERANCE: f64 = 2e-2;
/// Relative tolerance of bf16 compute (8-bit mantissa) against fp32.
pub const BF16_TOLERANCE: f64 = 5e-2;

fn check(name: &str, what: &str, value: f64, tolerance: f64) -> ParityCheck {
    ParityCheck {
        name: name.into(),
        what: what.into(),
        value,
        tolerance,
        pass: value.is_finite() && value <= tolerance,
    }
}

/// ‖a − b‖ / ‖a‖ over all elements, in f64 on the CPU.
fn relative(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.to_device(Device::Cpu).to_kind(Kind::Double), b.to_device(Device::Cpu).to_kind(Kind::Double));
    let norm = a.norm().double_value(&[]);
    (&a - &b).norm().double_value(&[]) / norm.max(f64::MIN_POSITIVE)
}

/// max |a − b| over all elements.
fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.to_device(Device::Cpu).to_kind(Kind::Double), b.to_device(Device::Cpu).to_kind(Kind::Double));
    (&a - &b).abs().max().double_value(&[])
}

/// A network built on `device` holding the weights of `reference`.
fn copy_of(
    arch: &Arch,
    reference: &nn::VarStore,
    device: Device,
) -> Result<(nn::VarStore, wrn_nets::Network), tch::TchError> {
    let mut vs = nn::VarStore::new(device);
    let net = arch.build(&vs.root());
    vs.copy(reference)?;
    Ok((vs, net))
}

/// The trainable variables of `vs`, in the order of their names.
fn parameters(vs: &nn::VarStore) -> Vec<Tensor> {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named.into_iter().map(|(_, t)| t).collect()
}

/// Copies on the CPU of `tensors` (on the CPU, `to_device` returns the tensor itself, which a later step
/// overwrites).
fn on_cpu(tensors: impl Iterator<Item = Tensor>) -> Vec<Tensor> {
    tensors.map(|t| t.to_device(Device::Cpu).copy()).collect()
}

/// Training-mode logits and the gradients of a cross-entropy step.
fn step(vs: &nn::VarStore, net: &dyn ModuleT, x: &Tensor, y: &Tensor) -> (Tensor, Vec<Tensor>) {
    vs.trainable_variables().iter_mut().for_each(Tensor::zero_grad);
    let logits = net.forward_t(x, true).to_kind(Kind::Float);
    logits.cross_entropy_for_logits(y).backward();
    (logits.detach().to_device(Device::Cpu).copy(), on_cpu(parameters(vs).iter().map(Tensor::grad)))
}

/// ‖g − h‖ / ‖g‖ over every gradient at once.
fn relative_grads(g: &[Tensor], h: &[Tensor]) -> f64 {
    let flat = |v: &[Tensor]| Tensor::cat(&v.iter().map(|t| t.flatten(0, -1)).collect::<Vec<_>>(), 0);
    relative(&flat(g), &flat(h))
}

/// Relative tolerance of the Reducer's gradients against a plain backward pass: exact on the CPU; on a GPU
/// cuDNN's backward kernels may sum in another order from one pass to the next.
pub const REDUCER_TOLERANCE: f64 = 1e-5;

/// The gradients of [`step`] taken through DDP's Reducer over a world of one rank on this machine (the
/// store on a free port of 127.0.0.1; NCCL for CUDA tensors): the path every step of a run over several
/// ranks takes, the sum over one rank being the gradient itself.
fn reduced_step(
    arch: &Arch,
    reference: &nn::VarStore,
    device: Device,
    x: &Tensor,
    y: &Tensor,
) -> Result<Vec<Tensor>, crate::world::WorldError> {
    use crate::world::{Dist, World, WorldError};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| WorldError::Env(format!("no free port on 127.0.0.1: {e}")))?
        .port();
    let world = World { rank: 0, size: 1, local_rank: 0, master_addr: "127.0.0.1".into(), master_port: port };
    let dist = Dist::connect(world, std::time::Duration::from_secs(60), device.is_cuda())?;
    let (vs, net) = copy_of(arch, reference, device).map_err(|e| WorldError::Env(e.to_string()))?;
    let params = parameters(&vs);
    let mut reducer = dist.reducer(&params)?;
    let logits = net.forward_t(x, true).to_kind(Kind::Float);
    let loss = logits.cross_entropy_for_logits(y);
    dist.backward(&mut reducer, &loss)?;
    // A step's sums go over the group as the trainer's do, on the device (NCCL for a GPU's): one rank's
    // sum is its own.
    let mut sums = Tensor::stack(&[loss.detach().to_kind(Kind::Double), Tensor::from(2.0).to_device(device)], 0);
    let before = sums.copy();
    dist.all_reduce_sum(&mut sums, "the step's sums")?;
    if !sums.equal(&before) {
        return Err(WorldError::Env(format!(
            "the sum of a step's figures over one rank is not the figures ({:?} after, {:?} before)",
            Vec::<f64>::try_from(sums.to_device(Device::Cpu)).unwrap_or_default(),
            Vec::<f64>::try_from(before.to_device(Device::Cpu)).unwrap_or_default()
        )));
    }
    Ok(on_cpu(params.iter().map(Tensor::grad)))
}

/// Relative tolerance of a CUDA graph's replayed steps against the same steps run eagerly: the same
/// kernels on the same numbers (dropout masks included), up to cuDNN's nondeterministic sums.
pub const GRAPH_TOLERANCE: f64 = 1e-4;

/// Steps [`graph_steps`] takes: the graph's warm-up, its capture, and two replays.
const GRAPH_STEPS: usize = crate::graphed::WARM_UP_STEPS + 3;

/// The weights (sorted by name, on the CPU) after [`GRAPH_STEPS`] SGD steps on one batch with dropout 0.3
/// (Nesterov momentum 0.9, weight decay 5e-4, lr 0.1, libtorch's generator seeded per step), all run
/// eagerly, and through the trainer's [`GraphedSteps`](crate::graphed::GraphedSteps): eager warm-up steps
/// on the graph's side stream, then a captured step replayed. Dropout takes each step's seed under replay
/// as eagerly, or the weights part.
fn graph_steps(
    arch: &Arch,
    reference: &nn::VarStore,
    device: Device,
    x: &Tensor,
    y: &Tensor,
) -> Result<(Vec<Tensor>, Vec<Tensor>), String> {
    use crate::graphed::{DeviceGraph, GraphedSteps, StepKind};
    let arch = arch.clone().with_dropout(0.3).map_err(|e| e.to_string())?;
    let config =
        crate::config::Optimizer { lr: 0.1, momentum: 0.9, dampening: 0.0, weight_decay: 5e-4, nesterov: true };
    let run = |graph: bool| -> Result<Vec<Tensor>, String> {
        let (vs, net) = copy_of(&arch, reference, device).map_err(|e| e.to_string())?;
        let mut sgd = crate::sgd::Sgd::new(&vs, config.clone());
        if graph {
            let mut steps = GraphedSteps::new(DeviceGraph::new(crate::runtime::cuda_extension()?)?, x.size()[0]);
            let mut kinds = Vec::new();
            for seed in 0..GRAPH_STEPS as i64 {
                kinds.push(steps.step((&net, &mut sgd), seed, config.lr, (x, y))?.2);
            }
            if kinds.last() != Some(&StepKind::Replayed) {
                return Err(format!("the graphed steps were {kinds:?}, not ending in replays"));
            }
        } else {
            for seed in 0..GRAPH_STEPS as i64 {
                tch::manual_seed(seed);
                let _ = crate::step::local_sgd_step((&net, &mut sgd), config.lr, (x, y));
            }
        }
        Ok(on_cpu(parameters(&vs).into_iter()))
    };
    Ok((run(false)?, run(true)?))
}

/// Runs every parity check of `device` against the CPU on `arch` (a small WRN is enough: the checks are
/// about kernels, layouts and copies, not the network's size).
pub fn parity(arch: &Arch, device: Device, batch: i64) -> Result<Vec<ParityCheck>, ParityError> {
    let name = crate::environment::device_name(device);
    let torch = |source| ParityError::Torch { device: name.clone(), source };
    let mut checks = Vec::new();
    tch::manual_seed(0);
    let cpu_vs = nn::VarStore::new(Device::Cpu);
    let cpu_net = arch.build(&cpu_vs.root());
    let [c, h, w] = arch.input_shape();
    let x = Tensor::randn([batch, c, h, w], (Kind::Float, Device::Cpu));
    let y = Tensor::randint(arch.num_classes(), [batch], (Kind::Int64, Device::Cpu));
    let (cpu_logits, cpu_grads) = step(&cpu_vs, &cpu_net, &x, &y);

    let (dev_vs, dev_net) = copy_of(arch, &cpu_vs, device).map_err(torch)?;
    let (xd, yd) = (x.to_device(device), y.to_device(device));
    let (logits, grads) = step(&dev_vs, &dev_net, &xd, &yd);
    let (bf16_logits, _) = step(&dev_vs, &dev_net, &wrn_nets::layout::bf16(&xd), &yd);
    let (cl_vs, cl_net) = copy_of(arch, &cpu_vs, device).map_err(torch)?;
    wrn_nets::layout::to_channels_last(&cl_vs);
    let (cl_logits, cl_grads) = step(&cl_vs, &cl_net, &wrn_nets::layout::channels_last(&xd), &yd);
    let (logits_diff, grads_diff) =
        ("relative L2 difference of training-mode logits", "relative L2 difference of all gradients");
    checks.extend([
        check("fp32_logits_vs_cpu", logits_diff, relative(&cpu_logits, &logits), TF32_TOLERANCE),
        check("fp32_gradients_vs_cpu", grads_diff, relative_grads(&cpu_grads, &grads), TF32_TOLERANCE),
        check("bf16_logits_vs_fp32", logits_diff, relative(&logits, &bf16_logits), BF16_TOLERANCE),
        check("channels_last_logits_vs_nchw", logits_diff, relative(&logits, &cl_logits), TF32_TOLERANCE),
        check("channels_last_gradients_vs_nchw", grads_diff, relative_grads(&grads, &cl_grads), TF32_TOLERANCE),
    ]);
    let reduced = reduced_step(arch, &cpu_vs, device, &xd, &yd)
        .map_err(|source| ParityError::Dist { device: name.clone(), source })?;
    checks.push(check(
        "data_parallel_gradients_vs_local",
        "relative L2 difference of the gradients DDP's Reducer sums over one rank (NCCL on CUDA, Gloo on the CPU)",
        relative_grads(&grads, &reduced),
        REDUCER_TOLERANCE,
    ));
    if device.is_cuda() {
        let (eager, replayed) = graph_steps(arch, &cpu_vs, device, &xd, &yd)
            .map_err(|detail| ParityError::Extension { device: name.clone(), detail })?;
        checks.push(check(
            "cuda_graph_steps_vs_eager",
            "relative L2 difference of the weights after 6 SGD steps with dropout, eager or through the trainer's CUDA graph (3 eager, a capture, 2 replays)",
            relative_grads(&eager, &replayed),
            GRAPH_TOLERANCE,
        ));
    }

    let pixels = Tensor::randint(256, [batch, 3, 32, 32], (Kind::Uint8, Device::Cpu));
    let value_step = ValueStep::Normalize {
        mean: wrn_augment::ops::CIFAR_MEAN.to_vec(),
        inv_std: wrn_augment::ops::CIFAR_STD.iter().map(|s| 1.0 / s).collect(),
    };
    let on_cpu = crate::trainer::normalise_on_device(&pixels, &value_step, Device::Cpu);
    let on_device = crate::trainer::normalise_on_device(&pixels, &value_step, device);
    checks.push(check(
        "u8_normalisation_vs_cpu",
        "max absolute difference (bit-exact expected)",
        max_abs(&on_cpu, &on_device),
        0.0,
    ));

    // A checkpoint of channels-last device weights (after a step, so they are not the CPU's) through the
    // run folder's own writer and reader.
    let run_dir = tempfile::tempdir().map_err(|source| ParityError::Io { device: name.clone(), source })?;
    let run = RunDir::create(run_dir.path()).map_err(|source| ParityError::Run { device: name.clone(), source })?;
    tch::no_grad(|| {
        for (_, mut t) in cl_vs.variables() {
            let _ = t.f_add_(&(t.randn_like() * 0.01));
        }
    });
    run.save_checkpoint(&cl_vs, vec![], Progress { epoch: 1, step: 0 })
        .map_err(|source| ParityError::Run { device: name.clone(), source })?;
    let mut reloaded = nn::VarStore::new(Device::Cpu);
    let _ = arch.build(&reloaded.root());
    run.load_checkpoint(&mut reloaded).map_err(|source| ParityError::Run { device: name.clone(), source })?;
    let saved = cl_vs.variables();
    let worst = reloaded
        .variables()
        .iter()
        .map(|(k, t)| saved.get(k).map_or(f64::INFINITY, |s| max_abs(s, t)))
        .fold(0.0, f64::max);
    checks.push(check("checkpoint_device_to_cpu", "max absolute difference after save and reload", worst, 0.0));
    Ok(checks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_passes_every_parity_check_and_a_wrong_tolerance_fails() {
        let checks = parity(&"wrn-10-1".parse().unwrap(), Device::Cpu, 8).unwrap();
        let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "fp32_logits_vs_cpu",
                "fp32_gradients_vs_cpu",
                "bf16_logits_vs_fp32",
                "channels_last_logits_vs_nchw",
                "channels_last_gradients_vs_nchw",
                "data_parallel_gradients_vs_local",
                "u8_normalisation_vs_cpu",
                "checkpoint_device_to_cpu"
            ]
        );
        assert!(checks.iter().all(|c| c.pass), "{checks:#?}");
        // The CPU against itself is exact; bf16 differs from fp32, but within its tolerance.
        assert_eq!(checks[0].value, 0.0);
        assert!(checks[2].value > 1e-4 && checks[2].value < BF16_TOLERANCE, "{}", checks[2].value);
        // DDP's Reducer over one Gloo rank hands back exactly the gradients of the same pass.
        assert_eq!(checks[5].value, 0.0);
        assert!(!check("x", "", 0.1, 0.05).pass && !check("x", "", f64::NAN, 1.0).pass);
    }
}
