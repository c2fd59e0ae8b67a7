//! `wrn_train::trainer` end to end on synthetic CIFAR-10 in the real archive format: a small WRN learns,
//! the run folder holds what contract 3 promises, a run stopped at arbitrary steps and resumed ends bit
//! for bit where the uninterrupted run ends (from the checkpoint before the latest when the latest is
//! damaged), `u8` batches normalised by libtorch train exactly like `f32` ones, and bad set-ups fail with
//! errors that say what to do.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use tch::{Kind, Tensor};
use wrn_data::store::Store;
use wrn_data::synth::{self, CifarKind};
use wrn_train::config::Experiment;
use wrn_train::run::{RunDir, RunResult, Status};
use wrn_train::trainer::{self, TrainError, TrainOptions};

/// Synthetic CIFAR-10 (600 training images), prepared once for all tests: (data dir, manifest).
fn data() -> &'static (PathBuf, PathBuf) {
    static DATA: OnceLock<(tempfile::TempDir, PathBuf, PathBuf)> = OnceLock::new();
    let (_, dir, manifest) = DATA.get_or_init(|| {
        let root = tempfile::tempdir().unwrap();
        let (m, manifest) = synth::synth_cifar(CifarKind::Cifar10, &root.path().join("synth"), 600, 3).unwrap();
        let dir = root.path().join("data");
        let store = Store::new(&dir);
        let file = &m.files[0];
        let dest = store.file_path(&m, file);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(file.url.strip_prefix("file://").unwrap(), &dest).unwrap();
        wrn_data::ops::prepare(&store, &m).unwrap();
        (root, dir, manifest)
    });
    // SAFETY of the reference: the static lives for the whole test binary.
    static VIEW: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    VIEW.get_or_init(|| (dir.clone(), manifest.clone()))
}

pub(crate) fn experiment(extra: &[&str]) -> Experiment {
    let (dir, manifest) = data();
    let mut sets: Vec<String> = vec![
        "arch=wrn-10-1".into(),
        "batch_size=32".into(),
        format!("data.dir='{}'", dir.display()),
        format!("data.manifest='{}'", manifest.display()),
        "data.workers=2".into(),
        "checkpoint_minutes=0".into(),
        // Bit-for-bit resume is a promise of the CPU (cuDNN's algorithms are not deterministic).
        "device=cpu".into(),
    ];
    sets.extend(extra.iter().map(|s| s.to_string()));
    Experiment::resolve(None, &sets).unwrap()
}

fn options() -> TrainOptions {
    let mut o = TrainOptions::new("test", "test");
    o.log_steps = false;
    o
}

/// Trains `exp` into `run`, one training at a time (see `common`).
pub(crate) fn train(
    run: &Path,
    exp: &Experiment,
    resume: bool,
    max_steps: Option<usize>,
) -> Result<RunResult, TrainError> {
    let mut o = options();
    o.resume = resume;
    o.max_steps = max_steps;
    train_with(run, exp, &o)
}

fn train_with(run: &Path, exp: &Experiment, options: &TrainOptions) -> Result<RunResult, TrainError> {
    let _guard = crate::common::one_training_at_a_time();
    trainer::train(&RunDir::create(run).unwrap(), exp, options, &wrn_progress::Silent)
}

/// Every tensor of the run's checkpoint.
fn checkpoint(run: &Path) -> BTreeMap<String, Tensor> {
    Tensor::read_safetensors(run.join("checkpoint.safetensors")).unwrap().into_iter().collect()
}

/// metrics.csv without the timing columns, which are the only ones allowed to differ between runs.
fn metrics_without_timings(run: &Path) -> Vec<Vec<String>> {
    let mut r = csv::Reader::from_path(run.join("metrics.csv")).unwrap();
    let header = r.headers().unwrap().clone();
    r.records()
        .map(|row| {
            let row = row.unwrap();
            header
                .iter()
                .zip(row.iter())
                .filter(|(h, _)| !["images_per_second", "data_wait_fraction", "epoch_seconds"].contains(h))
                .map(|(_, v)| v.to_string())
                .collect()
        })
        .collect()
}

#[test]
fn a_small_wrn_learns_the_synthetic_data_and_leaves_a_complete_run_folder() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let exp = experiment(&["epochs=4", "scale.test_subset=96"]);
    let result = train(&run, &exp, false, None).unwrap();
    assert_eq!(result.status, Status::Finished);
    assert_eq!((result.epochs_done, result.epochs_planned), (4, 4));
    // Chance is 90% error on ten classes (the synthetic classes differ by shape only, under noise).
    let error = result.final_test_error.unwrap();
    assert!(error < 65.0, "test error {error}% after four epochs");
    assert!(!result.full_scale, "a test subset is a reduced-scale run");
    let files = [
        "config.toml",
        "environment.json",
        "metrics.csv",
        "result.json",
        "checkpoint.safetensors",
        "checkpoint.prev.safetensors",
        "train.log",
    ];
    for file in files {
        assert!(run.join(file).exists(), "missing {file}");
    }
    // The previous checkpoint is the one before the last: the start of the last epoch.
    let previous: BTreeMap<String, Tensor> =
        wrn_train::run::read_checkpoint(&run.join("checkpoint.prev.safetensors")).unwrap().into_iter().collect();
    assert_eq!(previous["state.epoch"].int64_value(&[]), 4);
    assert_eq!(checkpoint(&run)["state.epoch"].int64_value(&[]), 5);
    let saved = Experiment::load(&run.join("config.toml"), &[]).unwrap();
    assert_eq!(saved, exp, "config.toml is the resolved experiment");
    let rows = metrics_without_timings(&run);
    assert_eq!(rows.len(), 4);
    let result_json: RunResult =
        serde_json::from_str(&std::fs::read_to_string(run.join("result.json")).unwrap()).unwrap();
    assert_eq!(result_json, result);

    // The same folder cannot be trained into again by accident.
    let err = train(&run, &exp, false, None).unwrap_err().to_string();
    assert!(err.contains("already holds a run; continue it with `wrn train --resume"), "{err}");
}

#[test]
fn a_run_stopped_and_resumed_at_arbitrary_steps_ends_bit_for_bit_like_an_uninterrupted_one() {
    // 256 samples, batch 32: 8 steps per epoch, 3 epochs, dropout so that randomness matters, a
    // learning-rate drop with a momentum reset at epoch 2.
    let exp = experiment(&[
        "epochs=3",
        "dropout=0.3",
        "scale.train_subset=256",
        "scale.test_subset=64",
        "schedule.milestones=[2]",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole");
    train(&whole, &exp, false, None).unwrap();

    let pieces = dir.path().join("pieces");
    // Stop mid-epoch 1 (after 5 steps), then mid-epoch 2 (after 6 more: step 3 of epoch 2), then at the
    // end of epoch 2 exactly (5 more), then finish.
    let first = train(&pieces, &exp, false, Some(5)).unwrap();
    assert_eq!(first.status, Status::Interrupted);
    assert!(!pieces.join("result.json").exists(), "an interrupted run has no result");
    assert_eq!(train(&pieces, &exp, true, Some(6)).unwrap().status, Status::Interrupted);
    assert_eq!(train(&pieces, &exp, true, Some(5)).unwrap().status, Status::Interrupted);
    let last = train(&pieces, &exp, true, None).unwrap();
    assert_eq!(last.status, Status::Finished);

    assert_same_run(&whole, &pieces);
    let log = std::fs::read_to_string(pieces.join("train.log")).unwrap();
    assert_eq!(log.matches("resumed at epoch").count(), 3, "{log}");
}

#[test]
fn the_arxiv_v1_recipe_trains_with_batch_draws_and_fan_out_and_resumes_bit_for_bit() {
    let v1 =
        ["epochs=2", "scale.train_subset=128", "scale.test_subset=64", "augmentation=cifar-train-v1", "init=fan_out"];
    let exp = experiment(&v1);
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole");
    assert_eq!(train(&whole, &exp, false, None).unwrap().status, Status::Finished);
    let config = std::fs::read_to_string(whole.join("config.toml")).unwrap();
    assert!(config.contains("augmentation = \"cifar-train-v1\"") && config.contains("init = \"fan_out\""), "{config}");
    // The stem (3 -> 16 channels) starts from fan-out's smaller weights: std √(2/(9·16)), not √(2/(9·3)).
    let pieces = dir.path().join("pieces");
    assert_eq!(train(&pieces, &exp, false, Some(1)).unwrap().status, Status::Interrupted);
    let start: BTreeMap<String, Tensor> =
        wrn_train::run::read_checkpoint(&pieces.join("checkpoint.safetensors")).unwrap().into_iter().collect();
    let std = f64::try_from(start["model.conv0.weight"].std(true)).unwrap();
    assert!((std / (2.0f64 / 144.0).sqrt() - 1.0).abs() < 0.15, "{std}");
    assert_eq!(train(&pieces, &exp, true, Some(3)).unwrap().status, Status::Interrupted);
    assert_eq!(train(&pieces, &exp, true, None).unwrap().status, Status::Finished);
    assert_same_run(&whole, &pieces);
    // Per image, the same run trains differently.
    let per_image = dir.path().join("per-image");
    train(&per_image, &experiment(&[&v1[..3], &["augmentation=cifar-train", "init=fan_out"]].concat()), false, None)
        .unwrap();
    assert_ne!(metrics_without_timings(&per_image), metrics_without_timings(&whole));
}

#[test]
fn set_up_errors_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let exp = Experiment::resolve(None, &[format!("data.dir='{}'", dir.path().join("empty").display())]).unwrap();
    let err = train(&dir.path().join("run"), &exp, false, None).unwrap_err().to_string();
    assert!(err.contains("cifar10 is not prepared in") && err.contains("run `wrn data fetch cifar10`"), "{err}");

    let err = train(&dir.path().join("nothing"), &experiment(&[]), true, None).unwrap_err().to_string();
    assert!(err.contains("has no checkpoint to resume from"), "{err}");

    // A run that would take no step is not a run (it would "finish" untrained).
    let exp = experiment(&["batch_size=64", "scale.train_subset=40", "drop_last=true"]);
    let err = train(&dir.path().join("no-steps"), &exp, false, None).unwrap_err().to_string();
    assert!(
        err.contains("40 training images at batch_size 64 (drop_last true) make no training step per epoch"),
        "{err}"
    );
    assert!(!dir.path().join("no-steps/result.json").exists());
}

#[test]
fn bf16_training_learns_on_f32_master_weights_and_resumes_bit_for_bit() {
    let exp = experiment(&["precision=bf16", "epochs=4", "scale.test_subset=96"]);
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole");
    let result = train(&whole, &exp, false, None).unwrap();
    let error = result.final_test_error.unwrap();
    assert!(error < 65.0, "bf16 test error {error}% after four epochs (chance: 90%)");
    let log = std::fs::read_to_string(whole.join("train.log")).unwrap();
    assert!(log.contains("in bf16"), "{log}");
    // The checkpoint holds the f32 master weights, BN statistics and momentum, never bf16 copies.
    let saved = checkpoint(&whole);
    assert!(saved.keys().any(|k| k.starts_with("momentum.")));
    for (name, t) in &saved {
        assert_ne!(t.kind(), tch::Kind::BFloat16, "{name} saved in bf16");
    }
    // The f32 run of the same seed takes other steps: the precision is really in use.
    let fp32 = dir.path().join("fp32");
    let short = ["epochs=1", "scale.train_subset=64", "scale.test_subset=32"];
    train(&fp32, &experiment(&short), false, None).unwrap();
    let one = dir.path().join("one");
    train(&one, &experiment(&[&short[..], &["precision=bf16"]].concat()), false, None).unwrap();
    assert!(!checkpoint(&fp32)["model.fc.weight"].equal(&checkpoint(&one)["model.fc.weight"]));

    let pieces = dir.path().join("pieces");
    assert_eq!(train(&pieces, &exp, false, Some(7)).unwrap().status, Status::Interrupted);
    assert_eq!(train(&pieces, &exp, true, None).unwrap().status, Status::Finished);
    let resumed = checkpoint(&pieces);
    for (name, t) in &saved {
        assert!(t.equal(&resumed[name]), "{name} differs after resuming a bf16 run");
    }
    assert_eq!(metrics_without_timings(&whole), metrics_without_timings(&pieces));
}

/// The checkpoints of two runs hold the same tensors, bit for bit, and their metrics agree.
fn assert_same_run(a: &Path, b: &Path) {
    let (x, y) = (checkpoint(a), checkpoint(b));
    assert_eq!(x.keys().collect::<Vec<_>>(), y.keys().collect::<Vec<_>>());
    for (name, t) in &x {
        assert!(t.equal(&y[name]), "{name} differs between {} and {}", a.display(), b.display());
    }
    assert_eq!(metrics_without_timings(a), metrics_without_timings(b));
}

#[test]
fn u8_batches_normalised_by_libtorch_train_bit_for_bit_like_f32_batches() {
    let dir = tempfile::tempdir().unwrap();
    let base = ["epochs=2", "dropout=0.3", "scale.train_subset=128", "scale.test_subset=64"];
    let runs = ["f32", "u8"].map(|images| {
        let run = dir.path().join(images);
        let exp = experiment(&[&base[..], &[&format!("data.images='{images}'")]].concat());
        assert_eq!(train(&run, &exp, false, None).unwrap().status, Status::Finished);
        run
    });
    assert_same_run(&runs[0], &runs[1]);
}

#[test]
fn svhn_trains_on_train_and_extra_as_the_paper() {
    let root = tempfile::tempdir().unwrap();
    let (m, manifest) = synth::synth_svhn(&root.path().join("synth"), 100, 4).unwrap();
    let dir = root.path().join("data");
    let store = Store::new(&dir);
    for file in &m.files {
        let dest = store.file_path(&m, file);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(file.url.strip_prefix("file://").unwrap(), &dest).unwrap();
    }
    wrn_data::ops::prepare(&store, &m).unwrap();
    let exp = |images: &str| {
        let sets = [
            "dataset=svhn".into(),
            "arch=wrn-10-1".into(),
            "batch_size=50".into(),
            "epochs=1".into(),
            "checkpoint_minutes=0".into(),
            format!("data.dir='{}'", dir.display()),
            format!("data.manifest='{}'", manifest.display()),
            format!("data.images='{images}'"),
        ];
        Experiment::resolve(None, &sets).unwrap()
    };
    assert_eq!(exp("f32").train_splits, ["train", "extra"]);
    let run = root.path().join("run");
    assert_eq!(train(&run, &exp("f32"), false, None).unwrap().status, Status::Finished);
    // 100 train + 50 extra images; the test split has 20.
    let log = std::fs::read_to_string(run.join("train.log")).unwrap();
    assert!(log.contains("150 training images per epoch (train + extra), 20 test images"), "{log}");
    // Bytes divided by 255 in libtorch are the values the loader computes.
    let bytes = root.path().join("run-u8");
    assert_eq!(train(&bytes, &exp("u8"), false, None).unwrap().status, Status::Finished);
    assert_same_run(&run, &bytes);
}

#[test]
fn a_run_resumed_on_another_host_records_where_it_ran_before() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let exp = experiment(&["epochs=1", "scale.train_subset=96", "scale.test_subset=32"]);
    assert_eq!(train(&run, &exp, false, Some(1)).unwrap().status, Status::Interrupted);
    let env_path = run.join("environment.json");
    let mut env: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&env_path).unwrap()).unwrap();
    assert_eq!(env["device"], "cpu");
    assert_eq!(env["settings"]["cudnn_deterministic"], false, "{env}");
    let here = env["host"].as_str().expect("host recorded").to_string();
    // As if the run had started on another machine.
    env["host"] = "elsewhere".into();
    std::fs::write(&env_path, serde_json::to_string_pretty(&env).unwrap()).unwrap();

    let mut o = options();
    o.resume = true;
    o.device = Some("cpu".parse().unwrap());
    let result = train_with(&run, &exp, &o).unwrap();
    assert_eq!((result.status, result.device.as_str()), (Status::Finished, "cpu"));
    let env: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&env_path).unwrap()).unwrap();
    assert_eq!(env["host"], here.as_str());
    let previous = env["previous"].as_array().expect("the earlier environment kept");
    assert_eq!(previous.len(), 1);
    assert_eq!(previous[0]["host"], "elsewhere");
    assert!(std::fs::read_to_string(run.join("train.log")).unwrap().contains("resumed at epoch 1 step 1 on cpu"));
}

/// On a machine with CUDA (skipped elsewhere, saying so): a run on the GPU learns like the same run on
/// the CPU, within tolerance (cuDNN is neither bit-identical to the CPU nor deterministic), and a run
/// interrupted on the GPU resumes on the CPU.
#[test]
fn cuda_training_agrees_with_the_cpu_within_tolerance() {
    if let Err(why) = wrn_train::runtime::cuda_status() {
        eprintln!("skipped: no CUDA here ({why})");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = ["epochs=2", "scale.train_subset=256", "scale.test_subset=96"];
    let [cpu, gpu] = ["cpu", "cuda"].map(|device| {
        let run = dir.path().join(device);
        let exp = experiment(&[&base[..], &[&format!("device='{device}'")]].concat());
        train(&run, &exp, false, None).unwrap();
        metrics_without_timings(&run)
    });
    let column =
        |rows: &Vec<Vec<String>>, i: usize| rows.iter().map(|r| r[i].parse::<f64>().unwrap()).collect::<Vec<_>>();
    // Columns after the epoch and lr: train loss, train error, test loss.
    for (a, b) in column(&cpu, 2).iter().zip(column(&gpu, 2)) {
        assert!((a - b).abs() <= 0.05 * a.abs(), "train loss {a} on the CPU, {b} on CUDA");
    }
    let run = dir.path().join("moved");
    let exp = experiment(&[&base[..], &["device='cuda'"]].concat());
    assert_eq!(train(&run, &exp, false, Some(3)).unwrap().status, Status::Interrupted);
    let mut o = options();
    o.resume = true;
    o.device = Some("cpu".parse().unwrap());
    let result = train_with(&run, &exp, &o).unwrap();
    assert_eq!((result.status, result.device.as_str()), (Status::Finished, "cpu"));
}

#[test]
fn a_run_whose_loss_becomes_non_finite_is_diverged_not_a_result() {
    let dir = tempfile::tempdir().unwrap();
    // A learning rate no network survives: the loss is NaN or infinite within a few steps.
    let run = dir.path().join("hot");
    let exp = experiment(&["optimizer.lr=1e30", "epochs=2", "scale.train_subset=256", "scale.test_subset=32"]);
    let result = train(&run, &exp, false, None).unwrap();
    assert_eq!(result.status, Status::Diverged);
    let why = result.divergence.as_deref().unwrap();
    assert!(why.starts_with("the training loss became non-finite at epoch 1 step "), "{why}");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("result.json")).unwrap()).unwrap();
    assert_eq!(saved["status"], "diverged");
    assert_eq!(wrn_run::progress_of(&run), wrn_run::Progress::Diverged);
    // Nothing non-finite was checkpointed.
    if run.join("checkpoint.safetensors").exists() {
        for (name, t) in checkpoint(&run) {
            assert!(t.isfinite().all().int64_value(&[]) == 1, "{name} is not finite in the checkpoint");
        }
    }

    // A checkpoint damaged into a NaN weight diverges at the first step after resuming.
    let run = dir.path().join("damaged");
    let exp = experiment(&["epochs=1", "scale.train_subset=128", "scale.test_subset=32"]);
    assert_eq!(train(&run, &exp, false, Some(1)).unwrap().status, Status::Interrupted);
    let mut named: Vec<(String, Tensor)> = checkpoint(&run).into_iter().collect();
    let weight = named.iter_mut().find(|(n, _)| n.ends_with("conv0.weight")).expect("a conv weight");
    let _ = weight.1.view(-1).get(0).fill_(f64::NAN);
    // Written with its checksum: damage a checksum would catch is refused before it can diverge.
    wrn_train::run::write_checkpoint(&run.join("checkpoint.safetensors"), &named).unwrap();
    let result = train(&run, &exp, true, None).unwrap();
    assert_eq!(result.status, Status::Diverged);
    assert!(result.divergence.unwrap().contains("at epoch 1 step 2"));

    // A NaN batch-norm running variance: training (on batch statistics) stays finite, the evaluation (on the
    // running ones) does not. The epoch's test figures are never a finished result, nor checkpointed.
    let run = dir.path().join("running");
    assert_eq!(train(&run, &exp, false, Some(1)).unwrap().status, Status::Interrupted);
    let mut named: Vec<(String, Tensor)> = checkpoint(&run).into_iter().collect();
    let var = named.iter_mut().find(|(n, _)| n.ends_with("running_var")).expect("a running variance");
    let _ = var.1.view(-1).get(0).fill_(f64::NAN);
    wrn_train::run::write_checkpoint(&run.join("checkpoint.safetensors"), &named).unwrap();
    let result = train(&run, &exp, true, None).unwrap();
    assert_eq!(result.status, Status::Diverged, "{result:?}");
    let why = result.divergence.unwrap();
    assert!(why.starts_with("the test loss became non-finite at the evaluation after epoch 1"), "{why}");
    let metrics = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert!(metrics.lines().nth(1).is_some_and(|row| row.contains("NaN")), "{metrics}");
    assert_eq!(wrn_run::progress_of(&run), wrn_run::Progress::Diverged);
    let epoch = checkpoint(&run)["state.epoch"].int64_value(&[]);
    assert_eq!(epoch, 1, "the state after the evaluation that overflowed was checkpointed");
}

#[test]
fn a_resume_needs_the_whole_history_and_a_checkpoint_within_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let exp = experiment(&["epochs=3", "scale.train_subset=64", "scale.test_subset=32"]);
    // Two epochs done, stopped at the start of the third.
    assert_eq!(train(&run, &exp, false, Some(4)).unwrap().status, Status::Interrupted);
    let metrics = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert_eq!(metrics.lines().count(), 3, "{metrics}");

    // metrics.csv deleted, or shortened: the history is gone, and the resume says so.
    std::fs::remove_file(run.join("metrics.csv")).unwrap();
    let err = train(&run, &exp, true, None).unwrap_err().to_string();
    assert!(err.contains("metrics.csv: it records epochs [], but the checkpoint is at epoch 3"), "{err}");
    let short: String = metrics.lines().take(2).map(|l| format!("{l}\n")).collect();
    std::fs::write(run.join("metrics.csv"), short).unwrap();
    let err = train(&run, &exp, true, None).unwrap_err().to_string();
    assert!(err.contains("it records epochs [1], but the checkpoint is at epoch 3, after epochs [1, 2]"), "{err}");
    assert!(!run.join("result.json").exists());

    // A checkpoint beyond the plan (a 2-epoch config beside a checkpoint at epoch 3) is not "finished".
    std::fs::write(run.join("metrics.csv"), &metrics).unwrap();
    let two = experiment(&["epochs=1", "scale.train_subset=64", "scale.test_subset=32"]);
    let err = train(&run, &two, true, None).unwrap_err().to_string();
    assert!(err.contains("checkpoint.safetensors: the checkpoint is at epoch 3 step 0, beyond the 1 epochs"), "{err}");
    // With its history restored, the run resumes and finishes.
    assert_eq!(train(&run, &exp, true, None).unwrap().status, Status::Finished);
}

/// Flips one bit of the first byte of the tensor `name` in the safetensors file at `path`.
fn flip_a_bit_of(path: &Path, name: &str) {
    let mut bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let start = header[name]["data_offsets"][0].as_u64().expect("the tensor is in the file") as usize;
    bytes[8 + n + start] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_damaged_latest_checkpoint_resumes_from_the_previous_one_and_ends_like_an_uninterrupted_run() {
    // 128 samples, batch 32: 4 steps per epoch, a checkpoint after every step.
    let exp = experiment(&[
        "epochs=2",
        "dropout=0.3",
        "scale.train_subset=128",
        "scale.test_subset=32",
        "checkpoint_steps=1",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole");
    train(&whole, &exp, false, None).unwrap();

    // Stopped after epoch 1: the latest checkpoint starts epoch 2, the previous one ends epoch 1's steps.
    let run = dir.path().join("damaged");
    assert_eq!(train(&run, &exp, false, Some(4)).unwrap().status, Status::Interrupted);
    assert_eq!(metrics_without_timings(&run).len(), 1);
    flip_a_bit_of(&run.join("checkpoint.safetensors"), "model.conv0.weight");

    let result = train(&run, &exp, true, None).unwrap();
    assert_eq!(result.status, Status::Finished);
    let log = std::fs::read_to_string(run.join("train.log")).unwrap();
    assert!(log.contains("warning: ") && log.contains("checkpoint.safetensors: fails its checksum"), "{log}");
    assert!(log.contains("checkpoint.prev.safetensors (epoch 1 step 4) instead"), "{log}");
    assert!(log.contains("resumed at epoch 1 step 4"), "{log}");
    // Epoch 1 was evaluated again from the previous checkpoint: one row per epoch, equal to the whole run's.
    assert_same_run(&whole, &run);

    // Both checkpoints damaged: an error naming both, and nothing trained.
    let both = dir.path().join("both");
    assert_eq!(train(&both, &exp, false, Some(2)).unwrap().status, Status::Interrupted);
    flip_a_bit_of(&both.join("checkpoint.safetensors"), "model.fc.weight");
    flip_a_bit_of(&both.join("checkpoint.prev.safetensors"), "model.fc.weight");
    let metrics = std::fs::read(both.join("metrics.csv")).unwrap();
    let err = train(&both, &exp, true, None).unwrap_err().to_string();
    assert!(err.starts_with("no checkpoint to resume from: "), "{err}");
    assert!(err.contains("checkpoint.safetensors: fails its checksum"), "{err}");
    assert!(err.contains("checkpoint.prev.safetensors: fails its checksum"), "{err}");
    assert_eq!(std::fs::read(both.join("metrics.csv")).unwrap(), metrics);
}

#[test]
fn ghost_batch_norm_trains_resumes_bit_for_bit_and_is_recorded_as_a_departure() {
    // Batch 32 in groups of 8, as four GPUs of 8 images each would normalise it.
    let exp = experiment(&["epochs=2", "scale.train_subset=128", "scale.test_subset=64", "bn_group=8"]);
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole");
    let result = train(&whole, &exp, false, None).unwrap();
    assert_eq!(result.status, Status::Finished);
    assert_eq!(result.recipe_changes.as_ref().unwrap()["bn_group"], serde_json::json!(8));
    let pieces = dir.path().join("pieces");
    assert_eq!(train(&pieces, &exp, false, Some(3)).unwrap().status, Status::Interrupted);
    assert_eq!(train(&pieces, &exp, true, None).unwrap().status, Status::Finished);
    assert_same_run(&whole, &pieces);
    // Other statistics, another run.
    let plain = dir.path().join("plain");
    let exp = experiment(&["epochs=2", "scale.train_subset=128", "scale.test_subset=64"]);
    train(&plain, &exp, false, None).unwrap();
    let fc = |run: &Path| checkpoint(run)["model.fc.weight"].sum(Kind::Double).double_value(&[]);
    assert_ne!(fc(&plain), fc(&whole));
}

#[test]
fn channels_last_trains_to_the_same_numbers_and_resumes_bit_for_bit() {
    // Two epochs of two steps: over more steps a batch-norm channel of almost no variance can magnify the
    // layouts' rounding apart past any fixed tolerance (the network's arithmetic, not the layout's).
    let exp = |layout: &str| experiment(&["epochs=2", "scale.train_subset=64", "scale.test_subset=64", layout]);
    let dir = tempfile::tempdir().unwrap();
    let (nchw, nhwc) = (dir.path().join("nchw"), dir.path().join("nhwc"));
    train(&nchw, &exp("channels_last=false"), false, None).unwrap();
    let result = train(&nhwc, &exp("channels_last=true"), false, None).unwrap();
    // A memory layout, not a departure from the recipe; the log says which.
    assert!(!result.recipe_changes.as_ref().unwrap().contains_key("channels_last"));
    assert!(std::fs::read_to_string(nhwc.join("train.log")).unwrap().contains("in fp32, channels-last"));
    // The checkpoint is written contiguous, in the NCHW layout every reader expects, and holds the same
    // weights as the NCHW run's within float rounding (four steps of it).
    let (a, b) = (checkpoint(&nchw), checkpoint(&nhwc));
    for (name, t) in a.iter().filter(|(n, _)| n.starts_with("model.")) {
        assert!(b[name].is_contiguous());
        let d = f64::try_from((t - &b[name]).abs().max()).unwrap();
        let scale = f64::try_from(t.abs().max()).unwrap();
        assert!(d <= 1e-3 * scale + 1e-4, "{name}: {d:e} apart at scale {scale:e}");
    }
    // Resumed in channels-last, it ends where the uninterrupted channels-last run ends, bit for bit.
    let pieces = dir.path().join("pieces");
    assert_eq!(train(&pieces, &exp("channels_last=true"), false, Some(3)).unwrap().status, Status::Interrupted);
    assert_eq!(train(&pieces, &exp("channels_last=true"), true, None).unwrap().status, Status::Finished);
    assert_same_run(&nhwc, &pieces);
}
