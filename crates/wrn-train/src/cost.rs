//! A rough price for a run before it starts, for the sweep's up-front estimate: the run's training
//! images × the network's multiply-adds per image, at a pace in multiply-adds per second. The pace is this
//! machine's own where it was measured ([`Pace`]: WRN-28-10 training steps timed by `wrn sweep
//! --calibrate`, kept per device name in the user's cache), else the paper's Titan X (Figure 4: 312 ms for a
//! forward+backward update of 32 WRN-28-10 images, cuDNN v5), which a current GPU beats several times over.
//! The sweep prefers times measured by finished runs of the same row to either.

use std::collections::HashMap;

use tch::nn;

use crate::config::{ConfigError, Experiment};
use crate::datasets::Dataset;

/// Figure 4 of the paper: WRN-28-10, forward+backward update of a minibatch of 32, Titan X.
pub const TITAN_X_WRN_28_10_SECONDS_PER_32: f64 = 0.312;

impl Dataset {
    /// Images in the training split a run trains on.
    pub fn train_images(self) -> usize {
        match self {
            Dataset::Cifar10 | Dataset::Cifar100 => 50_000,
            // train + extra, as the paper.
            Dataset::Svhn => 604_388,
            Dataset::ImageNet => 1_281_167,
        }
    }
}

/// Prices runs; caches each network's multiply-adds.
pub struct CostModel {
    /// Multiply-adds per second of a training step (forward + backward) at the reference pace.
    pace: f64,
    mult_adds: HashMap<(String, i64), f64>,
}

impl CostModel {
    /// The paper's Titan X pace.
    pub fn titan_x() -> CostModel {
        CostModel::at_pace(32.0 / TITAN_X_WRN_28_10_SECONDS_PER_32)
    }

    /// The pace of a device that trains `images_per_second` WRN-28-10 images per second.
    pub fn at_pace(images_per_second: f64) -> CostModel {
        let mut model = CostModel { pace: 1.0, mult_adds: HashMap::new() };
        let wrn = model.mult_adds_per_image("wrn-28-10", 10).expect("wrn-28-10 is a valid architecture");
        model.pace = wrn * images_per_second;
        model
    }

    fn mult_adds_per_image(&mut self, arch: &str, classes: i64) -> Result<f64, ConfigError> {
        if let Some(&m) = self.mult_adds.get(&(arch.to_string(), classes)) {
            return Ok(m);
        }
        let parsed: wrn_nets::Arch =
            arch.parse().map_err(|e: wrn_nets::ArchError| ConfigError::Invalid(e.to_string()))?;
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let m = parsed.with_classes(classes).build(&vs.root()).tally().total().mult_adds as f64;
        self.mult_adds.insert((arch.to_string(), classes), m);
        Ok(m)
    }

    /// Seconds of training for the experiment `wrn train --set <sets>` would run.
    pub fn seconds(&mut self, sets: &[String]) -> Result<f64, ConfigError> {
        self.cost(sets).map(|(seconds, _)| seconds)
    }

    /// Seconds of training and epochs of the experiment `wrn train --set <sets>` would run.
    pub fn cost(&mut self, sets: &[String]) -> Result<(f64, u32), ConfigError> {
        let exp = Experiment::resolve(None, sets)?;
        let images = exp.scale.train_subset.unwrap_or(usize::MAX).min(exp.dataset.train_images());
        let per_image = self.mult_adds_per_image(&exp.arch.to_string(), exp.dataset.classes())?;
        let epochs = exp.effective_epochs();
        Ok((images as f64 * epochs as f64 * per_image / self.pace, epochs))
    }
}

/// A device's measured training pace: WRN-28-10 training steps (forward, backward, SGD) in fp32.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Pace {
    /// The device as the driver names it (`NVIDIA H200`), or the CPU's model and core count.
    pub device: String,
    pub images_per_second: f64,
    pub batch: i64,
    /// When it was measured (seconds since the Unix epoch).
    pub measured_at: u64,
}

/// Why a pace could not be had.
#[derive(Debug, thiserror::Error)]
pub enum PaceError {
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    #[error(transparent)]
    Check(#[from] crate::check::CheckError),
    #[error("cannot record the pace: {0}")]
    Record(#[from] wrn_fs::Error),
}

/// The training pace of `choice`'s device: the one recorded for it in [`paces_path`], or, when `measure`
/// (told whether one is recorded) says so, measured now with WRN-28-10 training steps (batch 128 × 20
/// steps on a GPU, under a minute; 16 × 2 on the CPU) and recorded. `say` hears what is measured.
pub fn pace(
    choice: crate::runtime::DeviceChoice,
    measure: impl FnOnce(bool) -> bool,
    say: impl Fn(&str),
) -> Result<Option<Pace>, PaceError> {
    let device = match choice {
        crate::runtime::DeviceChoice::Cuda(i) => tch::Device::Cuda(i),
        _ => tch::Device::Cpu,
    };
    let name = device_name(device);
    let path = paces_path();
    let recorded = recorded_pace(&path, &name);
    if !measure(recorded.is_some()) {
        return Ok(recorded);
    }
    let selected = crate::runtime::select_device(choice)?;
    let (batch, steps) = if device.is_cuda() { (128, 20) } else { (16, 2) };
    say(&format!("measuring the training pace of {name} (WRN-28-10, batch {batch}, {steps} steps)..."));
    let options = crate::check::CheckOptions { optimizer_step: true, ..Default::default() };
    let arch: wrn_nets::Arch = "wrn-28-10".parse().expect("WRN-28-10 is a known network");
    let check = crate::check::forward_backward(&arch, selected.device, batch, steps, options)?;
    let measured_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let pace = Pace { device: name, images_per_second: check.images_per_second, batch, measured_at };
    record_pace(&path, &pace)?;
    say(&format!("{:.1} WRN-28-10 images/s on {}, kept in {}", pace.images_per_second, pace.device, path.display()));
    Ok(Some(pace))
}

/// Where measured paces are kept: `<cache>/paces.json`, one entry per device name.
pub fn paces_path() -> std::path::PathBuf {
    wrn_data::dirs::cache_dir().join("paces.json")
}

/// The pace recorded for `device` in `path`, if any (an unreadable file counts as none).
pub fn recorded_pace(path: &std::path::Path, device: &str) -> Option<Pace> {
    let text = std::fs::read_to_string(path).ok()?;
    let paces: Vec<Pace> = serde_json::from_str(&text).ok()?;
    paces.into_iter().find(|p| p.device == device)
}

/// Records `pace` in `path`, replacing the entry of the same device.
pub fn record_pace(path: &std::path::Path, pace: &Pace) -> Result<(), wrn_fs::Error> {
    let mut paces: Vec<Pace> =
        std::fs::read_to_string(path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
    paces.retain(|p| p.device != pace.device);
    paces.push(pace.clone());
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    wrn_fs::atomic_write(path, (serde_json::to_string_pretty(&paces).expect("paces serialise") + "\n").as_bytes())
}

/// The name under which this machine's device's pace is kept: GPU `index`'s name from the driver, or
/// the CPU's model and the cores this process may use.
pub fn device_name(device: tch::Device) -> String {
    if let tch::Device::Cuda(index) = device {
        if let Some(gpu) = crate::driver::gpu(index) {
            return gpu.name;
        }
    }
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string()))
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{model}, {cores} cores")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrn_28_10_costs_the_papers_titan_x_day() {
        let mut model = CostModel::titan_x();
        let mut s = |sets: &[&str]| model.seconds(&sets.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        // 200 epochs × 50,000 images at 312 ms per 32: 27.1 hours, the paper's "about a day".
        let full = s(&["arch=wrn-28-10"]);
        assert!((full / 3600.0 - 27.08).abs() < 0.05, "{}", full / 3600.0);
        // A smoke run: 2 epochs of 256 images.
        let smoke = s(&["arch=wrn-28-10", "scale.epochs=0.01", "scale.train_subset=256"]);
        assert!((smoke - 2.0 * 256.0 * 0.312 / 32.0).abs() < 1e-6, "{smoke}");
        // A thinner network is cheaper, ImageNet far dearer.
        assert!(s(&["arch=wrn-16-4"]) < full / 5.0);
        assert!(s(&["dataset=imagenet", "arch=resnet-50"]) > 2.0 * full);
    }

    #[test]
    fn a_measured_pace_prices_runs_and_is_kept_per_device() {
        // Twice the Titan X's images per second halves every estimate.
        let sets = ["arch=wrn-16-4".to_string()];
        let titan = CostModel::titan_x().seconds(&sets).unwrap();
        let twice = CostModel::at_pace(2.0 * 32.0 / TITAN_X_WRN_28_10_SECONDS_PER_32).seconds(&sets).unwrap();
        assert!((titan / twice - 2.0).abs() < 1e-9, "{titan} {twice}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache/paces.json");
        assert_eq!(recorded_pace(&path, "NVIDIA H200"), None);
        let h200 = Pace { device: "NVIDIA H200".into(), images_per_second: 2500.0, batch: 128, measured_at: 1 };
        let cpu = Pace { device: "some CPU, 2 cores".into(), images_per_second: 3.0, batch: 16, measured_at: 2 };
        record_pace(&path, &h200).unwrap();
        record_pace(&path, &cpu).unwrap();
        let faster = Pace { images_per_second: 2700.0, ..h200.clone() };
        record_pace(&path, &faster).unwrap();
        assert_eq!(recorded_pace(&path, "NVIDIA H200"), Some(faster));
        assert_eq!(recorded_pace(&path, "some CPU, 2 cores"), Some(cpu));
        std::fs::write(&path, "not json").unwrap();
        assert_eq!(recorded_pace(&path, "NVIDIA H200"), None);
        assert!(device_name(tch::Device::Cpu).ends_with(" cores"));
    }
}
