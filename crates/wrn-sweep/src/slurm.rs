//! Slurm: instead of running a plan, write it as an sbatch array job, one task per pending run. Each
//! task runs `wrn sweep task <plan.json> <index>`, which applies the same rules as a local sweep (skip a
//! finished run, resume one with a checkpoint), so a requeued or preempted task continues from its last
//! checkpoint. Slurm sends SIGTERM two minutes before the time limit (`--signal=B:TERM@120`); `wrn train`
//! checkpoints on it and the task ends (Slurm requeues after a node failure or preemption, not at the time
//! limit: the next `wrn sweep --slurm` submits what is left, and its runs resume).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::devices::{require_cuda, visible_entries, CudaEnv, CudaStatus, Device, Slot};
use crate::plan::{Plan, PlannedRun, SweepError};

/// The CPUs Slurm gives each task of the array.
pub const CPUS_PER_TASK_ENV: &str = "SLURM_CPUS_PER_TASK";

/// The `#SBATCH` options of the array job.
#[derive(Debug, Clone, Default)]
pub struct SlurmOptions {
    pub job_name: String,
    pub partition: Option<String>,
    /// Wall-clock limit per task, in Slurm's syntax (`2-00:00:00`).
    pub time: Option<String>,
    /// Generic resources per task, e.g. `gpu:1`; a task with a GPU trains on `cuda` (and fails when CUDA
    /// cannot be used there), else on `cpu`.
    pub gres: Option<String>,
    pub cpus_per_task: Option<u32>,
    pub mem: Option<String>,
    /// At most this many tasks at once (`--array=0-N%max`).
    pub max_parallel: Option<u32>,
    /// Further `#SBATCH` lines, verbatim (e.g. `--account=abc`).
    pub extra: Vec<String>,
    /// Nodes per run: with `tasks_per_node`, each task of the array is one run trained by
    /// `nodes × tasks_per_node` ranks (`srun` starts one `wrn sweep task` per rank; `wrn train` finds its
    /// rank in Slurm's environment).
    pub nodes: Option<u32>,
    /// Ranks per node (one per GPU on GPU nodes).
    pub tasks_per_node: Option<u32>,
}

impl SlurmOptions {
    /// Every value goes into one `#SBATCH` line of the script: a newline or another control character would
    /// end it and start a line of its own (a command of the job script), so none is accepted.
    pub fn check(&self) -> Result<(), SweepError> {
        let named = [
            ("job name", Some(&self.job_name)),
            ("--partition", self.partition.as_ref()),
            ("--time", self.time.as_ref()),
            ("--gres", self.gres.as_ref()),
            ("--mem", self.mem.as_ref()),
        ];
        let extra = self.extra.iter().map(|e| ("--sbatch", Some(e)));
        for (what, value) in named.into_iter().chain(extra) {
            if let Some(bad) = value.and_then(|v| v.chars().find(|c| c.is_control())) {
                return Err(SweepError::Invalid(format!(
                    "Slurm option {what} {:?} holds the control character {:?}: each option must fit on one line",
                    value.unwrap(),
                    bad
                )));
            }
        }
        Ok(())
    }

    /// The ranks that train each run: `nodes × tasks_per_node`, one by default.
    pub fn ranks(&self) -> u32 {
        self.nodes.unwrap_or(1) * self.tasks_per_node.unwrap_or(1)
    }

    /// What the tasks train on: a GPU when the options ask Slurm for one, in any of its spellings
    /// (`--gres gpu:1`, or in the `--sbatch` lines `--gpus=2`, `--gpus-per-task=1`,
    /// `--gpus-per-node=a100:4`, `-G 1`, `--gres=gpu:1`, `--tres-per-task=gres/gpu:1`, a GPU's `shard` or
    /// `mps` share) with a count other than 0; else the CPU.
    pub fn device(&self) -> Device {
        let gres = self.gres.iter().any(|g| gres_asks_for_gpus(g));
        if gres || self.extra.iter().flat_map(|line| options_of(line)).any(|(f, v)| option_asks_for_gpus(&f, &v)) {
            Device::Cuda
        } else {
            Device::Cpu
        }
    }
}

/// The generic resources that put a task on a GPU: whole GPUs, or a share of one.
const GPU_GRES: [&str; 3] = ["gpu", "shard", "mps"];

/// Whether a `--gres` value (`gpu`, `gpu:2`, `gpu:a100:2`, `tmp:1,gpu:1`, `shard:2`) holds GPUs.
fn gres_asks_for_gpus(value: &str) -> bool {
    value.split(',').map(str::trim).any(|g| {
        let name = g.split(':').next().unwrap_or("");
        GPU_GRES.contains(&name) && count_is_not_zero(g)
    })
}

/// Whether a count such as `2`, `a100:2` or `gpu:a100:2` is not 0 (one without a number counts as one).
fn count_is_not_zero(value: &str) -> bool {
    value.rsplit([':', '=']).next().and_then(|n| n.trim().parse::<u64>().ok()) != Some(0)
}

/// The options of one `--sbatch` line as (flag, value) pairs, their quotes taken off: `--gpus=2`,
/// `--gpus 2`, `-G2`, and several options on one line (`--account=lab --gpus-per-task=1`).
fn options_of(line: &str) -> Vec<(String, String)> {
    let unquote = |v: &str| v.trim_matches(['"', '\'']).to_string();
    let words: Vec<&str> = line.split_whitespace().collect();
    let mut options = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let word = words[i];
        i += 1;
        if let Some((flag, value)) = word.split_once('=') {
            options.push((flag.to_string(), unquote(value)));
        } else if word.starts_with("-G") && word.len() > 2 && !word.starts_with("--") {
            options.push(("-G".to_string(), unquote(&word[2..])));
        } else if word.starts_with('-') && words.get(i).is_some_and(|next| !next.starts_with('-')) {
            options.push((word.to_string(), unquote(words[i])));
            i += 1;
        } else {
            options.push((word.to_string(), String::new()));
        }
    }
    options
}

/// Whether one `#SBATCH` option asks for GPUs.
fn option_asks_for_gpus(flag: &str, value: &str) -> bool {
    match flag {
        "--gres" => gres_asks_for_gpus(value),
        "-G" => count_is_not_zero(value),
        _ if flag.starts_with("--gpus") => count_is_not_zero(value),
        _ if flag.starts_with("--tres-per-") => value.split(',').any(|t| {
            let t = t.trim();
            GPU_GRES.iter().any(|g| {
                t.strip_prefix("gres/")
                    .and_then(|r| r.strip_prefix(g))
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '=']))
            }) && count_is_not_zero(t)
        }),
        _ => false,
    }
}

/// The GPUs Slurm granted this task's job, if any, from its variables (`var`): `SLURM_JOB_GPUS`, or a
/// count in `SLURM_GPUS_ON_NODE`.
pub fn granted_gpus(var: impl Fn(&str) -> Option<String>) -> Option<String> {
    let var = |k: &str| var(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    var("SLURM_JOB_GPUS").or_else(|| var("SLURM_GPUS_ON_NODE").filter(|n| n != "0"))
}

/// A CPU task that Slurm granted GPUs the NVIDIA driver sees (`driver_gpus`, asked only then) was written
/// without a GPU request `wrn` recognises: training on the CPU there would leave them idle for the whole
/// run, so it stops and says so. Slurm's variables alone (left over from the submitting shell by Slurm
/// before 22.05) do not stop it.
fn check_cpu_task(
    device: Device,
    granted: Option<&str>,
    driver_gpus: impl FnOnce() -> usize,
    tasks: &Path,
) -> Result<(), SweepError> {
    match (device, granted) {
        (Device::Cpu, Some(gpus)) if driver_gpus() > 0 => Err(SweepError::Invalid(format!(
            "{}: this task list trains on the CPU, but Slurm granted the job GPUs ({gpus}): the script asked for \
             them in a way `wrn sweep --slurm` did not recognise; write it again with --gres gpu:N (or \
             --gpus-per-node N) so its tasks train on the GPUs",
            tasks.display()
        ))),
        _ => Ok(()),
    }
}

/// The task list the script's tasks read: the pending runs and the device they train on (`"cpu"` or
/// `"cuda"` in the JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskFile {
    pub device: Device,
    pub runs: Vec<PlannedRun>,
}

impl TaskFile {
    pub fn load(path: &Path) -> Result<TaskFile, SweepError> {
        let text = std::fs::read_to_string(path).map_err(|source| SweepError::Io { path: path.into(), source })?;
        serde_json::from_str(&text).map_err(|e| SweepError::Invalid(format!("{}: {e}", path.display())))
    }
}

/// The task list beside a script [`write_slurm`] wrote.
pub fn tasks_file(script: &Path) -> PathBuf {
    script.with_extension("tasks.json")
}

/// Writes `<dir>/<job>-<hash>.sbatch` and beside it ([`tasks_file`]) `<dir>/<job>-<hash>.tasks.json` for the
/// pending runs of `plan`, `<hash>` being that of the task list: a later sweep writes a pair of its own, so an
/// array already submitted keeps reading the list it was submitted with (its tasks read it when they start).
/// Returns the script's path, or `None` when nothing is pending. `exe` is the `wrn` binary the tasks run.
pub fn write_slurm(plan: &Plan, options: &SlurmOptions, exe: &Path, dir: &Path) -> Result<Option<PathBuf>, SweepError> {
    options.check()?;
    let runs: Vec<PlannedRun> = plan.pending().cloned().collect();
    if runs.is_empty() {
        return Ok(None);
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SweepError::Io { path, source }
    };
    std::fs::create_dir_all(dir.join("slurm")).map_err(io(dir))?;
    let dir = std::path::absolute(dir).map_err(io(dir))?;
    let output = output_pattern(&dir)?;
    let exe = std::path::absolute(exe).map_err(io(exe))?;
    let mut tasks = TaskFile { device: options.device(), runs };
    for run in &mut tasks.runs {
        run.dir = std::path::absolute(&run.dir).map_err(io(&run.dir))?;
    }
    let json = serde_json::to_string_pretty(&tasks).expect("a task file serialises");
    let mut hash = std::hash::DefaultHasher::new();
    std::hash::Hasher::write(&mut hash, json.as_bytes());
    let script_path = dir.join(format!("{}-{:08x}.sbatch", options.job_name, std::hash::Hasher::finish(&hash) as u32));
    let tasks_path = tasks_file(&script_path);
    write_atomic(&tasks_path, json.as_bytes())?;
    let mut script = String::from("#!/bin/bash\n");
    let mut sbatch = |line: String| script.push_str(&format!("#SBATCH {line}\n"));
    sbatch(format!("--job-name={}", options.job_name));
    let last = tasks.runs.len() - 1;
    sbatch(match options.max_parallel {
        Some(max) => format!("--array=0-{last}%{max}"),
        None => format!("--array=0-{last}"),
    });
    sbatch(format!("--output={output}"));
    sbatch("--requeue".into());
    sbatch("--signal=B:TERM@120".into());
    let (nodes, per_node, ranks) = (options.nodes.unwrap_or(1), options.tasks_per_node.unwrap_or(1), options.ranks());
    if ranks > 1 {
        sbatch(format!("--nodes={nodes}"));
        sbatch(format!("--ntasks-per-node={per_node}"));
    } else {
        sbatch("--ntasks=1".into());
    }
    if let Some(p) = &options.partition {
        sbatch(format!("--partition={p}"));
    }
    if let Some(t) = &options.time {
        sbatch(format!("--time={t}"));
    }
    if let Some(g) = &options.gres {
        sbatch(format!("--gres={g}"));
    }
    if let Some(c) = options.cpus_per_task {
        sbatch(format!("--cpus-per-task={c}"));
    }
    if let Some(m) = &options.mem {
        sbatch(format!("--mem={m}"));
    }
    for line in &options.extra {
        sbatch(line.clone());
    }
    let launch = if ranks > 1 {
        // One process per rank; a rank that fails ends the step (the others exit on their own within
        // the ranks' timeout anyway, naming it).
        format!(
            "# {ranks} ranks per run ({nodes} node(s) x {per_node}): srun starts one `wrn sweep task` per rank,\n\
             # each with the job's CPUs per task (srun no longer takes them from sbatch since Slurm 22.05).\n\
             if [ -n \"${{SLURM_CPUS_PER_TASK:-}}\" ]; then export SRUN_CPUS_PER_TASK=\"$SLURM_CPUS_PER_TASK\"; fi\n\
             exec srun --kill-on-bad-exit=1 "
        )
    } else {
        "exec ".to_string()
    };
    script.push_str(&format!(
        "# {} runs of wrn; each task trains (or resumes, or skips) one of them.\n\
         set -euo pipefail\n\
         {launch}{} sweep task {} \"$SLURM_ARRAY_TASK_ID\"\n",
        tasks.runs.len(),
        quote(&exe),
        quote(&tasks_path)
    ));
    write_atomic(&script_path, script.as_bytes())?;
    Ok(Some(script_path))
}

/// The cores of a task: Slurm's allocation (`SLURM_CPUS_PER_TASK`), else the cores this process may
/// run on.
pub fn task_cores() -> usize {
    cores_of(std::env::var(CPUS_PER_TASK_ENV).ok().as_deref())
}

fn cores_of(cpus_per_task: Option<&str>) -> usize {
    cpus_per_task
        .and_then(|n| n.trim().parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or_else(crate::exec::available_cores)
}

/// The slot a task trains on: the CPU with the task's `cores`, or, for a `cuda` task, the task's GPU
/// `local` (its rank on the node when several ranks train one run, else its first; mapped through `env`,
/// the task's `CUDA_VISIBLE_DEVICES` as Slurm set it). `cuda` is asked only for a `cuda` task; when CUDA
/// cannot be used the task fails with the reason rather than training on the CPU.
pub fn task_slot(
    device: Device,
    cuda: impl FnOnce() -> CudaStatus,
    (cores, local): (usize, usize),
    env: &CudaEnv,
) -> Result<Slot, SweepError> {
    let gpus = match device {
        Device::Cpu => vec![],
        Device::Cuda => {
            require_cuda(cuda())?;
            // As `rank_gpu` in the trainer: a task that sees one GPU (Slurm's --gpus-per-task binds each
            // task its own) trains on it; one that sees the node's GPUs takes its local rank's.
            let sees_one = env.visible_devices.as_deref().is_some_and(|v| visible_entries(v).len() == 1);
            vec![if sees_one { 0 } else { local as u32 }]
        }
    };
    let mut slot = Slot::layout(&gpus, 1, cores, env)?.remove(0);
    slot.name = format!("slurm {}", slot.name);
    Ok(slot)
}

/// One task of a Slurm array: the run at `index` of the task file `tasks`, on the device the script
/// asked for, with the task's cores ([`task_cores`]) and `CUDA_VISIBLE_DEVICES`. The run's state is read
/// again from its folder (a requeued task, a run finished since), so a finished run is skipped without
/// asking `cuda`; a `cuda` task with a run to train fails with the reason where CUDA is unusable.
pub fn run_task(
    exe: &Path,
    tasks: &Path,
    index: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cuda: impl FnOnce() -> CudaStatus,
    driver_gpus: impl FnOnce() -> usize,
    on_event: &(dyn Fn(&str) + Sync),
) -> Result<crate::exec::Summary, SweepError> {
    let file = TaskFile::load(tasks)?;
    let Some(planned) = file.runs.get(index) else {
        return Err(SweepError::Invalid(format!(
            "{}: no task {index} (it lists {}); give an index below that, as the script written by `wrn sweep \
             --slurm` does",
            tasks.display(),
            file.runs.len()
        )));
    };
    let mut run = planned.clone();
    run.state = crate::plan::RunState::of(&run.dir);
    let plan = Plan { runs: vec![run] };
    let slots = match plan.pending().next() {
        Some(_) => {
            let granted = granted_gpus(|k| std::env::var(k).ok());
            check_cpu_task(file.device, granted.as_deref(), driver_gpus, tasks)?;
            vec![task_slot(file.device, cuda, (task_cores(), local_rank()), &CudaEnv::from_env())?]
        }
        None => vec![],
    };
    Ok(crate::exec::execute(exe, &plan, &slots, stop, on_event))
}

/// This task's rank on its node when an `srun` step of several tasks trains one run (`SLURM_LOCALID`),
/// else 0.
fn local_rank() -> usize {
    let var = |k: &str| std::env::var(k).ok().and_then(|v| v.trim().parse::<usize>().ok());
    match var("SLURM_STEP_NUM_TASKS") {
        Some(n) if n > 1 => var("SLURM_LOCALID").unwrap_or(0),
        _ => 0,
    }
}

/// The tasks' `--output` under `dir`, for an `#SBATCH` line: in double quotes (sbatch splits the line at
/// blanks outside them, and a `"` inside is escaped), with a `%` of the folder's name doubled so that only
/// the pattern's own (`%x_%A_%a`) are expanded. A backslash is refused: sbatch takes one in the path as a
/// request to expand no pattern at all, and every task would write one file of that literal name.
fn output_pattern(dir: &Path) -> Result<String, SweepError> {
    let text = dir.display().to_string();
    if text.contains('\\') {
        return Err(SweepError::Invalid(format!(
            "{text}: Slurm cannot name the tasks' output files under a folder whose path holds a backslash; sweep \
             into another --runs folder"
        )));
    }
    Ok(format!("\"{}/slurm/%x_%A_%a.out\"", text.replace('%', "%%").replace('"', "\\\"")))
}

/// A path quoted for bash.
fn quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SweepError> {
    wrn_fs::atomic_write(path, bytes).map_err(|e| SweepError::Io { path: e.path, source: e.source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::RunState;

    fn run(dir: &str, state: RunState) -> PlannedRun {
        PlannedRun {
            rows: vec!["t/a".into()],
            dataset: "cifar10".into(),
            arch: "wrn-10-1".into(),
            seed: 1,
            dir: dir.into(),
            sets: vec!["arch=wrn-10-1".into()],
            state,
        }
    }

    #[test]
    fn the_script_is_an_array_over_pending_runs() {
        let dir = tempfile::tempdir().unwrap();
        let plan = Plan {
            runs: vec![
                run("/r/a", RunState::New),
                run("/r/b", RunState::Finished),
                run("/r/c", RunState::Resume),
                run("/r/d", RunState::Conflict("x".into())),
            ],
        };
        let options = SlurmOptions {
            job_name: "wrn-t4".into(),
            partition: Some("gpu".into()),
            time: Some("1-00:00:00".into()),
            gres: Some("gpu:1".into()),
            max_parallel: Some(8),
            extra: vec!["--account=lab".into()],
            ..Default::default()
        };
        let script = write_slurm(&plan, &options, Path::new("/opt/wrn"), dir.path()).unwrap().unwrap();
        let text = std::fs::read_to_string(&script).unwrap();
        for line in [
            "#SBATCH --array=0-1%8",
            "#SBATCH --partition=gpu",
            "#SBATCH --time=1-00:00:00",
            "#SBATCH --gres=gpu:1",
            "#SBATCH --requeue",
            "#SBATCH --account=lab",
            "exec '/opt/wrn' sweep task",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        let output = format!("#SBATCH --output=\"{}/slurm/%x_%A_%a.out\"\n", dir.path().display());
        assert!(text.contains(&output), "{output} missing from:\n{text}");
        let tasks_path = tasks_file(&script);
        let tasks = TaskFile::load(&tasks_path).unwrap();
        assert_eq!(tasks.device, Device::Cuda);
        // The device is written as wrn train names it, so the file stays readable.
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&tasks_path).unwrap()).unwrap();
        assert_eq!(json["device"], "cuda");
        assert_eq!(tasks.runs.iter().map(|r| r.dir.to_str().unwrap()).collect::<Vec<_>>(), ["/r/a", "/r/c"]);
        let none = Plan { runs: vec![run("/r/b", RunState::Finished)] };
        assert!(write_slurm(&none, &options, Path::new("/opt/wrn"), dir.path()).unwrap().is_none());
        let cpu = SlurmOptions { job_name: "wrn-cpu".into(), ..Default::default() };
        let cpu_script = write_slurm(&plan, &cpu, Path::new("/opt/wrn"), dir.path()).unwrap().unwrap();
        let text = std::fs::read_to_string(tasks_file(&cpu_script)).unwrap();
        assert!(text.contains("\"device\": \"cpu\""), "{text}");
        // Another plan under the same job name writes a pair of its own: the submitted list stays as it was.
        let later = Plan { runs: vec![run("/r/c", RunState::Resume)] };
        let later_script = write_slurm(&later, &options, Path::new("/opt/wrn"), dir.path()).unwrap().unwrap();
        assert_ne!(later_script, script);
        assert_eq!(TaskFile::load(&tasks_path).unwrap().runs.len(), 2, "the first array's list is untouched");
        assert_eq!(TaskFile::load(&tasks_file(&later_script)).unwrap().runs.len(), 1);
        let again = write_slurm(&plan, &options, Path::new("/opt/wrn"), dir.path()).unwrap().unwrap();
        assert_eq!(again, script, "the same plan, the same pair");
    }

    #[test]
    fn gpus_asked_for_in_any_spelling_make_gpu_tasks() {
        let with = |gres: Option<&str>, extra: &[&str]| {
            SlurmOptions {
                gres: gres.map(String::from),
                extra: extra.iter().map(|e| e.to_string()).collect(),
                ..Default::default()
            }
            .device()
        };
        for extra in [
            "--gpus=2",
            "--gpus 1",
            "--gpus-per-task=1",
            "--gpus-per-node=a100:4",
            "-G 1",
            "-G2",
            "--gres=gpu:1",
            "--gres=tmp:10G,gpu:h100:2",
            "--tres-per-task=gres/gpu:1",
            "--tres-per-task=cpu=4,gres/gpu=1",
            "--tres-per-task=gres/gpu:a100:1",
            "--gres=\"gpu:1\"",
            "--gres=gpu:tesla:2",
            "--gres gpu:1",
            "--gpus-per-socket=1",
            "--gres=shard:2",
            "--gres=mps:50",
            "--account=lab --gpus-per-task=1",
            "--time 1:00:00 -G 1",
        ] {
            assert_eq!(with(None, &["--account=lab", extra]), Device::Cuda, "{extra}");
        }
        assert_eq!(with(Some("gpu:1"), &[]), Device::Cuda);
        assert_eq!(with(Some("gpu"), &[]), Device::Cuda);
        for extra in [
            "--gpus=0",
            "--gres=gpu:0",
            "--tres-per-task=gres/gpu=0",
            "--gres=none",
            "-G0",
            "--tres-per-task=gres/gpumem:10G",
            "--gres=tmp:1",
            "--account=gpu-lab",
            "--constraint=gpu",
            "--qos=gpus",
        ] {
            assert_eq!(with(None, &[extra]), Device::Cpu, "{extra}");
        }
        assert_eq!(with(Some("gpu:0"), &[]), Device::Cpu);
        assert_eq!(with(None, &[]), Device::Cpu);
    }

    #[test]
    fn a_cpu_task_granted_gpus_stops_rather_than_leave_them_idle() {
        let tasks = Path::new("/r/wrn-t4-1.tasks.json");
        let never = || -> usize { panic!("the driver is asked only for a CPU task granted GPUs") };
        assert!(check_cpu_task(Device::Cpu, None, never, tasks).is_ok());
        assert!(check_cpu_task(Device::Cuda, Some("0,1"), never, tasks).is_ok());
        // Slurm's variables without a GPU the driver sees (left over by an older Slurm): trains on the CPU.
        assert!(check_cpu_task(Device::Cpu, Some("0,1"), || 0, tasks).is_ok());
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(name, _)| *name == k).map(|(_, v)| v.to_string())
        };
        assert_eq!(granted_gpus(env(&[("SLURM_JOB_GPUS", "0,1")])).as_deref(), Some("0,1"));
        assert_eq!(granted_gpus(env(&[("SLURM_GPUS_ON_NODE", "2")])).as_deref(), Some("2"));
        assert_eq!(granted_gpus(env(&[("SLURM_GPUS_ON_NODE", "0"), ("SLURM_JOB_GPUS", " ")])), None);
        assert_eq!(granted_gpus(env(&[])), None);
        let err = check_cpu_task(Device::Cpu, Some("0,1"), || 2, tasks).unwrap_err().to_string();
        assert!(err.starts_with("/r/wrn-t4-1.tasks.json: this task list trains on the CPU"), "{err}");
        assert!(err.contains("granted the job GPUs (0,1)") && err.contains("--gres gpu:N"), "{err}");
    }

    #[test]
    fn an_option_with_a_newline_is_refused_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let plan = Plan { runs: vec![run("/r/a", RunState::New)] };
        for options in [
            SlurmOptions { job_name: "j".into(), partition: Some("gpu\nrm -rf ~".into()), ..Default::default() },
            SlurmOptions { job_name: "j".into(), extra: vec!["--account=a\r".into()], ..Default::default() },
            SlurmOptions { job_name: "j".into(), time: Some("1:00\u{1b}[2J".into()), ..Default::default() },
        ] {
            let err = write_slurm(&plan, &options, Path::new("/opt/wrn"), dir.path()).unwrap_err().to_string();
            assert!(err.contains("holds the control character") && err.contains("must fit on one line"), "{err}");
        }
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "nothing written");
    }

    #[test]
    fn the_output_path_on_an_sbatch_line_is_one_argument_whose_patterns_are_slurms() {
        assert_eq!(output_pattern(Path::new("/runs/my runs")).unwrap(), r#""/runs/my runs/slurm/%x_%A_%a.out""#);
        assert_eq!(output_pattern(Path::new(r#"/a"b/100%"#)).unwrap(), r#""/a\"b/100%%/slurm/%x_%A_%a.out""#);
        let err = output_pattern(Path::new(r"/a\b")).unwrap_err().to_string();
        assert!(err.starts_with(r"/a\b: Slurm cannot name") && err.contains("another --runs folder"), "{err}");
    }

    #[test]
    fn a_task_uses_its_allocation() {
        assert_eq!(cores_of(Some("6")), 6);
        let machine = crate::exec::available_cores();
        assert_eq!(cores_of(None), machine);
        assert_eq!(cores_of(Some("0")), machine);
        assert_eq!(cores_of(Some("lots")), machine);
    }

    #[test]
    fn a_task_slot_trains_on_the_tasks_gpu_or_cores() {
        let never = || -> CudaStatus { panic!("a CPU task does not ask CUDA") };
        let cpu = task_slot(Device::Cpu, never, (6, 0), &CudaEnv::default()).unwrap();
        assert_eq!(cpu.device, Device::Cpu);
        assert!(cpu.env.contains(&("WRN_TORCH_THREADS".into(), "6".into())), "{:?}", cpu.env);
        // Slurm gave the task GPU 3 of the node: its child trains there, in PCI order, on the task's cores.
        let slurm = CudaEnv { visible_devices: Some("3".into()), device_order: None };
        let gpu = task_slot(Device::Cuda, || Ok(1), (6, 0), &slurm).unwrap();
        assert_eq!(gpu.device, Device::Cuda);
        assert_eq!(
            gpu.env,
            [
                ("CUDA_VISIBLE_DEVICES".to_string(), "3".to_string()),
                ("CUDA_DEVICE_ORDER".to_string(), "PCI_BUS_ID".to_string()),
                ("WRN_DATA_THREADS".to_string(), "6".to_string()),
            ]
        );
        // A cuda task where CUDA cannot be used fails with the reason, never trains on the CPU.
        let err = task_slot(
            Device::Cuda,
            || Err(crate::devices::NoCuda { reason: "no NVIDIA driver".into() }),
            (6, 0),
            &slurm,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("asks for cuda") && err.contains("no NVIDIA driver"), "{err}");
        // Rank 1 of a run's ranks on a node Slurm gave GPUs 2 and 5 trains on GPU 5.
        let node = CudaEnv { visible_devices: Some("2,5".into()), device_order: None };
        let second = task_slot(Device::Cuda, || Ok(2), (6, 1), &node).unwrap();
        assert_eq!(second.env[0], ("CUDA_VISIBLE_DEVICES".to_string(), "5".to_string()));
        // Under --gpus-per-task, rank 1 sees only its own GPU: it trains on that one.
        let own = CudaEnv { visible_devices: Some("5".into()), device_order: None };
        let bound = task_slot(Device::Cuda, || Ok(1), (6, 1), &own).unwrap();
        assert_eq!(bound.env[0], ("CUDA_VISIBLE_DEVICES".to_string(), "5".to_string()));
    }

    #[test]
    fn a_run_over_several_nodes_is_one_srun_step_of_a_rank_per_task() {
        let dir = tempfile::tempdir().unwrap();
        let plan = Plan { runs: vec![run("/r/a", RunState::New), run("/r/b", RunState::New)] };
        let options = SlurmOptions {
            job_name: "wrn-multi".into(),
            gres: Some("gpu:4".into()),
            nodes: Some(2),
            tasks_per_node: Some(4),
            ..Default::default()
        };
        let text =
            std::fs::read_to_string(write_slurm(&plan, &options, Path::new("/opt/wrn"), dir.path()).unwrap().unwrap())
                .unwrap();
        for line in [
            "#SBATCH --array=0-1\n",
            "#SBATCH --nodes=2\n",
            "#SBATCH --ntasks-per-node=4\n",
            "#SBATCH --gres=gpu:4\n",
            "then export SRUN_CPUS_PER_TASK=\"$SLURM_CPUS_PER_TASK\"; fi\n",
            "exec srun --kill-on-bad-exit=1 '/opt/wrn' sweep task",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(!text.contains("--ntasks=1"), "{text}");
    }
}
