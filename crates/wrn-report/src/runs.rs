//! Reading run folders (contract 3, through `wrn-run`, so the report never links the trainer):
//! `result.json` and `metrics.csv` under `<runs>/<run_key>/seed<N>/`.
//!
//! A seed folder is *finished* when its `result.json` says so ([`Status::Finished`]); a folder without
//! `result.json`, or with an interrupted one, is *in progress* (training, or waiting for
//! `wrn train --resume`), never a result.

use std::path::{Path, PathBuf};

use wrn_run::RunFolder;
pub use wrn_run::{EpochMetrics, RunResult, Status};

use crate::ReportError;

/// One seed's folder.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub seed: u32,
    pub dir: PathBuf,
    /// `None` while the run is in progress.
    pub result: Option<RunResult>,
    /// Every finished epoch so far (empty when `metrics.csv` is absent).
    pub epochs: Vec<EpochMetrics>,
}

impl Run {
    /// A finished run: `result.json` with status finished.
    pub fn finished(&self) -> Option<&RunResult> {
        self.result.as_ref().filter(|r| r.is_finished())
    }
}

/// Every `seed<N>` folder under `<runs>/<run_key>`, sorted by seed; empty when the folder is absent.
pub fn read_runs(runs: &Path, run_key: &str) -> Result<Vec<Run>, ReportError> {
    let dir = runs.join(run_key);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| ReportError::Io { path: dir.clone(), source })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(seed) = name.strip_prefix("seed").and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if entry.path().is_dir() {
            found.push(read_run(&entry.path(), seed)?);
        }
    }
    found.sort_by_key(|r| r.seed);
    Ok(found)
}

/// One seed folder.
pub fn read_run(dir: &Path, seed: u32) -> Result<Run, ReportError> {
    let folder = RunFolder::at(dir);
    Ok(Run { seed, dir: dir.to_path_buf(), result: folder.read_result()?, epochs: folder.read_metrics()? })
}
