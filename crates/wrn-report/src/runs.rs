//! Reading run folders (contract 3, through `wrn-run`, so the report never links the trainer):
//! `result.json` and `metrics.csv` under `<runs>/<run_key>/seed<N>/`.
//!
//! A seed folder is *finished* when its `result.json` says so and every planned epoch ran
//! ([`RunResult::is_finished`]); a folder without `result.json`, or with an interrupted one, is *in
//! progress* (training, or waiting for `wrn train --resume`); one whose `result.json` says "finished"
//! before its last planned epoch is *incomplete*; one that diverged is *diverged*; and one whose
//! `result.json` or `metrics.csv` cannot be read is *damaged*, naming the file and what is wrong. Only a
//! finished folder is ever a result; the others are shown as what they are.
//!
//! Beside the seed folders, `weights-<label>` folders hold weights `wrn eval` evaluated for the row
//! ([`read_evaluated`]): shown beside the paper, never counted with the trained runs.

use std::path::{Path, PathBuf};

use wrn_run::RunFolder;
pub use wrn_run::{EpochMetrics, RunResult, Status};

use crate::ReportError;

/// A file of a seed folder that cannot be read: the folder is shown as damaged, never as a result.
#[derive(Debug, Clone, PartialEq)]
pub struct Damage {
    /// The unreadable file.
    pub file: PathBuf,
    /// What is wrong with it, in words.
    pub problem: String,
}

/// Where a seed folder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    /// Finished every planned epoch: a result.
    Finished,
    /// No `result.json` yet, or an interrupted one: training, or waiting for `wrn train --resume`.
    InProgress,
    /// `result.json` says finished before the last planned epoch.
    Incomplete,
    /// The training loss became non-finite.
    Diverged,
    /// `result.json` or `metrics.csv` cannot be read.
    Damaged,
}

/// One seed's folder.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub seed: u32,
    pub dir: PathBuf,
    /// `None` while the run is in progress, or when its `result.json` is damaged.
    pub result: Option<RunResult>,
    /// Every finished epoch so far (empty when `metrics.csv` is absent or damaged).
    pub epochs: Vec<EpochMetrics>,
    /// The first file of the folder that cannot be read, if any.
    pub damage: Option<Damage>,
}

impl Run {
    /// A finished run: `result.json` with status finished and every planned epoch run.
    pub fn finished(&self) -> Option<&RunResult> {
        self.result.as_ref().filter(|r| self.damage.is_none() && r.is_finished())
    }

    /// Where the folder stands.
    pub fn kind(&self) -> RunKind {
        match (&self.damage, &self.result) {
            (Some(_), _) => RunKind::Damaged,
            (None, Some(r)) if r.status == Status::Diverged => RunKind::Diverged,
            (None, Some(r)) if r.is_finished() => RunKind::Finished,
            (None, Some(r)) if r.status == Status::Finished => RunKind::Incomplete,
            _ => RunKind::InProgress,
        }
    }
}

/// Every `seed<N>` folder under `<runs>/<run_key>`, sorted by seed; empty when the folder is absent. A
/// folder whose files cannot be read is returned as damaged ([`Run::damage`]) rather than failing.
pub fn read_runs(runs: &Path, run_key: &str) -> Result<Vec<Run>, ReportError> {
    let mut found: Vec<Run> = sub_folders(runs, run_key)?
        .into_iter()
        .filter_map(|(name, path)| {
            let seed = name.strip_prefix("seed")?.parse::<u32>().ok()?;
            Some(read_run(&path, seed))
        })
        .collect();
    found.sort_by_key(|r| r.seed);
    Ok(found)
}

/// The folders under `<runs>/<run_key>`, by name; none when it is absent.
fn sub_folders(runs: &Path, run_key: &str) -> Result<Vec<(String, PathBuf)>, ReportError> {
    let dir = runs.join(run_key);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| ReportError::Io { path: dir.clone(), source })?;
        if entry.path().is_dir() {
            found.push((entry.file_name().to_string_lossy().into_owned(), entry.path()));
        }
    }
    Ok(found)
}

/// Weights evaluated for a row by `wrn eval` (a `weights-<label>` folder).
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluated {
    pub label: String,
    pub dir: PathBuf,
    /// The evaluation, or why the folder's `result.json` is not one.
    pub result: Result<RunResult, Damage>,
}

/// Every `weights-<label>` folder under `<runs>/<run_key>`, sorted by label; a folder whose `result.json`
/// is absent, unreadable or not an evaluation is returned with what is wrong.
pub fn read_evaluated(runs: &Path, run_key: &str) -> Result<Vec<Evaluated>, ReportError> {
    let mut found = Vec::new();
    for (name, path) in sub_folders(runs, run_key)? {
        let Some(label) = name.strip_prefix(wrn_run::EVALUATED_PREFIX) else { continue };
        let folder = RunFolder::at(&path);
        let result = match folder.read_result() {
            Ok(Some(r)) if r.status == Status::Evaluated && r.evaluation.is_some() => Ok(r),
            Ok(Some(_)) => Err(Damage {
                file: folder.file(wrn_run::RESULT),
                problem: "not an evaluation written by `wrn eval`".into(),
            }),
            Ok(None) => {
                Err(Damage { file: folder.file(wrn_run::RESULT), problem: "absent: evaluating, or stopped".into() })
            }
            Err(e) => Err(damage(e)),
        };
        found.push(Evaluated { label: label.to_string(), dir: path, result });
    }
    found.sort_by(|a, b| a.label.cmp(&b.label));
    Ok(found)
}

/// One seed folder; a file that cannot be read makes it damaged.
pub fn read_run(dir: &Path, seed: u32) -> Run {
    let folder = RunFolder::at(dir);
    let mut run = Run { seed, dir: dir.to_path_buf(), result: None, epochs: Vec::new(), damage: None };
    match folder.read_result() {
        Ok(result) => run.result = result,
        Err(e) => run.damage = Some(damage(e)),
    }
    match folder.read_metrics() {
        Ok(epochs) => run.epochs = epochs,
        Err(e) => run.damage = run.damage.take().or(Some(damage(e))),
    }
    run
}

fn damage(e: wrn_run::Error) -> Damage {
    match e {
        wrn_run::Error::Io { path, source } => Damage { file: path, problem: source.to_string() },
        wrn_run::Error::Format { path, message } => Damage { file: path, problem: message },
    }
}
