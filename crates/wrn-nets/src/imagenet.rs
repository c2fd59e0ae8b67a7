//! ImageNet networks of the paper's Tables 7 and 8: ResNet-18/34 with widened basic blocks and
//! ResNet-50/101/152 with bottlenecks, including WRN-50-2-bottleneck.
//!
//! The paper trained them with fb.resnet.torch, so they are the original post-activation ResNets: a 7×7/2
//! conv with 64 channels (whatever the width), BN-ReLU, 3×3/2 max-pool, four stages, global average pooling
//! and a linear layer. Basic block: conv3×3(s)-BN-ReLU-conv3×3-BN, added to the shortcut, then ReLU; stage
//! widths 64w, 128w, 256w, 512w (Table 7 counts match only with the stem kept at 64). Bottleneck:
//! conv1×1-BN-ReLU-conv3×3(s)-BN-ReLU-conv1×1-BN, added, ReLU, with the stride on the 3×3 conv; inner widths
//! 64w·2^i and outer widths 256·2^i, so width 2 is WRN-50-2-bottleneck (68,883,240 parameters, equal to
//! torchvision's `wide_resnet50_2`). Shortcuts are identities except where the shape changes, where a 1×1
//! conv + BN projects (fb.resnet.torch's shortcut type B).
//!
//! Initialisation: convs He-normal with fan-in (as the official `pretrained/wide-resnet.lua`;
//! fb.resnet.torch itself uses fan-out), BN γ = 1 and β = 0 (fb.resnet.torch), the linear layer's weight
//! U(−1/√fan_in, 1/√fan_in) (Torch7's default) and its bias 0 (fb.resnet.torch).
//!
//! Parameter names are torchvision's (`conv1`, `bn1`, `layer1.0.conv1`, `layer1.0.downsample.0`,
//! `layer1.0.downsample.1`, …, `fc`), so torchvision state dicts saved as safetensors load directly.
//!
//! `-bn-after-add` (`resnet-50-bn-after-add`) is the variant of fb.resnet.torch's published ResNet-50,
//! behind the paper's Table 8 baseline: "a batch normalization layer after the addition, instead of
//! immediately after the convolution layer" (its `pretrained/README.md`). The block's last convolution has
//! no batch norm of its own; the sum of the branch and the shortcut is normalised (`bn_add`, over the same
//! channels, so the parameter count is the standard network's), then the ReLU. fb did not publish the code
//! of that variant: a projection shortcut keeps its own batch norm here, as fb's shortcut type B has one.

use std::fmt;
use std::str::FromStr;

use tch::nn::{self, ModuleT};
use tch::Tensor;

use crate::layers::{self, classifier, conv, BatchNorm, Classifier, Conv, ConvInit};
use crate::tally::Tally;
use crate::ArchError;

/// A post-activation ResNet for 224×224 inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct ResNetConfig {
    /// 18, 34 (basic blocks), 50, 101 or 152 (bottlenecks).
    pub depth: i64,
    /// Widening factor of the blocks (Table 7: 1.0, 1.5, 2.0, 3.0; Table 8: 2 for WRN-50-2-bottleneck).
    pub width: f64,
    pub num_classes: i64,
    pub init: ConvInit,
    /// Batch-norm statistics in training over groups of this many images ("ghost" batch norm).
    pub bn_group: Option<i64>,
    /// Batch norm after the addition instead of after each block's last convolution (fb.resnet.torch's
    /// published ResNet-50).
    pub bn_after_add: bool,
}

impl ResNetConfig {
    /// Blocks per stage.
    pub fn blocks(&self) -> [i64; 4] {
        match self.depth {
            18 => [2, 2, 2, 2],
            34 | 50 => [3, 4, 6, 3],
            101 => [3, 4, 23, 3],
            _ => [3, 8, 36, 3],
        }
    }

    pub fn bottleneck(&self) -> bool {
        self.depth >= 50
    }

    fn scaled(&self, base: i64) -> i64 {
        (base as f64 * self.width).round() as i64
    }
}

impl FromStr for ResNetConfig {
    type Err = ArchError;

    /// Parses `resnet-<depth>` or `resnet-<depth>-w<width>`, each optionally ending in `-bn-after-add`,
    /// and the paper's `wrn-50-2-bottleneck`.
    fn from_str(full: &str) -> Result<Self, ArchError> {
        let invalid = |why: &str| ArchError::Invalid { name: full.to_string(), why: why.to_string() };
        let (name, bn_after_add) = match full.strip_suffix("-bn-after-add") {
            Some(name) if name.starts_with("resnet-") => (name, true),
            _ => (full, false),
        };
        let (depth, width) = if let Some(rest) = name.strip_prefix("wrn-").and_then(|r| r.strip_suffix("-bottleneck")) {
            let (depth, width) = rest.split_once('-').ok_or_else(|| ArchError::Unknown(full.to_string()))?;
            (depth, Some(width))
        } else {
            let rest = name.strip_prefix("resnet-").ok_or_else(|| ArchError::Unknown(full.to_string()))?;
            match rest.split_once("-w") {
                Some((depth, width)) => (depth, Some(width)),
                None => (rest, None),
            }
        };
        let depth: i64 = depth.parse().map_err(|_| ArchError::Unknown(full.to_string()))?;
        if ![18, 34, 50, 101, 152].contains(&depth) {
            return Err(invalid("the depth must be 18, 34, 50, 101 or 152"));
        }
        let width: f64 = match width {
            None => 1.0,
            Some(w) => w.parse().map_err(|_| invalid("the width must be a number, e.g. w1.5"))?,
        };
        if !(width > 0.0 && width <= 8.0) {
            return Err(invalid("the width must be in (0, 8]"));
        }
        Ok(ResNetConfig { depth, width, num_classes: 1000, init: ConvInit::FanIn, bn_group: None, bn_after_add })
    }
}

impl fmt::Display for ResNetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "resnet-{}", self.depth)?;
        if self.width != 1.0 {
            write!(f, "-w{}", self.width)?;
        }
        if self.bn_after_add {
            f.write_str("-bn-after-add")?;
        }
        Ok(())
    }
}

/// BN γ = 1, β = 0 (fb.resnet.torch's).
fn batch_norm(vs: nn::Path, tally: &mut Tally, group: Option<i64>) -> BatchNorm {
    layers::batch_norm(vs, tally, nn::Init::Const(1.0), group)
}

#[derive(Debug)]
struct Block {
    /// conv-BN pairs of the residual branch; ReLU between them.
    branch: Vec<(Conv, BatchNorm)>,
    downsample: Option<(Conv, BatchNorm)>,
    /// The last batch norm of `branch` normalises the sum instead of the last convolution.
    bn_after_add: bool,
}

impl Block {
    /// `convs`: (name, output channels, kernel, stride) of the branch's convs.
    fn new(vs: nn::Path, tally: &mut Tally, convs: &[(i64, i64, i64)], config: &ResNetConfig) -> Block {
        let (init, group) = (config.init, config.bn_group);
        let input = tally.shape();
        let mut branch = Vec::new();
        for (i, &(c_out, k, stride)) in convs.iter().enumerate() {
            let conv = conv(&vs / format!("conv{}", i + 1), tally, c_out, k, stride, init);
            let last = i + 1 == convs.len();
            let name = if last && config.bn_after_add { "bn_add".to_string() } else { format!("bn{}", i + 1) };
            let bn = batch_norm(&vs / name, tally, group);
            if i + 1 < convs.len() {
                tally.elementwise();
            }
            branch.push((conv, bn));
        }
        let output = tally.shape();
        let stride: i64 = convs.iter().map(|c| c.2).product();
        let downsample = (stride != 1 || input[0] != output[0]).then(|| {
            tally.set_shape(input);
            let path = &vs / "downsample";
            let conv = conv(&path / "0", tally, output[0], 1, stride, init);
            (conv, batch_norm(&path / "1", tally, group))
        });
        tally.set_shape(output);
        tally.elementwise(); // the addition
        tally.elementwise(); // the ReLU after it
        Block { branch, downsample, bn_after_add: config.bn_after_add }
    }
}

impl ModuleT for Block {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut y = x.shallow_clone();
        let last = self.branch.len() - 1;
        for (i, (conv, bn)) in self.branch.iter().enumerate() {
            y = y.apply(conv);
            if i < last {
                y = y.apply_t(bn, train).relu();
            } else if !self.bn_after_add {
                y = y.apply_t(bn, train);
            }
        }
        let shortcut = match &self.downsample {
            Some((conv, bn)) => x.apply(conv).apply_t(bn, train),
            None => x.shallow_clone(),
        };
        let sum = y + shortcut;
        match self.bn_after_add {
            true => sum.apply_t(&self.branch[last].1, train).relu(),
            false => sum.relu(),
        }
    }
}

/// A post-activation ResNet for ImageNet.
#[derive(Debug)]
pub struct ResNet {
    conv1: Conv,
    bn1: BatchNorm,
    blocks: Vec<Block>,
    fc: Classifier,
}

impl ResNet {
    /// Builds the network's parameters under `vs`, counting each layer in `tally` (input 3×224×224).
    pub fn new(vs: &nn::Path, config: &ResNetConfig, tally: &mut Tally) -> ResNet {
        tally.stage("stem");
        let conv1 = conv(vs / "conv1", tally, 64, 7, 2, config.init);
        let bn1 = batch_norm(vs / "bn1", tally, config.bn_group);
        tally.elementwise();
        let [_, h, w] = tally.shape();
        tally.pool((h - 1) / 2 + 1, (w - 1) / 2 + 1);
        let mut blocks = Vec::new();
        for (stage, &count) in config.blocks().iter().enumerate() {
            tally.stage(format!("layer{}", stage + 1));
            let scale = 1 << stage;
            for b in 0..count {
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                let convs = if config.bottleneck() {
                    let inner = config.scaled(64 * scale);
                    vec![(inner, 1, 1), (inner, 3, stride), (256 * scale, 1, 1)]
                } else {
                    let c = config.scaled(64 * scale);
                    vec![(c, 3, stride), (c, 3, 1)]
                };
                blocks.push(Block::new(vs / format!("layer{}", stage + 1) / b.to_string(), tally, &convs, config));
            }
        }
        tally.stage("head");
        let fc = classifier(vs / "fc", tally, config.num_classes);
        ResNet { conv1, bn1, blocks, fc }
    }
}

impl ModuleT for ResNet {
    /// `x`: N×3×H×W float (224×224 in the paper); returns N×classes logits.
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut y =
            x.apply(&self.conv1).apply_t(&self.bn1, train).relu().max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        for block in &self.blocks {
            y = y.apply_t(block, train);
        }
        y.adaptive_avg_pool2d([1, 1]).flatten(1, -1).apply(&self.fc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print_back() {
        for name in ["resnet-18", "resnet-34-w1.5", "resnet-18-w3", "resnet-50", "resnet-152", "resnet-50-w2"] {
            assert_eq!(name.parse::<ResNetConfig>().unwrap().to_string(), name);
        }
        let wrn: ResNetConfig = "wrn-50-2-bottleneck".parse().unwrap();
        assert_eq!(wrn.to_string(), "resnet-50-w2");
        assert!("resnet-20".parse::<ResNetConfig>().unwrap_err().to_string().contains("18, 34, 50, 101 or 152"));
        assert!("resnet-18-wx".parse::<ResNetConfig>().unwrap_err().to_string().contains("must be a number"));
    }
}
