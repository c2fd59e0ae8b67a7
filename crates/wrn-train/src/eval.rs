//! `wrn eval`: weights not trained by this run folder, evaluated on a prepared split with the dataset's
//! evaluation pipeline (CIFAR/SVHN test, ImageNet val: resize, centre crop, normalise).
//!
//! The weights are a wrn checkpoint (its `model.*` tensors; the checksum checked), a safetensors state
//! dict under the network's own names (torchvision's for the ImageNet networks, the official PyTorch
//! port's for CIFAR), or the authors' exported WRN-50-2 (batch norm folded into the convolutions, see
//! [`wrn_nets::weights::from_authors_export`]). The result is a run folder like a trained one
//! (`config.toml`, `environment.json`, `result.json`, `train.log`) whose status is
//! [`Status::Evaluated`](wrn_run::Status::Evaluated), with [`wrn_run::Evaluation`] saying which weights:
//! a report shows it beside the paper and never counts it as a trained run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};
use tch::{nn, Tensor};
use wrn_progress::Unit;
use wrn_run::{Evaluation, CONFIG, ENVIRONMENT, RESULT};

use crate::config::Experiment;
use crate::environment::{device_name, Environment};
use crate::run::{self, RunDir, RunResult, Status};
use crate::runtime::{self, DeviceChoice, ThreadPlan};
use crate::trainer::{self, Input, TrainError};

/// What to evaluate, and where the result goes.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// The weights: a checkpoint or a safetensors state dict.
    pub weights: PathBuf,
    /// A short name for them, as the report shows it.
    pub label: String,
    /// The device instead of the experiment's.
    pub device: Option<DeviceChoice>,
    pub wrn_version: String,
    pub git_sha: String,
}

/// Errors of an evaluation.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Weights(#[from] wrn_nets::weights::WeightsError),
    #[error("cannot read {}: {why}", path.display())]
    Unreadable { path: PathBuf, why: String },
    #[error(
        "{} holds a trained run (its result or checkpoint); evaluate into another folder (--out)",
        .0.display()
    )]
    HoldsRun(PathBuf),
}

impl From<run::RunError> for EvalError {
    fn from(e: run::RunError) -> EvalError {
        EvalError::Train(e.into())
    }
}

impl From<wrn_run::Error> for EvalError {
    fn from(e: wrn_run::Error) -> EvalError {
        EvalError::Train(e.into())
    }
}

/// How a weights file names its tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsFormat {
    /// A wrn run's checkpoint: `model.*`, `momentum.*`, `state.*` and a checksum.
    Checkpoint,
    /// A state dict under the network's own names.
    StateDict,
    /// The authors' exported WRN-50-2, batch norm folded into convolution biases.
    AuthorsExport,
}

impl WeightsFormat {
    pub fn name(self) -> &'static str {
        match self {
            WeightsFormat::Checkpoint => "checkpoint",
            WeightsFormat::StateDict => "state-dict",
            WeightsFormat::AuthorsExport => "authors-export",
        }
    }
}

/// The weights of a file: the network's tensors under the network's names, the file's format, and the
/// SHA-256 of its bytes (hex).
pub struct Weights {
    pub tensors: BTreeMap<String, Tensor>,
    pub format: WeightsFormat,
    pub sha256: String,
}

/// The weights in `path` (read once for its format and hash, once more by the tensor reader).
pub fn read_weights(path: &Path) -> Result<Weights, EvalError> {
    let unreadable = |why: String| EvalError::Unreadable { path: path.to_path_buf(), why };
    let bytes = std::fs::read(path).map_err(|e| unreadable(e.to_string()))?;
    let sha256 = format!("{:x}", Sha256::digest(&bytes));
    let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| {
        unreadable(format!(
            "not a safetensors file ({e}); convert a PyTorch .pth with safetensors.torch.save_file (see the README)"
        ))
    })?;
    if metadata.metadata().as_ref().is_some_and(|m| m.contains_key(run::CHECKSUM_KEY)) {
        let model = run::read_checkpoint(path)?
            .into_iter()
            .filter_map(|(name, t)| name.strip_prefix(run::MODEL_PREFIX).map(|n| (n.to_string(), t)))
            .collect();
        return Ok(Weights { tensors: model, format: WeightsFormat::Checkpoint, sha256 });
    }
    let file: BTreeMap<String, Tensor> =
        Tensor::read_safetensors(path).map_err(|e| unreadable(e.to_string()))?.into_iter().collect();
    if wrn_nets::weights::is_authors_export(file.keys()) {
        let renamed = wrn_nets::weights::from_authors_export(&file).map_err(unreadable)?;
        return Ok(Weights { tensors: renamed, format: WeightsFormat::AuthorsExport, sha256 });
    }
    Ok(Weights { tensors: file, format: WeightsFormat::StateDict, sha256 })
}

/// Evaluates `options.weights` as the network of `exp` on its dataset's test split (ImageNet: val) into
/// the run folder `run`, reporting the batches through `progress`. A folder holding a trained run is
/// refused; one holding an earlier evaluation is replaced.
pub fn evaluate_weights(
    run: &RunDir,
    exp: &Experiment,
    options: &EvalOptions,
    progress: &dyn wrn_progress::Progress,
) -> Result<RunResult, EvalError> {
    exp.validate().map_err(TrainError::from)?;
    let earlier = run.read_result()?;
    if run.has_checkpoint() || earlier.is_some_and(|r| r.status != Status::Evaluated) {
        return Err(EvalError::HoldsRun(run.path().to_path_buf()));
    }
    let Weights { tensors: weights, format, sha256: weights_sha256 } = read_weights(&options.weights)?;
    let selected = runtime::select_device(options.device.unwrap_or(exp.device)).map_err(TrainError::from)?;
    let device = selected.device;
    let plan = ThreadPlan::from_env(device).map_err(TrainError::from)?.apply();
    let data = trainer::open_data(exp, &plan, device, wrn_augment::Shard::default())?;
    let input = Input::new(&data.test, device, exp.precision, false);
    // Dropout does nothing in eval mode, and the initialisation is overwritten.
    let arch = exp.arch.clone().with_classes(data.classes);
    let mut vs = nn::VarStore::new(device);
    let net = arch.build(&vs.root());
    wrn_nets::weights::fill(&mut vs, &options.weights, &weights)?;
    let parameters = wrn_nets::parameter_count(&vs);

    run.write_text(CONFIG, &exp.to_toml())?;
    run.write_json(ENVIRONMENT, &Environment::collect(&options.wrn_version, &options.git_sha, plan).on_device(device))?;
    let split = if exp.dataset == crate::datasets::Dataset::ImageNet { "val" } else { "test" };
    run.log(&format!(
        "evaluating {} ({}, {}, sha256 {weights_sha256}) as {arch} on {} {split} ({} images) on {}",
        options.weights.display(),
        options.label,
        format.name(),
        exp.dataset,
        data.test.len(),
        device_name(device)
    ))?;
    let task = progress.task(
        &format!("{} {split}", exp.dataset),
        Unit::Items("batches"),
        Some(data.test.batches_per_epoch() as u64),
        0,
    );
    let started = Instant::now();
    let scores = trainer::evaluate(&net, &data.test, &input, task.as_ref(), None)?;
    if let tch::Device::Cuda(index) = device {
        tch::Cuda::synchronize(index as i64);
    }
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    task.finish();
    let evaluation = Evaluation {
        label: options.label.clone(),
        weights: options.weights.display().to_string(),
        weights_sha256,
        format: format.name().into(),
        split: split.into(),
        images: scores.images as u64,
        loss: scores.loss,
        images_per_second: scores.images as f64 / seconds,
    };
    let line = format!(
        "{}: top-1 error {:.3}%, top-5 error {:.3}%, loss {:.4} on {} images ({:.0} img/s)",
        options.label, scores.top1_error, scores.top5_error, scores.loss, scores.images, evaluation.images_per_second
    );
    run.log(&line)?;
    progress.line(&line);
    let result = RunResult {
        status: Status::Evaluated,
        dataset: exp.dataset.to_string(),
        arch: exp.arch.to_string(),
        seed: exp.seed,
        epochs_planned: 0,
        epochs_done: 0,
        // The whole split of the real dataset: comparable with the paper's figures.
        full_scale: exp.scale.test_subset.is_none() && exp.data.manifest.is_none(),
        parameters,
        final_test_error: Some(scores.top1_error),
        final_test_top5_error: Some(scores.top5_error),
        best_test_error: None,
        median_epoch_seconds: None,
        device: device_name(device),
        ranks: None,
        divergence: None,
        recipe_changes: None,
        precision: Some(exp.precision.to_string()),
        evaluation: Some(evaluation),
    };
    run.write_json(RESULT, &result)?;
    Ok(result)
}
