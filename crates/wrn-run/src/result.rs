//! `result.json`: how a run ended.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Finished,
    /// Stopped by SIGINT/SIGTERM after writing a checkpoint; `wrn train --resume` continues it.
    Interrupted,
    /// The training loss became NaN or infinite: not a result. The checkpoint holds the last state checked
    /// finite, and `divergence` says when.
    Diverged,
    /// Weights evaluated by `wrn eval`, not trained here: shown beside the paper, never as a trained run.
    /// `evaluation` says which weights and what was measured.
    Evaluated,
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
    /// The processes the run trained over when more than one (`wrn train --nproc`, torchrun, Slurm), each
    /// on a device of its own: `median_epoch_seconds` is the time of all of them at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranks: Option<u32>,
    /// For a diverged run: where the loss was found non-finite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub divergence: Option<String>,
    /// The settings in which the run departs from the paper's recipe for its dataset, by dotted key
    /// (`preprocessing`, `optimizer.lr`, `precision`, …), with their values; the seed, the device, the data
    /// location and the checkpoints are not settings of the recipe, and `scale` is `full_scale`'s. A
    /// report judges a run only when each of these is one of its table row's settings. Absent in a result
    /// written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe_changes: Option<BTreeMap<String, serde_json::Value>>,
    /// The arithmetic precision of the forward and backward passes (`fp32`, `bf16`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<String>,
    /// For weights evaluated by `wrn eval` (status `evaluated`): which weights, and what was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<Evaluation>,
}

/// What `wrn eval` measured, and on which weights. The error rates are the result's
/// `final_test_error` and `final_test_top5_error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// A short name for the weights (`torchvision-v1`, `authors`, ...), as the report shows it.
    pub label: String,
    /// The weights file as given, and the SHA-256 of its bytes.
    pub weights: String,
    pub weights_sha256: String,
    /// How the file names its tensors: `checkpoint` (a wrn run's checkpoint) or `state-dict` (a
    /// safetensors state dict: torchvision's names for the ImageNet networks, the official PyTorch
    /// port's for the CIFAR ones).
    pub format: String,
    /// The prepared split evaluated, and how many of its images.
    pub split: String,
    pub images: u64,
    /// Mean cross-entropy loss over those images.
    pub loss: f64,
    pub images_per_second: f64,
}

impl RunResult {
    /// Finished, with every planned epoch run: the only kind of run that is a result.
    pub fn is_finished(&self) -> bool {
        self.status == Status::Finished && self.epochs_done >= self.epochs_planned
    }

    /// Why the figures cannot be a run's, if they cannot: an error rate that is not a percentage, a finished
    /// run without its test error, an epoch time that is negative or not finite, more epochs done than
    /// planned. Such a file is read as damaged, never as a result.
    pub fn implausible(&self) -> Option<String> {
        let rates = [
            ("final_test_error", self.final_test_error),
            ("final_test_top5_error", self.final_test_top5_error),
            ("best_test_error", self.best_test_error),
        ];
        if let Some((name, v)) =
            rates.iter().find_map(|(n, v)| v.filter(|v| !(0.0..=100.0).contains(v)).map(|v| (n, v)))
        {
            let v = if v.abs() < 1e6 { format!("{v}") } else { format!("{v:e}") };
            return Some(format!("{name} is {v}, not a percentage"));
        }
        if self.status == Status::Finished && self.final_test_error.is_none() {
            return Some("a finished run without its final_test_error".into());
        }
        if let Some(s) = self.median_epoch_seconds.filter(|s| !s.is_finite() || *s < 0.0) {
            return Some(format!("median_epoch_seconds is {s}"));
        }
        if self.epochs_done > self.epochs_planned {
            return Some(format!("{} epochs done of {} planned", self.epochs_done, self.epochs_planned));
        }
        None
    }

    /// Whether it trained on GPUs (`cuda:0`, `cuda × 4 ranks (a GPU each)`), not on the CPU.
    pub fn on_gpu(&self) -> bool {
        self.device.starts_with("cuda")
    }

    /// Device time of a median epoch: its seconds times the devices that trained it at once.
    pub fn device_seconds_per_epoch(&self) -> Option<f64> {
        Some(self.median_epoch_seconds? * f64::from(self.ranks.unwrap_or(1).max(1)))
    }
}
