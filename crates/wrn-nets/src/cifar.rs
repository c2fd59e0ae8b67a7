//! Pre-activation wide residual networks for 32×32 inputs (CIFAR-10/100, SVHN): WRN-n-k and the block
//! variants of the paper's Tables 2 and 3.
//!
//! Layout (paper Table 1; official `models/wide-resnet.lua`): a 3×3 conv with 16 channels, three groups of
//! N blocks at widths 16k, 32k, 64k (stride 2 at the first block of groups 2 and 3), then BN-ReLU, 8×8
//! global average pooling and a linear layer.
//!
//! Blocks: B(3,3) is BN-ReLU-conv3×3(stride s)-BN-ReLU-[dropout]-conv3×3. B(M) for another list of kernel
//! sizes M (Table 2: B(3,1,3), B(1,3,1), B(1,3), B(3,1), B(3,1,1)) repeats BN-ReLU-conv for each kernel,
//! every conv at the group's width, the stride on the first conv and dropout before every conv but the
//! first (the paper places dropout "between convolutions"; its dropout runs use B(3,3) only). When the
//! channel count changes the shortcut is a 1×1 conv (stride s, no BN, no bias) on the *pre-activated*
//! input, as in the official code; otherwise it is the identity on the raw input. No conv has a bias.
//!
//! Names and depth (recipe.md §1): `wrn-<n>-<k>` has N = (n − 4)/6 blocks per group. `wrn-<n>-<k>-b<M>`
//! (e.g. `wrn-40-2-b131`) keeps N = (n − 4)/6 whatever the block length: only that reading reproduces the
//! paper's Table 2 parameter counts. `wrn-<n>-<k>-l<l>` (Table 3, the deepening factor) uses B(3,…,3)
//! with l convs and N = 2(n − 4)/(6l) blocks, so every l keeps the conv count and the parameters of
//! WRN-n-k (2.2M for WRN-40-2).
//!
//! Initialisation follows the official Lua code: convs He-normal with fan-in (`std = sqrt(2 / (k·k·C_in))`),
//! BN γ ~ U(0, 1) and β = 0 (Torch7's `BatchNormalization:reset`), the linear layer's weight
//! U(−1/√fan_in, 1/√fan_in) (Torch7's default) and its bias 0 (`FCinit`).
//!
//! Parameter names follow the official PyTorch port (`pytorch/resnet.py`): `conv0`, `group0.block0.bn0`,
//! `group0.block0.conv0`, …, `group0.block0.convdim` (the 1×1 shortcut), `bn`, `fc`; BN layers carry
//! `weight`, `bias`, `running_mean`, `running_var`.

use std::fmt;
use std::str::FromStr;

use tch::nn::{self, ModuleT};
use tch::Tensor;

use crate::layers::{self, classifier, conv, BatchNorm, Classifier, Conv, ConvInit};
use crate::tally::Tally;
use crate::ArchError;

/// The block of a WRN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockSpec {
    /// B(3,3), the paper's default.
    Basic,
    /// B(M) with these kernel sizes, N = (n − 4)/6 blocks per group (Table 2).
    Kernels(Vec<i64>),
    /// B(3,…,3) with l convs, N = 2(n − 4)/(6l) blocks per group (Table 3).
    Deepened(i64),
}

/// A CIFAR/SVHN WRN with its options.
#[derive(Debug, Clone, PartialEq)]
pub struct WrnConfig {
    /// n: the depth label.
    pub depth: i64,
    /// k: the widening factor.
    pub widen: i64,
    pub block: BlockSpec,
    /// Dropout probability inside each block (0 disables it).
    pub dropout: f64,
    /// Number of output classes.
    pub num_classes: i64,
    pub init: ConvInit,
    /// Batch-norm statistics in training over groups of this many images ("ghost" batch norm).
    pub bn_group: Option<i64>,
}

impl WrnConfig {
    /// Kernel sizes of the convs of one block.
    pub fn kernels(&self) -> Vec<i64> {
        match &self.block {
            BlockSpec::Basic => vec![3, 3],
            BlockSpec::Kernels(k) => k.clone(),
            BlockSpec::Deepened(l) => vec![3; *l as usize],
        }
    }

    /// Blocks per group.
    pub fn blocks_per_group(&self) -> i64 {
        let n = (self.depth - 4) / 6;
        match self.block {
            BlockSpec::Deepened(l) => 2 * n / l,
            _ => n,
        }
    }

    /// Output channels of the three groups: 16k, 32k, 64k.
    pub fn widths(&self) -> [i64; 3] {
        [16 * self.widen, 32 * self.widen, 64 * self.widen]
    }

    /// The block in the paper's notation, e.g. `B(1,3,1)`.
    pub fn block_name(&self) -> String {
        let k: Vec<String> = self.kernels().iter().map(i64::to_string).collect();
        format!("B({})", k.join(","))
    }
}

impl FromStr for WrnConfig {
    type Err = ArchError;

    /// Parses `wrn-<n>-<k>`, `wrn-<n>-<k>-b<kernels>` or `wrn-<n>-<k>-l<l>`; dropout 0 and 10 classes
    /// until set otherwise.
    fn from_str(name: &str) -> Result<Self, ArchError> {
        let invalid = |why: &str| ArchError::Invalid { name: name.to_string(), why: why.to_string() };
        let rest = name.strip_prefix("wrn-").ok_or_else(|| ArchError::Unknown(name.to_string()))?;
        let mut parts = rest.split('-');
        let depth: i64 = parts.next().and_then(|d| d.parse().ok()).ok_or_else(|| ArchError::Unknown(name.into()))?;
        let widen: i64 = parts.next().and_then(|k| k.parse().ok()).ok_or_else(|| ArchError::Unknown(name.into()))?;
        let block = match parts.next() {
            None => BlockSpec::Basic,
            Some(b) if b.starts_with('b') && b.len() > 1 => {
                let kernels: Option<Vec<i64>> = b[1..]
                    .chars()
                    .map(|c| match c {
                        '1' => Some(1),
                        '3' => Some(3),
                        _ => None,
                    })
                    .collect();
                let kernels = kernels.ok_or_else(|| invalid("block kernels must be 1s and 3s, e.g. b131"))?;
                if kernels.len() > 4 {
                    return Err(invalid("a block has at most 4 convs"));
                }
                BlockSpec::Kernels(kernels)
            }
            Some(l) if l.starts_with('l') => {
                let l: i64 = l[1..].parse().map_err(|_| invalid("the deepening factor must be l1..l4"))?;
                if !(1..=4).contains(&l) {
                    return Err(invalid("the deepening factor must be l1..l4"));
                }
                BlockSpec::Deepened(l)
            }
            Some(_) => return Err(ArchError::Unknown(name.to_string())),
        };
        if parts.next().is_some() {
            return Err(ArchError::Unknown(name.to_string()));
        }
        if depth < 10 || (depth - 4) % 6 != 0 {
            return Err(invalid("the depth must be 6N+4 (10, 16, 22, 28, 34, 40, ...)"));
        }
        if let BlockSpec::Deepened(l) = block {
            if (2 * (depth - 4) / 6) % l != 0 {
                return Err(invalid("2(n-4)/6 convs per group must divide into blocks of l convs"));
            }
        }
        if widen < 1 {
            return Err(invalid("the widening factor must be at least 1"));
        }
        Ok(WrnConfig { depth, widen, block, dropout: 0.0, num_classes: 10, init: ConvInit::FanIn, bn_group: None })
    }
}

impl fmt::Display for WrnConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "wrn-{}-{}", self.depth, self.widen)?;
        match &self.block {
            BlockSpec::Basic => Ok(()),
            BlockSpec::Kernels(k) => write!(f, "-b{}", k.iter().map(i64::to_string).collect::<String>()),
            BlockSpec::Deepened(l) => write!(f, "-l{l}"),
        }
    }
}

/// BN γ ~ U(0, 1), β = 0 (Torch7's), then the ReLU that always follows.
fn batch_norm(vs: nn::Path, tally: &mut Tally, group: Option<i64>) -> BatchNorm {
    let bn = layers::batch_norm(vs, tally, nn::Init::Uniform { lo: 0.0, up: 1.0 }, group);
    tally.elementwise();
    bn
}

#[derive(Debug)]
struct Block {
    /// BN-ReLU-conv for each conv of the block.
    layers: Vec<(BatchNorm, Conv)>,
    shortcut: Option<Conv>,
    dropout: f64,
}

impl Block {
    fn new(vs: nn::Path, tally: &mut Tally, kernels: &[i64], (width, stride): (i64, i64), config: &WrnConfig) -> Block {
        let (dropout, init) = (config.dropout, config.init);
        let input = tally.shape();
        let mut layers = Vec::new();
        let mut pre_activated = input;
        for (i, &k) in kernels.iter().enumerate() {
            let bn = batch_norm(&vs / format!("bn{i}"), tally, config.bn_group);
            if i == 0 {
                pre_activated = tally.shape();
            } else if dropout > 0.0 {
                tally.elementwise();
            }
            let conv = conv(&vs / format!("conv{i}"), tally, width, k, if i == 0 { stride } else { 1 }, init);
            layers.push((bn, conv));
        }
        let output = tally.shape();
        let shortcut = (input[0] != width).then(|| {
            tally.set_shape(pre_activated);
            conv(&vs / "convdim", tally, width, 1, stride, init)
        });
        tally.set_shape(output);
        tally.elementwise(); // the addition
        Block { layers, shortcut, dropout }
    }
}

impl ModuleT for Block {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut pre_activated = None;
        let mut y = x.shallow_clone();
        for (i, (bn, conv)) in self.layers.iter().enumerate() {
            y = y.apply_t(bn, train).relu();
            if i == 0 {
                pre_activated = Some(y.shallow_clone());
            } else if self.dropout > 0.0 {
                y = y.dropout(self.dropout, train);
            }
            y = y.apply(conv);
        }
        match (&self.shortcut, pre_activated) {
            (Some(projection), Some(pre)) => y + pre.apply(projection),
            _ => y + x,
        }
    }
}

/// A WRN for 32×32 inputs.
#[derive(Debug)]
pub struct WideResNet {
    stem: Conv,
    blocks: Vec<Block>,
    bn: BatchNorm,
    fc: Classifier,
}

impl WideResNet {
    /// Builds the network's parameters under `vs`, counting each layer in `tally` (input 3×32×32).
    pub fn new(vs: &nn::Path, config: &WrnConfig, tally: &mut Tally) -> WideResNet {
        tally.stage("conv1");
        let stem = conv(vs / "conv0", tally, 16, 3, 1, config.init);
        let kernels = config.kernels();
        let mut blocks = Vec::new();
        for (g, &width) in config.widths().iter().enumerate() {
            tally.stage(format!("conv{}", g + 2));
            for b in 0..config.blocks_per_group() {
                let stride = if g > 0 && b == 0 { 2 } else { 1 };
                let path = vs / format!("group{g}") / format!("block{b}");
                blocks.push(Block::new(path, tally, &kernels, (width, stride), config));
            }
        }
        tally.stage("head");
        let bn = batch_norm(vs / "bn", tally, config.bn_group);
        let fc = classifier(vs / "fc", tally, config.num_classes);
        WideResNet { stem, blocks, bn, fc }
    }
}

impl ModuleT for WideResNet {
    /// `x`: N×3×H×W float (32×32 in the paper); returns N×classes logits.
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

    #[test]
    fn names_parse_and_print_back() {
        for name in ["wrn-28-10", "wrn-40-2-b131", "wrn-22-2-b313", "wrn-40-2-b33", "wrn-40-2-l4", "wrn-52-1"] {
            assert_eq!(name.parse::<WrnConfig>().unwrap().to_string(), name);
        }
        let c: WrnConfig = "wrn-28-10".parse().unwrap();
        assert_eq!((c.depth, c.widen, c.blocks_per_group(), c.kernels()), (28, 10, 4, vec![3, 3]));
        let c: WrnConfig = "wrn-40-2-b131".parse().unwrap();
        assert_eq!((c.blocks_per_group(), c.block_name()), (6, "B(1,3,1)".to_string()));
        let blocks: Vec<i64> =
            (1..=4).map(|l| format!("wrn-40-2-l{l}").parse::<WrnConfig>().unwrap().blocks_per_group()).collect();
        assert_eq!(blocks, [12, 6, 4, 3]);
    }

    #[test]
    fn invalid_names_say_why() {
        let err = |s: &str| s.parse::<WrnConfig>().unwrap_err().to_string();
        assert!(err("wrn-27-10").contains("the depth must be 6N+4"), "{}", err("wrn-27-10"));
        assert!(err("wrn-16-0").contains("widening factor"));
        assert!(err("wrn-40-2-b15").contains("1s and 3s"));
        assert!(err("wrn-40-2-l5").contains("l1..l4"));
        assert!(err("wrn-16-2-l3").contains("must divide"));
        assert!(err("wrn-16-4-x").contains("valid architectures"));
    }
}
