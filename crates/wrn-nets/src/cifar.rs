//! Pre-activation wide residual networks for 32×32 inputs (CIFAR-10/100, SVHN): WRN-n-k.
//!
//! Layout (paper Table 1; official `models/wide-resnet.lua`): a 3×3 conv with 16 channels, three groups
//! of N = (n−4)/6 blocks at widths 16k, 32k, 64k (stride 2 at the first block of groups 2 and 3), then
//! BN-ReLU, 8×8 global average pooling and a linear layer.
//!
//! Block B(3,3): BN-ReLU-conv3×3(stride s)-BN-ReLU-[dropout]-conv3×3. When the channel count changes
//! the shortcut is a 1×1 conv (stride s, no BN, no bias) applied to the *pre-activated* input, as in the
//! official code; otherwise it is the identity on the raw input. No conv has a bias.
//!
//! Initialisation follows the official code: convs He-normal with fan-in (`std = sqrt(2 / (k·k·C_in))`),
//! BN γ ~ U(0, 1) and β = 0 (Torch7's `BatchNormalization:reset`), the linear layer's weight
//! U(−1/√fan_in, 1/√fan_in) (Torch7's default) and its bias 0.

use std::fmt;
use std::str::FromStr;
use tch::nn::{self, ModuleT};
use tch::Tensor;

/// An architecture name that cannot be parsed or built.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ArchError {
    #[error("unknown architecture '{0}': expected wrn-<depth>-<widen>, e.g. wrn-28-10 or wrn-16-4")]
    Syntax(String),
    #[error("invalid depth {depth} in '{name}': WRN depth must be 6N+4 (10, 16, 22, 28, 34, 40, ...)")]
    Depth { name: String, depth: i64 },
    #[error("invalid widening factor {widen} in '{name}': must be at least 1")]
    Widen { name: String, widen: i64 },
}

/// A CIFAR/SVHN WRN-n-k with its options.
#[derive(Debug, Clone, PartialEq)]
pub struct WrnConfig {
    /// n: the depth label, 6N+4.
    pub depth: i64,
    /// k: the widening factor.
    pub widen: i64,
    /// Dropout probability between the two convolutions of each block (0 disables it).
    pub dropout: f64,
    /// Number of output classes.
    pub num_classes: i64,
}

impl WrnConfig {
    /// Blocks per group, N = (n − 4) / 6.
    pub fn blocks_per_group(&self) -> i64 {
        (self.depth - 4) / 6
    }

    /// Output channels of the three groups: 16k, 32k, 64k.
    pub fn widths(&self) -> [i64; 3] {
        [16 * self.widen, 32 * self.widen, 64 * self.widen]
    }
}

impl FromStr for WrnConfig {
    type Err = ArchError;

    /// Parses `wrn-<depth>-<widen>`; dropout 0 and 10 classes until set otherwise.
    fn from_str(name: &str) -> Result<Self, ArchError> {
        let syntax = || ArchError::Syntax(name.to_string());
        let rest = name.strip_prefix("wrn-").ok_or_else(syntax)?;
        let (depth, widen) = rest.split_once('-').ok_or_else(syntax)?;
        let depth: i64 = depth.parse().map_err(|_| syntax())?;
        let widen: i64 = widen.parse().map_err(|_| syntax())?;
        if depth < 10 || (depth - 4) % 6 != 0 {
            return Err(ArchError::Depth { name: name.to_string(), depth });
        }
        if widen < 1 {
            return Err(ArchError::Widen { name: name.to_string(), widen });
        }
        Ok(WrnConfig { depth, widen, dropout: 0.0, num_classes: 10 })
    }
}

impl fmt::Display for WrnConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "wrn-{}-{}", self.depth, self.widen)
    }
}

fn conv(vs: nn::Path, c_in: i64, c_out: i64, k: i64, stride: i64) -> nn::Conv2D {
    let config = nn::ConvConfig {
        stride,
        padding: k / 2,
        bias: false,
        ws_init: nn::init::DEFAULT_KAIMING_NORMAL,
        ..Default::default()
    };
    nn::conv2d(vs, c_in, c_out, k, config)
}

fn batch_norm(vs: nn::Path, c: i64) -> nn::BatchNorm {
    let config = nn::BatchNormConfig {
        ws_init: nn::Init::Uniform { lo: 0.0, up: 1.0 },
        bs_init: nn::Init::Const(0.0),
        ..Default::default()
    };
    nn::batch_norm2d(vs, c, config)
}

#[derive(Debug)]
struct Block {
    bn0: nn::BatchNorm,
    conv0: nn::Conv2D,
    bn1: nn::BatchNorm,
    conv1: nn::Conv2D,
    shortcut: Option<nn::Conv2D>,
    dropout: f64,
}

impl Block {
    fn new(vs: nn::Path, c_in: i64, c_out: i64, stride: i64, dropout: f64) -> Block {
        Block {
            bn0: batch_norm(&vs / "bn0", c_in),
            conv0: conv(&vs / "conv0", c_in, c_out, 3, stride),
            bn1: batch_norm(&vs / "bn1", c_out),
            conv1: conv(&vs / "conv1", c_out, c_out, 3, 1),
            shortcut: (c_in != c_out).then(|| conv(&vs / "shortcut", c_in, c_out, 1, stride)),
            dropout,
        }
    }
}

impl ModuleT for Block {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let pre = x.apply_t(&self.bn0, train).relu();
        let mut y = pre.apply(&self.conv0).apply_t(&self.bn1, train).relu();
        if self.dropout > 0.0 {
            y = y.dropout(self.dropout, train);
        }
        let y = y.apply(&self.conv1);
        match &self.shortcut {
            Some(projection) => y + pre.apply(projection),
            None => y + x,
        }
    }
}

/// A WRN-n-k for 32×32 inputs.
#[derive(Debug)]
pub struct WideResNet {
    config: WrnConfig,
    stem: nn::Conv2D,
    blocks: Vec<Block>,
    bn: nn::BatchNorm,
    fc: nn::Linear,
}

impl WideResNet {
    /// Builds the network's parameters under `vs`.
    pub fn new(vs: &nn::Path, config: &WrnConfig) -> WideResNet {
        let stem = conv(vs / "conv0", 3, 16, 3, 1);
        let mut blocks = Vec::new();
        let mut c_in = 16;
        for (g, &width) in config.widths().iter().enumerate() {
            for b in 0..config.blocks_per_group() {
                let stride = if g > 0 && b == 0 { 2 } else { 1 };
                let path = vs / format!("group{g}") / format!("block{b}");
                blocks.push(Block::new(path, c_in, width, stride, config.dropout));
                c_in = width;
            }
        }
        let bound = 1.0 / (c_in as f64).sqrt();
        let fc_config = nn::LinearConfig {
            ws_init: nn::Init::Uniform { lo: -bound, up: bound },
            bs_init: Some(nn::Init::Const(0.0)),
            bias: true,
        };
        WideResNet {
            config: config.clone(),
            stem,
            blocks,
            bn: batch_norm(vs / "bn", c_in),
            fc: nn::linear(vs / "fc", c_in, config.num_classes, fc_config),
        }
    }

    pub fn config(&self) -> &WrnConfig {
        &self.config
    }
}

impl ModuleT for WideResNet {
    /// `x`: N×3×32×32 float; returns N×classes logits.
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut y = x.apply(&self.stem);
        for block in &self.blocks {
            y = y.apply_t(block, train);
        }
        y.apply_t(&self.bn, train).relu().adaptive_avg_pool2d([1, 1]).flatten(1, -1).apply(&self.fc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parameter_count;
    use tch::{Device, Kind};

    fn count(name: &str, classes: i64) -> i64 {
        let vs = nn::VarStore::new(Device::Cpu);
        let mut config: WrnConfig = name.parse().unwrap();
        config.num_classes = classes;
        WideResNet::new(&vs.root(), &config);
        parameter_count(&vs)
    }

    #[test]
    fn names_parse_and_print_back() {
        let config: WrnConfig = "wrn-28-10".parse().unwrap();
        assert_eq!((config.depth, config.widen, config.blocks_per_group()), (28, 10, 4));
        assert_eq!(config.to_string(), "wrn-28-10");
        assert!(matches!("wrn-27-10".parse::<WrnConfig>(), Err(ArchError::Depth { depth: 27, .. })));
        assert!(matches!("resnet-28".parse::<WrnConfig>(), Err(ArchError::Syntax(_))));
        assert!(matches!("wrn-16-0".parse::<WrnConfig>(), Err(ArchError::Widen { .. })));
    }

    #[test]
    fn parameter_counts_match_the_paper() {
        // Exact count in the official WRN-40-4 log; the others at the paper's rounding (Table 4).
        assert_eq!(count("wrn-40-4", 10), 8_949_210);
        assert_eq!((count("wrn-28-10", 10) as f64 / 1e5).round() / 10.0, 36.5);
        assert_eq!((count("wrn-16-8", 10) as f64 / 1e5).round() / 10.0, 11.0);
        assert_eq!((count("wrn-40-1", 10) as f64 / 1e5).round() / 10.0, 0.6);
    }

    #[test]
    fn forward_backward_shapes() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let mut config: WrnConfig = "wrn-10-1".parse().unwrap();
        config.dropout = 0.3;
        config.num_classes = 100;
        let net = WideResNet::new(&vs.root(), &config);
        let x = Tensor::randn([4, 3, 32, 32], (Kind::Float, Device::Cpu));
        let logits = net.forward_t(&x, true);
        assert_eq!(logits.size(), [4, 100]);
        let loss = logits.cross_entropy_for_logits(&Tensor::from_slice(&[0i64, 1, 2, 3]));
        loss.backward();
        for (name, var) in vs.variables().into_iter().filter(|(_, v)| v.requires_grad()) {
            let grad = var.grad();
            assert!(grad.defined(), "{name} has no gradient");
            assert!(f64::try_from(grad.abs().sum(Kind::Double)).unwrap() > 0.0, "{name} has a zero gradient");
        }
    }
}
