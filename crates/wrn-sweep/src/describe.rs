//! The plan in words, before a sweep runs: a summary line; with `--dry-run` every run with its state
//! and estimated time; then the totals by the basis of their estimates (finished seeds of the row, a
//! measured pace, or the paper's Titan X pace) and the time from start to end for the devices the runs
//! train on at once. A run to resume is priced for the epochs it has left. The price of a run at a pace
//! comes from the caller (the trainer's cost model needs libtorch).

use std::fmt::Write as _;
use std::path::Path;

use crate::devices::Device;
use crate::plan::{
    epochs_done, measured_cost, Plan, PlannedRun, PriceError, RunCost, RunState, SweepError, SweepScale,
};

/// How pending runs without a finished seed of their row are priced.
pub struct Pricing<'a> {
    /// What the runs train on: a GPU's time is GPU-hours, the CPU's hours of this CPU.
    pub on: Device,
    /// The device whose measured pace prices them; `None`: the paper's Titan X pace.
    pub measured_on: Option<String>,
    /// Whether this machine can measure the pace of the runs' device (a Slurm sweep of GPU tasks written
    /// where there is no GPU cannot).
    pub pace_here: bool,
    /// What a run of these `wrn train` settings takes at that pace, whole.
    pub cost: &'a mut dyn FnMut(&[String]) -> Result<RunCost, PriceError>,
}

/// How many devices train the sweep's runs at once, which turns their time in all into the time from
/// start to end (runs are priced at one device's pace; one over K GPUs is taken to take 1/K of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concurrency {
    /// A sweep on this machine: `devices` GPUs (1 for the CPU), `per_run` of them per run. Runs sharing a
    /// device (`--jobs`) share its pace.
    Local { devices: usize, per_run: usize },
    /// A Slurm array: at most `at_once` tasks at a time (`--max-parallel`; `None`: as the cluster
    /// schedules them), each run over `per_run` GPUs or ranks.
    Slurm { at_once: Option<usize>, per_run: usize },
}

/// A run's state in words: new, resume after epoch N, finished, conflict.
pub fn state_words(run: &PlannedRun) -> String {
    match &run.state {
        RunState::New => "new".into(),
        RunState::Resume => format!("resume after epoch {}", epochs_done(&run.dir)),
        RunState::Finished => "finished".into(),
        RunState::Conflict(_) => "conflict".into(),
    }
}

/// Device time: GPU-hours (GPU-minutes below one), or hours (minutes) of the CPU.
pub fn hours(seconds: f64, on: Device) -> String {
    let (amount, unit) = if seconds >= 3600.0 { (seconds / 3600.0, "hours") } else { (seconds / 60.0, "minutes") };
    match on {
        Device::Cuda => format!("{amount:.1} GPU-{unit}"),
        Device::Cpu => format!("{amount:.1} CPU {unit}"),
    }
}

/// An estimate: device seconds, on what basis, and whose time it is (a GPU's at the paper's pace, else
/// the device the runs train on).
struct Estimate {
    seconds: f64,
    basis: String,
    unit: Device,
}

/// What a pending run is estimated to take (what is left of it, for a run to resume), and on what basis:
/// finished seeds of its row on the same kind of device, else the pace.
fn estimate(run: &PlannedRun, pricing: &mut Pricing, basis: &str) -> Result<Estimate, SweepError> {
    let (cost, basis, unit) = match measured_cost(run, pricing.on == Device::Cuda) {
        Some(cost) => (cost, "finished seeds of this row".to_string(), pricing.on),
        None => {
            let cost =
                (pricing.cost)(&run.sets).map_err(|source| SweepError::Price { rows: run.rows.join(", "), source })?;
            (cost, basis.to_string(), if pricing.measured_on.is_some() { pricing.on } else { Device::Cuda })
        }
    };
    let seconds = match run.state {
        RunState::Resume => cost.left_after(epochs_done(&run.dir)),
        _ => cost.seconds,
    };
    Ok(Estimate { seconds, basis, unit })
}

/// The plan of a sweep of `tables` into `runs` (see the module doc); `list` names every run, and `at_once`
/// gives the time from start to end.
pub fn describe(
    plan: &Plan,
    tables: &[&str],
    runs: &Path,
    scale: SweepScale,
    pricing: &mut Pricing,
    list: bool,
    at_once: Concurrency,
) -> Result<String, SweepError> {
    let mut s = format!(
        "sweep of {} at scale {scale} into {}: {} runs ({} new, {} to resume, {} finished, {} conflicting)\n",
        tables.join(", "),
        runs.display(),
        plan.runs.len(),
        plan.count(&RunState::New),
        plan.count(&RunState::Resume),
        plan.count(&RunState::Finished),
        plan.conflicts().count()
    );
    let basis = match &pricing.measured_on {
        Some(device) => format!("measured pace of {device}"),
        None => TITAN_X.to_string(),
    };
    let mut totals: Vec<Estimate> = Vec::new();
    let mut longest: f64 = 0.0;
    for run in &plan.runs {
        let pending = matches!(run.state, RunState::New | RunState::Resume);
        let estimate = if pending { Some(estimate(run, pricing, &basis)?) } else { None };
        if list {
            let _ = writeln!(
                s,
                "  {:<34} {:<8} {:<16} seed {:<2} {:<22} {}",
                run.rows.join(", "),
                run.dataset,
                run.arch,
                run.seed,
                state_words(run),
                estimate.as_ref().map_or(String::new(), |e| format!("{} ({})", hours(e.seconds, e.unit), e.basis))
            );
        }
        if let Some(estimate) = estimate {
            longest = longest.max(estimate.seconds);
            match totals.iter_mut().find(|t| t.basis == estimate.basis) {
                Some(total) => total.seconds += estimate.seconds,
                None => totals.push(estimate),
            }
        }
    }
    totals_text(&mut s, &totals, longest, at_once, pricing);
    for run in plan.conflicts() {
        if let RunState::Conflict(why) = &run.state {
            let _ = writeln!(s, "conflict: {why}");
        }
    }
    Ok(s)
}

/// The estimate in all (per unit, when bases differ in theirs), by basis, and from start to end with
/// `at_once` (no run ends before the `longest` does).
fn totals_text(s: &mut String, totals: &[Estimate], longest: f64, at_once: Concurrency, pricing: &Pricing) {
    if totals.is_empty() {
        return;
    }
    let parts: Vec<String> = totals.iter().map(|t| format!("{} by {}", hours(t.seconds, t.unit), t.basis)).collect();
    let mut units: Vec<(Device, f64)> = Vec::new();
    for t in totals {
        match units.iter_mut().find(|(u, _)| *u == t.unit) {
            Some((_, sum)) => *sum += t.seconds,
            None => units.push((t.unit, t.seconds)),
        }
    }
    let in_all: Vec<String> = units.iter().map(|(u, sum)| hours(*sum, *u)).collect();
    let _ = writeln!(s, "estimate: {} in all: {}", in_all.join(" and "), parts.join(" + "));
    let all: f64 = totals.iter().map(|t| t.seconds).sum();
    let span = |lanes: usize, per_run: usize| duration((all / lanes as f64).max(longest / per_run as f64));
    match at_once {
        Concurrency::Local { devices, per_run } if devices > 1 => {
            let each = if per_run > 1 { format!(", {per_run} per run") } else { String::new() };
            let _ = writeln!(s, "  on {devices} GPUs{each}: about {} from start to end", span(devices, per_run));
        }
        Concurrency::Local { .. } => {}
        Concurrency::Slurm { at_once: Some(tasks), per_run } => {
            let each = if per_run > 1 { format!(", each over {per_run} GPUs or ranks") } else { String::new() };
            let _ = writeln!(
                s,
                "  at most {tasks} Slurm task(s) at once{each}: about {} from start to end",
                span(tasks * per_run, per_run)
            );
        }
        Concurrency::Slurm { at_once: None, per_run } => {
            let _ = writeln!(
                s,
                "  at least {} from start to end (the longest run); how many tasks run at once is the cluster's \
                 choice (--max-parallel caps it)",
                duration(longest / per_run as f64)
            );
        }
    }
    if totals.iter().any(|t| t.basis == TITAN_X) {
        s.push_str(match (pricing.on, pricing.pace_here) {
            (Device::Cpu, _) => {
                "  (these runs train on the CPU, but no pace of this CPU is recorded, so they are priced at the \
                 paper's Titan X pace, many times faster than a CPU: `wrn sweep --calibrate` measures this CPU's)\n"
            }
            (Device::Cuda, true) => {
                "  (the Titan X pace is the paper's Figure 4, 312 ms per 32 WRN-28-10 images; a current GPU is \
                 several times faster: `wrn sweep --calibrate` measures this machine's)\n"
            }
            (Device::Cuda, false) => {
                "  (the Titan X pace is the paper's Figure 4, 312 ms per 32 WRN-28-10 images; a current GPU is \
                 several times faster, and this machine has no GPU to measure one)\n"
            }
        });
    }
}

/// Seconds from start to end in hours, or in minutes below one.
fn duration(seconds: f64) -> String {
    if seconds >= 3600.0 {
        format!("{:.1} hours", seconds / 3600.0)
    } else {
        format!("{:.0} minutes", (seconds / 60.0).ceil())
    }
}

/// The basis of estimates at the paper's pace.
const TITAN_X: &str = "the paper's Titan X pace";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::PlannedRun;

    fn run(dir: &Path, seed: u32, state: RunState) -> PlannedRun {
        PlannedRun {
            rows: vec![format!("t/r{seed}")],
            dataset: "cifar10".into(),
            arch: "wrn-28-10".into(),
            seed,
            dir: dir.join(format!("cifar10/wrn-28-10/seed{seed}")),
            sets: vec![format!("seed={seed}")],
            state,
        }
    }

    /// A new run of another row.
    fn run_of(dir: &Path, row: &str, seed: u32) -> PlannedRun {
        PlannedRun {
            rows: vec![format!("t/{row}")],
            dir: dir.join(format!("cifar10/{row}/seed{seed}")),
            ..run(dir, seed, RunState::New)
        }
    }

    /// The plan's text with every run costing 10 hours over 10 epochs, at the pace measured here or at
    /// the paper's.
    fn text(plan: &Plan, on: Device, measured: bool, at_once: Concurrency) -> String {
        let mut cost = |_: &[String]| Ok(RunCost { seconds: 10.0 * 3600.0, epochs: 10 });
        let mut pricing =
            Pricing { on, measured_on: measured.then(|| "NVIDIA H200".to_string()), cost: &mut cost, pace_here: true };
        describe(plan, &["t"], Path::new("runs"), SweepScale::Full, &mut pricing, true, at_once).unwrap()
    }

    fn line<'a>(text: &'a str, start: &str) -> &'a str {
        text.lines().find(|l| l.trim_start().starts_with(start)).unwrap_or_else(|| panic!("no '{start}' in\n{text}"))
    }

    #[test]
    fn a_run_to_resume_is_priced_for_the_epochs_it_has_left() {
        let dir = tempfile::tempdir().unwrap();
        let resumed = run(dir.path(), 2, RunState::Resume);
        let epoch = |epoch| wrn_run::EpochMetrics {
            epoch,
            lr: 0.1,
            train_loss: 1.0,
            train_error: 50.0,
            test_loss: 1.0,
            test_error: 50.0,
            test_top5_error: 10.0,
            images_per_second: 1000.0,
            data_wait_fraction: 0.0,
            epoch_seconds: 3600.0,
            decode_failures: 0,
        };
        let folder = wrn_run::RunFolder::create(&resumed.dir).unwrap();
        folder.write_metrics(&(1..=4).map(epoch).collect::<Vec<_>>()).unwrap();
        assert_eq!(epochs_done(&resumed.dir), 4, "the metrics file is read");
        let plan = Plan { runs: vec![run(dir.path(), 1, RunState::New), resumed] };
        let out = text(&plan, Device::Cuda, true, Concurrency::Local { devices: 1, per_run: 1 });
        assert!(line(&out, "t/r1").ends_with("10.0 GPU-hours (measured pace of NVIDIA H200)"), "{out}");
        let resumed = line(&out, "t/r2");
        assert!(resumed.contains("resume after epoch 4") && resumed.contains(" 6.0 GPU-hours "), "{out}");
        assert!(line(&out, "estimate:").starts_with("estimate: 16.0 GPU-hours in all"), "{out}");
        // One device: the time in all is the time from start to end, said once.
        assert!(!out.contains("from start to end"), "{out}");
    }

    #[test]
    fn the_time_from_start_to_end_follows_the_devices_at_once_and_the_longest_run() {
        let dir = tempfile::tempdir().unwrap();
        let plan = Plan { runs: (1..=4).map(|seed| run(dir.path(), seed, RunState::New)).collect() };
        let out = |at_once| text(&plan, Device::Cuda, true, at_once);
        // 40 GPU-hours over 8 GPUs: no run ends before its own 10 hours.
        let o = out(Concurrency::Local { devices: 8, per_run: 1 });
        assert!(o.contains("  on 8 GPUs: about 10.0 hours from start to end"), "{o}");
        let o = out(Concurrency::Local { devices: 2, per_run: 1 });
        assert!(o.contains("  on 2 GPUs: about 20.0 hours from start to end"), "{o}");
        let o = out(Concurrency::Local { devices: 8, per_run: 4 });
        assert!(o.contains("  on 8 GPUs, 4 per run: about 5.0 hours from start to end"), "{o}");
        let o = out(Concurrency::Slurm { at_once: Some(1), per_run: 1 });
        assert!(o.contains("  at most 1 Slurm task(s) at once: about 40.0 hours from start to end"), "{o}");
        let o = out(Concurrency::Slurm { at_once: Some(2), per_run: 2 });
        assert!(o.contains("at most 2 Slurm task(s) at once, each over 2 GPUs or ranks: about 10.0 hours"), "{o}");
        let o = out(Concurrency::Slurm { at_once: None, per_run: 1 });
        assert!(o.contains("  at least 10.0 hours from start to end (the longest run)"), "{o}");
        assert!(o.contains("--max-parallel caps it"), "{o}");
        // Below an hour, minutes.
        let mut short = |_: &[String]| Ok(RunCost { seconds: 600.0, epochs: 10 });
        let mut pricing =
            Pricing { on: Device::Cuda, measured_on: Some("x".into()), pace_here: true, cost: &mut short };
        let two = Concurrency::Local { devices: 2, per_run: 1 };
        let o = describe(&plan, &["t"], Path::new("runs"), SweepScale::Full, &mut pricing, false, two).unwrap();
        assert!(o.contains("  on 2 GPUs: about 20 minutes from start to end"), "{o}");
    }

    #[test]
    fn finished_seeds_price_the_others_in_their_devices_time() {
        let dir = tempfile::tempdir().unwrap();
        let plan = Plan { runs: vec![run(dir.path(), 1, RunState::New)] };
        // Seed 2 took 1 hour an epoch over 4 GPUs at once: 4 GPU-hours an epoch, 40 for its 10 epochs.
        let result = wrn_run::RunResult {
            status: wrn_run::Status::Finished,
            dataset: "cifar10".into(),
            arch: "wrn-28-10".into(),
            seed: 2,
            epochs_planned: 10,
            epochs_done: 10,
            full_scale: true,
            parameters: 1,
            final_test_error: Some(4.0),
            final_test_top5_error: None,
            best_test_error: Some(4.0),
            median_epoch_seconds: Some(3600.0),
            device: "cuda × 4 ranks (a GPU each)".into(),
            ranks: Some(4),
            divergence: None,
            recipe_changes: Some(Default::default()),
            precision: None,
            evaluation: None,
        };
        let seed2 = dir.path().join("cifar10/wrn-28-10/seed2");
        wrn_run::RunFolder::create(&seed2).unwrap().write_result(&result).unwrap();
        let four = Concurrency::Local { devices: 8, per_run: 4 };
        let gpu = text(&plan, Device::Cuda, true, four);
        assert!(line(&gpu, "t/r1").ends_with("40.0 GPU-hours (finished seeds of this row)"), "{gpu}");
        assert!(gpu.contains("  on 8 GPUs, 4 per run: about 10.0 hours from start to end"), "{gpu}");
        // A CPU plan is not priced by seeds trained on GPUs; at the paper's pace, its unit is a GPU's.
        let cpu = text(&plan, Device::Cpu, false, Concurrency::Local { devices: 1, per_run: 1 });
        assert!(line(&cpu, "t/r1").ends_with("10.0 GPU-hours (the paper's Titan X pace)"), "{cpu}");
        // Bases of different units are totalled apart.
        let mut cpu_seed = result.clone();
        cpu_seed.device = "cpu".into();
        cpu_seed.ranks = None;
        let seed3 = dir.path().join("cifar10/wrn-28-10/seed3");
        wrn_run::RunFolder::create(&seed3).unwrap().write_result(&cpu_seed).unwrap();
        let other = Plan { runs: vec![run(dir.path(), 1, RunState::New), run_of(dir.path(), "other", 1)] };
        let mixed = text(&other, Device::Cpu, false, Concurrency::Local { devices: 1, per_run: 1 });
        assert!(
            line(&mixed, "estimate:").starts_with(
                "estimate: 10.0 CPU hours and 10.0 GPU-hours in all: 10.0 CPU hours by finished seeds of this row + \
                 10.0 GPU-hours by the paper's Titan X pace"
            ),
            "{mixed}"
        );
    }

    #[test]
    fn cpu_runs_are_priced_in_cpu_time_only_at_a_pace_measured_on_the_cpu() {
        let dir = tempfile::tempdir().unwrap();
        let plan = Plan { runs: vec![run(dir.path(), 1, RunState::New)] };
        let one = Concurrency::Local { devices: 1, per_run: 1 };
        let measured = text(&plan, Device::Cpu, true, one);
        assert!(line(&measured, "estimate:").starts_with("estimate: 10.0 CPU hours in all"), "{measured}");
        assert!(!measured.contains("Titan X"), "{measured}");
        // Unmeasured, the figure is GPU time at the paper's pace, and the plan says a CPU is far slower.
        let paper = text(&plan, Device::Cpu, false, one);
        assert!(line(&paper, "estimate:").starts_with("estimate: 10.0 GPU-hours in all"), "{paper}");
        assert!(paper.contains("these runs train on the CPU, but no pace of this CPU is recorded"), "{paper}");
        assert!(paper.contains("`wrn sweep --calibrate` measures this CPU's"), "{paper}");
        let gpu = text(&plan, Device::Cuda, false, one);
        assert!(gpu.contains("a current GPU is several times faster: `wrn sweep --calibrate`"), "{gpu}");
        // Slurm GPU tasks written where there is no GPU: no advice to measure what cannot be measured here.
        let mut cost = |_: &[String]| Ok(RunCost { seconds: 3600.0, epochs: 10 });
        let mut pricing = Pricing { on: Device::Cuda, measured_on: None, pace_here: false, cost: &mut cost };
        let slurm = Concurrency::Slurm { at_once: None, per_run: 1 };
        let o = describe(&plan, &["t"], Path::new("runs"), SweepScale::Full, &mut pricing, false, slurm).unwrap();
        assert!(o.contains("this machine has no GPU to measure one") && !o.contains("--calibrate"), "{o}");
        assert_eq!(
            (hours(90.0, Device::Cuda), hours(7200.0, Device::Cpu)),
            ("1.5 GPU-minutes".into(), "2.0 CPU hours".into())
        );
    }
}
