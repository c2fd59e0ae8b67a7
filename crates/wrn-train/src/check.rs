//! A device check and training benchmark: times forward+backward passes (and, for `wrn bench train`, the
//! SGD update too) of a network on random input, so a user (and the GPU check script) can see that a
//! device computes and how fast, before committing hours to it.

use std::time::Instant;

use serde::Serialize;
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};
use wrn_nets::Arch;

/// The outcome of [`forward_backward`].
#[derive(Debug, Clone, Serialize)]
pub struct DeviceCheck {
    pub arch: String,
    pub device: String,
    /// `fp32` or `bf16` (bf16 compute on f32 weights, as training does).
    pub precision: String,
    pub channels_last: bool,
    pub batch: i64,
    pub steps: usize,
    pub parameters: i64,
    /// Forward multiply-adds per image at the paper's input size (`wrn_nets::tally`).
    pub mult_adds_per_image: i64,
    /// Cross-entropy of the last step (finite when the device computes sensibly).
    pub loss: f64,
    pub images_per_second: f64,
    /// Whether each timed step included the SGD update (a full training step).
    pub optimizer_step: bool,
    /// Whether each timed step was replayed from a CUDA graph.
    pub cuda_graphs: bool,
    /// Device memory in use at the end, as the NVIDIA driver reports it (CUDA only; all processes).
    pub device_memory_in_use_bytes: Option<u64>,
    /// The most bytes libtorch's caching allocator held for tensors at once in this process (CUDA only;
    /// PyTorch's `torch.cuda.max_memory_allocated`), when the CUDA part of the extension is loaded.
    pub peak_allocated_bytes: Option<u64>,
}

/// Errors of the device check.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("the device check on {device} failed: {source}")]
    Torch { device: String, source: tch::TchError },
    #[error("CUDA graphs on {device}: {detail}")]
    CudaGraph { device: String, detail: String },
    #[error("the device check on {device} produced a non-finite loss ({loss})")]
    NonFinite { device: String, loss: f64 },
}

/// How the check lays out and casts the network.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckOptions {
    pub bf16: bool,
    pub channels_last: bool,
    /// Also apply the paper's SGD update (Nesterov, weight decay 5e-4, lr 0.1) in every step.
    pub optimizer_step: bool,
    /// Input height and width instead of the paper's (32, or 224 for ImageNet), e.g. smaller ImageNet
    /// inputs for a quick check that every layer runs.
    pub input_side: Option<i64>,
    /// How the SGD update runs, instead of the device's default.
    pub update: Option<crate::sgd::Update>,
    /// Replay each training step (with the update) from a CUDA graph, as `cuda_graphs = true` trains.
    pub cuda_graphs: bool,
}

/// Runs warm-up steps (one on the CPU, three on CUDA) and `steps` timed forward+backward steps of `arch` at
/// `batch` on `device`.
pub fn forward_backward(
    arch: &Arch,
    device: Device,
    batch: i64,
    steps: usize,
    options: CheckOptions,
) -> Result<DeviceCheck, CheckError> {
    let name = format!("{device:?}").to_lowercase();
    let torch = |source| CheckError::Torch { device: name.clone(), source };
    tch::manual_seed(0);
    let vs = nn::VarStore::new(device);
    let net = arch.build(&vs.root());
    if options.channels_last {
        wrn_nets::layout::to_channels_last(&vs);
    }
    let (x, y) = random_batch(arch, device, batch, &options).map_err(torch)?;
    let recipe = crate::config::Experiment::recipe(crate::datasets::Dataset::Cifar10).optimizer;
    let mut sgd = options.optimizer_step.then(|| {
        let sgd = crate::sgd::Sgd::new(&vs, recipe);
        match options.update {
            Some(update) => sgd.with_update(update),
            None => sgd,
        }
    });
    let graph_error = |detail| CheckError::CudaGraph { device: name.clone(), detail };
    let mut graphed = match options.cuda_graphs {
        false => None,
        true => Some(graphed_steps(device, batch, sgd.is_some()).map_err(graph_error)?),
    };
    let mut step = || -> Result<Tensor, CheckError> {
        if let (Some(graphed), Some(sgd)) = (graphed.as_mut(), sgd.as_mut()) {
            let (loss, _, _) = graphed.step((&net, sgd), 0, 0.1, (&x, &y)).map_err(graph_error)?;
            return Ok(loss);
        }
        let torch = |source| CheckError::Torch { device: name.clone(), source };
        vs.trainable_variables().iter_mut().for_each(Tensor::zero_grad);
        let loss = net
            .forward_t(&x, true)
            .to_kind(Kind::Float)
            .f_cross_entropy_loss::<Tensor>(&y, None, tch::Reduction::Mean, -100, 0.0)
            .map_err(torch)?;
        loss.f_backward().map_err(torch)?;
        if let Some(sgd) = sgd.as_mut() {
            sgd.step(0.1);
        }
        Ok(loss)
    };
    let sync = || {
        if let Device::Cuda(index) = device {
            tch::Cuda::synchronize(index as i64);
        }
    };
    // Warm-up: on CUDA, cuDNN's benchmark mode tunes each shape in the first step; with CUDA graphs the
    // eager steps before the capture and the capture itself.
    let warmup = match (device.is_cuda(), options.cuda_graphs) {
        (_, true) => crate::graphed::WARM_UP_STEPS + 1,
        (true, false) => 3,
        (false, false) => 1,
    };
    for _ in 0..warmup {
        let _ = step()?;
    }
    sync();
    // Timed steps are launched back to back and synchronised once at the end, as training runs them.
    let start = Instant::now();
    let mut last = None;
    for _ in 0..steps {
        last = Some(step()?);
    }
    sync();
    let loss = match last {
        Some(loss) => f64::try_from(&loss).map_err(torch)?,
        None => f64::NAN,
    };
    let seconds = start.elapsed().as_secs_f64();
    if steps > 0 && !loss.is_finite() {
        return Err(CheckError::NonFinite { device: name, loss });
    }
    Ok(DeviceCheck {
        arch: arch.to_string(),
        device: name,
        precision: if options.bf16 { "bf16" } else { "fp32" }.to_string(),
        channels_last: options.channels_last,
        batch,
        steps,
        parameters: wrn_nets::parameter_count(&vs),
        mult_adds_per_image: net.tally().total().mult_adds,
        loss,
        images_per_second: (batch as f64 * steps as f64) / seconds.max(1e-9),
        optimizer_step: options.optimizer_step,
        cuda_graphs: options.cuda_graphs,
        device_memory_in_use_bytes: match device {
            Device::Cuda(index) => crate::driver::cuda_memory_in_use(index),
            _ => None,
        },
        peak_allocated_bytes: match device {
            Device::Cuda(index) => crate::runtime::cuda_extension().ok().and_then(|ext| ext.peak_allocated(index).ok()),
            _ => None,
        },
    })
}

/// The CUDA graph a timed training step replays: on CUDA, with the update.
fn graphed_steps(
    device: Device,
    batch: i64,
    optimizer_step: bool,
) -> Result<crate::graphed::GraphedSteps<crate::graphed::DeviceGraph>, String> {
    if !device.is_cuda() {
        return Err("they replay steps on a GPU; measure with --device cuda".into());
    }
    if !optimizer_step {
        return Err("a captured step includes the SGD update".into());
    }
    let graph = crate::graphed::DeviceGraph::new(crate::runtime::cuda_extension()?)?;
    Ok(crate::graphed::GraphedSteps::new(graph, batch))
}

/// A batch of random images (in the layout and precision `options` ask for) and labels for `arch`.
fn random_batch(
    arch: &Arch,
    device: Device,
    batch: i64,
    options: &CheckOptions,
) -> Result<(Tensor, Tensor), tch::TchError> {
    let [c, h, w] = match options.input_side {
        Some(side) => [arch.input_shape()[0], side, side],
        None => arch.input_shape(),
    };
    let mut x = Tensor::f_randn([batch, c, h, w], (Kind::Float, device))?;
    if options.channels_last {
        x = wrn_nets::layout::channels_last(&x);
    }
    if options.bf16 {
        // As training does: bf16 compute on the f32 weights, which the optimiser updates.
        x = wrn_nets::layout::bf16(&x);
    }
    let y = Tensor::f_randint(arch.num_classes(), [batch], (Kind::Int64, device))?;
    Ok((x, y))
}

/// A fixed reference workload's speed on a device: square `f32` matrix products on the same threads as
/// training, so a training figure can be read as a ratio that does not depend on the machine.
#[derive(Debug, Clone, Serialize)]
pub struct Reference {
    pub workload: String,
    /// Floating-point operations per second (a product of two n×n matrices counts 2n³).
    pub flops_per_second: f64,
}

/// Side of the reference matrices on the CPU: large enough to run at the BLAS's full speed, small enough
/// to fit in a CPU's caches.
pub const REFERENCE_SIDE: i64 = 512;
/// Side of the reference matrices on a GPU, in bf16: large enough that a product is not bound by its
/// launch on a large GPU.
pub const GPU_REFERENCE_SIDE: i64 = 8192;

/// Times products of two square matrices on `device` for at least `min_seconds`: [`REFERENCE_SIDE`]²
/// `f32` on the CPU, [`GPU_REFERENCE_SIDE`]² bf16 on CUDA.
pub fn matmul_reference(device: Device, min_seconds: f64) -> Result<Reference, CheckError> {
    let name = format!("{device:?}").to_lowercase();
    let torch = |source| CheckError::Torch { device: name.clone(), source };
    let (n, kind) = if device.is_cuda() { (GPU_REFERENCE_SIDE, Kind::BFloat16) } else { (REFERENCE_SIDE, Kind::Float) };
    let a = Tensor::f_randn([n, n], (kind, device)).map_err(torch)?;
    let b = Tensor::f_randn([n, n], (kind, device)).map_err(torch)?;
    let sync = || {
        if let Device::Cuda(index) = device {
            tch::Cuda::synchronize(index as i64);
        }
    };
    let _ = a.f_matmul(&b).map_err(torch)?;
    sync();
    let start = Instant::now();
    let mut products = 0u64;
    while products == 0 || start.elapsed().as_secs_f64() < min_seconds {
        for _ in 0..4 {
            let _ = std::hint::black_box(a.f_matmul(&b).map_err(torch)?);
        }
        sync();
        products += 4;
    }
    let seconds = start.elapsed().as_secs_f64().max(1e-9);
    Ok(Reference {
        workload: format!("{n}x{n} {} matmul", if kind == Kind::Float { "f32" } else { "bf16" }),
        flops_per_second: products as f64 * 2.0 * (n as f64).powi(3) / seconds,
    })
}

/// Training throughput beside the reference workload, measured in alternation in one process.
#[derive(Debug, Clone, Serialize)]
pub struct Referenced {
    /// The best round of training steps.
    pub train: DeviceCheck,
    /// The best round of the reference.
    pub reference: Reference,
    pub rounds: usize,
    /// Training FLOP/s (3 × 2 × multiply-adds per image: forward, and backward at twice the forward)
    /// over the reference's: the share of the matrix-product speed a training step reaches. What a
    /// regression check compares.
    pub ratio_to_reference: f64,
}

/// [`forward_backward`] and [`matmul_reference`] in alternation, `rounds` times each; keeps the best of
/// each so that both sides see the same machine load.
pub fn against_reference(
    arch: &Arch,
    device: Device,
    batch: i64,
    steps: usize,
    rounds: usize,
    options: CheckOptions,
) -> Result<Referenced, CheckError> {
    let mut best: Option<DeviceCheck> = None;
    let mut reference: Option<Reference> = None;
    for _ in 0..rounds.max(1) {
        let r = matmul_reference(device, 0.25)?;
        if reference.as_ref().is_none_or(|b| r.flops_per_second > b.flops_per_second) {
            reference = Some(r);
        }
        let t = forward_backward(arch, device, batch, steps, options)?;
        if best.as_ref().is_none_or(|b| t.images_per_second > b.images_per_second) {
            best = Some(t);
        }
    }
    let (train, reference) = (best.expect("one round"), reference.expect("one round"));
    let training_flops = train.images_per_second * 6.0 * train.mult_adds_per_image as f64;
    Ok(Referenced {
        ratio_to_reference: training_flops / reference.flops_per_second,
        train,
        reference,
        rounds: rounds.max(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cpu_check_computes_a_sensible_loss() {
        let check = forward_backward(&"wrn-10-1".parse().unwrap(), Device::Cpu, 8, 1, CheckOptions::default()).unwrap();
        // Random labels over 10 classes: the loss of a freshly initialised net is near ln(10) = 2.3.
        assert!(check.loss > 0.5 && check.loss < 20.0, "{}", check.loss);
        assert!(check.images_per_second > 0.0);
        assert_eq!(check.device, "cpu");
        assert_eq!(check.parameters, 77_850);
        let net = "wrn-10-1".parse::<Arch>().unwrap().build(&nn::VarStore::new(Device::Cpu).root());
        assert_eq!(check.mult_adds_per_image, net.tally().total().mult_adds);
    }

    #[test]
    fn training_is_measured_against_the_matmul_reference() {
        let r = against_reference(&"wrn-10-1".parse().unwrap(), Device::Cpu, 8, 1, 2, CheckOptions::default()).unwrap();
        assert_eq!(r.rounds, 2);
        assert!(r.reference.flops_per_second > 1e6, "{}", r.reference.flops_per_second);
        let expected =
            r.train.images_per_second * 6.0 * r.train.mult_adds_per_image as f64 / r.reference.flops_per_second;
        assert!((r.ratio_to_reference - expected).abs() <= 1e-12 * expected);
        // A training step reaches some share of the matrix-product speed, never many times it.
        assert!(r.ratio_to_reference > 0.0 && r.ratio_to_reference < 5.0, "{}", r.ratio_to_reference);
    }

    #[test]
    fn bf16_and_channels_last_checks_run() {
        let options = CheckOptions { bf16: true, channels_last: true, ..CheckOptions::default() };
        let check = forward_backward(&"wrn-10-1".parse().unwrap(), Device::Cpu, 8, 1, options).unwrap();
        assert_eq!((check.precision.as_str(), check.channels_last), ("bf16", true));
        assert!(check.loss > 0.5 && check.loss < 20.0, "{}", check.loss);
    }

    #[test]
    fn training_steps_lower_the_loss_on_a_fixed_batch() {
        let arch: Arch = "wrn-10-1".parse().unwrap();
        let options = CheckOptions { optimizer_step: true, ..CheckOptions::default() };
        let first = forward_backward(&arch, Device::Cpu, 16, 1, options).unwrap();
        let later = forward_backward(&arch, Device::Cpu, 16, 8, options).unwrap();
        assert!(later.optimizer_step && later.device_memory_in_use_bytes.is_none());
        assert!(later.peak_allocated_bytes.is_none());
        // The same random batch every step: SGD must fit it.
        assert!(later.loss < first.loss, "{} then {}", first.loss, later.loss);
    }

    #[test]
    fn cuda_graphs_are_refused_on_the_cpu_with_the_reason() {
        let options = CheckOptions { optimizer_step: true, cuda_graphs: true, ..CheckOptions::default() };
        let err = forward_backward(&"wrn-10-1".parse().unwrap(), Device::Cpu, 8, 1, options).unwrap_err();
        assert_eq!(err.to_string(), "CUDA graphs on cpu: they replay steps on a GPU; measure with --device cuda");
    }
}
