//! Layer constructors shared by the CIFAR and ImageNet networks: each creates its parameters under a
//! path and counts the layer in the [`Tally`], so the accounting and the network cannot drift apart.
//!
//! Mixed precision: parameters always stay `f32` (the master weights the optimiser updates and the
//! checkpoint holds). The convolutions and the classifier compute in the dtype of their input, casting
//! their weights on use, so a bf16 input runs the network in bf16 while gradients flow back through the
//! casts into the `f32` weights, as autocast does. Batch normalisation takes bf16 activations with its
//! `f32` affine parameters and running statistics as they are (libtorch's mixed-dtype kernels). An `f32`
//! input takes none of these casts.

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use crate::tally::Tally;

/// Which fan He-normal convolution weights are scaled by: std = √(2 / (k²·fan)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConvInit {
    /// fan = input channels (the official code from September 2016 on, torchvision).
    #[default]
    FanIn,
    /// fan = output channels (the code released with arXiv v1, and fb.resnet.torch).
    FanOut,
}

impl ConvInit {
    fn fan(self) -> nn::init::FanInOut {
        match self {
            ConvInit::FanIn => nn::init::FanInOut::FanIn,
            ConvInit::FanOut => nn::init::FanInOut::FanOut,
        }
    }
}

impl std::str::FromStr for ConvInit {
    type Err = String;
    fn from_str(s: &str) -> Result<ConvInit, String> {
        match s {
            "fan_in" => Ok(ConvInit::FanIn),
            "fan_out" => Ok(ConvInit::FanOut),
            _ => Err(format!("unknown convolution init '{s}'; expected fan_in or fan_out")),
        }
    }
}

impl std::fmt::Display for ConvInit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConvInit::FanIn => "fan_in",
            ConvInit::FanOut => "fan_out",
        })
    }
}

/// A k×k convolution without bias, "same" padding, He-normal weights scaled by `init`'s fan, from the
/// running shape.
pub(crate) fn conv(vs: nn::Path, tally: &mut Tally, c_out: i64, k: i64, stride: i64, init: ConvInit) -> Conv {
    let c_in = tally.shape()[0];
    tally.conv(c_out, k, stride, k / 2);
    let ws_init = nn::Init::Kaiming {
        dist: nn::init::NormalOrUniform::Normal,
        fan: init.fan(),
        non_linearity: nn::init::NonLinearity::ReLU,
    };
    let config = nn::ConvConfig { stride, padding: k / 2, bias: false, ws_init, ..Default::default() };
    Conv { ws: nn::conv2d(vs, c_in, c_out, k, config).ws, stride, padding: k / 2 }
}

/// Global average pooling then the linear classifier: Torch7's default U(−1/√fan_in, 1/√fan_in) weights
/// and a zero bias, as both the official CIFAR code and fb.resnet.torch leave them.
pub(crate) fn classifier(vs: nn::Path, tally: &mut Tally, classes: i64) -> Classifier {
    let c = tally.shape()[0];
    tally.pool(1, 1);
    tally.linear(classes);
    let bound = 1.0 / (c as f64).sqrt();
    let config = nn::LinearConfig {
        ws_init: nn::Init::Uniform { lo: -bound, up: bound },
        bs_init: Some(nn::Init::Const(0.0)),
        bias: true,
    };
    Classifier(nn::linear(vs, c, classes, config))
}

/// `t` in `kind`: itself when it already is, else a cast that autograd differentiates back to `t`.
fn in_kind(t: &Tensor, kind: Kind) -> Tensor {
    if t.kind() == kind {
        t.shallow_clone()
    } else {
        t.to_kind(kind)
    }
}

/// A bias-free convolution computing in its input's dtype.
#[derive(Debug)]
pub(crate) struct Conv {
    ws: Tensor,
    stride: i64,
    padding: i64,
}

impl Module for Conv {
    fn forward(&self, x: &Tensor) -> Tensor {
        let (s, p) = (self.stride, self.padding);
        x.conv2d(&in_kind(&self.ws, x.kind()), None::<Tensor>, [s, s], [p, p], [1, 1], 1)
    }
}

/// The linear classifier, computing in its input's dtype.
#[derive(Debug)]
pub(crate) struct Classifier(nn::Linear);

impl Module for Classifier {
    fn forward(&self, x: &Tensor) -> Tensor {
        let bias = self.0.bs.as_ref().map(|b| in_kind(b, x.kind()));
        x.linear(&in_kind(&self.0.ws, x.kind()), bias.as_ref())
    }
}
