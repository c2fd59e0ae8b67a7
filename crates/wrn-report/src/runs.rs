//! Reading run folders (contract 3) as plain files: `result.json` and `metrics.csv` under
//! `<runs>/<run_key>/seed<N>/`, with types of our own so that the report never links the trainer.
//!
//! A seed folder is *finished* when its `result.json` says `"status": "finished"`; a folder without
//! `result.json`, or with `"status": "interrupted"`, is *in progress* (training, or waiting for
//! `wrn train --resume`), never a result.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::ReportError;

/// `result.json`, the fields the report uses (unknown fields are ignored: the file may grow).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RunResult {
    pub status: String,
    pub dataset: String,
    pub arch: String,
    pub seed: u64,
    pub epochs_planned: u32,
    pub epochs_done: u32,
    /// False for reduced-scale runs and for runs on other data (e.g. synthetic): not comparable with the
    /// paper.
    pub full_scale: bool,
    pub parameters: i64,
    pub final_test_error: Option<f64>,
    pub final_test_top5_error: Option<f64>,
    pub best_test_error: Option<f64>,
    pub median_epoch_seconds: Option<f64>,
    pub device: String,
}

/// One row of `metrics.csv` (the columns the report plots; others are ignored).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Epoch {
    pub epoch: u32,
    pub test_error: f64,
    pub test_top5_error: f64,
    pub epoch_seconds: f64,
}

/// One seed's folder.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub seed: u32,
    pub dir: PathBuf,
    /// `None` while the run is in progress.
    pub result: Option<RunResult>,
    /// Every finished epoch so far (empty when `metrics.csv` is absent).
    pub epochs: Vec<Epoch>,
}

impl Run {
    /// A finished run: `result.json` with status "finished".
    pub fn finished(&self) -> Option<&RunResult> {
        self.result.as_ref().filter(|r| r.status == "finished")
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
    let result_path = dir.join("result.json");
    let result = match std::fs::read_to_string(&result_path) {
        Ok(text) => Some(
            serde_json::from_str::<RunResult>(&text)
                .map_err(|e| ReportError::Format { path: result_path.clone(), message: e.to_string() })?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => return Err(ReportError::Io { path: result_path, source }),
    };
    let metrics_path = dir.join("metrics.csv");
    let epochs = if metrics_path.exists() {
        let format = |e: csv::Error| ReportError::Format { path: metrics_path.clone(), message: e.to_string() };
        let mut reader = csv::Reader::from_path(&metrics_path).map_err(format)?;
        reader.deserialize().collect::<Result<Vec<Epoch>, _>>().map_err(format)?
    } else {
        Vec::new()
    };
    Ok(Run { seed, dir: dir.to_path_buf(), result, epochs })
}
