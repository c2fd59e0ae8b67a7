//! Layer constructors shared by the CIFAR and ImageNet networks: each creates its parameters under a
//! path and counts the layer in the [`Tally`], so the accounting and the network cannot drift apart.

use tch::nn;

use crate::tally::Tally;

/// A k×k convolution without bias, "same" padding, He-normal (fan-in) weights, from the running shape.
pub(crate) fn conv(vs: nn::Path, tally: &mut Tally, c_out: i64, k: i64, stride: i64) -> nn::Conv2D {
    let c_in = tally.shape()[0];
    tally.conv(c_out, k, stride, k / 2);
    let config = nn::ConvConfig {
        stride,
        padding: k / 2,
        bias: false,
        ws_init: nn::init::DEFAULT_KAIMING_NORMAL,
        ..Default::default()
    };
    nn::conv2d(vs, c_in, c_out, k, config)
}

/// Global average pooling then the linear classifier: Torch7's default U(−1/√fan_in, 1/√fan_in) weights
/// and a zero bias, as both the official CIFAR code and fb.resnet.torch leave them.
pub(crate) fn classifier(vs: nn::Path, tally: &mut Tally, classes: i64) -> nn::Linear {
    let c = tally.shape()[0];
    tally.pool(1, 1);
    tally.linear(classes);
    let bound = 1.0 / (c as f64).sqrt();
    let config = nn::LinearConfig {
        ws_init: nn::Init::Uniform { lo: -bound, up: bound },
        bs_init: Some(nn::Init::Const(0.0)),
        bias: true,
    };
    nn::linear(vs, c, classes, config)
}
