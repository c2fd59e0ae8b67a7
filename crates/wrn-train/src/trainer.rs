//! The training loop: one experiment, from prepared data to a finished run folder.
//!
//! Per epoch: the learning rate of the recipe (momentum buffers reset at a drop when the recipe says so),
//! the augmentation pipeline's batches (prefetched on rayon workers) copied to the device one batch ahead
//! of the compute, SGD steps, then an evaluation on the test split (loss, top-1 and top-5 error), one row
//! of `metrics.csv` and a checkpoint. Checkpoints are also written every `checkpoint_steps` steps and every
//! `checkpoint_minutes`, and when SIGINT/SIGTERM sets the stop flag.
//!
//! Determinism: the weights are initialised from `tch::manual_seed(seed)`, the batches depend only on
//! (seed, epoch, index) (see `wrn-augment`), and before every step libtorch's generator is re-seeded from
//! (seed, epoch, step), so dropout masks do not depend on history. A run resumed from any checkpoint
//! therefore reproduces the uninterrupted run bit for bit on the CPU, training sums included. The batches
//! do not depend on the number of data workers; libtorch's CPU reductions do depend on its intra-op thread
//! count, at the last bit (a WRN-10-1 differs by at most 2.4e-7 after 8 steps with 1 and 2 threads), so a
//! resumed run uses the thread count recorded when the run started. libtorch's
//! generator is global to the process, so one process trains one run at a time (sweeps start a process per
//! run).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};
use wrn_augment::{Batch, ImageType, Loader, LoaderConfig, Norm, Pipeline, Preset, ValueStep, Zca, ZcaParams};
use wrn_data::store::Store;
use wrn_nets::Arch;
use wrn_run::{CONFIG, ENVIRONMENT, RESULT};

use crate::config::{BatchImages, ConfigError, Experiment, Precision, Preprocessing};
use crate::datasets::Dataset;
use crate::environment::{device_name, Environment};
use crate::run::{EpochMetrics, Progress, RunDir, RunError, RunResult, Status};
use crate::runtime::{self, DeviceChoice, RuntimeError, ThreadPlan};
use crate::sgd::Sgd;

/// Errors of a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Data(#[from] wrn_data::Error),
    #[error(transparent)]
    Augment(#[from] wrn_augment::Error),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("{dataset} is not prepared in {dir}: run `wrn data fetch {dataset}` (or `wrn data prepare`) first")]
    NotPrepared { dataset: String, dir: PathBuf },
    #[error("{0} already holds a run; continue it with `wrn train --resume {0}` or choose another --out")]
    RunExists(PathBuf),
    #[error("{0} has no checkpoint to resume from")]
    NoCheckpoint(PathBuf),
    #[error(
        "{images} training images at batch_size {batch} (drop_last {drop_last}) make no training step per epoch: \
         lower batch_size or raise scale.train_subset"
    )]
    NoSteps { images: usize, batch: usize, drop_last: bool },
    #[error("{path}: {detail}; restore it from a copy, or start the run again in a new folder")]
    Damaged { path: PathBuf, detail: String },
}

impl From<wrn_run::Error> for TrainError {
    fn from(e: wrn_run::Error) -> TrainError {
        TrainError::Run(e.into())
    }
}

/// How a run is driven.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Continue from the run folder's checkpoint instead of starting afresh.
    pub resume: bool,
    /// Set by a signal handler: write a checkpoint and stop.
    pub stop: Arc<AtomicBool>,
    /// Stop (as if signalled) after this many steps of this process; for tests and time-boxed runs.
    pub max_steps: Option<usize>,
    /// The device to compute on instead of the experiment's `device` (a resumed run may move device:
    /// checkpoints are device-independent).
    pub device: Option<DeviceChoice>,
    /// Progress bars on a terminal, plain log lines otherwise.
    pub progress: bool,
    pub wrn_version: String,
    pub git_sha: String,
}

impl TrainOptions {
    pub fn new(wrn_version: &str, git_sha: &str) -> TrainOptions {
        TrainOptions {
            resume: false,
            stop: Arc::new(AtomicBool::new(false)),
            max_steps: None,
            device: None,
            progress: std::io::stderr().is_terminal(),
            wrn_version: wrn_version.into(),
            git_sha: git_sha.into(),
        }
    }
}

/// The augmentation presets of an experiment's training and test splits.
pub fn presets(exp: &Experiment) -> Result<(Preset, Preset), ConfigError> {
    let invalid = |m: String| Err(ConfigError::Invalid(m));
    match exp.dataset {
        Dataset::Cifar10 | Dataset::Cifar100 => {
            let norm = match exp.preprocessing {
                Preprocessing::Meanstd => Norm::MeanStd,
                Preprocessing::Zca => Norm::Zca,
                p => return invalid(format!("preprocessing {p:?} does not apply to CIFAR (meanstd or zca)")),
            };
            let train = match exp.augmentation.as_str() {
                "cifar-train" => Preset::CifarTrain(norm),
                "none" => Preset::CifarTest(norm),
                a => return invalid(format!("augmentation '{a}' does not apply to CIFAR (cifar-train or none)")),
            };
            Ok((train, Preset::CifarTest(norm)))
        }
        Dataset::Svhn => match (exp.preprocessing, exp.augmentation.as_str()) {
            (Preprocessing::Div255, "none") => Ok((Preset::Svhn, Preset::Svhn)),
            _ => invalid("SVHN takes preprocessing div255 and augmentation none, as in the paper".into()),
        },
        Dataset::ImageNet => Ok((Preset::ImagenetTrain, Preset::ImagenetVal)),
    }
}

/// Mixes (seed, epoch, step) into the seed of libtorch's generator for one step (splitmix64).
pub fn step_seed(seed: u64, epoch: u32, step: usize) -> i64 {
    let mut z = seed ^ ((epoch as u64) << 40) ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 1) as i64
}

/// Training sums of the epoch in progress (kept in checkpoints so a resumed epoch reports the same).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Sums {
    loss: f64,
    correct: f64,
    seen: f64,
}

struct Data {
    train: Loader,
    test: Loader,
    classes: i64,
}

/// The element type of the loaders' batches: as configured, else `u8` where the batches go to a GPU and
/// the pipeline delivers them.
fn image_type(exp: &Experiment, device: Device, pipeline: &Pipeline) -> ImageType {
    match exp.data.images {
        Some(BatchImages::U8) => ImageType::U8,
        Some(BatchImages::F32) => ImageType::F32,
        None if device.is_cuda() && pipeline.delivers_u8() => ImageType::U8,
        None => ImageType::F32,
    }
}

fn open_data(exp: &Experiment, plan: &ThreadPlan, device: Device) -> Result<Data, TrainError> {
    let manifests = wrn_data::ops::manifests(Some(exp.dataset.name()), exp.data.manifest.as_deref())?;
    let manifest = &manifests[0];
    let dir = exp.data.dir.clone().unwrap_or_else(wrn_data::dirs::data_dir);
    let store = Store::new(dir.clone());
    if !store.is_prepared(manifest) {
        return Err(TrainError::NotPrepared { dataset: manifest.name.clone(), dir });
    }
    if exp.dataset == Dataset::ImageNet {
        return open_imagenet(exp, plan, device, &store, manifest);
    }
    let train_parts = exp
        .train_splits
        .iter()
        .map(|split| store.open_split(manifest, split).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    let train = train_parts[0].clone();
    let train_len: usize = train_parts.iter().map(|p| p.len()).sum();
    let test = Arc::new(store.open_split(manifest, "test")?);
    let classes = train.meta.classes.len() as i64;
    let (train_preset, test_preset) = presets(exp)?;
    let zca = match exp.preprocessing {
        Preprocessing::Zca => {
            let path = wrn_augment::zca::default_path(&train);
            Some(Arc::new(Zca::fit_or_load(&train, &path, ZcaParams::default())?))
        }
        _ => None,
    };
    let workers = exp.data.workers.unwrap_or(plan.data_workers);
    // A subset is "at most this many": a smoke scale asks for more images than a small split may hold.
    let (train_subset, test_subset) =
        (exp.scale.train_subset.map(|n| n.min(train_len)), exp.scale.test_subset.map(|n| n.min(test.len())));
    let config = |shuffle, drop_last, subset, pipeline: &Pipeline| LoaderConfig {
        batch_size: exp.batch_size,
        seed: exp.seed,
        shuffle,
        drop_last,
        workers,
        prefetch: exp.data.prefetch.max(1),
        subset,
        image_type: image_type(exp, device, pipeline),
    };
    let (train_pipeline, test_pipeline) =
        (Pipeline::from_preset(train_preset, zca.clone())?, Pipeline::from_preset(test_preset, zca)?);
    let train_config = config(true, exp.drop_last, train_subset, &train_pipeline);
    let test_config = config(false, false, test_subset, &test_pipeline);
    let train = Loader::concat(train_parts, train_pipeline, train_config)?;
    let test = Loader::new(test, test_pipeline, test_config)?;
    Ok(Data { train, test, classes })
}

/// ImageNet: JPEG shards decoded by the loader, evaluated on the val split. The class count is the
/// prepared data's (1000 for ILSVRC2012, fewer for synthetic data).
fn open_imagenet(
    exp: &Experiment,
    plan: &ThreadPlan,
    device: Device,
    store: &Store,
    manifest: &wrn_data::manifest::Manifest,
) -> Result<Data, TrainError> {
    let train = Arc::new(store.open_encoded(manifest, "train")?);
    let val = Arc::new(store.open_encoded(manifest, "val")?);
    let classes = train.meta.classes.len() as i64;
    let (train_preset, val_preset) = presets(exp)?;
    let config = |shuffle, drop_last, subset: Option<usize>, len: usize, pipeline: &Pipeline| LoaderConfig {
        batch_size: exp.batch_size,
        seed: exp.seed,
        shuffle,
        drop_last,
        workers: exp.data.workers.unwrap_or(plan.data_workers),
        prefetch: exp.data.prefetch.max(1),
        // "At most this many": a smoke scale may ask for more images than a small split holds.
        subset: subset.map(|n| n.min(len)),
        image_type: image_type(exp, device, pipeline),
    };
    let (train_name, val_name) = (train.path().display().to_string(), val.path().display().to_string());
    let (train_pipeline, val_pipeline) =
        (Pipeline::from_preset(train_preset, None)?, Pipeline::from_preset(val_preset, None)?);
    let train_config = config(true, exp.drop_last, exp.scale.train_subset, train.len(), &train_pipeline);
    let val_config = config(false, false, exp.scale.test_subset, val.len(), &val_pipeline);
    let train = Loader::from_encoded(train, &train_name, train_pipeline, train_config)?;
    let test = Loader::from_encoded(val, &val_name, val_pipeline, val_config)?;
    Ok(Data { train, test, classes })
}

/// How a loader's batches become input tensors on the device.
struct Input {
    device: Device,
    precision: Precision,
    /// For a loader delivering `u8`, its deferred value step as tensors on the device.
    step: Option<DeviceStep>,
}

/// [`ValueStep`] on the device, computed with the same expression as on the CPU.
enum DeviceStep {
    None,
    /// `(v - mean) * inv_std`, both `[1, c, 1, 1]`.
    Normalize {
        mean: Tensor,
        inv_std: Tensor,
    },
    /// `v / divisor`, a one-element tensor (a true division, not a multiplication by the reciprocal).
    Divide(Tensor),
}

impl Input {
    fn new(loader: &Loader, device: Device, precision: Precision) -> Input {
        Input { device, precision, step: loader.deferred_step().map(|step| DeviceStep::new(step, device)) }
    }

    /// Copies a batch to the device (on CUDA: one copy of the loader's buffer into page-locked memory,
    /// then an asynchronous transfer). `u8` images are copied as bytes and turned into values there. The
    /// images come in the precision's compute dtype: bf16 images make the network compute in bf16 on its
    /// f32 weights.
    fn batch(&self, batch: &Batch) -> (Tensor, Tensor) {
        let shape: Vec<i64> = batch.shape.iter().map(|&d| d as i64).collect();
        let (x, y) = match self.device {
            Device::Cpu => {
                let x = match self.step {
                    Some(_) => Tensor::from_slice(&batch.images_u8),
                    None => Tensor::from_slice(&batch.images),
                };
                (x.view(shape.as_slice()), Tensor::from_slice(&batch.labels))
            }
            device => {
                let x = match self.step {
                    Some(_) => to_device_pinned(&batch.images_u8, &shape, Kind::Uint8, device),
                    None => to_device_pinned(&batch.images, &shape, Kind::Float, device),
                };
                (x, to_device_pinned(&batch.labels, &[batch.labels.len() as i64], Kind::Int64, device))
            }
        };
        let x = match &self.step {
            None => x,
            Some(step) => step.apply(&x),
        };
        match self.precision {
            Precision::Fp32 => (x, y),
            Precision::Bf16 => (wrn_nets::layout::bf16(&x), y),
        }
    }
}

impl DeviceStep {
    fn new(step: &ValueStep, device: Device) -> DeviceStep {
        let channels = |v: &[f32]| Tensor::from_slice(v).view([1, -1, 1, 1]).to_device(device);
        match step {
            ValueStep::None => DeviceStep::None,
            ValueStep::Normalize { mean, inv_std } => {
                DeviceStep::Normalize { mean: channels(mean), inv_std: channels(inv_std) }
            }
            ValueStep::Divide(d) => DeviceStep::Divide(Tensor::from_slice(&[*d]).to_device(device)),
        }
    }

    /// The value step on `u8` pixels already on the device, with the CPU's expression.
    fn apply(&self, x: &Tensor) -> Tensor {
        match self {
            DeviceStep::None => x.to_kind(Kind::Float),
            DeviceStep::Normalize { mean, inv_std } => (x.to_kind(Kind::Float) - mean) * inv_std,
            DeviceStep::Divide(d) => x.to_kind(Kind::Float) / d,
        }
    }
}

/// Normalises `u8` pixels on `device` exactly as the runner does for a loader whose value step is
/// `step` (for checks that compare it with the CPU's).
pub fn normalise_on_device(pixels: &Tensor, step: &ValueStep, device: Device) -> Tensor {
    DeviceStep::new(step, device).apply(&pixels.to_device(device))
}

/// Copies host values to `device`: once into page-locked memory (`aten::_pin_memory`, from libtorch's
/// caching host allocator, which reuses a block only once the transfer that read it has completed), then
/// without blocking the host.
fn to_device_pinned<T: tch::kind::Element>(values: &[T], shape: &[i64], kind: Kind, device: Device) -> Tensor {
    let strides = contiguous_strides(shape);
    // SAFETY: `values` holds exactly `shape`'s element count of `kind` values and outlives the borrowed
    // tensor, which `_pin_memory` copies from before this function returns.
    let borrowed = unsafe { Tensor::from_blob(values.as_ptr() as *const u8, shape, &strides, kind, Device::Cpu) };
    debug_assert_eq!(borrowed.numel(), values.len());
    borrowed.internal_pin_memory(device).to_device_(device, kind, true, false)
}

fn contiguous_strides(shape: &[i64]) -> Vec<i64> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

/// Logits in f32, where the loss and the error counts are computed whatever the precision.
fn f32_logits(logits: Tensor) -> Tensor {
    if logits.kind() == Kind::Float {
        logits
    } else {
        logits.to_kind(Kind::Float)
    }
}

/// Loss sum, top-1 and top-5 error (%) on the test split, in eval mode.
fn evaluate(net: &dyn ModuleT, loader: &Loader, input: &Input) -> (f64, f64, f64) {
    let device = input.device;
    let mut loss = Tensor::zeros([], (Kind::Double, device));
    let mut top1 = Tensor::zeros([], (Kind::Double, device));
    let mut top5 = Tensor::zeros([], (Kind::Double, device));
    let mut seen = 0usize;
    let mut batches = loader.epoch(0, 0);
    tch::no_grad(|| {
        while let Some(batch) = batches.next() {
            let (x, y) = input.batch(&batch);
            let logits = f32_logits(net.forward_t(&x, false));
            loss += logits.cross_entropy_loss::<Tensor>(&y, None, tch::Reduction::Sum, -100, 0.0).to_kind(Kind::Double);
            let k = logits.size()[1].min(5);
            let (_, top) = logits.topk(k, -1, true, true);
            let hits = top.eq_tensor(&y.unsqueeze(-1));
            top1 += hits.narrow(1, 0, 1).sum(Kind::Double);
            top5 += hits.sum(Kind::Double);
            seen += batch.len();
            batches.recycle(batch);
        }
    });
    let n = seen.max(1) as f64;
    (loss.double_value(&[]) / n, 100.0 * (1.0 - top1.double_value(&[]) / n), 100.0 * (1.0 - top5.double_value(&[]) / n))
}

fn save(run: &RunDir, vs: &nn::VarStore, sgd: &Sgd, progress: Progress, sums: Sums) -> Result<(), RunError> {
    let mut state = sgd.state();
    state.push(("state.loss_sum".into(), Tensor::from(sums.loss)));
    state.push(("state.correct".into(), Tensor::from(sums.correct)));
    state.push(("state.seen".into(), Tensor::from(sums.seen)));
    run.save_checkpoint(vs, state, progress)
}

/// A checkpoint within the plan, and the metrics of every epoch before it, in order: what a resumed run
/// needs so that its result covers the whole run.
fn check_resumable(
    run: &RunDir,
    exp: &Experiment,
    progress: Progress,
    metrics: &[EpochMetrics],
) -> Result<(), TrainError> {
    let epochs = exp.effective_epochs();
    if progress.epoch > epochs + 1 || (progress.epoch == epochs + 1 && progress.step > 0) {
        return Err(TrainError::Damaged {
            path: run.file(wrn_run::CHECKPOINT),
            detail: format!(
                "the checkpoint is at epoch {} step {}, beyond the {epochs} epochs of {}",
                progress.epoch,
                progress.step,
                run.file(wrn_run::CONFIG).display()
            ),
        });
    }
    let recorded: Vec<u32> = metrics.iter().map(|m| m.epoch).collect();
    let expected: Vec<u32> = (1..progress.epoch).collect();
    if recorded != expected {
        return Err(TrainError::Damaged {
            path: run.file(wrn_run::METRICS),
            detail: format!(
                "it records epochs {recorded:?}, but the checkpoint is at epoch {}, after epochs {expected:?}: the \
                 history of the run is incomplete",
                progress.epoch
            ),
        });
    }
    Ok(())
}

/// The environment recorded in the run's `environment.json`, when it can be read.
fn recorded_environment(run: &RunDir) -> Option<Environment> {
    let text = std::fs::read_to_string(run.file(ENVIRONMENT)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Trains `exp` into the run folder `run` (or continues it with `options.resume`).
pub fn train(run: &RunDir, exp: &Experiment, options: &TrainOptions) -> Result<RunResult, TrainError> {
    exp.validate()?;
    if options.resume && !run.has_checkpoint() {
        return Err(TrainError::NoCheckpoint(run.path().to_path_buf()));
    }
    if !options.resume && (run.has_checkpoint() || run.file(RESULT).exists()) {
        return Err(TrainError::RunExists(run.path().to_path_buf()));
    }
    let choice = match options.device {
        Some(choice) => choice,
        None => exp.device.parse::<DeviceChoice>()?,
    };
    let selected = runtime::select_device(choice)?;
    let device = selected.device;
    if let Some(reason) = &selected.fallback_reason {
        tracing::info!("no usable GPU on this machine, training on the CPU: {reason}");
    }
    let mut plan = ThreadPlan::from_env(device)?;
    let recorded = if options.resume { recorded_environment(run) } else { None };
    if let Some(recorded) = &recorded {
        // libtorch's CPU reductions depend on its thread count at the last bit: a resumed run uses the
        // count the run started with, so it stays bit-identical to an uninterrupted one.
        plan.torch_intra_op = recorded.threads.torch_intra_op;
    }
    let plan = plan.apply();
    let data = open_data(exp, &plan, device)?;
    if data.train.batches_per_epoch() == 0 {
        return Err(TrainError::NoSteps { images: data.train.len(), batch: exp.batch_size, drop_last: exp.drop_last });
    }
    let (train_input, test_input) =
        (Input::new(&data.train, device, exp.precision), Input::new(&data.test, device, exp.precision));

    let arch = exp.arch.parse::<Arch>().map_err(|e| ConfigError::Invalid(e.to_string()))?;
    let arch =
        arch.with_classes(data.classes).with_dropout(exp.dropout).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    tch::manual_seed(exp.seed as i64);
    let mut vs = nn::VarStore::new(device);
    let net = arch.build(&vs.root());
    let parameters = wrn_nets::parameter_count(&vs);
    let mut sgd = Sgd::new(&vs, exp.optimizer.clone());

    let mut metrics: Vec<EpochMetrics>;
    let mut progress = Progress { epoch: 1, step: 0 };
    let mut sums = Sums::default();
    if options.resume {
        let (state, saved) = run.load_checkpoint(&mut vs)?;
        sgd.load_state(&state);
        let scalar = |k: &str| state.get(k).map_or(0.0, |t| t.double_value(&[]));
        sums = Sums { loss: scalar("state.loss_sum"), correct: scalar("state.correct"), seen: scalar("state.seen") };
        progress = saved;
        metrics = run.read_metrics()?;
        metrics.retain(|m| m.epoch < progress.epoch);
        check_resumable(run, exp, progress, &metrics)?;
        run.log(&format!("resumed at epoch {} step {} on {}", progress.epoch, progress.step, device_name(device)))?;
        // A run that moved device or host records where it runs now, and where it ran before.
        let now = Environment::collect(&options.wrn_version, &options.git_sha, plan).on_device(device);
        if let Some(mut before) = recorded.filter(|before| before.moved(&now)) {
            let mut previous = std::mem::take(&mut before.previous);
            previous.push(serde_json::to_value(&before).expect("serialisable"));
            run.write_json(ENVIRONMENT, &Environment { previous, ..now })?;
        }
    } else {
        run.write_text(CONFIG, &exp.to_toml())?;
        let env = Environment::collect(&options.wrn_version, &options.git_sha, plan).on_device(device);
        run.write_json(ENVIRONMENT, &env)?;
        run.write_metrics(&[])?;
        metrics = Vec::new();
        run.log(&format!(
            "{} on {} ({} parameters) on {device:?} in {}",
            arch, exp.dataset, parameters, exp.precision
        ))?;
        run.log(&format!(
            "{} training images per epoch ({}), {} test images",
            data.train.len(),
            exp.train_splits.join(" + "),
            data.test.len()
        ))?;
    }

    let epochs = exp.effective_epochs();
    let per_epoch = data.train.batches_per_epoch();
    let mut steps_this_process = 0usize;
    let mut last_checkpoint = Instant::now();
    let checkpoint_every = Duration::from_secs_f64(exp.checkpoint_minutes.max(0.0) * 60.0);
    let stop_requested =
        |steps: usize| options.stop.load(Ordering::SeqCst) || options.max_steps.is_some_and(|max| steps >= max);

    while progress.epoch <= epochs {
        let epoch = progress.epoch;
        let lr = exp.lr_at(epoch);
        if progress.step == 0 && exp.schedule.reset_momentum && exp.is_milestone(epoch) {
            sgd.reset_momentum();
        }
        let bar = epoch_bar(options.progress, epoch, epochs, per_epoch, progress.step);
        let started = Instant::now();
        let mut batches = data.train.epoch(epoch as u64, progress.step);
        let mut loss_sum = Tensor::from(sums.loss).to_device(device);
        let mut correct = Tensor::from(sums.correct).to_device(device);
        let mut images = 0usize;
        let mut decode_failures = 0u64;
        let mut next = batches.next();
        let mut pending = next.as_ref().map(|b| train_input.batch(b));
        // The last step at which the epoch's loss sum was seen finite.
        let mut finite_at = progress.step;
        while let Some(batch) = next {
            let (x, y) = pending.take().expect("a batch on the device");
            // Start copying the next batch while this one computes.
            next = batches.next();
            pending = next.as_ref().map(|b| train_input.batch(b));
            tch::manual_seed(step_seed(exp.seed, epoch, progress.step));
            sgd.zero_grad();
            let logits = f32_logits(net.forward_t(&x, true));
            let loss = logits.cross_entropy_for_logits(&y);
            loss.backward();
            sgd.step(lr);
            tch::no_grad(|| {
                loss_sum += loss.detach().to_kind(Kind::Double) * batch.len() as f64;
                correct += logits.argmax(-1, false).eq_tensor(&y).sum(Kind::Double);
            });
            sums.seen += batch.len() as f64;
            images += batch.len();
            decode_failures += batch.decode_failures as u64;
            progress.step += 1;
            steps_this_process += 1;
            batches.recycle(batch);
            if let Some(bar) = &bar {
                bar.inc(1);
                if progress.step % 10 == 0 || progress.step == per_epoch {
                    let rate = images as f64 / started.elapsed().as_secs_f64().max(1e-9);
                    bar.set_message(format!("loss {:.3}  {rate:.0} img/s", loss.double_value(&[])));
                }
            } else if per_epoch >= 10 && progress.step % (per_epoch / 10) == 0 {
                tracing::info!(
                    "epoch {epoch}/{epochs} step {}/{per_epoch} loss {:.4}",
                    progress.step,
                    loss.double_value(&[])
                );
            }
            let timed = !checkpoint_every.is_zero() && last_checkpoint.elapsed() >= checkpoint_every;
            let counted = exp.checkpoint_steps > 0 && progress.step % exp.checkpoint_steps == 0;
            let stopping = stop_requested(steps_this_process) && progress.step < per_epoch;
            // A non-finite loss is caught before any checkpoint could keep it: every step on the CPU (where
            // reading it costs nothing), every DIVERGENCE_CHECK steps on a GPU (one sync each).
            let check = !device.is_cuda() || progress.step % DIVERGENCE_CHECK == 0 || timed || counted || stopping;
            if check {
                sums.loss = loss_sum.double_value(&[]);
                if !sums.loss.is_finite() {
                    drop(batches);
                    let at = divergence_point(epoch, finite_at, progress.step);
                    return diverged(run, exp, &metrics, parameters, device, at, bar);
                }
                finite_at = progress.step;
            }
            if timed || counted || stopping {
                // `sums.loss` was read by the check above, which every checkpoint goes through.
                sums.correct = correct.double_value(&[]);
                save(run, &vs, &sgd, progress, sums)?;
                last_checkpoint = Instant::now();
            }
            if stopping {
                if let Some(bar) = bar {
                    bar.abandon_with_message("interrupted: checkpoint written");
                }
                drop(batches);
                run.log(&format!("interrupted at epoch {epoch} step {}; checkpoint written", progress.step))?;
                return finish(run, exp, &metrics, Status::Interrupted, parameters, device);
            }
        }
        if let Device::Cuda(index) = device {
            // The host runs ahead of the GPU: time the epoch's work, not its launches.
            tch::Cuda::synchronize(index as i64);
        }
        let train_seconds = started.elapsed().as_secs_f64();
        let wait = batches.wait_time().as_secs_f64();
        drop(batches);
        sums.loss = loss_sum.double_value(&[]);
        sums.correct = correct.double_value(&[]);
        if !sums.loss.is_finite() {
            let at = divergence_point(epoch, finite_at, progress.step);
            return diverged(run, exp, &metrics, parameters, device, at, bar);
        }
        let (test_loss, test_error, test_top5_error) = evaluate(&net, &data.test, &test_input);
        let seen = sums.seen.max(1.0);
        let row = EpochMetrics {
            epoch,
            lr,
            train_loss: sums.loss / seen,
            train_error: 100.0 * (1.0 - sums.correct / seen),
            test_loss,
            test_error,
            test_top5_error,
            images_per_second: images as f64 / train_seconds.max(1e-9),
            data_wait_fraction: wait / train_seconds.max(1e-9),
            epoch_seconds: started.elapsed().as_secs_f64(),
            decode_failures,
        };
        let line = format!(
            "epoch {epoch}/{epochs} lr {lr:.5} train loss {:.4} error {:.2}% | test loss {:.4} error {:.2}% top-5 {:.2}% | {:.0} img/s, waited {:.1}%",
            row.train_loss, row.train_error, row.test_loss, row.test_error, row.test_top5_error,
            row.images_per_second, 100.0 * row.data_wait_fraction
        );
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        eprintln!("{line}");
        run.log(&line)?;
        metrics.push(row);
        run.write_metrics(&metrics)?;
        progress = Progress { epoch: epoch + 1, step: 0 };
        sums = Sums::default();
        save(run, &vs, &sgd, progress, sums)?;
        last_checkpoint = Instant::now();
        if stop_requested(steps_this_process) && progress.epoch <= epochs {
            run.log(&format!("interrupted after epoch {epoch}; checkpoint written"))?;
            return finish(run, exp, &metrics, Status::Interrupted, parameters, device);
        }
    }
    finish(run, exp, &metrics, Status::Finished, parameters, device)
}

/// Where a non-finite loss was found: the step itself, or the steps since the loss was last seen finite.
fn divergence_point(epoch: u32, finite_at: usize, step: usize) -> String {
    if step == finite_at + 1 {
        format!("epoch {epoch} step {step}")
    } else {
        format!("epoch {epoch}, between steps {} and {step}", finite_at + 1)
    }
}

/// Steps between two checks of the training loss on a GPU (each costs one synchronisation).
const DIVERGENCE_CHECK: usize = 50;

/// Ends a run whose training loss became non-finite: `result.json` says diverged (never a result), the
/// checkpoint keeps the last state checked finite, and the log says when.
fn diverged(
    run: &RunDir,
    exp: &Experiment,
    metrics: &[EpochMetrics],
    parameters: i64,
    device: Device,
    at: String,
    bar: Option<ProgressBar>,
) -> Result<RunResult, TrainError> {
    if let Some(bar) = bar {
        bar.abandon_with_message("diverged");
    }
    let message = format!(
        "the training loss became non-finite at {at}; the checkpoint keeps the last state checked finite. A \
         learning rate too high for this network, or damaged data or weights, are the usual causes"
    );
    run.log(&format!("diverged: {message}"))?;
    let mut result = finish(run, exp, metrics, Status::Diverged, parameters, device)?;
    result.divergence = Some(message);
    run.write_result(&result)?;
    Ok(result)
}

fn finish(
    run: &RunDir,
    exp: &Experiment,
    metrics: &[EpochMetrics],
    status: Status,
    parameters: i64,
    device: Device,
) -> Result<RunResult, TrainError> {
    let last = metrics.last();
    let result = RunResult {
        status,
        dataset: exp.dataset.to_string(),
        arch: exp.arch.clone(),
        seed: exp.seed,
        epochs_planned: exp.effective_epochs(),
        epochs_done: last.map_or(0, |m| m.epoch),
        // A custom manifest (e.g. synthetic data) is not the paper's dataset either.
        full_scale: exp.scale.is_full() && exp.data.manifest.is_none(),
        parameters,
        final_test_error: last.map(|m| m.test_error),
        final_test_top5_error: last.map(|m| m.test_top5_error),
        best_test_error: metrics.iter().map(|m| m.test_error).min_by(f64::total_cmp),
        median_epoch_seconds: wrn_run::median(&metrics.iter().map(|m| m.epoch_seconds).collect::<Vec<_>>()),
        device: device_name(device),
        divergence: None,
    };
    if status == Status::Finished {
        run.write_result(&result)?;
        run.log("finished")?;
    }
    Ok(result)
}

fn epoch_bar(enabled: bool, epoch: u32, epochs: u32, steps: usize, done: usize) -> Option<ProgressBar> {
    if !enabled {
        return None;
    }
    let bar = ProgressBar::new(steps as u64).with_position(done as u64);
    bar.set_style(
        ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} (ETA {eta})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("{epoch}/{epochs}"));
    Some(bar)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_seeds_differ_across_steps_epochs_and_seeds() {
        let mut seen = std::collections::HashSet::new();
        for seed in 0..3 {
            for epoch in 1..4 {
                for step in 0..50 {
                    assert!(seen.insert(step_seed(seed, epoch, step)));
                }
            }
        }
        assert!(seen.iter().all(|&s| s >= 0));
    }

    #[test]
    fn presets_follow_the_dataset_and_preprocessing() {
        let e = Experiment::recipe(Dataset::Cifar10);
        assert_eq!(presets(&e).unwrap(), (Preset::CifarTrain(Norm::MeanStd), Preset::CifarTest(Norm::MeanStd)));
        let e = Experiment::resolve(None, &["preprocessing=zca".into(), "augmentation=none".into()]).unwrap();
        assert_eq!(presets(&e).unwrap(), (Preset::CifarTest(Norm::Zca), Preset::CifarTest(Norm::Zca)));
        assert_eq!(presets(&Experiment::recipe(Dataset::Svhn)).unwrap(), (Preset::Svhn, Preset::Svhn));
        let e = Experiment::resolve(None, &["preprocessing=div255".into()]).unwrap();
        assert!(presets(&e).unwrap_err().to_string().contains("does not apply to CIFAR"));
    }
}
