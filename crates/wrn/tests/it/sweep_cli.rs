//! `wrn sweep` end to end on synthetic CIFAR-10: it trains every row × seed of a table, skips finished
//! runs on a second call, resumes a run whose process was killed (as the out-of-memory killer would) or
//! stopped by SIGTERM (as a cluster would), and reports each outcome.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn wrn() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wrn"));
    // Tests that run inside a Slurm job see no GPU of its: a CPU task is what they test.
    cmd.env_remove("SLURM_JOB_GPUS").env_remove("SLURM_GPUS_ON_NODE");
    cmd
}

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{:?}: {}", cmd, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const TABLE: &str = r#"
title = "A tiny widening study"
source = "sweep_cli test"
statistic = "single run"
seeds = 1
[columns]
test_error = "%"
[train]
epochs = 2
batch_size = 32
dropout = 0.0
checkpoint_steps = 1
checkpoint_minutes = 0
[[row]]
id = "thin"
label = "WRN-10-1"
dataset = "cifar10"
arch = "wrn-10-1"
seeds = 2
[[row]]
id = "wide"
label = "WRN-16-4"
dataset = "cifar10"
arch = "wrn-16-4"
"#;

struct Setup {
    dir: tempfile::TempDir,
    sets: Vec<String>,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let synth = dir.path().join("synth");
        let data = dir.path().join("data");
        ok(wrn().args(["data", "synth", "cifar10", "--n", "300", "--out"]).arg(&synth));
        let manifest = synth.join("cifar10.toml");
        ok(wrn().arg("data").arg("--data-dir").arg(&data).arg("--manifest").arg(&manifest).args(["fetch", "cifar10"]));
        std::fs::create_dir_all(dir.path().join("tables")).unwrap();
        std::fs::write(dir.path().join("tables/tiny.toml"), TABLE).unwrap();
        let sets = [format!("data.dir='{}'", data.display()), format!("data.manifest='{}'", manifest.display())]
            .into_iter()
            .flat_map(|s| ["--set".to_string(), s])
            .collect();
        Setup { dir, sets }
    }

    fn runs(&self) -> PathBuf {
        self.dir.path().join("runs")
    }

    /// `wrn sweep` of the tiny table at smoke scale.
    fn sweep(&self) -> Command {
        let mut cmd = self.sweep_at("smoke");
        cmd.args(&self.sets);
        cmd
    }

    fn sweep_at(&self, scale: &str) -> Command {
        let mut cmd = wrn();
        cmd.arg("sweep").args(["--scale", scale]).arg("--tables").arg(self.dir.path().join("tables"));
        cmd.args(["--table", "tiny", "--gpus", "none", "--runs"]).arg(self.runs());
        cmd
    }

    fn run_dir(&self, arch: &str, seed: u32) -> PathBuf {
        self.runs().join(format!(
            "cifar10/{arch},batch_size=32,checkpoint_minutes=0,checkpoint_steps=1,dropout=0,epochs=2/seed{seed}"
        ))
    }
}

fn finished(run: &Path) -> bool {
    std::fs::read_to_string(run.join("result.json")).is_ok_and(|t| t.contains("\"finished\""))
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn a_sweep_trains_every_run_once_and_skips_them_after() {
    let s = Setup::new();
    let out = ok(&mut s.sweep());
    assert!(out.contains("3 runs (3 new, 0 to resume, 0 finished, 0 conflicting)"), "{out}");
    assert!(out.contains("sweep: 3 finished, 0 skipped"), "{out}");
    for (arch, seed) in [("wrn-10-1", 1), ("wrn-10-1", 2), ("wrn-16-4", 1)] {
        let run = s.run_dir(arch, seed);
        assert!(finished(&run), "{} did not finish", run.display());
        let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
        assert!(config.contains(&format!("seed = {seed}")) && config.contains("train_subset = 256"), "{config}");
        assert!(std::fs::read_to_string(run.join("sweep.log")).unwrap().contains("finished: test error"));
    }
    let before = std::fs::metadata(s.run_dir("wrn-16-4", 1).join("result.json")).unwrap().modified().unwrap();
    let out = ok(&mut s.sweep());
    assert!(out.contains("3 runs (0 new, 0 to resume, 3 finished, 0 conflicting)"), "{out}");
    assert!(out.contains("sweep: 0 finished, 3 skipped"), "{out}");
    let after = std::fs::metadata(s.run_dir("wrn-16-4", 1).join("result.json")).unwrap().modified().unwrap();
    assert_eq!(before, after);

    // The same folder at another scale is a conflict, never overwritten.
    let out = s.sweep_at("0.5").args(&s.sets).output().unwrap();
    let out_text = text(&out);
    assert!(!out.status.success(), "{out_text}");
    assert!(out_text.contains("was trained at another scale"), "{out_text}");
}

/// The pid of the sweep's `wrn train` child (started by one of its threads).
fn child_of(pid: u32) -> Option<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.find_map(|task| {
        let children = std::fs::read_to_string(task.ok()?.path().join("children")).ok()?;
        children.split_whitespace().next()?.parse().ok()
    })
}

/// Waits for the first checkpoint of `run` while the sweep `pid` runs.
fn wait_for_checkpoint(run: &Path, sweep: &mut std::process::Child) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while !run.join("checkpoint.safetensors").exists() {
        assert!(sweep.try_wait().unwrap().is_none(), "the sweep ended before a checkpoint");
        assert!(Instant::now() < deadline, "no checkpoint after 300 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn killed_and_stopped_runs_are_reported_and_resumed() {
    let s = Setup::new();
    let wide = s.run_dir("wrn-16-4", 1);

    // The run's process dies by SIGKILL: the sweep reports it with its log and goes on.
    let mut sweep = s.sweep().args(["--row", "wide"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    wait_for_checkpoint(&wide, &mut sweep);
    let child = child_of(sweep.id()).expect("the sweep runs wrn train");
    // SAFETY: signalling the sweep's child process.
    unsafe { libc::kill(child as i32, libc::SIGKILL) };
    let out = sweep.wait_with_output().unwrap();
    let log = text(&out);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("killed by SIGKILL (out of memory?); log: "), "{log}");
    assert!(!finished(&wide));

    // SIGTERM to the sweep (a cluster's preemption): the run checkpoints and the sweep says so.
    let sweep = s.sweep().args(["--row", "wide"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let start = Instant::now();
    while !std::fs::read_to_string(wide.join("train.log")).unwrap_or_default().contains("resumed at epoch") {
        assert!(start.elapsed() < Duration::from_secs(300), "the run was not resumed");
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(sweep.id() as i32, libc::SIGTERM) };
    let out = sweep.wait_with_output().unwrap();
    let log = text(&out);
    assert!(log.contains("1 runs (0 new, 1 to resume"), "{log}");
    if !finished(&wide) {
        assert!(!out.status.success() && log.contains("1 interrupted"), "{log}");
    }

    // The next sweep resumes it to the end and trains the rest.
    let out = ok(&mut s.sweep());
    assert!(out.contains("sweep: 2 finished") || out.contains("sweep: 3 finished"), "{out}");
    assert!(finished(&wide));
    let train_log = std::fs::read_to_string(wide.join("train.log")).unwrap();
    assert!(train_log.contains("resumed at epoch"), "{train_log}");
    // Each resume names the slot's device (the CPU here), whatever device the run began on.
    let sweep_log = std::fs::read_to_string(wide.join("sweep.log")).unwrap();
    let resumes: Vec<&str> = sweep_log.lines().filter(|l| l.starts_with("===") && l.contains("\"--resume\"")).collect();
    assert!(!resumes.is_empty(), "{sweep_log}");
    assert!(resumes.iter().all(|l| l.contains("\"--device\" \"cpu\"")), "{resumes:?}");
}

/// `wrn` with the stub driver (two GPUs) first on the library path and no CUDA backend to load.
fn wrn_with_stub_driver(driver: &Path) -> Command {
    let mut cmd = wrn();
    crate::common::with_stub_driver(&mut cmd, driver, 2);
    cmd
}

/// The task list beside the Slurm script a sweep's output says it wrote.
fn tasks_written(out: &str) -> std::path::PathBuf {
    let script = out.lines().find_map(|l| l.strip_prefix("wrote ")).unwrap_or_else(|| panic!("{out}"));
    wrn_sweep::slurm::tasks_file(Path::new(script))
}

/// Marks every run of the tiny table at smoke scale finished, so a sweep over it starts no run.
fn finish_all(s: &Setup) {
    for (arch, seed) in [("wrn-10-1", 1), ("wrn-10-1", 2), ("wrn-16-4", 1)] {
        let run = s.run_dir(arch, seed);
        std::fs::create_dir_all(&run).unwrap();
        let config = format!(
            "dataset = \"cifar10\"\narch = \"{arch}\"\nseed = {seed}\n[scale]\nepochs = 0.01\ntrain_subset = 256\n\
             test_subset = 256\n"
        );
        std::fs::write(run.join("config.toml"), config).unwrap();
        let result = format!(
            r#"{{"status": "finished", "dataset": "cifar10", "arch": "{arch}", "seed": {seed}, "epochs_planned": 1,
            "epochs_done": 1, "full_scale": false, "parameters": 1, "device": "cpu", "final_test_error": 5.0}}"#
        );
        std::fs::write(run.join("result.json"), result).unwrap();
    }
}

/// Arguments of a sweep of the tiny table at smoke scale, without `--gpus`.
fn tiny_sweep(s: &Setup, cmd: &mut Command) {
    cmd.arg("sweep").args(["--scale", "smoke"]).arg("--tables").arg(s.dir.path().join("tables"));
    cmd.args(["--table", "tiny", "--runs"]).arg(s.runs());
}

/// A setup with the tiny table and no data (no run of these tests trains).
fn tables_only() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("tables")).unwrap();
    std::fs::write(dir.path().join("tables/tiny.toml"), TABLE).unwrap();
    Setup { dir, sets: vec![] }
}

#[test]
fn gpus_the_driver_sees_but_cuda_cannot_use_stop_the_sweep() {
    let s = tables_only();
    finish_all(&s);
    let driver = crate::common::stub_driver(s.dir.path());

    // No --gpus: never a silent CPU sweep on a machine with GPUs.
    let mut cmd = wrn_with_stub_driver(&driver);
    tiny_sweep(&s, &mut cmd);
    let out = cmd.output().unwrap();
    let log = text(&out);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("the NVIDIA driver reports 2 GPU(s) but CUDA cannot be used: "), "{log}");
    assert!(log.contains("run `wrn doctor` for the cause, or pass --gpus none to train on the CPU"), "{log}");
    assert!(!log.contains("training on the CPU"), "{log}");

    // Named GPUs fail alike, before any run starts.
    let mut cmd = wrn_with_stub_driver(&driver);
    tiny_sweep(&s, &mut cmd);
    let out = cmd.args(["--gpus", "0"]).output().unwrap();
    let log = text(&out);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("--gpus 0: CUDA cannot be used: "), "{log}");

    // Asking for the CPU is the way out.
    let mut cmd = wrn_with_stub_driver(&driver);
    tiny_sweep(&s, &mut cmd);
    let out = cmd.args(["--gpus", "none"]).output().unwrap();
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("slot(s): cpu#0") && log.contains("3 skipped"), "{log}");
}

#[test]
fn gpu_indices_count_the_gpus_the_sweep_sees() {
    let s = tables_only();
    finish_all(&s);
    let mut cmd = wrn();
    tiny_sweep(&s, &mut cmd);
    let out = cmd.args(["--gpus", "0,1"]).env("CUDA_VISIBLE_DEVICES", "4").output().unwrap();
    let log = text(&out);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("GPU 1 of the sweep is beyond its CUDA_VISIBLE_DEVICES='4'"), "{log}");
    let mut cmd = wrn();
    tiny_sweep(&s, &mut cmd);
    let out = cmd.args(["--gpus", "0"]).env("CUDA_VISIBLE_DEVICES", "").output().unwrap();
    let log = text(&out);
    assert!(!out.status.success() && log.contains("which makes 0 GPU(s) visible"), "{log}");
}

#[test]
fn runs_over_several_gpus_need_gpus_that_split_into_them() {
    let s = tables_only();
    finish_all(&s);
    let mut cmd = wrn();
    tiny_sweep(&s, &mut cmd);
    let out = cmd.args(["--gpus", "none", "--gpus-per-run", "2"]).output().unwrap();
    let log = text(&out);
    assert!(!out.status.success() && log.contains("--gpus-per-run 2") && log.contains("needs GPUs"), "{log}");
    let mut cmd = wrn();
    tiny_sweep(&s, &mut cmd);
    let out = cmd.args(["--gpus-per-run", "2", "--slurm"]).output().unwrap();
    assert!(!out.status.success() && text(&out).contains("cannot be used with"), "{}", text(&out));
}

#[test]
fn without_a_driver_the_sweep_trains_on_the_cpu_and_says_why() {
    if Path::new("/proc/driver/nvidia/version").exists() {
        eprintln!("skipped: this machine has an NVIDIA driver");
        return;
    }
    let s = tables_only();
    finish_all(&s);
    let mut cmd = wrn();
    tiny_sweep(&s, &mut cmd);
    let out = cmd.env_remove("CUDA_VISIBLE_DEVICES").output().unwrap();
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("sweep: training on the CPU (") && log.contains("slot(s): cpu#0"), "{log}");
}

#[test]
fn a_slurm_task_for_cuda_fails_with_the_reason_rather_than_train_on_the_cpu() {
    let s = tables_only();
    let driver = crate::common::stub_driver(s.dir.path());
    let mut cmd = wrn();
    tiny_sweep(&s, &mut cmd);
    let out = ok(cmd.args(["--row", "wide", "--slurm", "--gres", "gpu:1"]));
    let tasks = tasks_written(&out);
    let json = std::fs::read_to_string(&tasks).unwrap();
    assert!(json.contains("\"device\": \"cuda\""), "{json}");
    let mut cmd = wrn_with_stub_driver(&driver);
    let out = cmd.arg("sweep").arg("task").arg(&tasks).arg("0").output().unwrap();
    let log = text(&out);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("the task asks for cuda but CUDA cannot be used here: "), "{log}");
    assert!(!s.run_dir("wrn-16-4", 1).join("config.toml").exists(), "a run started: {log}");
    // A task whose run has finished meanwhile (a requeued task) is skipped without asking for CUDA.
    finish_all(&s);
    let mut cmd = wrn_with_stub_driver(&driver);
    let out = cmd.arg("sweep").arg("task").arg(&tasks).arg("0").output().unwrap();
    let log = text(&out);
    assert!(out.status.success() && log.contains("0 finished, 1 skipped"), "{log}");
}

#[test]
fn a_slurm_task_for_the_cpu_that_slurm_granted_gpus_stops_and_says_how_to_ask_for_them() {
    let s = tables_only();
    let mut cmd = wrn();
    tiny_sweep(&s, &mut cmd);
    // A GPU asked for in a spelling the sweep recognises makes a cuda task list.
    let out = ok(cmd.args(["--row", "wide", "--slurm", "--sbatch=--gpus-per-task=1"]));
    let json = std::fs::read_to_string(tasks_written(&out)).unwrap();
    assert!(json.contains("\"device\": \"cuda\""), "{json}");
    // A CPU list run where Slurm granted the job GPUs: no run starts.
    let mut cmd = wrn();
    tiny_sweep(&s, &mut cmd);
    let out = ok(cmd.args(["--row", "wide", "--slurm", "--sbatch=--account=lab"]));
    let tasks = tasks_written(&out);
    // The driver sees the GPUs too (a stand-in driver with two).
    let driver = crate::common::stub_driver(s.dir.path());
    let mut cmd = wrn_with_stub_driver(&driver);
    let out = cmd.env("SLURM_JOB_GPUS", "0,1").arg("sweep").arg("task").arg(&tasks).arg("0").output().unwrap();
    let log = text(&out);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("this task list trains on the CPU, but Slurm granted the job GPUs (0,1)"), "{log}");
    assert!(!s.run_dir("wrn-16-4", 1).join("config.toml").exists(), "a run started: {log}");
}

#[test]
fn a_dry_run_lists_every_run_with_its_state_and_an_estimate_that_says_its_basis() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("tables")).unwrap();
    std::fs::write(dir.path().join("tables/tiny.toml"), TABLE).unwrap();
    let command = |gpus: &str| {
        let mut cmd = wrn();
        cmd.env("WRN_CACHE_DIR", dir.path().join("cache"))
            .args(["sweep", "--table", "tiny", "--gpus", gpus, "--dry-run", "--tables"])
            .arg(dir.path().join("tables"))
            .arg("--runs")
            .arg(dir.path().join("runs"));
        cmd
    };
    let dry_run = |extra: &[&str]| ok(command("none").args(extra));
    // Nothing measured on this machine: the paper's pace, and how to measure this one's.
    let out = dry_run(&[]);
    let rows: Vec<&str> = out.lines().filter(|l| l.starts_with("  tiny/")).collect();
    assert_eq!(rows.len(), 3, "{out}");
    assert!(rows[0].contains("cifar10") && rows[0].contains("wrn-10-1") && rows[0].contains("seed 1"), "{out}");
    assert!(rows.iter().all(|r| r.contains(" new ") && r.ends_with("(the paper's Titan X pace)")), "{out}");
    assert!(out.contains("estimate: ") && out.contains("`wrn sweep --calibrate` measures this CPU's"), "{out}");
    assert!(out.contains("these runs train on the CPU, but no pace of this CPU is recorded"), "{out}");

    // Calibrated: this CPU's measured pace, kept for the next plan.
    let out = dry_run(&["--calibrate"]);
    let rows: Vec<&str> = out.lines().filter(|l| l.starts_with("  tiny/")).collect();
    assert!(rows.iter().all(|r| r.contains("(measured pace of ") && r.ends_with(" cores)")), "{out}");
    // At the CPU's own pace the time is the CPU's, not GPU time.
    assert!(rows.iter().all(|r| r.contains(" CPU minutes (") || r.contains(" CPU hours (")), "{out}");
    assert!(!out.contains("GPU-") && !out.contains("Titan X"), "{out}");
    let paces = std::fs::read_to_string(dir.path().join("cache/paces.json")).unwrap();
    assert!(paces.contains("\"images_per_second\""), "{paces}");
    let again = dry_run(&[]);
    assert!(again.contains("(measured pace of "), "{again}");

    // A dry run says where the runs would train, and refuses the GPUs the sweep itself would refuse (this
    // machine's libtorch has no CUDA).
    let err = text(&command("none").output().unwrap());
    assert!(err.contains("sweep: would train on 1 slot(s): cpu#0"), "{err}");
    let out = command("0").output().unwrap();
    let err = text(&out);
    assert!(!out.status.success() && err.contains("error: --gpus 0: CUDA cannot be used: "), "{err}");
}

#[test]
fn a_typo_in_a_filter_or_a_count_of_zero_is_an_error_not_an_empty_sweep() {
    let s = tables_only();
    for (args, expected) in [
        (
            &["--dataset", "cifar-10"][..],
            "--dataset cifar-10: no row of the chosen tables trains on it (their datasets: cifar10",
        ),
        (&["--row", "wrn-99"][..], "--row wrn-99: no row id or label of the chosen tables contains it"),
        (&["--seeds", "0"][..], "invalid value '0' for '--seeds <SEEDS>'"),
        (&["--jobs", "0"][..], "invalid value '0' for '--jobs <JOBS>'"),
        (&["--slurm", "--max-parallel", "0"][..], "invalid value '0' for '--max-parallel <MAX_PARALLEL>'"),
        (&["--slurm", "--nodes", "0", "--tasks-per-node", "2"][..], "invalid value '0' for '--nodes <NODES>'"),
    ] {
        let mut cmd = wrn();
        tiny_sweep(&s, &mut cmd);
        let out = cmd.args(["--gpus", "none", "--dry-run"]).args(args).output().unwrap();
        let err = text(&out);
        assert!(!out.status.success() && err.contains(expected), "{args:?}: {err}");
    }
    assert!(!s.runs().exists(), "nothing written");
}

#[test]
fn a_second_sweep_over_a_held_runs_folder_starts_nothing_and_names_the_holder() {
    let s = tables_only();
    // Held as a running sweep holds it.
    let _held = wrn_sweep::lock(&s.runs(), "wrn sweep --table tiny").unwrap();
    let mut cmd = wrn();
    tiny_sweep(&s, &mut cmd);
    let out = cmd.args(["--gpus", "none"]).output().unwrap();
    let log = text(&out);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains(&format!("{} is in use by pid {}", s.runs().display(), std::process::id())), "{log}");
    assert!(log.contains("(wrn sweep --table tiny)"), "{log}");
    assert!(!log.contains("slot(s)") && !log.contains(" runs ("), "it planned or started something: {log}");
    let entries: Vec<String> =
        std::fs::read_dir(s.runs()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(entries, [".lock"]);
    // A dry run only reads, and is not refused.
    let mut cmd = wrn();
    tiny_sweep(&s, &mut cmd);
    let out = ok(cmd.args(["--gpus", "none", "--dry-run"]));
    assert!(out.contains("3 runs (3 new"), "{out}");
}

#[test]
fn a_run_whose_folder_another_process_holds_is_reported_in_use_not_failed() {
    let s = Setup::new();
    let held = s.run_dir("wrn-10-1", 2);
    std::fs::create_dir_all(&held).unwrap();
    let _lock = wrn_run::RunFolder::at(&held).lock("wrn train").unwrap();
    let out = s.sweep().args(["--row", "thin"]).output().unwrap();
    let log = text(&out);
    assert!(!out.status.success(), "the run is not done: {log}");
    assert!(
        log.contains(
            "sweep: 1 finished, 0 skipped (already finished), 0 interrupted, 0 not started, 0 failed, 1 in use"
        ),
        "{log}"
    );
    assert!(log.contains(&format!("not run: {}: ", held.display())) && log.contains("is in use by pid"), "{log}");
    assert!(!log.contains("FAILED"), "{log}");
    assert!(finished(&s.run_dir("wrn-10-1", 1)) && !finished(&held));
}
