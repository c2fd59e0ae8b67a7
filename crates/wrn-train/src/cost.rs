//! A rough price for a run before it starts, for the sweep's up-front estimate: the run's training
//! images × the network's multiply-adds per image, at the pace of the paper's Titan X (Figure 4: 312 ms
//! for a forward+backward update of 32 WRN-28-10 images, cuDNN v5). Modern GPUs are several times faster;
//! the figure is a ceiling to plan with, and the sweep prefers times measured by finished runs.

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
        let mut model = CostModel { pace: 1.0, mult_adds: HashMap::new() };
        let wrn = model.mult_adds_per_image("wrn-28-10", 10).expect("wrn-28-10 is a valid architecture");
        model.pace = wrn * 32.0 / TITAN_X_WRN_28_10_SECONDS_PER_32;
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
        let exp = Experiment::resolve(None, sets)?;
        let images = exp.scale.train_subset.unwrap_or(usize::MAX).min(exp.dataset.train_images());
        let per_image = self.mult_adds_per_image(&exp.arch, exp.dataset.classes())?;
        Ok(images as f64 * exp.effective_epochs() as f64 * per_image / self.pace)
    }
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
}
