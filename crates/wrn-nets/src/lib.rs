//! The networks of "Wide Residual Networks" (Zagoruyko & Komodakis, 2016), built with `tch`.
//!
//! This crate holds model definitions only: no data loading, no training loop, no device policy. Every
//! model is a [`tch::nn::ModuleT`] whose parameters live in a caller-owned [`tch::nn::VarStore`].
//!
//! - [`cifar`]: pre-activation WRN-n-k for CIFAR-10/100 and SVHN, with the block types and deepening
//!   factors of Tables 2 and 3.
//! - [`imagenet`]: post-activation ResNet-18/34 (widened basic blocks) and ResNet-50/101/152 with
//!   bottlenecks, including WRN-50-2-bottleneck (Tables 7 and 8), with torchvision's parameter names.
//! - [`layout`]: channels-last strides and bf16 compute on f32 weights, the speed options tch allows.
//! - [`tally`]: parameters, multiply-adds and activation memory, counted while a network is built.
//! - [`weights`]: safetensors save and load with errors that name what does not match.
//!
//! [`Arch`] names every architecture by a string that parses and prints back (`wrn-28-10`,
//! `wrn-40-2-b131`, `wrn-40-2-l4`, `resnet-34-w2`, `resnet-50-w2` alias `wrn-50-2-bottleneck`).

pub mod cifar;
pub mod imagenet;
mod layers;
pub mod layout;
pub mod tally;
pub mod weights;

use std::fmt;
use std::str::FromStr;

use tch::nn::{self, ModuleT};
use tch::Tensor;

pub use cifar::{BlockSpec, WideResNet, WrnConfig};
pub use imagenet::{ResNet, ResNetConfig};
pub use layers::ConvInit;
pub use tally::{StageStats, Tally};

/// What architecture names look like; shown when a name cannot be parsed.
pub const VALID_ARCHITECTURES: &str = "wrn-<n>-<k> (CIFAR/SVHN, n = 6N+4, e.g. wrn-28-10), \
wrn-<n>-<k>-b<kernels> (block type, e.g. wrn-40-2-b131), wrn-<n>-<k>-l<l> (deepening factor, e.g. wrn-40-2-l4), \
resnet-<18|34|50|101|152>[-w<width>][-bn-after-add] (ImageNet, e.g. resnet-34-w2), wrn-50-2-bottleneck";

/// An architecture name that cannot be parsed, or options it cannot take.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ArchError {
    #[error("unknown architecture '{0}'; valid architectures: {VALID_ARCHITECTURES}")]
    Unknown(String),
    #[error("invalid architecture '{name}': {why}")]
    Invalid { name: String, why: String },
}

/// Any network of the paper.
#[derive(Debug, Clone, PartialEq)]
pub enum Arch {
    Cifar(WrnConfig),
    ImageNet(ResNetConfig),
}

impl Arch {
    /// The input the paper feeds it: 3×32×32 or 3×224×224.
    pub fn input_shape(&self) -> [i64; 3] {
        match self {
            Arch::Cifar(_) => [3, 32, 32],
            Arch::ImageNet(_) => [3, 224, 224],
        }
    }

    pub fn num_classes(&self) -> i64 {
        match self {
            Arch::Cifar(c) => c.num_classes,
            Arch::ImageNet(c) => c.num_classes,
        }
    }

    /// Sets the number of output classes.
    pub fn with_classes(mut self, classes: i64) -> Arch {
        match &mut self {
            Arch::Cifar(c) => c.num_classes = classes,
            Arch::ImageNet(c) => c.num_classes = classes,
        }
        self
    }

    /// Sets how the convolutions' weights are initialised.
    pub fn with_init(mut self, init: ConvInit) -> Arch {
        match &mut self {
            Arch::Cifar(c) => c.init = init,
            Arch::ImageNet(c) => c.init = init,
        }
        self
    }

    /// Takes batch-norm statistics in training over groups of `group` images (ghost batch norm); `None`:
    /// over the whole batch.
    pub fn with_bn_group(mut self, group: Option<i64>) -> Arch {
        match &mut self {
            Arch::Cifar(c) => c.bn_group = group,
            Arch::ImageNet(c) => c.bn_group = group,
        }
        self
    }

    /// Sets the dropout probability; the ImageNet networks have no dropout (as in the paper).
    pub fn with_dropout(mut self, p: f64) -> Result<Arch, ArchError> {
        if !(0.0..1.0).contains(&p) {
            return Err(ArchError::Invalid { name: self.to_string(), why: format!("dropout {p} is not in [0, 1)") });
        }
        match &mut self {
            Arch::Cifar(c) => c.dropout = p,
            Arch::ImageNet(_) if p > 0.0 => {
                return Err(ArchError::Invalid {
                    name: self.to_string(),
                    why: "the ImageNet networks have no dropout".into(),
                })
            }
            Arch::ImageNet(_) => {}
        }
        Ok(self)
    }

    /// Builds the network's parameters under `vs`, accounting for the paper's input size.
    pub fn build(&self, vs: &nn::Path) -> Network {
        self.build_for_input(vs, self.input_shape())
    }

    /// Builds the network's parameters under `vs`, accounting for inputs of `channels × height × width`
    /// (the network itself takes any size its pooling allows).
    pub fn build_for_input(&self, vs: &nn::Path, [c, h, w]: [i64; 3]) -> Network {
        let mut tally = Tally::new(c, h, w);
        let module: Box<dyn ModuleT> = match self {
            Arch::Cifar(config) => Box::new(WideResNet::new(vs, config, &mut tally)),
            Arch::ImageNet(config) => Box::new(ResNet::new(vs, config, &mut tally)),
        };
        Network { arch: self.clone(), module, tally }
    }
}

impl FromStr for Arch {
    type Err = ArchError;
    fn from_str(name: &str) -> Result<Arch, ArchError> {
        if name.starts_with("resnet-") || (name.starts_with("wrn-") && name.ends_with("-bottleneck")) {
            name.parse().map(Arch::ImageNet)
        } else {
            name.parse().map(Arch::Cifar)
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arch::Cifar(c) => c.fmt(f),
            Arch::ImageNet(c) => c.fmt(f),
        }
    }
}

/// A built network: the module and the per-stage accounting of its layers.
#[derive(Debug)]
pub struct Network {
    pub arch: Arch,
    module: Box<dyn ModuleT>,
    tally: Tally,
}

impl Network {
    /// Parameters, multiply-adds and activation memory per stage, at the paper's input size.
    pub fn tally(&self) -> &Tally {
        &self.tally
    }
}

impl ModuleT for Network {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.module.forward_t(x, train)
    }
}

/// Number of trainable scalars in a variable store (BN running statistics excluded).
pub fn parameter_count(vs: &nn::VarStore) -> i64 {
    vs.trainable_variables().iter().map(|t| t.numel() as i64).sum()
}
