//! Running a plan: each pending run in its own `wrn train` process, one at a time per slot (a GPU, or a
//! share of the CPU), so a crash or an out-of-memory costs one run. A stop request (SIGINT/SIGTERM to
//! the sweep) is passed on to every running child as SIGTERM, which makes `wrn train` checkpoint and
//! exit; no new run starts after it.
//!
//! A sweep holds its runs folder's lock ([`lock`]) while it runs, so a second sweep over the same folder
//! stops before it starts anything; each `wrn train` it starts takes its run folder's own lock, and a
//! run whose folder another process holds is reported as in use ([`Outcome::InUse`]), not as failed.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::devices::Slot;
use crate::plan::{Plan, PlannedRun, RunState, SweepError};

/// The cores this process may run on (its CPU affinity), at least one.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// How one run of the sweep ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Finished,
    /// Stopped by a stop request after checkpointing; the next sweep resumes it.
    Interrupted,
    /// Another process holds the run folder (`wrn train` said so and started nothing): who, in its words.
    InUse(String),
    /// The process failed; its output is in `log`.
    Failed {
        status: String,
        log: PathBuf,
    },
}

/// The end of a sweep.
#[derive(Debug, Default)]
pub struct Summary {
    pub finished: Vec<PathBuf>,
    pub skipped: Vec<PathBuf>,
    pub interrupted: Vec<PathBuf>,
    /// Pending runs a stop request kept from starting.
    pub not_started: Vec<PathBuf>,
    pub failed: Vec<(PathBuf, String, PathBuf)>,
    /// Runs whose folder another process held, with `wrn train`'s words naming it.
    pub in_use: Vec<(PathBuf, String)>,
    pub conflicts: Vec<(PathBuf, String)>,
}

impl Summary {
    pub fn ok(&self) -> bool {
        self.failed.is_empty()
            && self.in_use.is_empty()
            && self.conflicts.is_empty()
            && self.interrupted.is_empty()
            && self.not_started.is_empty()
    }

    /// A few lines for the end of a sweep.
    pub fn render(&self) -> String {
        let mut s = format!(
            "sweep: {} finished, {} skipped (already finished), {} interrupted, {} not started, {} failed, {} in \
             use elsewhere, {} conflicting\n",
            self.finished.len(),
            self.skipped.len(),
            self.interrupted.len(),
            self.not_started.len(),
            self.failed.len(),
            self.in_use.len(),
            self.conflicts.len()
        );
        for (dir, status, log) in &self.failed {
            s += &format!("  failed: {}: {status}; log: {}\n", dir.display(), log.display());
        }
        for (dir, holder) in &self.in_use {
            s += &format!("  not run: {}: {holder}\n", dir.display());
        }
        for dir in &self.interrupted {
            s += &format!("  interrupted: {} (the next sweep resumes it)\n", dir.display());
        }
        if !self.not_started.is_empty() {
            s += &format!("  {} runs not started: the next sweep runs them\n", self.not_started.len());
        }
        for (_, why) in &self.conflicts {
            s += &format!("  conflict: {why}\n");
        }
        s
    }
}

/// The file a run's process output goes to (appended, one section per attempt).
pub fn log_path(run: &PlannedRun) -> PathBuf {
    run.dir.join(wrn_run::SWEEP_LOG)
}

/// The `wrn train` command line of a run on a slot, over the slot's GPUs when it has several. A resumed
/// run trains on the slot's device too, whatever device it began on.
pub fn command(exe: &Path, run: &PlannedRun, slot: &Slot) -> Command {
    let mut cmd = Command::new(exe);
    cmd.arg("train");
    if run.state == RunState::Resume {
        cmd.arg("--resume").arg(&run.dir).arg("--device").arg(slot.device.as_str());
    } else {
        for set in &run.sets {
            cmd.arg("--set").arg(set);
        }
        cmd.arg("--set").arg(format!("device={}", slot.device)).arg("--out").arg(&run.dir);
    }
    // A run is never a torchrun rank of the sweep's caller.
    for var in INHERITED_WORLD {
        cmd.env_remove(var);
    }
    if slot.ranks > 1 {
        // One rank per GPU of the slot, on a store port of the group's own: a MASTER_PORT of the caller's would
        // be every group's at once. (A Slurm task keeps MASTER_ADDR/MASTER_PORT: its step's ranks share them.)
        cmd.arg("--nproc").arg(slot.ranks.to_string());
        cmd.env_remove("MASTER_ADDR").env_remove("MASTER_PORT");
    }
    cmd.envs(slot.env.iter().map(|(k, v)| (k, v)));
    cmd
}

/// The variables that make a process a rank of torchrun's, which a sweep's runs do not take from the sweep's
/// own environment.
pub const INHERITED_WORLD: [&str; 5] =
    ["RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "TORCHELASTIC_USE_AGENT_STORE"];

/// Runs one planned run on a slot to its end; `stop` asks it to checkpoint and exit.
pub fn run_one(exe: &Path, run: &PlannedRun, slot: &Slot, stop: &AtomicBool) -> Outcome {
    let log = log_path(run);
    let failed = |status: String| Outcome::Failed { status, log: log.clone() };
    if let Err(e) = std::fs::create_dir_all(&run.dir) {
        return failed(format!("cannot create {}: {e}", run.dir.display()));
    }
    let file = match OpenOptions::new().create(true).append(true).open(&log) {
        Ok(f) => f,
        Err(e) => return failed(format!("cannot open {}: {e}", log.display())),
    };
    let start = file.metadata().map_or(0, |m| m.len());
    let mut cmd = command(exe, run, slot);
    let header = format!("=== {:?} on {}\n", cmd, slot.name);
    let _ = std::io::Write::write_all(&mut &file, header.as_bytes());
    let err = match file.try_clone() {
        Ok(f) => f,
        Err(e) => return failed(format!("cannot open {}: {e}", log.display())),
    };
    let mut child = match cmd.stdin(Stdio::null()).stdout(file).stderr(err).spawn() {
        Ok(c) => c,
        Err(e) => return failed(format!("cannot start {}: {e}", exe.display())),
    };
    let mut signalled = false;
    let status: ExitStatus = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return failed(format!("cannot wait for the process: {e}")),
        }
        if stop.load(Ordering::SeqCst) && !signalled {
            // SAFETY: kill(2) on the pid of a child we have not reaped yet.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            signalled = true;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let finished = wrn_run::is_finished(&run.dir);
    match (status.success(), finished) {
        (true, true) => Outcome::Finished,
        (_, false) if signalled || status.code() == Some(130) => Outcome::Interrupted,
        (false, _) => match in_use(&log, start) {
            Some(holder) => Outcome::InUse(holder),
            None => failed(describe(status)),
        },
        _ => failed(describe(status)),
    }
}

/// `wrn train`'s refusal to start on a folder another process holds, from what this attempt wrote to
/// the log after byte `start`: the line saying it "is in use by" whom.
fn in_use(log: &Path, start: u64) -> Option<String> {
    let bytes = std::fs::read(log).ok()?;
    let text = String::from_utf8_lossy(bytes.get(start as usize..)?);
    let line = text.lines().find(|l| l.contains("is in use by"))?;
    Some(line.trim().trim_start_matches("error:").trim().to_string())
}

/// Takes the runs folder's lock for a sweep (`what`: the command, for whoever is refused), creating the
/// folder: a second sweep over the same folder is refused, naming this one, before it starts anything.
pub fn lock(runs: &Path, what: &str) -> Result<wrn_fs::Lock, SweepError> {
    std::fs::create_dir_all(runs).map_err(|source| SweepError::Create { path: runs.to_path_buf(), source })?;
    Ok(wrn_fs::Lock::acquire(runs, what)?)
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(libc::SIGKILL)) => "killed by SIGKILL (out of memory?)".into(),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "ended abnormally".into(),
    }
}

/// Runs every pending run of `plan` on `slots` (one run per slot at a time) and sums up. `on_event`
/// hears each start and end, for progress output.
pub fn execute(
    exe: &Path,
    plan: &Plan,
    slots: &[Slot],
    stop: Arc<AtomicBool>,
    on_event: &(dyn Fn(&str) + Sync),
) -> Summary {
    let mut summary = Summary::default();
    for run in &plan.runs {
        match &run.state {
            RunState::Finished => summary.skipped.push(run.dir.clone()),
            RunState::Conflict(why) => summary.conflicts.push((run.dir.clone(), why.clone())),
            _ => {}
        }
    }
    let queue: Mutex<VecDeque<&PlannedRun>> = Mutex::new(plan.pending().collect());
    let total = queue.lock().unwrap().len();
    let results: Mutex<Vec<(PathBuf, Outcome)>> = Mutex::new(Vec::new());
    let started = Instant::now();
    std::thread::scope(|scope| {
        for slot in slots {
            let (queue, results, stop) = (&queue, &results, &stop);
            scope.spawn(move || loop {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Some(run) = queue.lock().unwrap().pop_front() else { break };
                let verb = if run.state == RunState::Resume { "resume" } else { "start" };
                on_event(&format!("[{}] {verb} {} ({})", slot.name, run.dir.display(), run.rows.join(", ")));
                let t = Instant::now();
                let outcome = run_one(exe, run, slot, stop);
                let done = {
                    let mut r = results.lock().unwrap();
                    r.push((run.dir.clone(), outcome.clone()));
                    r.len()
                };
                on_event(&format!(
                    "[{}] {} {} in {:.0} s ({done}/{total} done, {:.0} s elapsed)",
                    slot.name,
                    match &outcome {
                        Outcome::Finished => "finished".to_string(),
                        Outcome::Interrupted => "interrupted".to_string(),
                        Outcome::InUse(holder) => format!("not run ({holder})"),
                        Outcome::Failed { status, log } => format!("FAILED ({status}, log {})", log.display()),
                    },
                    run.dir.display(),
                    t.elapsed().as_secs_f64(),
                    started.elapsed().as_secs_f64()
                ));
            });
        }
    });
    for (dir, outcome) in results.into_inner().unwrap() {
        match outcome {
            Outcome::Finished => summary.finished.push(dir),
            Outcome::Interrupted => summary.interrupted.push(dir),
            Outcome::InUse(holder) => summary.in_use.push((dir, holder)),
            Outcome::Failed { status, log } => summary.failed.push((dir, status, log)),
        }
    }
    // Runs a stop request kept from starting; the next sweep starts (or resumes) them.
    summary.not_started.extend(queue.into_inner().unwrap().into_iter().map(|run| run.dir.clone()));
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::CudaEnv;

    fn planned(state: RunState) -> PlannedRun {
        PlannedRun {
            rows: vec!["t/a".into()],
            dataset: "cifar10".into(),
            arch: "wrn-10-1".into(),
            seed: 1,
            dir: "/runs/a/seed1".into(),
            sets: vec!["arch=wrn-10-1".into(), "seed=1".into()],
            state,
        }
    }

    fn args(cmd: &Command) -> Vec<String> {
        cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect()
    }

    /// A stand-in for `wrn` that prints `words` to stderr and exits with `code`.
    fn script(dir: &Path, words: &str, code: i32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("wrn");
        std::fs::write(&path, format!("#!/bin/sh\necho \"{words}\" >&2\nexit {code}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn a_run_whose_folder_is_held_is_in_use_and_other_failures_fail() {
        let dir = tempfile::tempdir().unwrap();
        let mut run = planned(RunState::New);
        run.dir = dir.path().join("runs/a/seed1");
        let slot = &Slot::layout(&[], 1, 4, &CudaEnv::default()).unwrap()[0];
        let stop = AtomicBool::new(false);
        // An earlier attempt's refusal in the log is not this attempt's.
        std::fs::create_dir_all(&run.dir).unwrap();
        std::fs::write(log_path(&run), "error: x is in use by pid 1 (wrn train)\n").unwrap();
        let crash = script(dir.path(), "error: out of memory", 1);
        assert!(
            matches!(run_one(&crash, &run, slot, &stop), Outcome::Failed { status, .. } if status == "exit status 1")
        );
        let held = format!("error: {} is in use by pid 7 on host (wrn train) since 1 (Unix time)", run.dir.display());
        let refused = script(dir.path(), &held, 1);
        let expected = format!("{} is in use by pid 7 on host (wrn train) since 1 (Unix time)", run.dir.display());
        assert_eq!(run_one(&refused, &run, slot, &stop), Outcome::InUse(expected.clone()));
        let plan = Plan { runs: vec![run.clone()] };
        let summary = execute(&refused, &plan, std::slice::from_ref(slot), Arc::new(AtomicBool::new(false)), &|_| {});
        assert!(!summary.ok() && summary.failed.is_empty());
        assert_eq!(summary.in_use, [(run.dir.clone(), expected.clone())]);
        assert!(
            summary.render().contains(&format!("not run: {}: {expected}", run.dir.display())),
            "{}",
            summary.render()
        );
    }

    #[test]
    fn a_second_sweep_lock_on_one_runs_folder_is_refused_naming_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().join("runs");
        let _first = lock(&runs, "wrn sweep --table t4").unwrap();
        let err = lock(&runs, "wrn sweep --table t5").unwrap_err().to_string();
        assert!(err.contains("is in use by") && err.contains("(wrn sweep --table t4)"), "{err}");
    }

    #[test]
    fn a_new_run_sets_the_slots_device() {
        let slot = &Slot::layout(&[], 1, 4, &CudaEnv::default()).unwrap()[0];
        let cmd = command(Path::new("/bin/wrn"), &planned(RunState::New), slot);
        assert_eq!(cmd.get_program(), "/bin/wrn");
        assert_eq!(
            args(&cmd),
            ["train", "--set", "arch=wrn-10-1", "--set", "seed=1", "--set", "device=cpu", "--out", "/runs/a/seed1"]
        );
    }

    #[test]
    fn a_resumed_run_trains_on_the_slots_device() {
        let exe = Path::new("/bin/wrn");
        let gpu =
            &Slot::layout(&[1], 1, 4, &CudaEnv { visible_devices: Some("6,7".into()), device_order: None }).unwrap()[0];
        let cmd = command(exe, &planned(RunState::Resume), gpu);
        assert_eq!(args(&cmd), ["train", "--resume", "/runs/a/seed1", "--device", "cuda"]);
        let envs: Vec<(String, Option<String>)> = cmd
            .get_envs()
            .map(|(k, v)| (k.to_string_lossy().into_owned(), v.map(|v| v.to_string_lossy().into_owned())))
            .collect();
        assert!(envs.contains(&("CUDA_VISIBLE_DEVICES".into(), Some("7".into()))), "{envs:?}");
        assert!(envs.contains(&("CUDA_DEVICE_ORDER".into(), Some("PCI_BUS_ID".into()))), "{envs:?}");
        let cpu = &Slot::layout(&[], 1, 4, &CudaEnv::default()).unwrap()[0];
        let cmd = command(exe, &planned(RunState::Resume), cpu);
        assert_eq!(args(&cmd), ["train", "--resume", "/runs/a/seed1", "--device", "cpu"]);
        assert!(cmd.get_envs().any(|(k, v)| k == "CUDA_VISIBLE_DEVICES" && v == Some("".as_ref())));
    }

    #[test]
    fn a_run_over_several_gpus_starts_one_rank_on_each() {
        let exe = Path::new("/bin/wrn");
        let cuda = CudaEnv { visible_devices: Some("4,5,6,7".into()), device_order: None };
        let slots = Slot::layout_runs(&[0, 1, 2, 3], 2, 1, 16, &cuda).unwrap();
        let cmd = command(exe, &planned(RunState::New), &slots[1]);
        assert_eq!(args(&cmd)[args(&cmd).len() - 2..], ["--nproc", "2"]);
        assert!(cmd.get_envs().any(|(k, v)| k == "CUDA_VISIBLE_DEVICES" && v == Some("6,7".as_ref())));
        let cmd = command(exe, &planned(RunState::Resume), &slots[0]);
        assert_eq!(args(&cmd), ["train", "--resume", "/runs/a/seed1", "--device", "cuda", "--nproc", "2"]);
        assert!(cmd.get_envs().any(|(k, v)| k == "CUDA_VISIBLE_DEVICES" && v == Some("4,5".as_ref())));
        // No group takes a world (a MASTER_PORT above all, which two groups would share) from the sweep's caller.
        for var in INHERITED_WORLD.iter().chain(&["MASTER_ADDR", "MASTER_PORT"]) {
            assert!(cmd.get_envs().any(|(k, v)| k == *var && v.is_none()), "{var} is removed");
        }
    }
}
