//! The training loop: one experiment, from prepared data to a finished run folder.
//!
//! Per epoch: the learning rate of the recipe (momentum buffers reset at a drop when the recipe says so),
//! the augmentation pipeline's batches (prefetched on rayon workers) copied to the device one batch ahead
//! of the compute, SGD steps, then an evaluation on the test split (loss, top-1 and top-5 error), one row
//! of `metrics.csv` and a checkpoint. Checkpoints are also written every `checkpoint_steps` steps and every
//! `checkpoint_minutes`, and when SIGINT/SIGTERM sets the stop flag ([`CheckpointPolicy`]).
//!
//! [`train`] reads as its parts: `set_up` (device, threads, data, network), `start` or `resume` (the
//! checkpoint, or the one before it when the latest is damaged, and `metrics.csv` cut back to it),
//! `train_epoch` (the steps, each epoch a task of the caller's `wrn_progress::Progress`), and `end_epoch`
//! (evaluation, the metrics row, the summary line through `Progress::line`, the checkpoint).
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
use std::time::Instant;

use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};
use wrn_augment::{Loader, Shard};
use wrn_nets::Arch;
use wrn_progress::{Progress as _, Task, Unit};
use wrn_run::{CONFIG, ENVIRONMENT, RESULT};

use crate::config::{ConfigError, Experiment};
use crate::environment::{device_name, Environment};
use crate::graphed::{DeviceGraph, GraphedSteps};
use crate::policy::CheckpointPolicy;
use crate::run::{EpochMetrics, Progress, RunDir, RunError, RunResult, Status};
use crate::runtime::{self, DeviceChoice, ThreadPlan};
use crate::sgd::Sgd;
use crate::step::{f32_logits, local_sgd_step, sgd_step};
use crate::world::{Dist, World};

pub use crate::error::TrainError;
pub use crate::input::{normalise_on_device, presets};
pub(crate) use crate::input::{open_data, Data, Input};
use crate::ranks::{broadcast_variables, every_rank_has_images, gpu_uuid, gradient_reducer, rank_device};
use wrn_torch_ext::dist::Reducer;

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
    /// Log a line every tenth of an epoch: for logs and pipes, where no task is drawn (the default when
    /// stderr is not a terminal).
    pub log_steps: bool,
    /// This process's rank among several training one run together (data parallel), or `None` alone.
    pub world: Option<World>,
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
            log_steps: !std::io::stderr().is_terminal(),
            world: None,
            wrn_version: wrn_version.into(),
            git_sha: git_sha.into(),
        }
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

/// What an evaluation measured: mean loss, top-1 and top-5 error (%), over `images` images.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Scores {
    pub(crate) loss: f64,
    pub(crate) top1_error: f64,
    pub(crate) top5_error: f64,
    pub(crate) images: usize,
}

/// Mean loss, top-1 and top-5 error (%) on the loader's split, in eval mode; `task` advances by a batch.
/// With `dist`, each rank evaluates its part of every batch and the sums are added over the ranks.
pub(crate) fn evaluate(
    net: &dyn ModuleT,
    loader: &Loader,
    input: &Input,
    task: &dyn Task,
    dist: Option<&Dist>,
) -> Result<Scores, TrainError> {
    let device = input.device;
    let mut loss = Tensor::zeros([], (Kind::Double, device));
    let mut top1 = Tensor::zeros([], (Kind::Double, device));
    let mut top5 = Tensor::zeros([], (Kind::Double, device));
    let mut seen = 0usize;
    let mut batches = loader.epoch(0, 0);
    tch::no_grad(|| -> Result<(), TrainError> {
        while let Some(batch) = batches.try_next().transpose()? {
            if batch.is_empty() {
                // A last batch smaller than the number of ranks leaves some of them none.
                batches.recycle(batch);
                task.advance(1);
                continue;
            }
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
            task.advance(1);
        }
        Ok(())
    })?;
    let mut sums =
        Tensor::from_slice(&[loss.double_value(&[]), top1.double_value(&[]), top5.double_value(&[]), seen as f64]);
    if let Some(dist) = dist {
        dist.all_reduce_sum(&mut sums, "the evaluation's sums")?;
    }
    let [loss, top1, top5, seen] = <[f64; 4]>::try_from(Vec::<f64>::try_from(&sums)?).expect("four sums");
    let n = seen.max(1.0);
    Ok(Scores {
        loss: loss / n,
        top1_error: 100.0 * (1.0 - top1 / n),
        top5_error: 100.0 * (1.0 - top5 / n),
        images: seen as usize,
    })
}

fn save(run: &RunDir, setup: &Setup, state: &State) -> Result<(), RunError> {
    let mut optimiser = setup.sgd.state();
    optimiser.push(("state.loss_sum".into(), Tensor::from(state.sums.loss)));
    optimiser.push(("state.correct".into(), Tensor::from(state.sums.correct)));
    optimiser.push(("state.seen".into(), Tensor::from(state.sums.seen)));
    run.save_checkpoint(&setup.vs, optimiser, state.at)
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

/// Why a run's `environment.json` cannot be read.
#[derive(Debug, thiserror::Error)]
enum Unrecorded {
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
}

/// The environment recorded in the run's `environment.json`, or why it cannot be read.
fn recorded_environment(run: &RunDir) -> Result<Environment, Unrecorded> {
    let path = run.file(ENVIRONMENT);
    let text = std::fs::read_to_string(&path).map_err(|source| Unrecorded::Read { path: path.clone(), source })?;
    serde_json::from_str(&text).map_err(|source| Unrecorded::Parse { path, source })
}

/// What one call of [`train`] works with.
struct Ctx<'a> {
    run: &'a RunDir,
    exp: &'a Experiment,
    options: &'a TrainOptions,
    progress: &'a dyn wrn_progress::Progress,
}

impl Ctx<'_> {
    /// A warning for the user and the run's log.
    fn warn(&self, text: &str) -> Result<(), TrainError> {
        self.progress.line(&format!("warning: {text}"));
        Ok(self.run.log(&format!("warning: {text}"))?)
    }
}

/// The device, the data and the network with its optimiser.
struct Setup {
    device: Device,
    plan: ThreadPlan,
    data: Data,
    train_input: Input,
    test_input: Input,
    arch: Arch,
    vs: nn::VarStore,
    net: wrn_nets::Network,
    parameters: i64,
    sgd: Sgd,
    /// The gradient all-reduce over the other ranks, and those ranks, when several processes train
    /// this run (the reducer goes first).
    reducer: Option<Reducer>,
    dist: Option<Dist>,
    /// The training step captured in a CUDA graph (`cuda_graphs = true`).
    graphed: Option<GraphedSteps<DeviceGraph>>,
}

/// Where the run stands: the position, the sums of the epoch in progress, the epochs done.
struct State {
    at: Progress,
    sums: Sums,
    metrics: Vec<EpochMetrics>,
}

/// Chooses the device and threads (a resumed run keeps the libtorch thread count it started with),
/// opens the data and builds the network from the run's seed.
fn set_up(exp: &Experiment, options: &TrainOptions, recorded: Option<&Environment>) -> Result<Setup, TrainError> {
    let choice = match options.device {
        Some(choice) => choice,
        None => exp.device,
    };
    let choice = match &options.world {
        Some(world) => rank_device(choice, world)?,
        None => choice,
    };
    let selected = runtime::select_device(choice)?;
    let device = selected.device;
    if let Some(reason) = &selected.fallback_reason {
        tracing::info!("no usable GPU on this machine, training on the CPU: {reason}");
    }
    let mut plan = ThreadPlan::from_env(device)?;
    if let Some(recorded) = recorded {
        // libtorch's CPU reductions depend on its thread count at the last bit: a resumed run uses the
        // count the run started with, so it stays bit-identical to an uninterrupted one.
        plan.torch_intra_op = recorded.threads.torch_intra_op;
    }
    let plan = plan.apply();
    // On GPUs the gradients go over NCCL, from the CUDA part of the extension this binary carries.
    let dist = match &options.world {
        Some(world) => Some(Dist::connect(world.clone(), crate::world::timeout()?, device.is_cuda())?),
        None => None,
    };
    let shard = dist.as_ref().map_or(Shard::default(), |d| Shard { index: d.rank(), count: d.size() });
    let data = open_data(exp, &plan, device, shard)?;
    if data.train.batches_per_epoch() == 0 {
        return Err(TrainError::NoSteps { images: data.train.len(), batch: exp.batch_size, drop_last: exp.drop_last });
    }
    if let Some(dist) = &dist {
        every_rank_has_images(exp, data.train.len(), dist.size())?;
        crate::agree::same_run(dist, exp, data.train.len())?;
        // Told apart by the driver's UUID: without one (an old driver) there is nothing to compare, since
        // each rank given its own GPU through CUDA_VISIBLE_DEVICES calls it cuda:0.
        if let Some(uuid) = gpu_uuid(device) {
            crate::agree::one_gpu_each(dist, &uuid)?;
        }
    }
    let channels_last = exp.channels_last.unwrap_or(device.is_cuda());
    let (train_input, test_input) = (
        Input::new(&data.train, device, exp.precision, channels_last),
        Input::new(&data.test, device, exp.precision, channels_last),
    );
    let invalid = |e: wrn_nets::ArchError| ConfigError::Invalid(e.to_string());
    let arch = exp.arch.clone().with_init(exp.init).with_bn_group(exp.bn_group.map(i64::from));
    let arch = arch.with_classes(data.classes).with_dropout(exp.dropout).map_err(invalid)?;
    tch::manual_seed(exp.seed as i64);
    let vs = nn::VarStore::new(device);
    let net = arch.build(&vs.root());
    if channels_last {
        // Before the optimiser takes the weights into its buffer, which keeps their strides.
        wrn_nets::layout::to_channels_last(&vs);
    }
    let parameters = wrn_nets::parameter_count(&vs);
    let sgd = Sgd::new(&vs, exp.optimizer.clone());
    let reducer = match &dist {
        Some(dist) => Some(gradient_reducer(dist, (&net, &vs, &sgd), train_input.blank(2, data.train.sample_shape()))?),
        None => None,
    };
    let graphed = if exp.cuda_graphs { Some(graphed_steps(exp, device, dist.as_ref())?) } else { None };
    Ok(Setup { device, plan, data, train_input, test_input, arch, vs, net, parameters, sgd, reducer, dist, graphed })
}

/// The CUDA graph that replays the run's training step: one process on a CUDA device, with the CUDA part
/// of the extension.
fn graphed_steps(
    exp: &Experiment,
    device: Device,
    dist: Option<&Dist>,
) -> Result<GraphedSteps<DeviceGraph>, TrainError> {
    if !device.is_cuda() {
        return Err(TrainError::CudaGraph(format!(
            "they replay steps on a GPU, and this run trains on {}",
            device_name(device)
        )));
    }
    if let Some(dist) = dist {
        return Err(TrainError::CudaGraph(format!(
            "a captured step cannot hold the gradient all-reduce of {} ranks; train over several GPUs without them",
            dist.size()
        )));
    }
    let graph = runtime::cuda_extension().and_then(DeviceGraph::new).map_err(TrainError::CudaGraph)?;
    tracing::info!(
        "CUDA graphs: the training step is captured after {} eager steps and replayed",
        crate::graphed::WARM_UP_STEPS
    );
    Ok(GraphedSteps::new(graph, exp.batch_size as i64))
}

/// This process's environment, with the device it trains on and the ranks it trains with.
fn environment(ctx: &Ctx, setup: &Setup) -> Result<Environment, TrainError> {
    let ranks = setup.dist.as_ref().map(Dist::ranks).transpose()?;
    let env = Environment::collect(&ctx.options.wrn_version, &ctx.options.git_sha, setup.plan);
    Ok(env.on_device(setup.device).over(ranks))
}

/// A new run: writes the configuration, the environment and an empty `metrics.csv`, and logs what runs.
fn start(ctx: &Ctx, setup: &Setup) -> Result<State, TrainError> {
    let (run, exp) = (ctx.run, ctx.exp);
    if let Some(dist) = &setup.dist {
        // The same seed gives every rank the same weights; rank 0's are made everyone's all the same.
        broadcast_variables(dist, &setup.vs, |_| true)?;
    }
    run.write_text(CONFIG, &exp.to_toml())?;
    run.write_json(ENVIRONMENT, &environment(ctx, setup)?)?;
    run.write_metrics(&[])?;
    run.log(&format!(
        "{} on {} ({} parameters) on {:?} in {}{}",
        setup.arch,
        exp.dataset,
        setup.parameters,
        setup.device,
        exp.precision,
        if setup.train_input.channels_last { ", channels-last" } else { "" }
    ))?;
    if let Some(dist) = &setup.dist {
        let w = dist.world();
        run.log(&format!(
            "data parallel over {} ranks (Gloo; store at {}:{}), each taking its part of every batch of {}",
            w.size, w.master_addr, w.master_port, exp.batch_size
        ))?;
    }
    run.log(&format!(
        "{} training images per epoch ({}), {} test images",
        setup.data.train.len(),
        exp.train_splits.join(" + "),
        setup.data.test.len()
    ))?;
    Ok(State { at: Progress { epoch: 1, step: 0 }, sums: Sums::default(), metrics: Vec::new() })
}

/// A resumed run: restores the checkpoint (the previous one when the latest is unusable, saying so), cuts
/// `metrics.csv` back to the epochs before it, and records a move to another device or host.
fn resume(ctx: &Ctx, setup: &mut Setup, recorded: Result<Environment, Unrecorded>) -> Result<State, TrainError> {
    let run = ctx.run;
    let restored = run.load_checkpoint(&mut setup.vs)?;
    if let Some(why) = &restored.fallback {
        ctx.warn(why)?;
    }
    setup.sgd.load_state(&restored.state);
    let scalar = |k: &str| restored.state.get(k).map_or(0.0, |t| t.double_value(&[]));
    let sums = Sums { loss: scalar("state.loss_sum"), correct: scalar("state.correct"), seen: scalar("state.seen") };
    let at = restored.progress;
    let mut metrics = run.read_metrics()?;
    let rows = metrics.len();
    metrics.retain(|m| m.epoch < at.epoch);
    check_resumable(run, ctx.exp, at, &metrics)?;
    if metrics.len() != rows {
        run.write_metrics(&metrics)?;
    }
    let ranks = setup.dist.as_ref().map_or(String::new(), |d| format!(", over {} ranks", d.size()));
    run.log(&format!("resumed at epoch {} step {} on {}{ranks}", at.epoch, at.step, device_name(setup.device)))?;
    // A run that moved device or host records where it runs now, and where it ran before.
    let now = environment(ctx, setup)?;
    match recorded {
        Ok(mut before) if before.moved(&now) => {
            let mut previous = std::mem::take(&mut before.previous);
            previous.push(before);
            run.write_json(ENVIRONMENT, &Environment { previous, ..now })?;
        }
        Ok(_) => {}
        Err(why) => {
            ctx.warn(&format!("{why}; libtorch uses this machine's thread count, and the file is written anew"))?;
            run.write_json(ENVIRONMENT, &now)?;
        }
    }
    Ok(State { at, sums, metrics })
}

/// Trains `exp` into the run folder `run` (or continues it with `options.resume`), reporting each epoch
/// through `progress`: its steps as a task, its summary as a line.
pub fn train(
    run: &RunDir,
    exp: &Experiment,
    options: &TrainOptions,
    progress: &dyn wrn_progress::Progress,
) -> Result<RunResult, TrainError> {
    exp.validate()?;
    if options.resume && !run.has_checkpoint() {
        return Err(TrainError::NoCheckpoint(run.path().to_path_buf()));
    }
    if !options.resume && (run.has_checkpoint() || run.file(RESULT).exists()) {
        return Err(TrainError::RunExists(run.path().to_path_buf()));
    }
    let ctx = Ctx { run, exp, options, progress };
    let recorded = options.resume.then(|| recorded_environment(run));
    let mut setup = set_up(exp, options, recorded.as_ref().and_then(|r| r.as_ref().ok()))?;
    let mut state = match recorded {
        Some(recorded) => resume(&ctx, &mut setup, recorded)?,
        None => start(&ctx, &setup)?,
    };
    let mut policy =
        CheckpointPolicy::new(exp.checkpoint_minutes, exp.checkpoint_steps, options.max_steps, Instant::now());
    let epochs = exp.effective_epochs();
    // Where the run trains, as results and reports show it: the device, and the ranks when several (on
    // GPUs one each, whose index differs from rank to rank).
    let device = On {
        device: match &setup.dist {
            Some(d) if setup.device.is_cuda() => format!("cuda × {} ranks (a GPU each)", d.size()),
            Some(d) => format!("{} × {} ranks", device_name(setup.device), d.size()),
            None => device_name(setup.device),
        },
        ranks: setup.dist.as_ref().map(|d| d.size() as u32),
    };
    let parameters = setup.parameters;
    let end = |state: &State, status| finish(run, exp, &state.metrics, status, parameters, &device);
    while state.at.epoch <= epochs {
        let epoch = state.at.epoch;
        let trained = match train_epoch(&ctx, &mut setup, &mut state, &mut policy)? {
            EpochEnd::Trained(trained) => trained,
            EpochEnd::Stopped => {
                run.log(&format!("interrupted at epoch {epoch} step {}; checkpoint written", state.at.step))?;
                return end(&state, Status::Interrupted);
            }
            EpochEnd::Diverged(at) => {
                return diverged(run, exp, &state.metrics, parameters, &device, ("training", at));
            }
        };
        if let Some(at) = end_epoch(&ctx, &setup, &mut state, trained)? {
            return diverged(run, exp, &state.metrics, parameters, &device, ("test", at));
        }
        policy.saved(Instant::now());
        let mut stop = policy.stop_requested(options.stop.load(Ordering::SeqCst));
        if let Some(dist) = &setup.dist {
            // A stop any rank was asked for stops all of them.
            let mut any = Tensor::from_slice(&[f64::from(u8::from(stop))]);
            dist.all_reduce_sum(&mut any, "the agreement to stop")?;
            if any.double_value(&[0]) > 0.0 && !stop {
                // Another rank was asked to stop: this one stops as if asked too.
                options.stop.store(true, Ordering::SeqCst);
                stop = true;
            }
        }
        if stop && state.at.epoch <= epochs {
            run.log(&format!("interrupted after epoch {epoch}; checkpoint written"))?;
            return end(&state, Status::Interrupted);
        }
    }
    if let Some(dist) = &setup.dist {
        // Every rank has finished before rank 0 (which serves the store) says so and leaves.
        dist.barrier("the last barrier")?;
    }
    end(&state, Status::Finished)
}

/// How an epoch's training steps ended.
enum EpochEnd {
    /// Every step taken.
    Trained(Trained),
    /// Stopped (a signal, or the step limit) after a checkpoint.
    Stopped,
    /// The training loss became non-finite, at this point of the run.
    Diverged(String),
}

/// The figures of an epoch's training steps.
struct Trained {
    started: Instant,
    images: usize,
    seconds: f64,
    wait: f64,
    decode_failures: u64,
}

/// The epoch's training loss and correct predictions, summed on the device.
struct Totals {
    loss: Tensor,
    correct: Tensor,
}

/// One training step on `(x, y)` with libtorch's generator seeded `seed` (dropout): eager, or through the
/// run's CUDA graph; the batch added to `totals`. Returns the batch's mean loss. With `reduce`, the
/// backward pass starts from the loss weighted by the rank's share of the whole batch and the reducer
/// sums the gradients over the ranks: the gradient of the whole batch's mean loss, as one process
/// computes it.
fn train_step(
    (net, sgd, graphed): (&wrn_nets::Network, &mut Sgd, Option<&mut GraphedSteps<DeviceGraph>>),
    seed: i64,
    lr: f64,
    (x, y): &(Tensor, Tensor),
    totals: &mut Totals,
    reduce: Option<(&Dist, &mut Reducer, f64)>,
) -> Result<Tensor, TrainError> {
    let (loss, correct) = match (graphed, reduce) {
        (Some(graphed), _) => {
            let (loss, correct, _) = graphed.step((net, sgd), seed, lr, (x, y)).map_err(TrainError::CudaGraph)?;
            (loss, correct)
        }
        (None, Some((dist, reducer, share))) => {
            tch::manual_seed(seed);
            sgd_step((net, sgd), lr, (x, y), |loss| dist.backward(reducer, &(loss * share)))?
        }
        (None, None) => {
            tch::manual_seed(seed);
            local_sgd_step((net, sgd), lr, (x, y))
        }
    };
    tch::no_grad(|| {
        totals.loss += loss.to_kind(Kind::Double) * y.size()[0] as f64;
        totals.correct += correct;
    });
    Ok(loss)
}

/// Mixes the rank into the seed of libtorch's generator (dropout masks): rank 0 keeps the run's seed, so
/// that one process is rank 0 of a world of one.
fn rank_seed(seed: u64, rank: usize) -> u64 {
    if rank == 0 {
        seed
    } else {
        seed ^ (rank as u64).wrapping_mul(0xD1B5_4A32_D192_ED03)
    }
}

/// What the ranks agree on after a step, from one all-reduce of two numbers on the CPU (no wait for the
/// GPU): a stop any rank asked for, and rank 0's checkpoint plan (its clock decides); a stop is also a
/// checkpoint.
struct Agreed {
    stop: bool,
    save: bool,
}

fn agree(dist: &Dist, plan: crate::policy::AfterStep) -> Result<Agreed, TrainError> {
    let lead = dist.rank() == 0;
    let mut v = Tensor::from_slice(&[f64::from(u8::from(plan.stop)), f64::from(u8::from(lead && plan.save))]);
    dist.all_reduce_sum(&mut v, "the step's agreement")?;
    let v = Vec::<f64>::try_from(&v)?;
    Ok(Agreed { stop: v[0] > 0.0, save: v[1] > 0.0 || v[0] > 0.0 })
}

/// Adds the step's training sums of every rank to the epoch's, on the device (over NCCL on GPUs, so the
/// host does not wait for the GPU); `step` is this rank's, and is left summed over the ranks.
fn add_over_ranks(dist: &Dist, step: &Totals, epoch: &mut Totals) -> Result<(), TrainError> {
    let mut both = Tensor::stack(&[&step.loss, &step.correct], 0);
    dist.all_reduce_sum(&mut both, "the step's training sums")?;
    tch::no_grad(|| {
        epoch.loss += both.get(0);
        epoch.correct += both.get(1);
    });
    Ok(())
}

/// The training steps of the epoch `state.at.epoch` from `state.at.step`, with checkpoints and stops as
/// `policy` says, and the divergence check. On several ranks, each trains on its part of every batch;
/// after each step the ranks add their sums on the device ([`add_over_ranks`]) and agree on the stop and
/// the checkpoint on the CPU ([`agree`]), neither waiting for the GPU.
fn train_epoch(
    ctx: &Ctx,
    setup: &mut Setup,
    state: &mut State,
    policy: &mut CheckpointPolicy,
) -> Result<EpochEnd, TrainError> {
    let (exp, epoch, device) = (ctx.exp, state.at.epoch, setup.device);
    let (epochs, per_epoch, lr) = (exp.effective_epochs(), setup.data.train.batches_per_epoch(), exp.lr_at(epoch));
    if state.at.step == 0 && exp.schedule.reset_momentum && exp.is_milestone(epoch) {
        setup.sgd.reset_momentum();
    }
    let label = format!("epoch {epoch}/{epochs}");
    let task = ctx.progress.task(&label, Unit::Items("steps"), Some(per_epoch as u64), state.at.step as u64);
    let started = Instant::now();
    let mut batches = setup.data.train.epoch(epoch as u64, state.at.step);
    // The epoch's sums on the device: one process adds each batch to them; ranks add each step's sums over
    // all ranks ([`add_over_ranks`]), so that a run resumed anywhere adds the same numbers in the same order.
    let sums_from = |sums: Sums| Totals {
        loss: Tensor::from(sums.loss).to_device(device),
        correct: Tensor::from(sums.correct).to_device(device),
    };
    let mut totals = sums_from(state.sums);
    let (mut images, mut decode_failures) = (0usize, 0u64);
    let seed = rank_seed(exp.seed, setup.dist.as_ref().map_or(0, Dist::rank));
    let (samples, batch_size) = (setup.data.train.len(), exp.batch_size);
    // A batch that cannot be filled (damaged prepared data) ends the run with its error; the last
    // checkpoint stays as it was.
    let mut next = batches.try_next().transpose()?;
    let mut pending = next.as_ref().map(|b| setup.train_input.batch(b));
    // The last step at which the epoch's loss sum was seen finite.
    let mut finite_at = state.at.step;
    while let Some(batch) = next {
        let input = pending.take().expect("a batch on the device");
        // Queue the next batch's copy now: the host fills its pinned buffer while the GPU still works through
        // the steps queued before (the copy itself runs on the same stream, ahead of this step's kernels).
        next = batches.try_next().transpose()?;
        pending = next.as_ref().map(|b| setup.train_input.batch(b));
        let step_seed = step_seed(seed, epoch, state.at.step);
        // The step's images over all ranks (this process's when it trains alone).
        let whole = batch_size.min(samples - state.at.step * batch_size);
        let share = batch.len() as f64 / whole as f64;
        let reduce = setup.dist.as_ref().zip(setup.reducer.as_mut()).map(|(d, r)| (d, r, share));
        let model = (&setup.net, &mut setup.sgd, setup.graphed.as_mut());
        let loss = match &setup.dist {
            None => train_step(model, step_seed, lr, &input, &mut totals, reduce)?,
            Some(dist) => {
                // Made on the device: a scalar copied from the host would wait for the GPU each step.
                let zero = || Tensor::zeros([], (Kind::Double, device));
                let mut step = Totals { loss: zero(), correct: zero() };
                let loss = train_step(model, step_seed, lr, &input, &mut step, reduce)?;
                add_over_ranks(dist, &step, &mut totals)?;
                loss
            }
        };
        images += whole;
        decode_failures += batch.decode_failures as u64;
        state.at.step += 1;
        state.sums.seen += whole as f64;
        batches.recycle(batch);
        // Reading the loss waits for the GPU: on CUDA only at the steps the divergence check reads it anyway.
        let every = if device.is_cuda() { DIVERGENCE_CHECK } else { 10 };
        let at = (epoch, state.at.step, per_epoch, every);
        report_step(ctx, task.as_ref(), at, &loss, images as f64 / secs(started));
        let mut plan =
            policy.after_step(state.at.step, per_epoch, ctx.options.stop.load(Ordering::SeqCst), Instant::now());
        if let Some(dist) = &setup.dist {
            let agreed = agree(dist, plan)?;
            if agreed.stop && !plan.stop {
                // Another rank was asked to stop: this one stops as if asked too.
                ctx.options.stop.store(true, Ordering::SeqCst);
            }
            (plan.stop, plan.save) = (agreed.stop, agreed.save);
        }
        // A non-finite loss is caught before any checkpoint could keep it: every step on the CPU (where
        // reading it costs nothing), every DIVERGENCE_CHECK steps on a GPU (one sync each).
        if !device.is_cuda() || state.at.step.is_multiple_of(DIVERGENCE_CHECK) || plan.save {
            state.sums.loss = totals.loss.double_value(&[]);
            if !state.sums.loss.is_finite() {
                task.abandon("diverged");
                return Ok(EpochEnd::Diverged(divergence_point(epoch, finite_at, state.at.step)));
            }
            finite_at = state.at.step;
        }
        if plan.save {
            // `sums.loss` was read by the check above, which every checkpoint goes through.
            state.sums.correct = totals.correct.double_value(&[]);
            save(ctx.run, setup, state)?;
            policy.saved(Instant::now());
        }
        if plan.stop {
            task.abandon("interrupted: checkpoint written");
            return Ok(EpochEnd::Stopped);
        }
    }
    if let Device::Cuda(index) = device {
        // The host runs ahead of the GPU: time the epoch's work, not its launches.
        tch::Cuda::synchronize(index as i64);
    }
    let (seconds, wait) = (secs(started), batches.wait_time().as_secs_f64());
    drop(batches);
    state.sums.loss = totals.loss.double_value(&[]);
    state.sums.correct = totals.correct.double_value(&[]);
    if !state.sums.loss.is_finite() {
        task.abandon("diverged");
        return Ok(EpochEnd::Diverged(divergence_point(epoch, finite_at, state.at.step)));
    }
    task.finish();
    Ok(EpochEnd::Trained(Trained { started, images, seconds, wait, decode_failures }))
}

/// Seconds since `started` (never zero, for rates).
fn secs(started: Instant) -> f64 {
    started.elapsed().as_secs_f64().max(1e-9)
}

/// Shows the step count and, every `every` steps, the loss and rate on the epoch's task; logs a line every
/// tenth of an epoch where `log_steps` asks for it (logs and pipes, which see no task drawn).
fn report_step(
    ctx: &Ctx,
    task: &dyn Task,
    (epoch, step, per_epoch, every): (u32, usize, usize, usize),
    loss: &Tensor,
    rate: f64,
) {
    task.advance(1);
    if step.is_multiple_of(every) || step == per_epoch {
        task.message(&format!("loss {:.3}  {rate:.0} img/s", loss.double_value(&[])));
    }
    if ctx.options.log_steps && per_epoch >= 10 && step.is_multiple_of(per_epoch / 10) {
        let epochs = ctx.exp.effective_epochs();
        tracing::info!("epoch {epoch}/{epochs} step {step}/{per_epoch} loss {:.4}", loss.double_value(&[]));
    }
}

/// The end of an epoch: the evaluation, its row of `metrics.csv`, the summary line, and a checkpoint at
/// the start of the next epoch. A non-finite test loss (weights that overflow on the test set, though the
/// training loss stayed finite) is written to `metrics.csv` but not checkpointed: the point where the run
/// diverged is returned instead, and no figure of it is ever a result.
fn end_epoch(ctx: &Ctx, setup: &Setup, state: &mut State, trained: Trained) -> Result<Option<String>, TrainError> {
    let (epoch, lr) = (state.at.epoch, ctx.exp.lr_at(state.at.epoch));
    let quiet = wrn_progress::Silent.task("test", Unit::Items("batches"), None, 0);
    if let Some(dist) = &setup.dist {
        broadcast_variables(dist, &setup.vs, |t| !t.requires_grad())?;
    }
    let scores = evaluate(&setup.net, &setup.data.test, &setup.test_input, quiet.as_ref(), setup.dist.as_ref())?;
    let (test_loss, test_error, test_top5_error) = (scores.loss, scores.top1_error, scores.top5_error);
    let seen = state.sums.seen.max(1.0);
    let row = EpochMetrics {
        epoch,
        lr,
        train_loss: state.sums.loss / seen,
        train_error: 100.0 * (1.0 - state.sums.correct / seen),
        test_loss,
        test_error,
        test_top5_error,
        images_per_second: trained.images as f64 / trained.seconds.max(1e-9),
        data_wait_fraction: trained.wait / trained.seconds.max(1e-9),
        epoch_seconds: trained.started.elapsed().as_secs_f64(),
        decode_failures: trained.decode_failures,
    };
    let line = epoch_line(&row, ctx.exp.effective_epochs());
    ctx.progress.line(&line);
    ctx.run.log(&line)?;
    state.metrics.push(row);
    ctx.run.write_metrics(&state.metrics)?;
    if !test_loss.is_finite() {
        return Ok(Some(format!("the evaluation after epoch {epoch}")));
    }
    state.at = Progress { epoch: epoch + 1, step: 0 };
    state.sums = Sums::default();
    save(ctx.run, setup, state)?;
    Ok(None)
}

/// The summary line of an epoch, as printed and logged.
fn epoch_line(row: &EpochMetrics, epochs: u32) -> String {
    format!(
        "epoch {}/{epochs} lr {:.5} train loss {:.4} error {:.2}% | test loss {:.4} error {:.2}% top-5 {:.2}% | {:.0} img/s, waited {:.1}%",
        row.epoch, row.lr, row.train_loss, row.train_error, row.test_loss, row.test_error, row.test_top5_error,
        row.images_per_second, 100.0 * row.data_wait_fraction
    )
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
/// Where a run trains, as its result records it: the device in words, and the ranks when several.
struct On {
    device: String,
    ranks: Option<u32>,
}

fn diverged(
    run: &RunDir,
    exp: &Experiment,
    metrics: &[EpochMetrics],
    parameters: i64,
    device: &On,
    (loss, at): (&str, String),
) -> Result<RunResult, TrainError> {
    let message = format!(
        "the {loss} loss became non-finite at {at}; the checkpoint keeps the last state checked finite. A \
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
    on: &On,
) -> Result<RunResult, TrainError> {
    let last = metrics.last();
    let result = RunResult {
        status,
        dataset: exp.dataset.to_string(),
        arch: exp.arch.to_string(),
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
        device: on.device.clone(),
        ranks: on.ranks,
        divergence: None,
        recipe_changes: Some(exp.recipe_changes()),
        precision: Some(exp.precision.to_string()),
        evaluation: None,
    };
    if status == Status::Finished {
        run.write_result(&result)?;
        run.log("finished")?;
    }
    Ok(result)
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
}
