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

impl Pricing<'_> {
    /// The unit of its estimates: the device's own at a measured pace; at the paper's, GPU time.
    fn unit(&self) -> Device {
        if self.measured_on.is_some() {
            self.on
        } else {
            Device::Cuda
        }
    }
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

/// What a pending run is estimated to take (what is left of it, for a run to resume), and on what basis.
fn estimate(run: &PlannedRun, pricing: &mut Pricing, basis: &str) -> Result<(f64, String), SweepError> {
    let (cost, basis) = match measured_cost(run) {
        Some(cost) => (cost, "finished seeds of this row".to_string()),
        None => {
            let cost =
                (pricing.cost)(&run.sets).map_err(|source| SweepError::Price { rows: run.rows.join(", "), source })?;
            (cost, basis.to_string())
        }
    };
    let seconds = match run.state {
        RunState::Resume => cost.left_after(epochs_done(&run.dir)),
        _ => cost.seconds,
    };
    Ok((seconds, basis))
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
        None => "the paper's Titan X pace".to_string(),
    };
    let mut totals: Vec<(String, f64)> = Vec::new();
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
                estimate.as_ref().map_or(String::new(), |(s, b)| format!("{} ({b})", hours(*s, pricing.unit())))
            );
        }
        if let Some((seconds, basis)) = estimate {
            longest = longest.max(seconds);
            match totals.iter_mut().find(|(b, _)| *b == basis) {
                Some((_, total)) => *total += seconds,
                None => totals.push((basis, seconds)),
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

/// The estimate in all, by basis, and from start to end with `at_once` (no run ends before the
/// `longest` does).
fn totals_text(s: &mut String, totals: &[(String, f64)], longest: f64, at_once: Concurrency, pricing: &Pricing) {
    if totals.is_empty() {
        return;
    }
    let on = pricing.unit();
    let parts: Vec<String> = totals.iter().map(|(b, s)| format!("{} by {b}", hours(*s, on))).collect();
    let all: f64 = totals.iter().map(|(_, s)| s).sum();
    let _ = writeln!(s, "estimate: {} in all: {}", hours(all, on), parts.join(" + "));
    let end_to_end = |lanes: usize, per_run: usize| (all / lanes as f64).max(longest / per_run as f64) / 3600.0;
    match at_once {
        Concurrency::Local { devices, per_run } if devices > 1 => {
            let each = if per_run > 1 { format!(", {per_run} per run") } else { String::new() };
            let _ = writeln!(
                s,
                "  on {devices} GPUs{each}: about {:.1} hours from start to end",
                end_to_end(devices, per_run)
            );
        }
        Concurrency::Local { .. } => {}
        Concurrency::Slurm { at_once: Some(tasks), per_run } => {
            let each = if per_run > 1 { format!(", each over {per_run} GPUs or ranks") } else { String::new() };
            let _ = writeln!(
                s,
                "  at most {tasks} Slurm task(s) at once{each}: about {:.1} hours from start to end",
                end_to_end(tasks * per_run, per_run)
            );
        }
        Concurrency::Slurm { at_once: None, per_run } => {
            let _ = writeln!(
                s,
                "  at least {:.1} hours from start to end (the longest run); how many tasks run at once is the \
                 cluster's choice (--max-parallel caps it)",
                longest / per_run as f64 / 3600.0
            );
        }
    }
    if pricing.measured_on.is_none() {
        match pricing.on {
            Device::Cuda => s.push_str(
                "  (the Titan X pace is the paper's Figure 4, 312 ms per 32 WRN-28-10 images; a current GPU is \
                 several times faster: `wrn sweep --calibrate` measures this machine's)\n",
            ),
            Device::Cpu => s.push_str(
                "  (these runs train on the CPU, but no pace of this CPU is recorded, so they are priced at the \
                 paper's Titan X pace, many times faster than a CPU: `wrn sweep --calibrate` measures this CPU's)\n",
            ),
        }
    }
}

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

    /// The plan's text with every run costing `hours` hours over 10 epochs.
    fn text(plan: &Plan, on: Device, measured: bool, at_once: Concurrency) -> String {
        let mut cost = |_: &[String]| Ok(RunCost { seconds: 10.0 * 3600.0, epochs: 10 });
        let mut pricing = Pricing { on, measured_on: measured.then(|| "NVIDIA H200".to_string()), cost: &mut cost };
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
        assert!(gpu.contains("a current GPU is several times faster"), "{gpu}");
        assert_eq!(
            (hours(90.0, Device::Cuda), hours(7200.0, Device::Cpu)),
            ("1.5 GPU-minutes".into(), "2.0 CPU hours".into())
        );
    }
}
