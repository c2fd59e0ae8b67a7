//! Planning: which runs the chosen tables need, at which scale, and the state each is in on disk.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use wrn_tables::Table;

/// What can stop a sweep before it starts.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("bad --scale '{0}': expected full, smoke, or a fraction of the epochs in (0, 1] such as 0.1")]
    Scale(String),
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot create the runs folder {path}: {source}")]
    Create { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Invalid(String),
    #[error(
        "GPU {index} of the sweep is beyond its CUDA_VISIBLE_DEVICES='{visible}', which makes {count} GPU(s) \
         visible: --gpus counts the GPUs of that list from 0"
    )]
    GpuBeyondVisible { index: u32, visible: String, count: usize },
    #[error(
        "the NVIDIA driver reports {gpus} GPU(s) but CUDA cannot be used: {reason}; run `wrn doctor` for the \
         cause, or pass --gpus none to train on the CPU"
    )]
    CudaUnusable { gpus: usize, reason: String },
    #[error("the task asks for cuda but CUDA cannot be used here: {0}; run `wrn doctor` on this node for the cause")]
    CudaRequired(String),
    #[error(
        "--gpus {gpus}: CUDA cannot be used: {reason}; run `wrn doctor` for the cause, or pass --gpus none to \
         train on the CPU"
    )]
    GpusUnusable { gpus: String, reason: String },
    #[error("--gpus names GPU {index}, but the sweep sees {count} GPU(s): --gpus counts them from 0")]
    NoSuchGpu { index: u32, count: usize },
    #[error("cannot estimate the time of row {rows}: {source}")]
    Price { rows: String, source: PriceError },
    #[error(
        "--set {0}: a sweep trains the tables' rows as the paper did, and only settings that do not change what \
         is trained may be added ({allowed}); put other settings in a table file's [train] or rows, or train the \
         variant with `wrn train`",
        allowed = ALLOWED.join(", ")
    )]
    ChangesTraining(String),
    /// Another sweep (or process) holds the runs folder.
    #[error(transparent)]
    Locked(#[from] wrn_fs::LockError),
}

/// Why a run could not be priced, in the cost model's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct PriceError {
    pub reason: String,
}

/// How much of the paper's schedule each run trains.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SweepScale {
    /// The paper's recipe in full.
    Full,
    /// A few steps of every run on a small subset: proves that every row trains.
    Smoke,
    /// This fraction of the epochs (milestones scaled alike), on all the data.
    Fraction(f64),
}

/// Epoch fraction and subsets of a smoke run: 1% of the epochs (at least one), 256 training and 256
/// test images.
const SMOKE: (f64, usize, usize) = (0.01, 256, 256);

impl SweepScale {
    /// The `scale.*` settings of `wrn train` for this scale.
    pub fn sets(self) -> Vec<String> {
        match self {
            SweepScale::Full => vec![],
            SweepScale::Smoke => vec![
                format!("scale.epochs={}", SMOKE.0),
                format!("scale.train_subset={}", SMOKE.1),
                format!("scale.test_subset={}", SMOKE.2),
            ],
            SweepScale::Fraction(f) => vec![format!("scale.epochs={f}")],
        }
    }

    /// The `[scale]` a run folder's `config.toml` holds for this scale.
    fn expected(self) -> (f64, Option<usize>, Option<usize>) {
        match self {
            SweepScale::Full => (1.0, None, None),
            SweepScale::Smoke => (SMOKE.0, Some(SMOKE.1), Some(SMOKE.2)),
            SweepScale::Fraction(f) => (f, None, None),
        }
    }

    pub fn is_full(self) -> bool {
        self == SweepScale::Full
    }
}

impl FromStr for SweepScale {
    type Err = SweepError;
    fn from_str(s: &str) -> Result<SweepScale, SweepError> {
        match s {
            "full" => Ok(SweepScale::Full),
            "smoke" => Ok(SweepScale::Smoke),
            _ => match s.parse::<f64>() {
                Ok(1.0) => Ok(SweepScale::Full),
                Ok(f) if f > 0.0 && f < 1.0 => Ok(SweepScale::Fraction(f)),
                _ => Err(SweepError::Scale(s.into())),
            },
        }
    }
}

impl fmt::Display for SweepScale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SweepScale::Full => f.write_str("full"),
            SweepScale::Smoke => f.write_str("smoke"),
            SweepScale::Fraction(x) => write!(f, "{x}"),
        }
    }
}

/// Where a run stands, read from its folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// No folder, or one without a checkpoint or result: trained from the start.
    New,
    /// A checkpoint without a finished result: `wrn train --resume` continues it.
    Resume,
    /// `result.json` says finished: skipped.
    Finished,
    /// The folder holds a run of another configuration or scale: left alone and reported.
    Conflict(String),
}

/// One run of the sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedRun {
    /// `table/row` of every table row this run serves (rows of two tables may share a run).
    pub rows: Vec<String>,
    pub dataset: String,
    pub arch: String,
    pub seed: u32,
    pub dir: PathBuf,
    /// `wrn train --set` arguments (without `--set`), seed and scale included; the device is the slot's.
    pub sets: Vec<String>,
    pub state: RunState,
}

/// What to plan.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    pub runs: PathBuf,
    pub scale: SweepScale,
    /// Seeds per row instead of each table's (1..=N).
    pub seeds: Option<u32>,
    /// Only rows of these datasets (all when empty).
    pub datasets: Vec<String>,
    /// Only rows whose id or label contains one of these (all when empty).
    pub rows: Vec<String>,
    /// `--set` arguments for every run that do not change what is trained (data directory, manifest…).
    pub extra: Vec<String>,
}

/// The runs of a sweep, each once.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Plan {
    pub runs: Vec<PlannedRun>,
}

impl Plan {
    pub fn count(&self, state: &RunState) -> usize {
        self.runs.iter().filter(|r| &r.state == state).count()
    }

    /// Runs with work to do (new or to resume).
    pub fn pending(&self) -> impl Iterator<Item = &PlannedRun> {
        self.runs.iter().filter(|r| matches!(r.state, RunState::New | RunState::Resume))
    }

    pub fn conflicts(&self) -> impl Iterator<Item = &PlannedRun> {
        self.runs.iter().filter(|r| matches!(r.state, RunState::Conflict(_)))
    }
}

/// The `--set` keys a sweep may add to every run (`*` ends a prefix): none changes what is trained (a
/// custom manifest makes a run reduced-scale, which the report says).
const ALLOWED: [&str; 6] =
    ["data.*", "device", "channels_last", "cuda_graphs", "checkpoint_minutes", "checkpoint_steps"];

/// Whether `--set key=value` leaves what is trained as it is.
fn leaves_training_alone(set: &str) -> bool {
    let key = set.split_once('=').map_or(set, |(k, _)| k).trim();
    ALLOWED.iter().any(|a| a.strip_suffix('*').map_or(key == *a, |prefix| key.starts_with(prefix)))
}

/// Works out the runs of `tables` and reads the state of each from `options.runs`.
pub fn plan(tables: &[&Table], options: &PlanOptions) -> Result<Plan, SweepError> {
    if let Some(set) = options.extra.iter().find(|s| !leaves_training_alone(s)) {
        return Err(SweepError::ChangesTraining(set.clone()));
    }
    // A filter that selects nothing is a typo (`--dataset cifar-10`), not an empty sweep.
    let trainable = || tables.iter().flat_map(|t| t.trainable());
    for dataset in &options.datasets {
        if !trainable().any(|r| &r.dataset == dataset) {
            let mut there: Vec<&str> = trainable().map(|r| r.dataset.as_str()).collect();
            there.sort_unstable();
            there.dedup();
            return Err(SweepError::Invalid(format!(
                "--dataset {dataset}: no row of the chosen tables trains on it (their datasets: {})",
                there.join(", ")
            )));
        }
    }
    for text in &options.rows {
        if !trainable().any(|r| r.id.contains(text.as_str()) || r.label.contains(text.as_str())) {
            return Err(SweepError::Invalid(format!(
                "--row {text}: no row id or label of the chosen tables contains it (`wrn sweep --table T --dry-run` \
                 lists them)"
            )));
        }
    }
    let mut by_dir: BTreeMap<PathBuf, usize> = BTreeMap::new();
    let mut runs: Vec<PlannedRun> = Vec::new();
    for table in tables {
        for row in table.trainable() {
            if !options.datasets.is_empty() && !options.datasets.contains(&row.dataset) {
                continue;
            }
            if !options.rows.is_empty() && !options.rows.iter().any(|p| row.id.contains(p) || row.label.contains(p)) {
                continue;
            }
            let seeds = options.seeds.unwrap_or(row.seeds);
            for seed in 1..=seeds {
                let dir = row.run_dir(&options.runs, seed).expect("trainable rows have a run key");
                let name = format!("{}/{}", table.id, row.id);
                if let Some(&i) = by_dir.get(&dir) {
                    runs[i].rows.push(name);
                    continue;
                }
                let mut sets = row.sets();
                sets.push(format!("seed={seed}"));
                sets.extend(options.scale.sets());
                sets.extend(options.extra.iter().cloned());
                let state = state_of(&dir, row, options.scale)?;
                by_dir.insert(dir.clone(), runs.len());
                runs.push(PlannedRun {
                    rows: vec![name],
                    dataset: row.dataset.clone(),
                    arch: row.arch.clone().unwrap_or_default(),
                    seed,
                    dir,
                    sets,
                    state,
                });
            }
        }
    }
    Ok(Plan { runs })
}

/// What a whole run takes: its training seconds and its epochs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunCost {
    pub seconds: f64,
    pub epochs: u32,
}

impl RunCost {
    /// The part of it still to train after `done` epochs.
    pub fn left_after(self, done: usize) -> f64 {
        let epochs = self.epochs.max(1) as f64;
        self.seconds * ((epochs - done as f64) / epochs).clamp(0.0, 1.0)
    }
}

/// A run's cost as measured by the finished runs of the same row (other seeds) that trained on the same
/// kind of device (`on_gpu`), if any: the median of their device time (a median epoch's seconds times the
/// ranks that trained it at once) times their planned epochs.
pub fn measured_cost(run: &PlannedRun, on_gpu: bool) -> Option<RunCost> {
    let parent = run.dir.parent()?;
    let finished: Vec<(f64, u32)> = std::fs::read_dir(parent)
        .ok()?
        .filter_map(|e| wrn_run::RunFolder::at(&e.ok()?.path()).read_result().ok().flatten())
        .filter(|r| r.is_finished() && r.on_gpu() == on_gpu)
        .filter_map(|r| Some((r.device_seconds_per_epoch()? * f64::from(r.epochs_planned), r.epochs_planned)))
        .collect();
    let seconds = wrn_run::median(&finished.iter().map(|(s, _)| *s).collect::<Vec<_>>())?;
    Some(RunCost { seconds, epochs: finished[0].1 })
}

/// The epochs a run folder has finished (the rows of its `metrics.csv`).
pub fn epochs_done(dir: &Path) -> usize {
    wrn_run::RunFolder::at(dir).read_metrics().map_or(0, |m| m.len())
}

#[derive(Deserialize)]
struct ConfigFile {
    dataset: String,
    arch: String,
    seed: u64,
    scale: ScaleFile,
}

#[derive(Deserialize)]
struct ScaleFile {
    epochs: f64,
    train_subset: Option<usize>,
    test_subset: Option<usize>,
}

/// The state of a run folder, checking that what it holds is the run asked for.
fn state_of(dir: &Path, row: &wrn_tables::Row, scale: SweepScale) -> Result<RunState, SweepError> {
    let config_path = dir.join(wrn_run::CONFIG);
    if !config_path.exists() {
        return Ok(RunState::New);
    }
    let io = |source| SweepError::Io { path: config_path.clone(), source };
    let text = std::fs::read_to_string(&config_path).map_err(io)?;
    let config: ConfigFile = match toml::from_str(&text) {
        Ok(c) => c,
        Err(e) => return Ok(RunState::Conflict(format!("{} does not parse: {}", config_path.display(), e.message()))),
    };
    let seed: u64 = dir
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("seed"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    if config.dataset != row.dataset || Some(&config.arch) != row.arch.as_ref() || config.seed != seed {
        return Ok(RunState::Conflict(format!(
            "{} holds {} {} seed {}, not this row's run",
            dir.display(),
            config.dataset,
            config.arch,
            config.seed
        )));
    }
    let got = (config.scale.epochs, config.scale.train_subset, config.scale.test_subset);
    if got != scale.expected() {
        return Ok(RunState::Conflict(format!(
            "{} was trained at another scale (scale.epochs = {}, subsets {:?}/{:?}); sweep at that scale or \
             into another --runs folder",
            dir.display(),
            got.0,
            got.1,
            got.2
        )));
    }
    Ok(RunState::of(dir))
}

impl RunState {
    /// The state of the run folder `dir` (see [`wrn_run::progress_of`]); a diverged run is left alone and
    /// reported, never trained again or resumed on its own.
    pub fn of(dir: &Path) -> RunState {
        match wrn_run::progress_of(dir) {
            wrn_run::Progress::New => RunState::New,
            wrn_run::Progress::Resume => RunState::Resume,
            wrn_run::Progress::Finished => RunState::Finished,
            wrn_run::Progress::Diverged => RunState::Conflict(format!(
                "{} diverged (its training loss became non-finite; see {}): remove the folder to train it again",
                dir.display(),
                dir.join(wrn_run::TRAIN_LOG).display()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wrn_run::RunResult;

    const TABLE: &str = r#"
title = "t"
source = "s"
statistic = "median of 5 runs"
seeds = 2
[columns]
test_error = "%"
[train]
dropout = 0.0
[[row]]
id = "a"
label = "WRN-10-1"
dataset = "cifar10"
arch = "wrn-10-1"
[[row]]
id = "b"
label = "WRN-10-2"
dataset = "cifar100"
arch = "wrn-10-2"
seeds = 1
[[row]]
id = "ref"
label = "NIN"
dataset = "cifar10"
published = { test_error = 8.81 }
reference = "Lin et al."
"#;

    fn table(id: &str) -> Table {
        Table::parse(id, Path::new("x.toml"), TABLE).unwrap()
    }

    fn options(runs: &Path, scale: SweepScale) -> PlanOptions {
        PlanOptions {
            runs: runs.into(),
            scale,
            seeds: None,
            datasets: vec![],
            rows: vec![],
            extra: vec!["data.dir=/d".into()],
        }
    }

    /// A finished run's `result.json`.
    const FINISHED: &str = r#"{"status": "finished", "dataset": "cifar10", "arch": "wrn-10-1", "seed": 1,
        "epochs_planned": 1, "epochs_done": 1, "full_scale": false, "parameters": 1, "device": "cpu",
        "final_test_error": 5.0}"#;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(name), text).unwrap();
    }

    fn config(dataset: &str, arch: &str, seed: u32, epochs: f64) -> String {
        format!("dataset = \"{dataset}\"\narch = \"{arch}\"\nseed = {seed}\n[scale]\nepochs = {epochs}\n")
    }

    #[test]
    fn scales_parse_and_print() {
        assert_eq!("full".parse::<SweepScale>().unwrap(), SweepScale::Full);
        assert_eq!("1".parse::<SweepScale>().unwrap(), SweepScale::Full);
        assert_eq!("0.25".parse::<SweepScale>().unwrap(), SweepScale::Fraction(0.25));
        assert_eq!(SweepScale::Fraction(0.25).to_string(), "0.25");
        assert!("2".parse::<SweepScale>().unwrap_err().to_string().contains("expected full, smoke"));
        assert_eq!(SweepScale::Smoke.sets(), ["scale.epochs=0.01", "scale.train_subset=256", "scale.test_subset=256"]);
    }

    #[test]
    fn settings_added_to_every_run_may_not_change_what_is_trained() {
        let dir = tempfile::tempdir().unwrap();
        let t = table("t");
        let mut o = options(dir.path(), SweepScale::Smoke);
        o.extra = ["data.dir=/d", "data.workers=4", "device=cuda:1", "checkpoint_minutes=5"].map(String::from).to_vec();
        assert!(plan(&[&t], &o).is_ok());
        for changes in ["precision=bf16", "batch_size=64", "optimizer.lr=0.05", "scale.epochs=0.5", "seed=3"] {
            o.extra = vec!["data.dir=/d".into(), changes.into()];
            let err = plan(&[&t], &o).unwrap_err().to_string();
            assert!(err.starts_with(&format!("--set {changes}: a sweep trains the tables' rows")), "{err}");
            assert!(err.contains("table file") && err.contains("`wrn train`"), "{err}");
        }
    }

    #[test]
    fn rows_times_seeds_each_once_with_their_settings() {
        let dir = tempfile::tempdir().unwrap();
        let (t1, t2) = (table("t1"), table("t2"));
        let plan = plan(&[&t1, &t2], &options(dir.path(), SweepScale::Smoke)).unwrap();
        // 2 seeds of a + 1 of b; the second table trains the same runs and adds none.
        assert_eq!(plan.runs.len(), 3);
        assert_eq!(plan.runs[0].rows, ["t1/a", "t2/a"]);
        assert_eq!(plan.runs[1].seed, 2);
        assert_eq!(plan.runs[2].dir, dir.path().join("cifar100/wrn-10-2,dropout=0/seed1"));
        assert_eq!(
            plan.runs[0].sets,
            [
                "dataset=cifar10",
                "arch=wrn-10-1",
                "dropout=0.0",
                "seed=1",
                "scale.epochs=0.01",
                "scale.train_subset=256",
                "scale.test_subset=256",
                "data.dir=/d"
            ]
        );
        assert!(plan.runs.iter().all(|r| r.state == RunState::New));
        let mut only = options(dir.path(), SweepScale::Full);
        only.datasets = vec!["cifar100".into()];
        only.seeds = Some(3);
        let p = super::plan(&[&t1], &only).unwrap();
        assert_eq!((p.runs.len(), p.runs[2].seed), (3, 3));
        only.datasets.clear();
        only.rows = vec!["WRN-10-1".into()];
        let p = super::plan(&[&t1], &only).unwrap();
        assert_eq!(p.runs.len(), 3);
        assert!(p.runs.iter().all(|r| r.arch == "wrn-10-1"));
        // A filter that selects nothing is an error naming it, never an empty plan.
        only.rows = vec!["WRN-10-9".into()];
        let err = super::plan(&[&t1], &only).unwrap_err().to_string();
        assert!(err.starts_with("--row WRN-10-9: no row id or label"), "{err}");
        only.rows.clear();
        only.datasets = vec!["cifar-10".into()];
        let err = super::plan(&[&t1], &only).unwrap_err().to_string();
        assert!(
            err.starts_with("--dataset cifar-10: no row of the chosen tables trains on it (their datasets: cifar10"),
            "{err}"
        );
    }

    #[test]
    fn measured_time_is_the_median_over_the_rows_finished_seeds() {
        let dir = tempfile::tempdir().unwrap();
        let t = table("t");
        let plan = plan(&[&t], &options(dir.path(), SweepScale::Full)).unwrap();
        let run = &plan.runs[1];
        assert_eq!(measured_cost(run, false), None);
        let result = |seed: u64, status: wrn_run::Status, seconds: f64| RunResult {
            status,
            dataset: "cifar10".into(),
            arch: "wrn-10-1".into(),
            seed,
            epochs_planned: 10,
            epochs_done: 10,
            full_scale: true,
            parameters: 1,
            final_test_error: Some(5.0),
            final_test_top5_error: None,
            best_test_error: Some(5.0),
            median_epoch_seconds: Some(seconds),
            device: "cpu".into(),
            ranks: None,
            divergence: None,
            recipe_changes: Some(Default::default()),
            precision: None,
            evaluation: None,
        };
        let seeds = run.dir.parent().unwrap();
        for (seed, status, seconds) in [
            (3, wrn_run::Status::Finished, 2.0),
            (4, wrn_run::Status::Finished, 4.0),
            (5, wrn_run::Status::Interrupted, 9.0),
        ] {
            let folder = wrn_run::RunFolder::create(&seeds.join(format!("seed{seed}"))).unwrap();
            folder.write_result(&result(seed, status, seconds)).unwrap();
        }
        // Two finished seeds: the mean of the two, times the planned epochs; the interrupted one is not counted.
        assert_eq!(measured_cost(run, false), Some(RunCost { seconds: 30.0, epochs: 10 }));
        // Seeds trained on the CPU say nothing of a GPU's time; one trained over 4 GPUs took 4 GPUs' time.
        assert_eq!(measured_cost(run, true), None);
        let over_four = RunResult {
            device: "cuda × 4 ranks (a GPU each)".into(),
            ranks: Some(4),
            ..result(6, wrn_run::Status::Finished, 0.5)
        };
        wrn_run::RunFolder::create(&seeds.join("seed6")).unwrap().write_result(&over_four).unwrap();
        assert_eq!(measured_cost(run, true), Some(RunCost { seconds: 20.0, epochs: 10 }));
        // What is left of a run stopped after some epochs, never below nothing.
        let cost = RunCost { seconds: 30.0, epochs: 10 };
        assert_eq!(
            (cost.left_after(0), cost.left_after(4), cost.left_after(10), cost.left_after(12)),
            (30.0, 18.0, 0.0, 0.0)
        );
    }

    #[test]
    fn states_come_from_the_folders() {
        let dir = tempfile::tempdir().unwrap();
        let t = table("t");
        let runs = dir.path();
        let a1 = runs.join("cifar10/wrn-10-1,dropout=0/seed1");
        let a2 = runs.join("cifar10/wrn-10-1,dropout=0/seed2");
        let b1 = runs.join("cifar100/wrn-10-2,dropout=0/seed1");
        write(&a1, "config.toml", &config("cifar10", "wrn-10-1", 1, 0.01));
        write(&a1, "result.json", FINISHED);
        write(&a2, "config.toml", &config("cifar10", "wrn-10-1", 2, 0.01));
        write(&a2, "checkpoint.safetensors", "");
        write(&b1, "config.toml", &config("cifar100", "wrn-10-2", 1, 0.5));
        let smoke = |s: &str| s.replace("epochs = 0.01", "epochs = 0.01\ntrain_subset = 256\ntest_subset = 256");
        write(&a1, "config.toml", &smoke(&config("cifar10", "wrn-10-1", 1, 0.01)));
        write(&a2, "config.toml", &smoke(&config("cifar10", "wrn-10-1", 2, 0.01)));
        let plan = plan(&[&t], &options(runs, SweepScale::Smoke)).unwrap();
        assert_eq!(plan.runs[0].state, RunState::Finished);
        assert_eq!(plan.runs[1].state, RunState::Resume);
        let RunState::Conflict(why) = &plan.runs[2].state else { panic!("{:?}", plan.runs[2].state) };
        assert!(why.contains("another scale (scale.epochs = 0.5"), "{why}");
        assert_eq!((plan.count(&RunState::Finished), plan.pending().count(), plan.conflicts().count()), (1, 1, 1));
        // An interrupted result with a checkpoint is resumed; a folder of another run is a conflict.
        write(&a1, "result.json", r#"{"status": "interrupted"}"#);
        write(&a1, "checkpoint.safetensors", "");
        write(&a2, "config.toml", &smoke(&config("cifar10", "wrn-16-1", 2, 0.01)));
        let plan = super::plan(&[&t], &options(runs, SweepScale::Smoke)).unwrap();
        assert_eq!(plan.runs[0].state, RunState::Resume);
        assert!(matches!(&plan.runs[1].state, RunState::Conflict(w) if w.contains("holds cifar10 wrn-16-1 seed 2")));
    }
}
