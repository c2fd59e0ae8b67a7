//! Layer constructors shared by the CIFAR and ImageNet networks: each creates its parameters under a
//! path and counts the layer in the [`Tally`], so the accounting and the network cannot drift apart.
//!
//! Mixed precision: parameters always stay `f32` (the master weights the optimiser updates and the
//! checkpoint holds). The convolutions and the classifier compute in the dtype of their input, casting
//! their weights on use, so a bf16 input runs the network in bf16 while gradients flow back through the
//! casts into the `f32` weights, as autocast does. Batch normalisation takes bf16 activations with its
//! `f32` affine parameters and running statistics as they are (libtorch's mixed-dtype kernels). An `f32`
//! input takes none of these casts.

use tch::nn::{self, Module, ModuleT};
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

/// Batch normalisation whose training statistics may be taken over groups of `group` images ("ghost" batch
/// norm): what each GPU of a data-parallel run without synchronised batch norm computes on its share of
/// the batch (fb.resnet.torch's `DataParallelTable`, PyTorch's DDP). The running statistics are updated
/// from the first group alone, as the first GPU's (fb) or rank 0's (DDP, which broadcasts its buffers)
/// are the ones kept. A last group smaller than `group` is normalised on its own. Without a group, in
/// eval mode, or for a batch no larger than a group, it is libtorch's batch norm.
#[derive(Debug)]
pub(crate) struct BatchNorm {
    bn: nn::BatchNorm,
    group: Option<i64>,
}

/// libtorch's defaults, which `nn::batch_norm2d` uses.
const BN_MOMENTUM: f64 = 0.1;
const BN_EPS: f64 = 1e-5;

/// A batch norm over `tally`'s running channels with these initial affine parameters and group.
pub(crate) fn batch_norm(vs: nn::Path, tally: &mut Tally, weight: nn::Init, group: Option<i64>) -> BatchNorm {
    let c = tally.shape()[0];
    tally.batch_norm();
    let config = nn::BatchNormConfig {
        ws_init: weight,
        bs_init: nn::Init::Const(0.0),
        momentum: BN_MOMENTUM,
        eps: BN_EPS,
        ..Default::default()
    };
    BatchNorm { bn: nn::batch_norm2d(vs, c, config), group }
}

impl ModuleT for BatchNorm {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        match self.group {
            Some(group) if train && x.size()[0] > group => self.ghost(x, group),
            _ => x.apply_t(&self.bn, train),
        }
    }
}

impl BatchNorm {
    /// Training mode over groups of `group` images of `x` (N×C×H×W).
    fn ghost(&self, x: &Tensor, group: i64) -> Tensor {
        let (bn, size) = (&self.bn, x.size());
        let (n, c, h, w) = (size[0], size[1], size[2], size[3]);
        tch::no_grad(|| {
            // The running statistics as a training-mode batch norm of the first group updates them.
            let first = x.narrow(0, 0, group).detach();
            let (mean, var) = (Some(&bn.running_mean), Some(&bn.running_var));
            let _ = first.batch_norm(bn.ws.as_ref(), bn.bs.as_ref(), mean, var, true, BN_MOMENTUM, BN_EPS, true);
        });
        let groups = n / group;
        let whole = groups * group;
        // The whole groups at once: group k's channels become channels k·C..(k+1)·C of one batch of
        // `group` images, so one batch norm computes every group's statistics.
        let (weight, bias) = (bn.ws.as_ref().map(|t| t.repeat([groups])), bn.bs.as_ref().map(|t| t.repeat([groups])));
        let stacked = x.narrow(0, 0, whole).reshape([groups, group, c, h * w]).transpose(0, 1).reshape([
            group,
            groups * c,
            h * w,
        ]);
        let normalised = stacked.batch_norm(
            weight.as_ref(),
            bias.as_ref(),
            None::<&Tensor>,
            None::<&Tensor>,
            true,
            0.0,
            BN_EPS,
            true,
        );
        let y = normalised.reshape([group, groups, c, h * w]).transpose(0, 1).reshape([whole, c, h, w]);
        if whole == n {
            return y;
        }
        let rest = x.narrow(0, whole, n - whole);
        let rest =
            rest.batch_norm(bn.ws.as_ref(), bn.bs.as_ref(), None::<&Tensor>, None::<&Tensor>, true, 0.0, BN_EPS, true);
        Tensor::cat(&[y, rest], 0)
    }
}
