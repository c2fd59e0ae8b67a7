//! Reproduction sweeps: the runs a set of paper tables needs (row × seed at a scale), what state each
//! is in on disk, running them as separate `wrn train` processes on a set of slots (GPUs or CPU), and
//! the Slurm array script that runs them on a cluster instead.
//!
//! A run lives in `<runs>/<row run key>/seed<N>/` (see `wrn_tables::Row::run_key`); its state is read
//! from the folder alone, so a sweep can be stopped, killed or re-run at any time: finished runs are
//! skipped, runs with a checkpoint are resumed, and anything else starts afresh.

pub mod describe;
pub mod devices;
pub mod exec;
pub mod plan;
pub mod slurm;

pub use describe::{describe, Concurrency, Pricing};
pub use devices::{
    auto_gpus, check_gpus, must_measure, place, require_cuda, slurm_pace_on, AutoChoice, CudaEnv, CudaStatus, Device,
    GpuRequest, NoCuda, NoDriver, PaceOn, Placement, Slot,
};
pub use exec::{execute, lock, Outcome, Summary};
pub use plan::{
    epochs_done, measured_cost, plan, Plan, PlanOptions, PlannedRun, PriceError, RunCost, RunState, SweepError,
    SweepScale,
};
pub use slurm::{write_slurm, SlurmOptions};
