//! `wrn sweep`: trains the runs of the paper's tables (row × seed at a scale), each in its own
//! `wrn train` process on the GPUs (or the CPU), or writes a Slurm array script; `wrn sweep task` is
//! what each Slurm task runs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use wrn_sweep::devices::{CudaEnv, DEVICE_ORDER_ENV, PCI_BUS_ID};
use wrn_sweep::slurm::TaskFile;
use wrn_sweep::{AutoChoice, GpuRequest, Plan, PlanOptions, PlannedRun, RunState, Scale, Slot, SlurmOptions};
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
    #[arg(long)]
    seeds: Option<u32>,
    /// full, smoke (a few steps of every run on a subset), or a fraction of the epochs such as 0.1.
    #[arg(long, default_value = "full")]
    scale: Scale,
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
    /// Runs at once per GPU (or on the CPU, sharing its cores).
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// `wrn train` setting for every run that does not change what is trained (e.g. data.dir=/data).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Show the plan, every run with its state and estimated time, and run nothing.
    #[arg(long)]
    dry_run: bool,
    /// Measure this machine's training pace first (WRN-28-10 steps on GPU 0, or on the CPU with --gpus
    /// none; under a minute on a GPU) and keep it in the cache for estimates. A GPU without a recorded
    /// pace is measured anyway.
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
    #[arg(long, requires = "slurm")]
    cpus_per_task: Option<u32>,
    /// Slurm memory per task (e.g. 64G).
    #[arg(long, requires = "slurm")]
    mem: Option<String>,
    /// At most this many Slurm tasks at once.
    #[arg(long, requires = "slurm")]
    max_parallel: Option<u32>,
    /// Further #SBATCH option, verbatim (e.g. --account=abc); repeatable.
    #[arg(long = "sbatch", value_name = "OPTION", requires = "slurm")]
    sbatch: Vec<String>,
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
        eprintln!("sweep: stopping: running runs checkpoint and exit; no new run starts");
    })
    .context("cannot install the SIGINT/SIGTERM handler")?;
    let exe = std::env::current_exe().context("cannot locate the wrn binary")?;
    if let Some(TaskCommand::Task { tasks, index }) = &args.task {
        return task(&exe, tasks, *index, stop);
    }

    let all = wrn_tables::load_dir(&args.tables_dir)?;
    let tables: Vec<&Table> = if args.all {
        all.iter().filter(|t| !t.demo).collect()
    } else if args.tables.is_empty() {
        bail!("name the tables to reproduce with --table (e.g. --table t4) or use --all");
    } else {
        wrn_tables::select(&all, &args.tables, &args.tables_dir)?
    };
    let runs = args.runs.clone().unwrap_or_else(|| PathBuf::from("runs").join(args.scale.to_string()));
    let options = PlanOptions {
        runs: runs.clone(),
        scale: args.scale,
        seeds: args.seeds,
        datasets: args.datasets.clone(),
        rows: args.rows.clone(),
        extra: args.sets.clone(),
    };
    let plan = wrn_sweep::plan(&tables, &options)?;
    // A plan with nothing left to train spends no GPU time measuring a pace unless asked to.
    let pace = if args.calibrate || plan.pending().next().is_some() {
        pace(args.gpus.as_ref(), args.calibrate)?
    } else {
        None
    };
    let parallel = match &args.gpus {
        Some(GpuRequest::Indices(ids)) => ids.len() * args.jobs,
        Some(GpuRequest::Cpu) => 1,
        _ => wrn_train::runtime::cuda_status().unwrap_or(0).max(1) * args.jobs,
    };
    describe(&plan, &tables, &runs, args.scale, pace.as_ref(), args.dry_run, parallel)?;

    if args.slurm {
        let name = if args.all {
            "wrn-all".to_string()
        } else {
            format!("wrn-{}", tables.iter().map(|t| t.id.as_str()).collect::<Vec<_>>().join("-"))
        };
        let options = SlurmOptions {
            job_name: name,
            partition: args.partition,
            time: args.time,
            gres: args.gres,
            cpus_per_task: args.cpus_per_task,
            mem: args.mem,
            max_parallel: args.max_parallel,
            extra: args.sbatch,
        };
        match wrn_sweep::write_slurm(&plan, &options, &exe, &runs)? {
            Some(script) => {
                println!("wrote {}", script.display());
                println!("submit with: sbatch {}", script.display());
            }
            None => println!("nothing to submit: every run is finished"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.dry_run {
        return Ok(ExitCode::SUCCESS);
    }
    let slots = slots(args.gpus.unwrap_or(GpuRequest::Auto), args.jobs)?;
    eprintln!(
        "sweep: {} slot(s): {}",
        slots.len(),
        slots.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
    );
    let summary = wrn_sweep::execute(&exe, &plan, &slots, stop, &|line| eprintln!("{line}"));
    print!("{}", summary.render());
    Ok(if summary.ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The measured pace of the device the sweep would train on: recorded in the cache, or measured now when
/// asked (`--calibrate`) or when a GPU has none recorded.
fn pace(gpus: Option<&GpuRequest>, calibrate: bool) -> Result<Option<Pace>> {
    let device = match gpus {
        Some(GpuRequest::Cpu) => tch::Device::Cpu,
        _ => match wrn_train::runtime::cuda_status() {
            Ok(n) if n > 0 => tch::Device::Cuda(0),
            _ => tch::Device::Cpu,
        },
    };
    let name = cost::device_name(device);
    let path = cost::paces_path();
    let recorded = cost::recorded_pace(&path, &name);
    if !calibrate && (recorded.is_some() || !device.is_cuda()) {
        return Ok(recorded);
    }
    let selected = wrn_train::runtime::select_device(match device {
        tch::Device::Cuda(_) => wrn_train::runtime::DeviceChoice::Cuda(0),
        _ => wrn_train::runtime::DeviceChoice::Cpu,
    })?;
    let (batch, steps) = if device.is_cuda() { (128, 20) } else { (16, 2) };
    eprintln!("sweep: measuring the training pace of {name} (WRN-28-10, batch {batch}, {steps} steps)...");
    let options = wrn_train::check::CheckOptions { optimizer_step: true, ..Default::default() };
    let check = wrn_train::check::forward_backward(&"wrn-28-10".parse()?, selected.device, batch, steps, options)?;
    let measured_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let pace = Pace { device: name, images_per_second: check.images_per_second, batch, measured_at };
    cost::record_pace(&path, &pace)?;
    eprintln!("sweep: {:.1} WRN-28-10 images/s on {}, kept in {}", pace.images_per_second, pace.device, path.display());
    Ok(Some(pace))
}

/// What a pending run is estimated to take, and on what basis.
fn estimate(run: &PlannedRun, paced: &mut CostModel, basis: &str) -> Result<(f64, String)> {
    Ok(match wrn_sweep::measured_seconds(run) {
        Some(s) => (s, "finished seeds of this row".to_string()),
        None => (paced.seconds(&run.sets).with_context(|| format!("row {}", run.rows.join(", ")))?, basis.to_string()),
    })
}

/// A run's state in words: new, resume after epoch N, finished, conflict.
fn state_of(run: &PlannedRun) -> String {
    match &run.state {
        RunState::New => "new".into(),
        RunState::Resume => {
            let done = wrn_run::RunFolder::at(&run.dir).read_metrics().map_or(0, |m| m.len());
            format!("resume after epoch {done}")
        }
        RunState::Finished => "finished".into(),
        RunState::Conflict(_) => "conflict".into(),
    }
}

/// The plan: a summary line, with `--dry-run` every run with its state and estimate, then the totals by
/// the basis of their estimates.
fn describe(
    plan: &Plan,
    tables: &[&Table],
    runs: &Path,
    scale: Scale,
    pace: Option<&Pace>,
    list: bool,
    parallel: usize,
) -> Result<()> {
    let names: Vec<&str> = tables.iter().map(|t| t.id.as_str()).collect();
    println!(
        "sweep of {} at scale {scale} into {}: {} runs ({} new, {} to resume, {} finished, {} conflicting)",
        names.join(", "),
        runs.display(),
        plan.runs.len(),
        plan.count(&RunState::New),
        plan.count(&RunState::Resume),
        plan.count(&RunState::Finished),
        plan.conflicts().count()
    );
    let (mut model, basis) = match pace {
        Some(p) => (CostModel::at_pace(p.images_per_second), format!("measured pace of {}", p.device)),
        None => (CostModel::titan_x(), "the paper's Titan X pace".to_string()),
    };
    let mut totals: Vec<(String, f64)> = Vec::new();
    for run in &plan.runs {
        let pending = matches!(run.state, RunState::New | RunState::Resume);
        let estimate = if pending { Some(estimate(run, &mut model, &basis)?) } else { None };
        if list {
            println!(
                "  {:<34} {:<8} {:<16} seed {:<2} {:<22} {}",
                run.rows.join(", "),
                run.dataset,
                run.arch,
                run.seed,
                state_of(run),
                estimate.as_ref().map_or(String::new(), |(s, b)| format!("{} ({b})", hours(*s)))
            );
        }
        if let Some((seconds, basis)) = estimate {
            match totals.iter_mut().find(|(b, _)| *b == basis) {
                Some((_, total)) => *total += seconds,
                None => totals.push((basis, seconds)),
            }
        }
    }
    if !totals.is_empty() {
        let parts: Vec<String> = totals.iter().map(|(b, s)| format!("{} by {b}", hours(*s))).collect();
        let all: f64 = totals.iter().map(|(_, s)| s).sum();
        println!("estimate: {} in all: {}", hours(all), parts.join(" + "));
        if parallel > 1 {
            println!(
                "  on {parallel} runs at a time: about {:.1} hours from start to end",
                all / 3600.0 / parallel as f64
            );
        }
        if pace.is_none() {
            println!(
                "  (the Titan X pace is the paper's Figure 4, 312 ms per 32 WRN-28-10 images; a current GPU is several \
                 times faster: `wrn sweep --calibrate` measures this machine's)"
            );
        }
    }
    for run in plan.conflicts() {
        if let RunState::Conflict(why) = &run.state {
            println!("conflict: {why}");
        }
    }
    Ok(())
}

/// Device time, in GPU-hours or, below one, GPU-minutes.
fn hours(seconds: f64) -> String {
    if seconds >= 3600.0 {
        format!("{:.1} GPU-hours", seconds / 3600.0)
    } else {
        format!("{:.1} GPU-minutes", seconds / 60.0)
    }
}

/// Slots from `--gpus` and `--jobs`; without `--gpus`, every GPU libtorch can use, or the CPU where the
/// NVIDIA driver reports no GPU. The rules are `wrn_sweep::devices`'; here only the libtorch and driver
/// queries.
fn slots(gpus: GpuRequest, jobs: usize) -> Result<Vec<Slot>> {
    let cuda = CudaEnv::from_env();
    let ids: Vec<u32> = match gpus {
        GpuRequest::Cpu => vec![],
        GpuRequest::Indices(ids) => {
            // The mapping first: its error names the caller's CUDA_VISIBLE_DEVICES.
            cuda.children_visible(&ids)?;
            wrn_sweep::check_gpus(&ids, wrn_train::runtime::cuda_status())?;
            ids
        }
        GpuRequest::Auto => match wrn_sweep::auto_gpus(wrn_train::runtime::cuda_status(), driver_gpus)? {
            AutoChoice::Gpus(ids) => ids,
            AutoChoice::Cpu { reason } => {
                eprintln!("sweep: training on the CPU ({reason})");
                vec![]
            }
        },
    };
    Ok(Slot::layout(&ids, jobs, wrn_sweep::exec::available_cores(), &cuda)?)
}

/// How many GPUs the NVIDIA driver reports, or why it cannot be asked.
fn driver_gpus() -> Result<usize, String> {
    wrn_train::driver::cuda_driver().map(|driver| driver.devices.len())
}

/// One Slurm task: the run at `index` of the task file, on the device the script asked for.
fn task(exe: &Path, tasks: &Path, index: usize, stop: Arc<AtomicBool>) -> Result<ExitCode> {
    let file = TaskFile::load(tasks)?;
    let Some(planned) = file.runs.get(index) else {
        bail!("{}: no task {index} (it lists {})", tasks.display(), file.runs.len());
    };
    // The folder may have moved on since the script was written (a requeued task, a finished run).
    let mut run = planned.clone();
    run.state = wrn_sweep::RunState::of(&run.dir);
    let plan = Plan { runs: vec![run] };
    // Slurm's allocation, not the node's cores; a cuda task with a run to train fails with the reason where
    // CUDA is unusable (a finished run is skipped without asking).
    let slots = match plan.pending().next() {
        Some(_) => vec![wrn_sweep::slurm::task_slot(
            file.device,
            wrn_train::runtime::cuda_status,
            wrn_sweep::slurm::task_cores(),
            &CudaEnv::from_env(),
        )?],
        None => vec![],
    };
    let summary = wrn_sweep::execute(exe, &plan, &slots, stop, &|line| eprintln!("{line}"));
    print!("{}", summary.render());
    Ok(if summary.ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
