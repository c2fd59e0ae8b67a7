//! `wrn eval`: evaluates weights (a checkpoint, a torchvision or official-port state dict, the authors'
//! exported WRN-50-2) on a prepared split into a run folder marked evaluated; with `--row`, beside the
//! row's trained runs, where `wrn report` shows it.

use std::path::PathBuf;

use anyhow::{bail, Result};
use wrn_train::config::Experiment;
use wrn_train::eval::{self, EvalOptions};
use wrn_train::run::RunDir;
use wrn_train::runtime::DeviceChoice;

#[derive(clap::Args)]
pub struct Args {
    /// The weights: a safetensors file (a run's checkpoint.safetensors, a state dict saved from
    /// torchvision or the official PyTorch port, or the authors' exported WRN-50-2).
    weights: PathBuf,
    /// Experiment file (TOML) naming the dataset and architecture; without one, the recipe with --set.
    config: Option<PathBuf>,
    /// A row of the paper's tables to evaluate for, as TABLE:ROW (e.g. t8:wrn-50-2-bottleneck): its
    /// dataset and architecture, and the result beside its runs, where `wrn report` shows it.
    #[arg(long, conflicts_with = "config")]
    row: Option<String>,
    /// Override a key of the experiment, e.g. --set data.dir=/data --set batch_size=250.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// A short name for the weights, as reports show it (letters, digits, ., _, -; default: the file's
    /// name without its extension).
    #[arg(long)]
    label: Option<String>,
    /// Folder of the run folders, for --row (default: runs/full).
    #[arg(long, default_value = "runs/full")]
    runs: PathBuf,
    /// The paper's tables, for --row (default: reports/tables).
    #[arg(long)]
    tables: Option<PathBuf>,
    /// The result's folder (default: <runs>/<row>/weights-<label> with --row, else runs/eval/<label>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Evaluate on this device (auto, cpu, cuda, cuda:N) instead of the experiment's.
    #[arg(long)]
    device: Option<DeviceChoice>,
}

pub fn run(args: Args) -> Result<()> {
    let stem = args.weights.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let label = args.label.clone().unwrap_or(stem);
    let Some(folder) = wrn_run::evaluated_folder(&label) else {
        bail!("--label '{label}' is not a plain name: use letters, digits, '.', '_' and '-'");
    };
    let (experiment, default_out) = match &args.row {
        Some(name) => {
            let dir = args.tables.clone().unwrap_or_else(wrn_tables::default_dir);
            let tables = wrn_tables::load_dir(&dir)?;
            let (_, row) = wrn_tables::find_row(&tables, name, &dir)?;
            let sets: Vec<String> = row.sets().into_iter().chain(args.sets.iter().cloned()).collect();
            let key = row.run_key().expect("a trainable row has a run key");
            (Experiment::resolve(None, &sets)?, args.runs.join(key).join(folder))
        }
        None => {
            let experiment = match &args.config {
                Some(path) => Experiment::load(path, &args.sets)?,
                None => Experiment::resolve(None, &args.sets)?,
            };
            (experiment, PathBuf::from("runs/eval").join(&label))
        }
    };
    let out = args.out.clone().unwrap_or(default_out);
    let run = RunDir::create_for(&out, "wrn eval")?;
    let options = EvalOptions {
        weights: args.weights.clone(),
        label,
        device: args.device,
        wrn_version: env!("CARGO_PKG_VERSION").into(),
        git_sha: env!("WRN_GIT_SHA").into(),
    };
    note!("result folder: {}", run.path().display());
    eval::evaluate_weights(&run, &experiment, &options, &crate::bars::progress())?;
    Ok(())
}
