//! The datasets a run can name, with what the networks need to know of them: number of classes and
//! input size. (Files, checksums and preparation belong to `wrn-data`.)

use std::fmt;
use std::str::FromStr;

/// A dataset of the paper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dataset {
    Cifar10,
    Cifar100,
    Svhn,
    ImageNet,
}

impl Dataset {
    pub const ALL: [Dataset; 4] = [Dataset::Cifar10, Dataset::Cifar100, Dataset::Svhn, Dataset::ImageNet];

    pub fn classes(self) -> i64 {
        match self {
            Dataset::Cifar10 | Dataset::Svhn => 10,
            Dataset::Cifar100 => 100,
            Dataset::ImageNet => 1000,
        }
    }

    /// Channels × height × width of a network input: 32×32 crops, 224×224 for ImageNet.
    pub fn input_shape(self) -> [i64; 3] {
        match self {
            Dataset::ImageNet => [3, 224, 224],
            _ => [3, 32, 32],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dataset::Cifar10 => "cifar10",
            Dataset::Cifar100 => "cifar100",
            Dataset::Svhn => "svhn",
            Dataset::ImageNet => "imagenet",
        }
    }
}

impl fmt::Display for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A dataset name that is not one of the paper's.
#[derive(Debug, thiserror::Error)]
#[error("unknown dataset '{0}': expected cifar10, cifar100, svhn or imagenet")]
pub struct UnknownDataset(String);

impl FromStr for Dataset {
    type Err = UnknownDataset;
    fn from_str(s: &str) -> Result<Dataset, UnknownDataset> {
        Dataset::ALL.into_iter().find(|d| d.name() == s).ok_or_else(|| UnknownDataset(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_refused() {
        for d in Dataset::ALL {
            assert_eq!(d.name().parse::<Dataset>().unwrap(), d);
        }
        assert_eq!(Dataset::Cifar100.classes(), 100);
        assert_eq!(Dataset::ImageNet.input_shape(), [3, 224, 224]);
        assert!("mnist".parse::<Dataset>().unwrap_err().to_string().contains("expected cifar10, cifar100"));
    }
}
