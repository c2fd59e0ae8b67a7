//! `wrn sweep`: trains the runs of the paper's tables (row × seed at a scale), each in its own
//! `wrn train` process on the GPUs (or the CPU), or writes a Slurm array script; `wrn sweep task` is
//! what each Slurm task runs.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use wrn_sweep::devices::{CudaEnv, DEVICE_ORDER_ENV, PCI_BUS_ID};
use wrn_sweep::{
    Concurrency, Device, GpuRequest, NoCuda, NoDriver, PaceOn, PlanOptions, PriceError, Pricing, RunCost, SlurmOptions,
    SweepScale,
};
use wrn_tables::Table;
use wrn_train::cost::{self, CostModel, Pace};

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    task: Option<TaskCommand>,
    /// Tables to reproduce, by file stem or short name (t4_width or t4); repeatable.
    #[arg(long = "table", value_name = "TABLE")]
    tables: Vec<String>,
    /// Every paper table (the demo table excluded).
    #[arg(long, conflicts_with = "tables")]
    all: bool,
    /// Only rows on these datasets (cifar10, cifar100, svhn, imagenet); repeatable.
    #[arg(long = "dataset", value_name = "DATASET")]
    datasets: Vec<String>,
    /// Only rows whose id or label contains this; repeatable.
    #[arg(long = "row", value_name = "TEXT")]
    rows: Vec<String>,
    /// Seeds per row (default: each table's, 5 where the paper reports medians of 5).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    seeds: Option<u32>,
    /// full, smoke (a few steps of every run on a subset), or a fraction of the epochs such as 0.1.
    #[arg(long, default_value = "full")]
    scale: SweepScale,
    /// Folder of the run folders (default: runs/<scale>).
    #[arg(long)]
    runs: Option<PathBuf>,
    /// Folder of the table files.
    #[arg(long = "tables", default_value_os_t = wrn_tables::default_dir())]
    tables_dir: PathBuf,
    /// GPUs to use, e.g. 0,1,2,3 (indices among the GPUs this process sees: under CUDA_VISIBLE_DEVICES=4,5,
    /// 0 is GPU 4), or `none` for the CPU. Default (`auto`): every GPU libtorch can use; the CPU only where the
    /// NVIDIA driver reports no GPU (GPUs that CUDA cannot use stop the sweep).
    #[arg(long)]
    gpus: Option<GpuRequest>,
    /// Runs at once per GPU (or on the CPU, sharing its cores); with --gpus-per-run, per group of GPUs.
    #[arg(long, default_value_t = 1, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    jobs: usize,
    /// Train each run over this many GPUs, data parallel (`wrn train --nproc K` on consecutive GPUs of
    /// --gpus, whose number must be a multiple of K): K = 4 over 8 GPUs trains two runs at a time, each on
    /// 4 GPUs. The recipe's batch is split over them. Slurm: --nodes and --gpus-per-node.
    #[arg(
        long,
        default_value_t = 1,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..),
        conflicts_with = "slurm"
    )]
    gpus_per_run: usize,
    /// `wrn train` setting for every run that does not change what is trained (e.g. data.dir=/data).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Show the plan, every run with its state and estimated time, and run nothing.
    #[arg(long)]
    dry_run: bool,
    /// Measure this machine's training pace first (WRN-28-10 steps on the sweep's first GPU, or on the CPU
    /// with --gpus none; under a minute on a GPU) and keep it in the cache for estimates. A GPU without a
    /// recorded pace is measured anyway. With --slurm: this machine's GPU 0 for GPU tasks, its CPU for CPU
    /// tasks.
    #[arg(long)]
    calibrate: bool,
    /// Write a Slurm array script (one task per run) and print the submit command instead of running.
    #[arg(long)]
    slurm: bool,
    /// Slurm partition.
    #[arg(long, requires = "slurm")]
    partition: Option<String>,
    /// Slurm time limit per task (e.g. 2-00:00:00).
    #[arg(long, requires = "slurm")]
    time: Option<String>,
    /// Slurm generic resources per task (e.g. gpu:1); tasks with a GPU train on it.
    #[arg(long, requires = "slurm")]
    gres: Option<String>,
    /// Slurm CPUs per task.
    #[arg(long, requires = "slurm", value_parser = clap::value_parser!(u32).range(1..))]
    cpus_per_task: Option<u32>,
    /// Slurm memory per task (e.g. 64G).
    #[arg(long, requires = "slurm")]
    mem: Option<String>,
    /// At most this many Slurm tasks at once.
    #[arg(long, requires = "slurm", value_parser = clap::value_parser!(u32).range(1..))]
    max_parallel: Option<u32>,
    /// Further #SBATCH option, verbatim (e.g. --account=abc); repeatable.
    #[arg(long = "sbatch", value_name = "OPTION", requires = "slurm")]
    sbatch: Vec<String>,
    /// Train each run over this many Slurm nodes (with --gpus-per-node or --tasks-per-node): one rank per
    /// GPU or task, data parallel over c10d.
    #[arg(long, requires = "slurm", value_parser = clap::value_parser!(u32).range(1..))]
    nodes: Option<u32>,
    /// GPUs per node, one rank each: asks Slurm for gpu:K per node and K tasks per node.
    #[arg(
        long,
        requires = "slurm",
        conflicts_with_all = ["tasks_per_node", "gres"],
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    gpus_per_node: Option<u32>,
    /// Ranks per node on CPU nodes (each with --cpus-per-task cores).
    #[arg(long, requires = "slurm", value_parser = clap::value_parser!(u32).range(1..))]
    tasks_per_node: Option<u32>,
}

#[derive(clap::Subcommand)]
enum TaskCommand {
    /// Run one task of a Slurm array written by `wrn sweep --slurm` (skips, resumes or trains its run).
    Task {
        /// The `.tasks.json` file next to the script.
        tasks: PathBuf,
        /// The task's index (`$SLURM_ARRAY_TASK_ID`).
        index: usize,
    },
}

pub fn run(args: Args) -> Result<ExitCode> {
    if std::env::var_os(DEVICE_ORDER_ENV).is_none() {
        // GPU indices (--gpus, CUDA_VISIBLE_DEVICES, the GPUs found) are read in nvidia-smi's and Slurm's
        // order, by this process and by its children alike (a caller's own order is kept).
        // SAFETY: the first thing the sweep command does, before it starts any thread (the signal handler's
        // below, the slots') and before CUDA is initialised (which reads the variable); `main` has started
        // no thread, so nothing reads the environment concurrently.
        unsafe { std::env::set_var(DEVICE_ORDER_ENV, PCI_BUS_ID) };
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        flag.store(true, Ordering::SeqCst);
        note!("sweep: stopping: running runs checkpoint and exit; no new run starts");
    })
    .context("cannot install the SIGINT/SIGTERM handler")?;
    let exe = std::env::current_exe().context("cannot locate the wrn binary")?;
    if let Some(TaskCommand::Task { tasks, index }) = &args.task {
        let summary =
            wrn_sweep::slurm::run_task(&exe, tasks, *index, stop, cuda_status, || driver_gpus().unwrap_or(0), &|l| {
                note!("{l}")
            })?;
        print!("{}", summary.render());
        return Ok(if summary.ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }

    let all = wrn_tables::load_dir(&args.tables_dir)?;
    let tables: Vec<&Table> = if args.all {
        all.iter().filter(|t| !t.demo).collect()
    } else if args.tables.is_empty() {
        bail!("name the tables to reproduce with --table (e.g. --table t4) or use --all");
    } else {
        wrn_tables::select(&all, &args.tables, &args.tables_dir)?
    };
    let names: Vec<&str> = tables.iter().map(|t| t.id.as_str()).collect();
    let runs = args.runs.clone().unwrap_or_else(|| PathBuf::from("runs").join(args.scale.to_string()));
    // A sweep that trains holds the runs folder from here on: a second one stops before it starts anything.
    let _lock = if args.dry_run || args.slurm {
        None
    } else {
        Some(wrn_sweep::lock(&runs, &format!("wrn sweep --table {}", names.join(" --table ")))?)
    };
    let options = PlanOptions {
        runs: runs.clone(),
        scale: args.scale,
        seeds: args.seeds,
        datasets: args.datasets.clone(),
        rows: args.rows.clone(),
        extra: args.sets.clone(),
    };
    let plan = wrn_sweep::plan(&tables, &options)?;

    if args.slurm {
        let slurm = slurm_options(&args, &names);
        let on = slurm.device();
        let at_once =
            Concurrency::Slurm { at_once: args.max_parallel.map(|n| n as usize), per_run: slurm.ranks() as usize };
        let pace_on = wrn_sweep::slurm_pace_on(on, cuda_status);
        print_plan(&args, &plan, &names, &runs, on, pace_on, at_once)?;
        match wrn_sweep::write_slurm(&plan, &slurm, &exe, &runs)? {
            Some(script) => {
                println!("wrote {}", script.display());
                println!("submit with: sbatch {}", script.display());
            }
            None => println!("nothing to submit: every run is finished"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    // Where the runs would train, checked before anything is priced or run: a dry run refuses the --gpus
    // the sweep itself would refuse.
    let cores = wrn_sweep::exec::available_cores();
    let gpus = args.gpus.clone().unwrap_or(GpuRequest::Auto);
    let placement =
        wrn_sweep::place(gpus, args.gpus_per_run, args.jobs, cuda_status, driver_gpus, cores, &CudaEnv::from_env())?;
    let at_once = Concurrency::Local { devices: placement.gpus.len().max(1), per_run: placement.per_run };
    print_plan(&args, &plan, &names, &runs, placement.device(), Some(placement.pace_on()), at_once)?;
    if let Some(reason) = &placement.cpu_reason {
        note!("sweep: training on the CPU ({reason})");
    }
    let slots = placement.slots;
    let names = slots.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ");
    let would = if args.dry_run { "would train on " } else { "" };
    note!("sweep: {would}{} slot(s): {names}", slots.len());
    if args.dry_run {
        return Ok(ExitCode::SUCCESS);
    }
    let summary = wrn_sweep::execute(&exe, &plan, &slots, stop, &|line| note!("{line}"));
    print!("{}", summary.render());
    Ok(if summary.ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Prices the plan of runs training `on` a device (at the measured pace of `pace_on` where there is one;
/// `None`: at the paper's) and prints it.
fn print_plan(
    args: &Args,
    plan: &wrn_sweep::Plan,
    names: &[&str],
    runs: &std::path::Path,
    on: Device,
    pace_on: Option<PaceOn>,
    at_once: Concurrency,
) -> Result<()> {
    // A plan with nothing left to train spends no GPU time measuring a pace unless asked to.
    let pace = match pace_on {
        Some(pace_on) if args.calibrate || plan.pending().next().is_some() => pace(pace_on, args.calibrate)?,
        _ => None,
    };
    let mut model = pace.as_ref().map_or_else(CostModel::titan_x, |p| CostModel::at_pace(p.images_per_second));
    let mut cost = |sets: &[String]| {
        model
            .cost(sets)
            .map(|(seconds, epochs)| RunCost { seconds, epochs })
            .map_err(|e| PriceError { reason: format!("{e:#}") })
    };
    if args.calibrate && pace_on.is_none() {
        note!("sweep: --calibrate: the tasks train on GPUs and this machine has none to measure; the plan is priced at the paper's pace");
    }
    let measured_on = pace.as_ref().map(|p| p.device.clone());
    let mut pricing = Pricing { on, measured_on, pace_here: pace_on.is_some(), cost: &mut cost };
    print!("{}", wrn_sweep::describe(plan, names, runs, args.scale, &mut pricing, args.dry_run, at_once)?);
    Ok(())
}

/// The `#SBATCH` options from the arguments; the job is named after the tables.
fn slurm_options(args: &Args, names: &[&str]) -> SlurmOptions {
    SlurmOptions {
        job_name: if args.all { "wrn-all".to_string() } else { format!("wrn-{}", names.join("-")) },
        partition: args.partition.clone(),
        time: args.time.clone(),
        gres: args.gpus_per_node.map(|k| format!("gpu:{k}")).or_else(|| args.gres.clone()),
        cpus_per_task: args.cpus_per_task,
        mem: args.mem.clone(),
        max_parallel: args.max_parallel,
        extra: args.sbatch.clone(),
        nodes: args.nodes,
        tasks_per_node: args.gpus_per_node.or(args.tasks_per_node),
    }
}

/// libtorch's count of usable CUDA devices, or why there are none.
fn cuda_status() -> Result<usize, NoCuda> {
    wrn_train::runtime::cuda_status().map_err(|reason| NoCuda { reason: reason.to_string() })
}

/// How many GPUs the NVIDIA driver reports, or why it cannot be asked.
fn driver_gpus() -> Result<usize, NoDriver> {
    wrn_train::driver::cuda_driver()
        .map(|driver| driver.devices.len())
        .map_err(|reason| NoDriver { reason: reason.to_string() })
}

/// The measured pace of `on`: recorded in the cache, or measured now when asked (`--calibrate`) or when a
/// GPU has none recorded.
fn pace(on: PaceOn, calibrate: bool) -> Result<Option<Pace>> {
    let choice = match on {
        PaceOn::Gpu(i) => wrn_train::runtime::DeviceChoice::Cuda(i as usize),
        PaceOn::Cpu => wrn_train::runtime::DeviceChoice::Cpu,
    };
    let measure = |recorded| wrn_sweep::must_measure(calibrate, recorded, on);
    Ok(cost::pace(choice, measure, |line| note!("sweep: {line}"))?)
}
