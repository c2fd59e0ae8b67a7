//! `result.json`: how a run ended.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Finished,
    /// Stopped by SIGINT/SIGTERM after writing a checkpoint; `wrn train --resume` continues it.
    Interrupted,
}

/// `result.json`: the outcome of a run. Readers ignore fields they do not know, so the file may grow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub status: Status,
    pub dataset: String,
    pub arch: String,
    pub seed: u64,
    pub epochs_planned: u32,
    pub epochs_done: u32,
    /// False when `scale` shrank the run or a custom manifest (e.g. synthetic data) replaced the dataset;
    /// such results are not comparable with the paper's.
    pub full_scale: bool,
    pub parameters: i64,
    /// Test error (%) after the last epoch, the figure the paper reports.
    pub final_test_error: Option<f64>,
    pub final_test_top5_error: Option<f64>,
    pub best_test_error: Option<f64>,
    pub median_epoch_seconds: Option<f64>,
    pub device: String,
}

impl RunResult {
    pub fn is_finished(&self) -> bool {
        self.status == Status::Finished
    }
}

/// The `status` of the result file at `path`, when it can be read.
pub(crate) fn status_of(path: &Path) -> Option<Status> {
    #[derive(Deserialize)]
    struct StatusOnly {
        status: Status,
    }
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str::<StatusOnly>(&text).ok().map(|r| r.status)
}
