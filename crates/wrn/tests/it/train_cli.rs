//! `wrn train` as a cluster would treat it: killed with SIGKILL at an arbitrary moment, or stopped with
//! SIGINT, then resumed with `--resume`; either way the run ends bit for bit where an uninterrupted run
//! ends. A run folder another process holds is refused and left as it was. Data come from `wrn data
//! synth` and `wrn data fetch` on the synthetic archive.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tch::Tensor;

fn wrn() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wrn"))
}

fn ok(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{:?}: {}", cmd, String::from_utf8_lossy(&out.stderr));
}

/// Synthetic CIFAR-10 fetched and prepared by the CLI; returns the `--set` flags of a small run on it.
fn setup(dir: &Path) -> Vec<String> {
    let synth = dir.join("synth");
    let data = dir.join("data");
    ok(wrn().args(["data", "synth", "cifar10", "--n", "300", "--out"]).arg(&synth));
    let manifest = synth.join("cifar10.toml");
    ok(wrn().arg("data").arg("--data-dir").arg(&data).arg("--manifest").arg(&manifest).args(["fetch", "cifar10"]));
    [
        "arch=wrn-10-1".to_string(),
        "epochs=2".into(),
        "dropout=0.3".into(),
        "batch_size=32".into(),
        "scale.train_subset=192".into(),
        "scale.test_subset=48".into(),
        "checkpoint_minutes=0".into(),
        "checkpoint_steps=1".into(),
        // Bit-for-bit resume is a promise of the CPU (cuDNN's algorithms are not deterministic).
        "device=cpu".into(),
        format!("data.dir='{}'", data.display()),
        format!("data.manifest='{}'", manifest.display()),
    ]
    .into_iter()
    .flat_map(|s| ["--set".to_string(), s])
    .collect()
}

fn start(sets: &[String], out: &Path) -> Child {
    wrn().arg("train").args(sets).arg("--out").arg(out).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()
}

/// The checkpoint's (epoch, step), if a complete checkpoint exists.
fn progress(run: &Path) -> Option<(i64, i64)> {
    let named: BTreeMap<String, Tensor> =
        Tensor::read_safetensors(run.join("checkpoint.safetensors")).ok()?.into_iter().collect();
    Some((named.get("state.epoch")?.int64_value(&[]), named.get("state.step")?.int64_value(&[])))
}

/// Waits until the run has checkpointed at least `steps` steps of epoch 1 (or moved past it).
fn wait_for(run: &Path, child: &mut Child, steps: i64) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if matches!(progress(run), Some((e, s)) if e > 1 || s >= steps) {
            return;
        }
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it was interrupted");
        assert!(Instant::now() < deadline, "no checkpoint after 300 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn same_run(a: &Path, b: &Path) {
    let (x, y): (BTreeMap<String, Tensor>, BTreeMap<String, Tensor>) = (
        Tensor::read_safetensors(a.join("checkpoint.safetensors")).unwrap().into_iter().collect(),
        Tensor::read_safetensors(b.join("checkpoint.safetensors")).unwrap().into_iter().collect(),
    );
    assert_eq!(x.keys().collect::<Vec<_>>(), y.keys().collect::<Vec<_>>());
    for (name, t) in &x {
        assert!(t.equal(&y[name]), "{name} differs");
    }
    let losses = |p: &Path| -> Vec<String> {
        let text = std::fs::read_to_string(p.join("metrics.csv")).unwrap();
        // epoch, lr, train loss/error, test loss/errors: everything but the timings.
        text.lines().map(|l| l.split(',').take(7).collect::<Vec<_>>().join(",")).collect()
    };
    assert_eq!(losses(a), losses(b));
    assert!(b.join("result.json").exists());
}

#[test]
fn killed_or_interrupted_runs_resume_to_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let sets = setup(dir.path());
    let whole: PathBuf = dir.path().join("whole");
    let mut child = start(&sets, &whole);
    assert!(child.wait().unwrap().success());

    // SIGKILL at an arbitrary moment after the third step's checkpoint: no chance to clean up.
    let killed = dir.path().join("killed");
    let mut child = start(&sets, &killed);
    wait_for(&killed, &mut child, 3);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!killed.join("result.json").exists());
    ok(wrn().arg("train").arg("--resume").arg(&killed));
    same_run(&whole, &killed);

    // SIGINT: the run finishes its step, writes a checkpoint and exits with 130.
    let stopped = dir.path().join("stopped");
    let mut child = start(&sets, &stopped);
    wait_for(&stopped, &mut child, 2);
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let status = child.wait().unwrap();
    if status.code() == Some(130) {
        let log = std::fs::read_to_string(stopped.join("train.log")).unwrap();
        assert!(log.contains("interrupted at epoch") || log.contains("interrupted after epoch"), "{log}");
        ok(wrn().arg("train").arg("--resume").arg(&stopped));
    } else {
        // The signal arrived as the run finished its last step.
        assert!(status.success(), "{status:?}");
    }
    same_run(&whole, &stopped);
}

#[test]
fn a_run_folder_in_use_is_refused_naming_its_holder_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let sets = setup(dir.path());
    let run = dir.path().join("run");
    ok(wrn().arg("train").args(&sets).arg("--out").arg(&run).args(["--max-steps", "2"]));
    let files =
        ["checkpoint.safetensors", "checkpoint.prev.safetensors", "metrics.csv", "environment.json", "train.log"];
    let bytes = || files.map(|f| std::fs::read(run.join(f)).unwrap());
    let before = bytes();

    let held = wrn_fs::Lock::acquire(&run, "another trainer").unwrap();
    let out = wrn().arg("train").arg("--resume").arg(&run).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let refusal = format!("is in use by pid {}", std::process::id());
    assert!(stderr.contains(&refusal) && stderr.contains("(another trainer)"), "{stderr}");
    assert_eq!(stderr.matches("is in use by").count(), 1, "said once: {stderr}");
    assert!(before == bytes(), "the refused run wrote to its folder");
    // A new run into the same folder is refused the same way.
    let out = wrn().arg("train").args(&sets).arg("--out").arg(&run).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains(&refusal));

    drop(held);
    ok(wrn().arg("train").arg("--resume").arg(&run));
    assert!(run.join("result.json").exists());
}

#[test]
fn cuda_graphs_on_the_cpu_are_refused_with_the_reason_and_the_folder_still_takes_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let sets = setup(dir.path());
    let run = dir.path().join("run");
    let out = wrn().arg("train").args(&sets).args(["--set", "cuda_graphs=true", "--out"]).arg(&run).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("CUDA graphs: they replay steps on a GPU, and this run trains on cpu"), "{stderr}");
    assert!(stderr.contains("set cuda_graphs = false"), "{stderr}");
    assert!(!run.join("checkpoint.safetensors").exists());
    // Nothing the refusal left stands in the way of the run without them.
    ok(wrn().arg("train").args(&sets).arg("--out").arg(&run).args(["--max-steps", "1"]));
    assert!(run.join("checkpoint.safetensors").exists());
}

#[test]
fn a_run_whose_stderr_closes_trains_on_to_its_result() {
    let dir = tempfile::tempdir().unwrap();
    let sets = setup(dir.path());
    let run = dir.path().join("run");
    // As `wrn train ... 2>&1 | tee log` whose tee has died: every line to stderr fails with EPIPE.
    let mut child = wrn()
        .arg("train")
        .args(&sets)
        .arg("--out")
        .arg(&run)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status}");
    let result = std::fs::read_to_string(run.join("result.json")).unwrap();
    assert!(result.contains("\"status\": \"finished\""), "{result}");
    // An error said to a closed stderr is an exit status, not a panic.
    let mut child = wrn()
        .args(["train", "--set", "optimizer.lr=abc", "--out"])
        .arg(dir.path().join("bad"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    assert_eq!(child.wait().unwrap().code(), Some(1));
}

/// The file below `dir` named `name`, searched depth-first.
fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.file_name().is_some_and(|n| n == name) {
            return Some(path);
        }
        if path.is_dir() {
            if let Some(found) = find(&path, name) {
                return Some(found);
            }
        }
    }
    None
}

#[test]
fn a_damaged_prepared_split_is_named_as_damaged_not_as_missing() {
    let dir = tempfile::tempdir().unwrap();
    let sets = setup(dir.path());
    // A split the dataset does not have is named with the ones it has.
    let out = wrn()
        .arg("train")
        .args(&sets)
        .args(["--set", "train_splits=[\"nope\"]", "--out"])
        .arg(dir.path().join("nope"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("train_splits: cifar10 has no training split 'nope' (its training splits: train)"), "{err}");
    let split = find(&dir.path().join("data"), "train.wrnc").expect("the prepared train split");
    let len = std::fs::metadata(&split).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&split).unwrap().set_len(len - 100).unwrap();
    let out = wrn().arg("train").args(&sets).arg("--out").arg(dir.path().join("run")).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cifar10's prepared train split cannot be used: ")
            && err.contains(&split.display().to_string())
            && err.contains("(truncated)")
            && err.matches("run `wrn data verify cifar10`").count() == 1
            && !err.contains("is not prepared"),
        "{err}"
    );
}
