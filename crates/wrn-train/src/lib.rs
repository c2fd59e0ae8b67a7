//! The training runner: everything between a batch of pixels and a run folder.
//!
//! - [`check`]: a timed forward+backward of a WRN, to see that a device computes and how fast.
//! - [`config`]: experiments as TOML, the paper's recipes, layering and the learning-rate schedule.
//! - [`datasets`]: the datasets a run can name, with their class counts and input sizes.
//! - [`runtime`]: loading libtorch's CUDA backend at run time, choosing the device, sizing the libtorch
//!   and rayon thread pools so they do not oversubscribe the cores.
//! - [`parity`]: a device against the CPU on training's own code paths (`wrn doctor --parity`).
//! - [`run`]: the run folder (contract 3) held by one process: checksummed checkpoints, the latest and the
//!   one before, with the fallback from one to the other.
//! - [`sgd`]: SGD with Nesterov momentum and weight decay, with checkpointable state.
//! - [`step`]: one training step's computation (forward, f32 loss, backward, update).
//! - [`eval`]: weights (a checkpoint, a torchvision or official-port state dict, or the authors'
//!   export) evaluated on a prepared split into a run folder marked evaluated, never trained.
//! - [`graphed`]: training steps captured once in a CUDA graph and replayed (`cuda_graphs = true`).
//! - [`input`]: the data a run trains on, opened and carried to its device.
//! - [`error`]: what can stop a training run.
//! - [`trainer`]: the training loop: epochs, evaluation, metrics, checkpoints, resume, interruption.
//! - [`policy`]: when the loop checkpoints and stops (minutes, steps, a stop request), as a value.
//! - [`world`]: one run over several processes: the ranks (from `--nproc`, torchrun or Slurm) and what
//!   they share (c10d's store and Gloo group, through `wrn-torch-ext`), with a heartbeat that names a
//!   rank that died.
//! - [`ranks`]: the trainer's side of a run over several ranks (devices, broadcast, gradient reducer).
//! - [`agree`]: what the ranks check with each other before their first step: the same run, a GPU each.
//! - [`driver`]: the NVIDIA driver and the GPUs it sees, whatever libtorch can do with them.
//! - [`environment`]: what this process runs on (versions, libraries, GPUs, threads, directories); shown by
//!   `wrn doctor` and recorded in every run folder.

pub mod agree;
pub mod check;
pub mod config;
pub mod cost;
pub mod datasets;
pub mod driver;
pub mod environment;
pub mod error;
pub mod eval;
pub mod graphed;
pub mod input;
pub mod parity;
pub mod policy;
pub mod ranks;
pub mod run;
pub mod runtime;
pub mod sgd;
pub mod step;
pub mod trainer;
pub mod world;

/// The `tch` release this workspace pins; it binds libtorch [`LIBTORCH_VERSION`].
pub const TCH_VERSION: &str = "0.24.0";
/// The libtorch release `tch` [`TCH_VERSION`] is built for (major.minor.patch, without the `+cuXXX` tag).
pub const LIBTORCH_VERSION: &str = "2.11.0";
