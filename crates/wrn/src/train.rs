//! `wrn train`: trains one experiment into a run folder, or resumes one.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use anyhow::{bail, Context, Result};
use wrn_run::{Status, CONFIG, RESULT};
use wrn_train::config::Experiment;
use wrn_train::run::RunDir;
use wrn_train::runtime::DeviceChoice;
use wrn_train::trainer::{self, TrainOptions};
use wrn_train::world::{self, World};

#[derive(clap::Args)]
pub struct Args {
    /// Experiment file (TOML). Without one, the paper's recipe for the dataset (cifar10 unless --set).
    config: Option<PathBuf>,
    /// Override a key of the experiment, e.g. --set arch=wrn-16-4 --set scale.epochs=0.01.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Run folder (default: runs/<experiment>/seed<seed>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in this folder from its last checkpoint, with its saved configuration.
    #[arg(long, value_name = "RUN", conflicts_with_all = ["config", "sets", "out"])]
    resume: Option<PathBuf>,
    /// Stop after this many training steps (writing a checkpoint), as if interrupted.
    #[arg(long)]
    max_steps: Option<usize>,
    /// With --resume: continue on this device (auto, cpu, cuda, cuda:N) instead of the run's own
    /// (checkpoints do not depend on the device; bit-for-bit equality holds on the CPU only).
    #[arg(long, requires = "resume")]
    device: Option<DeviceChoice>,
    /// Train this one run over N processes on this machine (data parallel: each takes its part of every
    /// batch, the gradients are all-reduced over c10d's Gloo; on the CPU the cores are split between
    /// them). Processes started by torchrun or srun find their rank in the environment instead.
    #[arg(long, value_name = "N")]
    nproc: Option<usize>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let world = World::from_env()?;
    match args.nproc {
        Some(n) if world.is_some() => bail!(
            "--nproc {n} in a process that already has a rank ({}): let torchrun/srun start the ranks, or unset WORLD_SIZE",
            describe(world.as_ref().expect("checked"))
        ),
        Some(0) => bail!("--nproc takes a number of processes, at least 1"),
        Some(n) if n > 1 => return launch(n),
        _ => {}
    }
    let lead = world.as_ref().is_none_or(|w| w.rank == 0);
    let mut options = TrainOptions::new(env!("CARGO_PKG_VERSION"), env!("WRN_GIT_SHA"));
    options.max_steps = args.max_steps;
    options.device = args.device;
    options.world = world.clone();
    let (run, experiment) = match &args.resume {
        Some(dir) => {
            options.resume = true;
            let config = dir.join(CONFIG);
            if !config.exists() {
                bail!("{} is not a run folder: it has no {CONFIG}", dir.display());
            }
            let experiment = Experiment::load_complete(&config)?;
            // Holds the folder's lock until the run ends: a second `wrn train` of it is refused.
            (folder(dir, lead)?, experiment)
        }
        None => {
            let experiment = match &args.config {
                Some(path) => Experiment::load(path, &args.sets)?,
                None => Experiment::resolve(None, &args.sets)?,
            };
            let name = match &args.config {
                Some(path) => path.file_stem().map_or("experiment".into(), |s| s.to_string_lossy().into_owned()),
                None => format!("{}-{}", experiment.dataset, experiment.arch),
            };
            let out = args
                .out
                .clone()
                .unwrap_or_else(|| PathBuf::from("runs").join(name).join(format!("seed{}", experiment.seed)));
            (folder(&out, lead)?, experiment)
        }
    };

    let stop = options.stop.clone();
    ctrlc::set_handler(move || {
        if stop.swap(true, Ordering::SeqCst) {
            note!("second interrupt: exiting without a checkpoint");
            std::process::exit(130);
        }
        note!("interrupt: finishing this step and writing a checkpoint (interrupt again to exit at once)");
    })
    .context("cannot install the SIGINT/SIGTERM handler")?;

    if !lead {
        // Rank 0 shows the progress, writes the folder and says how the run ended.
        let result = trainer::train(&run, &experiment, &options, &wrn_progress::Silent)?;
        return Ok(match (result.status, options.stop.load(Ordering::SeqCst)) {
            (Status::Finished, _) => ExitCode::SUCCESS,
            (Status::Interrupted, true) => ExitCode::from(130),
            (Status::Interrupted, false) if args.max_steps.is_some() => ExitCode::SUCCESS,
            _ => ExitCode::FAILURE,
        });
    }
    note!("run folder: {}", run.path().display());
    if let Some(w) = &world {
        note!("{}", describe(w));
    }
    let result = trainer::train(&run, &experiment, &options, &crate::bars::progress())?;
    match result.status {
        Status::Finished => {
            note!(
                "finished: test error {:.2}% after {} epochs ({}); results in {}",
                result.final_test_error.unwrap_or(f64::NAN),
                result.epochs_done,
                if result.full_scale { "full scale" } else { "reduced scale or custom data" },
                run.file(RESULT).display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Status::Interrupted => {
            note!("interrupted; continue with: wrn train --resume {}", run.path().display());
            if options.stop.load(Ordering::SeqCst) {
                // 130: the conventional status of a process stopped by SIGINT.
                return Ok(ExitCode::from(130));
            }
            if args.max_steps.is_none() {
                bail!("the run stopped early without being asked to");
            }
            Ok(ExitCode::SUCCESS)
        }
        Status::Evaluated => bail!("training returned an evaluation, which only `wrn eval` writes"),
        Status::Diverged => bail!(
            "run diverged: {}. {} records it; it is not a result",
            result.divergence.as_deref().unwrap_or("the training loss became non-finite"),
            run.file(wrn_run::RESULT).display()
        ),
    }
}

/// The run folder as this rank uses it: rank 0 (or a process alone) holds and writes it, the others read.
fn folder(path: &std::path::Path, lead: bool) -> Result<RunDir> {
    Ok(if lead { RunDir::create(path)? } else { RunDir::replica(path) })
}

fn describe(w: &World) -> String {
    format!("rank {} of {} (local rank {}), store at {}:{}", w.rank, w.size, w.local_rank, w.master_addr, w.master_port)
}

/// `wrn train --nproc N`: this same command, without `--nproc`, as N ranks on this machine.
fn launch(n: usize) -> Result<ExitCode> {
    let mut args: Vec<std::ffi::OsString> = Vec::new();
    let mut given = std::env::args_os().skip(1);
    while let Some(arg) = given.next() {
        if arg == "--nproc" {
            given.next();
        } else if !arg.to_string_lossy().starts_with("--nproc=") {
            args.push(arg);
        }
    }
    let program = std::env::current_exe().context("finding this program to start the ranks")?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        flag.store(true, Ordering::SeqCst);
        note!("interrupt: every rank finishes its step, rank 0 writes a checkpoint, and all stop");
    })
    .context("cannot install the SIGINT/SIGTERM handler")?;
    let launched = world::launch_local(&world::Launch { program, args, ranks: n }, &stop)?;
    match launched.first_failure {
        None => Ok(ExitCode::SUCCESS),
        Some(rank) => {
            let code = launched.codes[rank];
            if code == Some(130) && stop.load(Ordering::SeqCst) {
                return Ok(ExitCode::from(130));
            }
            bail!(
                "rank {rank} of {n} {}; the ranks' messages above say why",
                code.map_or("was killed by a signal".into(), |c| format!("exited with status {c}"))
            )
        }
    }
}
