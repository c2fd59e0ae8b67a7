//! One run over several processes, with real Gloo between real `wrn train` processes over 127.0.0.1:
//! 2 and 3 ranks train as one process does with ghost batch norm over the per-rank batch (losses and
//! weights within 1e-5); a run over two or three ranks stopped and resumed ends bit for bit as the
//! uninterrupted one, and a run over two resumes over three; a killed rank makes the others fail within 60 s naming
//! it; SIGTERM to one rank stops all of them after rank 0's checkpoint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tch::Tensor;

fn wrn() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wrn"))
}

fn ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{:?}: {}", cmd, String::from_utf8_lossy(&out.stderr));
    out
}

/// Synthetic CIFAR-10 (300 images) fetched and prepared once: (data dir, manifest).
fn data() -> &'static (PathBuf, PathBuf) {
    static DATA: OnceLock<(tempfile::TempDir, PathBuf, PathBuf)> = OnceLock::new();
    let (_, data, manifest) = DATA.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let (synth, data) = (dir.path().join("synth"), dir.path().join("data"));
        ok(wrn().args(["data", "synth", "cifar10", "--n", "300", "--out"]).arg(&synth));
        let manifest = synth.join("cifar10.toml");
        ok(wrn().arg("data").arg("--data-dir").arg(&data).arg("--manifest").arg(&manifest).args(["fetch", "cifar10"]));
        (dir, data, manifest)
    });
    static VIEW: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    VIEW.get_or_init(|| (data.clone(), manifest.clone()))
}

/// `wrn train` of a WRN-10-1 without dropout (its masks are drawn per rank) on the synthetic data.
fn train(run: &Path, extra: &[&str]) -> Command {
    let (data, manifest) = data();
    let mut sets = vec![
        "arch=wrn-10-1".to_string(),
        "dropout=0".into(),
        "scale.test_subset=64".into(),
        "checkpoint_minutes=0".into(),
        "device=cpu".into(),
        format!("data.dir='{}'", data.display()),
        format!("data.manifest='{}'", manifest.display()),
    ];
    sets.extend(extra.iter().map(|s| s.to_string()));
    let mut cmd = wrn();
    cmd.arg("train").args(sets.iter().flat_map(|s| ["--set", s.as_str()])).arg("--out").arg(run);
    cmd
}

fn checkpoint(run: &Path) -> BTreeMap<String, Tensor> {
    Tensor::read_safetensors(run.join("checkpoint.safetensors")).unwrap().into_iter().collect()
}

/// `metrics.csv` as (column, value) rows, without the timing columns.
fn metrics(run: &Path) -> Vec<Vec<(String, f64)>> {
    let text = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    lines
        .map(|line| {
            header
                .iter()
                .zip(line.split(','))
                .filter(|(h, _)| !["images_per_second", "data_wait_fraction", "epoch_seconds"].contains(&h.as_str()))
                .map(|(h, v)| (h.clone(), v.parse().unwrap()))
                .collect()
        })
        .collect()
}

/// The largest relative difference between two runs' weights (each tensor's norm of the difference
/// over its norm) and losses.
fn differences(a: &Path, b: &Path) -> (f64, f64) {
    let (wa, wb) = (checkpoint(a), checkpoint(b));
    assert_eq!(wa.keys().collect::<Vec<_>>(), wb.keys().collect::<Vec<_>>());
    let mut weights: f64 = 0.0;
    for (name, ta) in wa.iter().filter(|(n, _)| n.starts_with("model.")) {
        let ta = ta.to_kind(tch::Kind::Double);
        let tb = wb[name].to_kind(tch::Kind::Double);
        let norm = ta.norm().double_value(&[]).max(1e-12);
        weights = weights.max((&ta - &tb).norm().double_value(&[]) / norm);
    }
    let (ma, mb) = (metrics(a), metrics(b));
    assert_eq!(ma.len(), mb.len());
    let mut losses: f64 = 0.0;
    for (ra, rb) in ma.iter().zip(&mb) {
        for ((h, va), (_, vb)) in ra.iter().zip(rb) {
            if h.ends_with("loss") {
                losses = losses.max((va - vb).abs() / va.abs().max(1e-12));
            }
        }
    }
    (weights, losses)
}

#[test]
fn ranks_on_cuda_take_their_own_gpus_and_say_why_they_cannot() {
    let dir = tempfile::tempdir().unwrap();
    // A GPU named by index would put every rank on it.
    let out = train(&dir.path().join("one-gpu"), &["device='cuda:1'"]).args(["--nproc", "2"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("would put every rank on one GPU"), "{err}");
    // Without CUDA here, ranks asked for it stop with libtorch's reason, not on the CPU.
    let out = train(&dir.path().join("cuda"), &["device='cuda'"]).args(["--nproc", "2"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("CUDA"), "{err}");
    assert!(!dir.path().join("cuda").join("result.json").exists());
}

#[test]
fn two_and_three_ranks_train_as_one_process_with_ghost_batch_norm_over_their_part() {
    let dir = tempfile::tempdir().unwrap();
    // Two epochs of two steps: an evaluation between them and momentum across them. (Over more steps the
    // rounding apart grows: a batch-norm channel with almost no variance in a group of 16 magnifies it a
    // few hundredfold in one step, which is the network's arithmetic, not the ranks'.)
    for (ranks, batch, subset) in [(2usize, 32usize, 64usize), (3, 30, 60)] {
        let per_rank = batch / ranks;
        let common = [format!("batch_size={batch}"), format!("scale.train_subset={subset}"), "epochs=2".into()];
        let common: Vec<&str> = common.iter().map(String::as_str).collect();
        let one = dir.path().join(format!("one-{ranks}"));
        let bn_group = format!("bn_group={per_rank}");
        ok(&mut train(&one, &[common.as_slice(), &[bn_group.as_str()]].concat()));
        let many = dir.path().join(format!("ranks-{ranks}"));
        let out = ok(train(&many, &common).args(["--nproc", &ranks.to_string()]));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&format!("rank 0 of {ranks}")), "{stderr}");
        assert_eq!(stderr.matches("finished: test error").count(), 1, "rank 0 alone reports: {stderr}");
        let (weights, losses) = differences(&one, &many);
        assert!(weights < 1e-5 && losses < 1e-5, "{ranks} ranks: weights {weights:e}, losses {losses:e} apart");
        // The ranks' arithmetic is not the one process's: equal within rounding, not bit for bit.
        assert!(weights > 0.0, "{ranks} ranks: the same weights bit for bit is suspicious");
        let log = std::fs::read_to_string(many.join("train.log")).unwrap();
        assert!(log.contains(&format!("data parallel over {ranks} ranks")), "{log}");
        assert_eq!(log.matches("finished").count(), 1, "one writer of the log: {log}");
    }
}

#[test]
fn runs_over_two_and_three_ranks_resume_bit_for_bit_and_continue_over_another_count() {
    let dir = tempfile::tempdir().unwrap();
    let two = stopped_resumes_bit_for_bit(dir.path(), 2);
    // Over three ranks the order of each sum in Gloo's ring depends on where a gradient sits in its
    // bucket: the buckets must be the same after a resume as in the uninterrupted run.
    stopped_resumes_bit_for_bit(dir.path(), 3);
    // The sampler is global: the same checkpoint continues over three ranks.
    ok(wrn().arg("train").arg("--resume").arg(&two).args(["--nproc", "3"]));
    assert_eq!(metrics(&two).len(), 2);
    let result: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(two.join("result.json")).unwrap()).unwrap();
    assert_eq!(result["status"], "finished");
    assert_eq!(result["device"], "cpu × 3 ranks", "the result says where it trained last");
    // The environment records the ranks now, and the two it ran over before.
    let env: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(two.join("environment.json")).unwrap()).unwrap();
    assert_eq!(env["ranks"]["size"], 3);
    assert_eq!(env["ranks"]["backend"], "gloo");
    assert_eq!(env["ranks"]["hosts"].as_array().unwrap().len(), 3);
    assert_eq!(env["ranks"]["hosts"][2], env["host"], "every rank runs on this machine");
    assert_eq!(env["previous"][0]["ranks"]["size"], 2);
}

/// Trains a run over `nproc` ranks in one go and again stopped after 3 steps, resumed for 2 and resumed
/// to the end: both end with the same checkpoint bit for bit and the same metrics. Returns a copy of
/// the run as it was after its first 3 steps.
fn stopped_resumes_bit_for_bit(dir: &Path, nproc: usize) -> PathBuf {
    let set = ["batch_size=30", "scale.train_subset=120", "epochs=2"];
    let nproc = nproc.to_string();
    let whole = dir.join(format!("whole{nproc}"));
    ok(train(&whole, &set).args(["--nproc", &nproc]));
    let parts = dir.join(format!("parts{nproc}"));
    ok(train(&parts, &set).args(["--nproc", &nproc, "--max-steps", "3"]));
    assert!(!parts.join("result.json").exists());
    let copy = dir.join(format!("copy{nproc}"));
    std::fs::create_dir_all(&copy).unwrap();
    for entry in std::fs::read_dir(&parts).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != ".lock" {
            std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
        }
    }
    ok(wrn().arg("train").arg("--resume").arg(&parts).args(["--nproc", &nproc, "--max-steps", "2"]));
    ok(wrn().arg("train").arg("--resume").arg(&parts).args(["--nproc", &nproc]));
    let (a, b) = (checkpoint(&whole), checkpoint(&parts));
    for (name, t) in &a {
        assert!(t.equal(&b[name]), "{name} differs after resuming over {nproc} ranks");
    }
    assert_eq!(metrics(&whole), metrics(&parts));
    copy
}

/// Starts rank `rank` of `size` as torchrun would, its output to files in `dir`.
fn rank(cmd: Command, rank: usize, size: usize, port: u16, dir: &Path) -> Child {
    let mut cmd = cmd;
    let err = std::fs::File::create(dir.join(format!("rank{rank}.err"))).unwrap();
    cmd.env("RANK", rank.to_string())
        .env("WORLD_SIZE", size.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .env("WRN_TORCH_THREADS", "1")
        .stdout(Stdio::null())
        .stderr(err);
    cmd.spawn().unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits for every child, at most `limit` in all; returns how each exited.
fn wait_all(children: &mut [Child], limit: Duration) -> Vec<ExitStatus> {
    let started = Instant::now();
    let mut statuses = vec![None; children.len()];
    while statuses.iter().any(Option::is_none) {
        assert!(started.elapsed() < limit, "the ranks did not all exit within {limit:?}");
        for (child, status) in children.iter_mut().zip(&mut statuses) {
            if status.is_none() {
                *status = child.try_wait().unwrap();
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    statuses.into_iter().flatten().collect()
}

/// Waits until rank 0 has started training (its log says so).
fn wait_for_training(run: &Path) {
    let started = Instant::now();
    while !std::fs::read_to_string(run.join("train.log")).unwrap_or_default().contains("training images per epoch") {
        assert!(started.elapsed() < Duration::from_secs(60), "training did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
}

/// Three ranks of a long run in `dir/run`, started as torchrun would with `env` added, once rank 0 has
/// begun training.
fn three_ranks_training(dir: &Path, env: &[(&str, &str)]) -> (PathBuf, Vec<Child>) {
    let run = dir.join("run");
    let port = free_port();
    let set = ["batch_size=30", "scale.train_subset=120", "epochs=200"];
    let with_env = |mut cmd: Command| {
        cmd.envs(env.iter().copied());
        cmd
    };
    let children: Vec<Child> = (0..3).map(|r| rank(with_env(train(&run, &set)), r, 3, port, dir)).collect();
    wait_for_training(&run);
    (run, children)
}

#[test]
fn a_rank_that_cannot_reach_rank_0_says_so_without_a_cpp_backtrace_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let attempt = |show: &str| {
        let mut cmd = train(&dir.path().join("run"), &[]);
        cmd.env("RANK", "1")
            .env("WORLD_SIZE", "2")
            .env("LOCAL_RANK", "1")
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env("WRN_DIST_TIMEOUT", "2")
            .env("TORCH_SHOW_CPP_STACKTRACES", show);
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = attempt("0");
    assert!(
        err.contains(&format!("error: rank 1 of 2: cannot reach the other ranks through 127.0.0.1:{port}")),
        "{err}"
    );
    assert!(!err.contains("frame #"), "{err}");
    // PyTorch's switch shows libtorch's backtrace for whoever wants it.
    assert!(attempt("1").contains("frame #"));
}

#[test]
fn ranks_started_with_different_runs_all_stop_naming_the_difference() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let port = free_port();
    let set = ["batch_size=30", "scale.train_subset=120", "epochs=1"];
    let seeds = ["seed=1", "seed=2"];
    let mut children: Vec<Child> =
        (0..2).map(|r| rank(train(&run, &[&set[..], &[seeds[r]]].concat()), r, 2, port, dir.path())).collect();
    let statuses = wait_all(&mut children, Duration::from_secs(60));
    for (r, status) in statuses.iter().enumerate() {
        let err = std::fs::read_to_string(dir.path().join(format!("rank{r}.err"))).unwrap();
        assert_eq!(status.code(), Some(1), "rank {r} ({status}): {err}");
        assert!(
            err.contains(&format!("rank {r} of 2: the ranks were started with different runs"))
                && err.contains("seed is 2 on rank 1, 1 on rank 0"),
            "rank {r}: {err}"
        );
    }
    assert!(!run.join("metrics.csv").exists() && !run.join("result.json").exists(), "a step was taken");
}

#[test]
fn a_killed_rank_makes_the_others_fail_within_a_minute_naming_it() {
    for victim in [1usize, 0] {
        let dir = tempfile::tempdir().unwrap();
        let (run, mut children) = three_ranks_training(dir.path(), &[]);
        // A dead peer can raise SIGPIPE in any rank (Gloo writes to its peers with writev): none may die of it.
        for child in &children {
            // SAFETY: kill(2) on a child of this test that has not been reaped.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGPIPE) };
        }
        children[victim].kill().unwrap();
        let killed_at = Instant::now();
        let statuses = wait_all(&mut children, Duration::from_secs(60));
        assert!(killed_at.elapsed() < Duration::from_secs(60));
        for r in (0..3).filter(|&r| r != victim) {
            let err = std::fs::read_to_string(dir.path().join(format!("rank{r}.err"))).unwrap();
            assert_eq!(statuses[r].code(), Some(1), "rank {r} ({}): {err}", statuses[r]);
            let named = if victim == 0 { "rank 0 is gone".to_string() } else { format!("rank {victim} stopped") };
            assert!(err.contains(&format!("rank {r} of 3")) && err.contains(&named), "rank {r}: {err}");
        }
        assert!(!run.join("result.json").exists(), "no result from a failed run");
    }
}

#[test]
fn a_hung_rank_makes_the_others_fail_after_the_timeout_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (run, mut children) = three_ranks_training(dir.path(), &[("WRN_DIST_TIMEOUT", "8")]);
    let mut hung = children.remove(1);
    // SAFETY: kill(2) on a child of this test that has not been reaped.
    unsafe { libc::kill(hung.id() as libc::pid_t, libc::SIGSTOP) };
    let statuses = wait_all(&mut children, Duration::from_secs(60));
    hung.kill().unwrap();
    hung.wait().unwrap();
    let errs: Vec<String> =
        [0, 2].iter().map(|r| std::fs::read_to_string(dir.path().join(format!("rank{r}.err"))).unwrap()).collect();
    for ((r, status), err) in [0, 2].into_iter().zip(statuses).zip(&errs) {
        assert_eq!(status.code(), Some(1), "rank {r} ({status}): {err}");
        assert!(err.contains(&format!("rank {r} of 3")) && err.contains("rank 1 stopped"), "rank {r}: {err}");
    }
    // The first rank to fail waited out the collective's timeout (the other may then see it leave).
    assert!(errs.iter().any(|e| e.contains("Timed out waiting 8000ms")), "{errs:?}");
    assert!(!run.join("result.json").exists(), "no result from a failed run");
}

#[test]
fn sigterm_to_one_rank_stops_all_after_rank_0s_checkpoint_and_the_run_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let (run, mut children) = three_ranks_training(dir.path(), &[]);
    // SAFETY: kill(2) on a child of this test that has not been reaped.
    unsafe { libc::kill(children[2].id() as libc::pid_t, libc::SIGTERM) };
    let statuses = wait_all(&mut children, Duration::from_secs(60));
    let codes: Vec<_> = statuses.iter().map(ExitStatus::code).collect();
    assert_eq!(codes, [Some(130); 3], "every rank stops as interrupted ({statuses:?})");
    let log = std::fs::read_to_string(run.join("train.log")).unwrap();
    assert_eq!(log.matches("interrupted").count(), 1, "{log}");
    assert!(run.join("checkpoint.safetensors").exists());
    let out = ok(wrn().arg("train").arg("--resume").arg(&run).args(["--nproc", "2", "--max-steps", "1"]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("rank 0 of 2"));
}
