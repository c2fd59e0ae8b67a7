//! The run folder (contract 3, train -> report): everything a finished or interrupted run leaves behind,
//! readable without the code that wrote it.
//!
//! ```text
//! <run>/config.toml            the resolved experiment (re-runnable with `wrn train <run>/config.toml`)
//! <run>/environment.json       versions, libtorch, GPUs, threads, git commit (see `environment`)
//! <run>/metrics.csv            one row per finished epoch (columns: [`EpochMetrics`])
//! <run>/result.json            the outcome once the run ends ([`RunResult`]); absent while it runs
//! <run>/checkpoint.safetensors the latest checkpoint: `model.*`, `momentum.*` and `state.*` tensors
//! <run>/train.log              the log, appended
//! ```
//!
//! Every file except the log is written to a temporary name in the same folder, flushed to disk and
//! renamed over the old one, so a crash at any moment leaves the previous complete version in place.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::Tensor;

/// Errors of reading and writing a run folder.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Torch { path: PathBuf, source: tch::TchError },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::Io { path: path.to_path_buf(), source }
}

/// Writes `bytes` to `path` atomically: temporary file in the same folder, fsync, rename, fsync folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RunError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir).map_err(io(path))?;
    tmp.write_all(bytes).map_err(io(path))?;
    tmp.as_file().sync_all().map_err(io(path))?;
    tmp.persist(path).map_err(|e| RunError::Io { path: path.to_path_buf(), source: e.error })?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// One finished epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: u32,
    pub lr: f64,
    pub train_loss: f64,
    /// Top-1 training error in %, on the augmented batches seen during the epoch.
    pub train_error: f64,
    pub test_loss: f64,
    pub test_error: f64,
    pub test_top5_error: f64,
    /// Training images per second over the epoch (data waits included).
    pub images_per_second: f64,
    /// Fraction of the epoch's training time spent waiting for batches.
    pub data_wait_fraction: f64,
    pub epoch_seconds: f64,
    /// Images the data pipeline could not decode and replaced (ImageNet).
    pub decode_failures: u64,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Finished,
    /// Stopped by SIGINT/SIGTERM after writing a checkpoint; `wrn train --resume` continues it.
    Interrupted,
}

/// `result.json`: the outcome of a run.
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

/// A run folder.
#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
}

/// The training state a checkpoint restores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The 1-indexed epoch in progress (or the next one, when `step` is 0).
    pub epoch: u32,
    /// Training steps of that epoch already taken.
    pub step: usize,
}

pub const CHECKPOINT: &str = "checkpoint.safetensors";
const MODEL_PREFIX: &str = "model.";

impl RunDir {
    /// Creates (or opens) the folder.
    pub fn create(root: &Path) -> Result<RunDir, RunError> {
        std::fs::create_dir_all(root).map_err(io(root))?;
        Ok(RunDir { root: root.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    pub fn write_text(&self, name: &str, text: &str) -> Result<(), RunError> {
        write_atomic(&self.file(name), text.as_bytes())
    }

    pub fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<(), RunError> {
        let text = serde_json::to_string_pretty(value).expect("serialisable") + "\n";
        self.write_text(name, &text)
    }

    /// Rewrites `metrics.csv` with these rows.
    pub fn write_metrics(&self, rows: &[EpochMetrics]) -> Result<(), RunError> {
        let mut w = csv::Writer::from_writer(Vec::new());
        for row in rows {
            w.serialize(row).expect("metrics serialise");
        }
        if rows.is_empty() {
            w.write_record(METRIC_COLUMNS).expect("header");
        }
        self.write_text("metrics.csv", &String::from_utf8(w.into_inner().expect("in memory")).expect("utf-8"))
    }

    /// Reads `metrics.csv` (empty when absent).
    pub fn read_metrics(&self) -> Result<Vec<EpochMetrics>, RunError> {
        let path = self.file("metrics.csv");
        if !path.exists() {
            return Ok(Vec::new());
        }
        let mut r = csv::Reader::from_path(&path)
            .map_err(|e| RunError::Format { path: path.clone(), message: e.to_string() })?;
        r.deserialize()
            .map(|row| row.map_err(|e| RunError::Format { path: path.clone(), message: e.to_string() }))
            .collect()
    }

    /// Appends a line to `train.log`.
    pub fn log(&self, line: &str) -> Result<(), RunError> {
        let path = self.file("train.log");
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(io(&path))?;
        writeln!(f, "{line}").map_err(io(&path))
    }

    /// Writes the checkpoint: every variable of `vs`, the optimiser state, and the progress.
    pub fn save_checkpoint(
        &self,
        vs: &VarStore,
        optimiser: Vec<(String, Tensor)>,
        progress: Progress,
    ) -> Result<(), RunError> {
        let path = self.file(CHECKPOINT);
        let mut named: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .map(|(n, t)| (format!("{MODEL_PREFIX}{n}"), t.to_device(tch::Device::Cpu).contiguous()))
            .collect();
        named.extend(optimiser.into_iter().map(|(n, t)| (n, t.to_device(tch::Device::Cpu).contiguous())));
        named.push(("state.epoch".into(), Tensor::from(progress.epoch as i64)));
        named.push(("state.step".into(), Tensor::from(progress.step as i64)));
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-ckpt-")
            .suffix(".safetensors")
            .tempfile_in(&self.root)
            .map_err(io(&path))?;
        Tensor::write_safetensors(&named, tmp.path())
            .map_err(|source| RunError::Torch { path: path.clone(), source })?;
        tmp.as_file().sync_all().map_err(io(&path))?;
        tmp.persist(&path).map_err(|e| RunError::Io { path: path.clone(), source: e.error })?;
        Ok(())
    }

    /// Loads the checkpoint into `vs`; returns the optimiser state (by name) and the progress.
    pub fn load_checkpoint(&self, vs: &mut VarStore) -> Result<(HashMap<String, Tensor>, Progress), RunError> {
        let path = self.file(CHECKPOINT);
        let named = Tensor::read_safetensors(&path).map_err(|source| RunError::Torch { path: path.clone(), source })?;
        let mut rest = HashMap::new();
        let mut model = HashMap::new();
        for (name, t) in named {
            match name.strip_prefix(MODEL_PREFIX) {
                Some(n) => {
                    model.insert(n.to_string(), t);
                }
                None => {
                    rest.insert(name, t);
                }
            }
        }
        let format = |message: String| RunError::Format { path: path.clone(), message };
        let mut variables = vs.variables();
        for (name, var) in &mut variables {
            let saved = model
                .get(name)
                .ok_or_else(|| format(format!("no tensor for {name}: a checkpoint of another network?")))?;
            if saved.size() != var.size() {
                return Err(format(format!("{name} has shape {:?}, the network {:?}", saved.size(), var.size())));
            }
            tch::no_grad(|| var.copy_(saved));
        }
        let scalar = |key: &str| -> Result<i64, RunError> {
            rest.get(key).map(|t| t.int64_value(&[])).ok_or_else(|| format(format!("missing {key}")))
        };
        let progress = Progress { epoch: scalar("state.epoch")? as u32, step: scalar("state.step")? as usize };
        Ok((rest, progress))
    }

    pub fn has_checkpoint(&self) -> bool {
        self.file(CHECKPOINT).exists()
    }
}

/// The columns of `metrics.csv`, in order.
pub const METRIC_COLUMNS: [&str; 11] = [
    "epoch",
    "lr",
    "train_loss",
    "train_error",
    "test_loss",
    "test_error",
    "test_top5_error",
    "images_per_second",
    "data_wait_fraction",
    "epoch_seconds",
    "decode_failures",
];

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device};

    fn metrics(epoch: u32) -> EpochMetrics {
        EpochMetrics {
            epoch,
            lr: 0.1,
            train_loss: 2.0,
            train_error: 80.0,
            test_loss: 2.1,
            test_error: 81.5,
            test_top5_error: 40.0,
            images_per_second: 100.0,
            data_wait_fraction: 0.01,
            epoch_seconds: 3.5,
            decode_failures: 0,
        }
    }

    #[test]
    fn metrics_round_trip_with_a_stable_header() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(dir.path()).unwrap();
        run.write_metrics(&[]).unwrap();
        assert_eq!(std::fs::read_to_string(run.file("metrics.csv")).unwrap().trim(), METRIC_COLUMNS.join(","));
        run.write_metrics(&[metrics(1), metrics(2)]).unwrap();
        let text = std::fs::read_to_string(run.file("metrics.csv")).unwrap();
        assert_eq!(text.lines().next().unwrap(), METRIC_COLUMNS.join(","));
        assert_eq!(run.read_metrics().unwrap(), [metrics(1), metrics(2)]);
        // No temporary files are left behind.
        let names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert_eq!(names, ["metrics.csv"]);
    }

    #[test]
    fn a_result_reads_back_the_very_figures_written() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(dir.path()).unwrap();
        // Figures whose shortest decimal form a parser can miss by one ulp (1.0512586019999999 did).
        let result = RunResult {
            status: Status::Finished,
            dataset: "cifar10".into(),
            arch: "wrn-10-1".into(),
            seed: 1,
            epochs_planned: 4,
            epochs_done: 4,
            full_scale: false,
            parameters: 77_850,
            final_test_error: Some(52.08333333333333),
            final_test_top5_error: Some(4.1666666666666625),
            best_test_error: Some(0.1 + 0.2),
            median_epoch_seconds: Some(1.0512586019999999),
            device: "cpu".into(),
        };
        run.write_json("result.json", &result).unwrap();
        let back: RunResult = serde_json::from_str(&std::fs::read_to_string(run.file("result.json")).unwrap()).unwrap();
        assert_eq!(back, result);
    }

    #[test]
    fn a_checkpoint_restores_weights_optimiser_state_and_progress() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(dir.path()).unwrap();
        let vs = VarStore::new(Device::Cpu);
        let w = vs.root().var("w", &[3], nn::Init::Randn { mean: 0.0, stdev: 1.0 });
        let momentum = vec![("momentum.w".to_string(), Tensor::from_slice(&[1.0f32, 2.0, 3.0]))];
        run.save_checkpoint(&vs, momentum, Progress { epoch: 3, step: 17 }).unwrap();

        let mut fresh = VarStore::new(Device::Cpu);
        let w2 = fresh.root().var("w", &[3], nn::Init::Const(0.0));
        let (state, progress) = run.load_checkpoint(&mut fresh).unwrap();
        assert_eq!(progress, Progress { epoch: 3, step: 17 });
        assert!(w2.equal(&w));
        assert!(state["momentum.w"].equal(&Tensor::from_slice(&[1.0f32, 2.0, 3.0])));

        let mut other = VarStore::new(Device::Cpu);
        let _v = other.root().var("v", &[3], nn::Init::Const(0.0));
        let err = run.load_checkpoint(&mut other).unwrap_err().to_string();
        assert!(err.contains("no tensor for v"), "{err}");
    }

    #[test]
    fn a_failed_write_leaves_the_previous_file() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(dir.path()).unwrap();
        run.write_text("result.json", "first").unwrap();
        // A target that cannot be replaced (a non-empty directory) fails the rename; the old file stays.
        std::fs::create_dir(dir.path().join("blocked")).unwrap();
        std::fs::write(dir.path().join("blocked/x"), "").unwrap();
        assert!(write_atomic(&dir.path().join("blocked"), b"second").is_err());
        assert_eq!(std::fs::read_to_string(run.file("result.json")).unwrap(), "first");
        let leftovers = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with(".tmp-"));
        assert_eq!(leftovers.count(), 0);
    }
}
