//! The trainer's side of a run over several ranks: each rank's device, the checks before the first step
//! (every rank gets images; its GPU's UUID for [`crate::agree`]), rank 0's variables broadcast to the
//! others, and DDP's gradient reducer laid out once.

use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};
use wrn_torch_ext::dist::Reducer;

use crate::config::{ConfigError, Experiment};
use crate::error::TrainError;
use crate::runtime::{self, DeviceChoice, RuntimeError};
use crate::sgd::Sgd;
use crate::step::f32_logits;
use crate::world::{rank_gpu, Dist, World};

/// The gradient all-reduce of a run over several ranks: `DistributedDataParallel`'s Reducer over the
/// optimiser's parameters, whose buckets are all-reduced while the backward pass goes on. One backward
/// pass on `blank` images lays the buckets out in the order the gradients become ready, as DDP does after
/// its first step, so every real step (the first after a resume too) reduces in the same buckets and
/// adds in the same order; the pass's gradients are cleared and its batch-norm statistics undone.
pub(crate) fn gradient_reducer(
    dist: &Dist,
    (net, vs, sgd): (&wrn_nets::Network, &nn::VarStore, &Sgd),
    blank: Tensor,
) -> Result<Reducer, TrainError> {
    let mut reducer = dist.reducer(&sgd.parameters())?;
    let statistics: Vec<(Tensor, Tensor)> =
        tch::no_grad(|| vs.variables().into_values().filter(|t| !t.requires_grad()).map(|t| (t.copy(), t)).collect());
    let loss = f32_logits(net.forward_t(&blank, true)).sum(Kind::Float) * 0.0;
    dist.backward(&mut reducer, &loss)?;
    tch::no_grad(|| {
        for (saved, mut t) in statistics {
            t.copy_(&saved);
        }
    });
    for mut p in sgd.parameters() {
        p.zero_grad();
    }
    Ok(reducer)
}

/// The device of a rank: on CUDA (`cuda`, or `auto` where CUDA works) its own GPU ([`rank_gpu`]), as one
/// process per GPU trains; the CPU as asked. A GPU named by index would put every rank on it.
pub(crate) fn rank_device(choice: DeviceChoice, world: &World) -> Result<DeviceChoice, TrainError> {
    let gpus = || {
        runtime::cuda_status().map_err(|reason| RuntimeError::CudaUnavailable { requested: choice.to_string(), reason })
    };
    match choice {
        DeviceChoice::Cpu => Ok(choice),
        DeviceChoice::Auto => match runtime::cuda_status() {
            Ok(count) => Ok(DeviceChoice::Cuda(rank_gpu(world.local_rank, count)?)),
            // select_device decides between the CPU and an error, as for one process.
            Err(_) => Ok(choice),
        },
        DeviceChoice::Cuda(0) => Ok(DeviceChoice::Cuda(rank_gpu(world.local_rank, gpus()?)?)),
        DeviceChoice::Cuda(index) => Err(ConfigError::Invalid(format!(
            "device cuda:{index} for a run over {} ranks would put every rank on one GPU: set device=cuda, and each \
             rank takes the GPU of its local rank",
            world.size
        ))
        .into()),
    }
}

/// The UUID of the GPU `device` is, as the driver gives it; `None` on the CPU or from a driver without one.
pub(crate) fn gpu_uuid(device: Device) -> Option<String> {
    let Device::Cuda(index) = device else { return None };
    crate::driver::gpu(index)?.uuid
}

/// Refuses a run whose smallest training batch has fewer images than there are ranks (some rank would
/// get none).
pub(crate) fn every_rank_has_images(exp: &Experiment, samples: usize, ranks: usize) -> Result<(), ConfigError> {
    let bs = exp.batch_size;
    let smallest = if exp.drop_last || samples.is_multiple_of(bs) { bs.min(samples) } else { samples % bs };
    if smallest < ranks {
        return Err(ConfigError::Invalid(format!(
            "{ranks} ranks share each batch, but batch_size {bs} over {samples} training images (drop_last {}) makes a \
             batch of {smallest}: some rank would get no image. Use fewer ranks, a larger batch_size, or drop_last = true",
            exp.drop_last
        )));
    }
    Ok(())
}

/// Copies rank 0's value of every variable of `vs` whose name `pick` accepts to the other ranks
/// (parameters at the start, so every rank starts from the same weights; batch-norm statistics before an
/// evaluation, which `DistributedDataParallel` takes from rank 0 too).
pub(crate) fn broadcast_variables(
    dist: &Dist,
    vs: &nn::VarStore,
    pick: impl Fn(&Tensor) -> bool,
) -> Result<(), TrainError> {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| pick(t)).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    if named.is_empty() {
        return Ok(());
    }
    tch::no_grad(|| -> Result<(), TrainError> {
        // Over Gloo, on the CPU, whatever the device: this runs once at the start and before evaluations.
        let mut flat = Tensor::cat(
            &named.iter().map(|(_, t)| t.to_device(Device::Cpu).to_kind(Kind::Double).reshape(-1)).collect::<Vec<_>>(),
            0,
        );
        dist.broadcast(&mut flat, "the broadcast of rank 0's weights")?;
        let mut offset = 0;
        for (_, t) in &mut named {
            let n = t.numel() as i64;
            t.copy_(&flat.narrow(0, offset, n).view(t.size().as_slice()).to_kind(t.kind()).to_device(t.device()));
            offset += n;
        }
        Ok(())
    })
}
