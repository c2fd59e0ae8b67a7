//! Running a plan: each pending run in its own `wrn train` process, one at a time per slot (a GPU, or a
//! share of the CPU), so a crash or an out-of-memory costs one run. A stop request (SIGINT/SIGTERM to
//! the sweep) is passed on to every running child as SIGTERM, which makes `wrn train` checkpoint and
//! exit; no new run starts after it.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::devices::{CudaEnv, Device, DEVICE_ORDER_ENV, VISIBLE_DEVICES_ENV};
use crate::plan::{Plan, PlannedRun, RunState, SweepError};

/// Where a run executes: a device for `wrn train` and the environment that pins it.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    pub device: Device,
    pub env: Vec<(String, String)>,
    pub name: String,
}

impl Slot {
    /// `jobs` slots per GPU of `gpus`, or `jobs` CPU slots sharing `cores` when `gpus` is empty. `gpus` are
    /// indices among the GPUs the sweep sees: each maps through the sweep's `CUDA_VISIBLE_DEVICES` (`cuda`)
    /// to the child's, and GPU children enumerate in the sweep's `CUDA_DEVICE_ORDER` (`PCI_BUS_ID` unless
    /// the caller chose another), so they train on the GPU the sweep means.
    pub fn layout(gpus: &[u32], jobs: usize, cores: usize, cuda: &CudaEnv) -> Result<Vec<Slot>, SweepError> {
        let jobs = jobs.max(1);
        if gpus.is_empty() {
            let threads = (cores / jobs).max(1).to_string();
            return Ok((0..jobs)
                .map(|j| Slot {
                    device: Device::Cpu,
                    env: vec![("WRN_TORCH_THREADS".into(), threads.clone()), (VISIBLE_DEVICES_ENV.into(), "".into())],
                    name: format!("cpu#{j}"),
                })
                .collect());
        }
        let visible = cuda.children_visible(gpus)?;
        // Each GPU run feeds its GPU from a fair share of the cores.
        let data_threads = (cores / (gpus.len() * jobs)).max(1).to_string();
        let mut slots = Vec::new();
        for (&g, entry) in gpus.iter().zip(&visible) {
            // The sweep's index, and the GPU it stands for when the sweep runs under a list of its own.
            let gpu = if *entry == g.to_string() { format!("gpu{g}") } else { format!("gpu{g}({entry})") };
            for j in 0..jobs {
                slots.push(Slot {
                    device: Device::Cuda,
                    env: vec![
                        (VISIBLE_DEVICES_ENV.into(), entry.clone()),
                        (DEVICE_ORDER_ENV.into(), cuda.order().into()),
                        ("WRN_DATA_THREADS".into(), data_threads.clone()),
                    ],
                    name: if jobs == 1 { gpu.clone() } else { format!("{gpu}#{j}") },
                });
            }
        }
        Ok(slots)
    }
}

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
    pub conflicts: Vec<(PathBuf, String)>,
}

impl Summary {
    pub fn ok(&self) -> bool {
        self.failed.is_empty()
            && self.conflicts.is_empty()
            && self.interrupted.is_empty()
            && self.not_started.is_empty()
    }

    /// A few lines for the end of a sweep.
    pub fn render(&self) -> String {
        let mut s = format!(
            "sweep: {} finished, {} skipped (already finished), {} interrupted, {} not started, {} failed, {} \
             conflicting\n",
            self.finished.len(),
            self.skipped.len(),
            self.interrupted.len(),
            self.not_started.len(),
            self.failed.len(),
            self.conflicts.len()
        );
        for (dir, status, log) in &self.failed {
            s += &format!("  failed: {}: {status}; log: {}\n", dir.display(), log.display());
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

/// The `wrn train` command line of a run on a slot. A resumed run trains on the slot's device too,
/// whatever device it began on.
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
    cmd.envs(slot.env.iter().map(|(k, v)| (k, v)));
    cmd
}

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
        _ => failed(describe(status)),
    }
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

    fn env_of(slot: &Slot, key: &str) -> Option<String> {
        slot.env.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }

    fn cuda(visible: Option<&str>, order: Option<&str>) -> CudaEnv {
        CudaEnv { visible_devices: visible.map(Into::into), device_order: order.map(Into::into) }
    }

    #[test]
    fn slots_spread_gpus_and_cores() {
        let cpu = Slot::layout(&[], 2, 16, &CudaEnv::default()).unwrap();
        assert_eq!(cpu.len(), 2);
        assert_eq!(cpu[0].device, Device::Cpu);
        assert_eq!(env_of(&cpu[0], "WRN_TORCH_THREADS").as_deref(), Some("8"));
        assert_eq!(env_of(&cpu[0], "CUDA_VISIBLE_DEVICES").as_deref(), Some(""));
        let gpu = Slot::layout(&[0, 3], 2, 16, &CudaEnv::default()).unwrap();
        assert_eq!(gpu.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["gpu0#0", "gpu0#1", "gpu3#0", "gpu3#1"]);
        assert!(gpu.iter().all(|s| s.device == Device::Cuda));
        assert_eq!(env_of(&gpu[2], "CUDA_VISIBLE_DEVICES").as_deref(), Some("3"));
        assert_eq!(env_of(&gpu[2], "WRN_DATA_THREADS").as_deref(), Some("4"));
        assert_eq!(Slot::layout(&[1], 1, 4, &CudaEnv::default()).unwrap()[0].name, "gpu1");
    }

    #[test]
    fn gpu_slots_pin_their_gpu_through_the_sweeps_list_in_pci_order() {
        let slots = Slot::layout(&[0, 1], 1, 8, &cuda(Some("4,5"), None)).unwrap();
        assert_eq!(slots.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["gpu0(4)", "gpu1(5)"]);
        for (slot, physical) in slots.iter().zip(["4", "5"]) {
            assert_eq!(
                slot.env,
                [
                    ("CUDA_VISIBLE_DEVICES".to_string(), physical.to_string()),
                    ("CUDA_DEVICE_ORDER".to_string(), "PCI_BUS_ID".to_string()),
                    ("WRN_DATA_THREADS".to_string(), "4".to_string()),
                ]
            );
        }
        // Without a list of the sweep's own, index i is GPU i, still in PCI order.
        let plain = Slot::layout(&[2], 1, 8, &CudaEnv::default()).unwrap();
        assert_eq!(env_of(&plain[0], "CUDA_VISIBLE_DEVICES").as_deref(), Some("2"));
        assert_eq!(env_of(&plain[0], "CUDA_DEVICE_ORDER").as_deref(), Some("PCI_BUS_ID"));
        assert_eq!(env_of(&plain[0], "WRN_DATA_THREADS").as_deref(), Some("8"));
        // A caller's own order is kept, since its list's indices are in that order.
        let fastest = Slot::layout(&[0], 2, 8, &cuda(Some("GPU-aa,GPU-bb"), Some("FASTEST_FIRST"))).unwrap();
        assert_eq!(fastest.len(), 2);
        assert_eq!(env_of(&fastest[1], "CUDA_VISIBLE_DEVICES").as_deref(), Some("GPU-aa"));
        assert_eq!(env_of(&fastest[1], "CUDA_DEVICE_ORDER").as_deref(), Some("FASTEST_FIRST"));
        assert_eq!(env_of(&fastest[1], "WRN_DATA_THREADS").as_deref(), Some("4"));
        // An index beyond the list is an error, and so is any GPU under an empty list.
        let err = Slot::layout(&[0, 2], 1, 8, &cuda(Some("4,5"), None)).unwrap_err().to_string();
        assert!(err.contains("GPU 2 of the sweep") && err.contains("CUDA_VISIBLE_DEVICES='4,5'"), "{err}");
        assert!(Slot::layout(&[0], 1, 8, &cuda(Some(""), None)).is_err());
        // CPU slots need no GPU, whatever the list.
        assert_eq!(Slot::layout(&[], 1, 8, &cuda(Some(""), None)).unwrap()[0].device, Device::Cpu);
    }

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
        let gpu = &Slot::layout(&[1], 1, 4, &cuda(Some("6,7"), None)).unwrap()[0];
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
}
