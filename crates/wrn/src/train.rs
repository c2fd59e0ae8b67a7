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
}

pub fn run(args: Args) -> Result<ExitCode> {
    let mut options = TrainOptions::new(env!("CARGO_PKG_VERSION"), env!("WRN_GIT_SHA"));
    options.max_steps = args.max_steps;
    options.device = args.device;
    let (run, experiment) = match &args.resume {
        Some(dir) => {
            options.resume = true;
            let config = dir.join(CONFIG);
            if !config.exists() {
                bail!("{} is not a run folder: it has no {CONFIG}", dir.display());
            }
            let experiment = Experiment::load_complete(&config)?;
            // Holds the folder's lock until the run ends: a second `wrn train` of it is refused.
            (RunDir::create(dir)?, experiment)
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
            (RunDir::create(&out)?, experiment)
        }
    };

    let stop = options.stop.clone();
    ctrlc::set_handler(move || {
        if stop.swap(true, Ordering::SeqCst) {
            eprintln!("second interrupt: exiting without a checkpoint");
            std::process::exit(130);
        }
        eprintln!("interrupt: finishing this step and writing a checkpoint (interrupt again to exit at once)");
    })
    .context("cannot install the SIGINT/SIGTERM handler")?;

    eprintln!("run folder: {}", run.path().display());
    let result = trainer::train(&run, &experiment, &options, &crate::bars::progress())?;
    match result.status {
        Status::Finished => {
            eprintln!(
                "finished: test error {:.2}% after {} epochs ({}); results in {}",
                result.final_test_error.unwrap_or(f64::NAN),
                result.epochs_done,
                if result.full_scale { "full scale" } else { "reduced scale or custom data" },
                run.file(RESULT).display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Status::Interrupted => {
            eprintln!("interrupted; continue with: wrn train --resume {}", run.path().display());
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
