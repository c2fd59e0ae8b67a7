//! Speed options that tch allows: channels-last memory layout and bfloat16 weights.
//!
//! - Channels-last: tch exposes no memory-format argument, but a tensor permuted to NHWC, made contiguous
//!   and permuted back keeps its NCHW shape with NHWC strides (`[H·W·C, 1, W·C, C]`), which libtorch treats
//!   as `channels_last` (cuDNN and oneDNN then pick their NHWC kernels, the fast path for tensor cores).
//!   [`to_channels_last`] converts every 4-D variable of a store in place with `set_data`, so optimiser
//!   references stay valid; [`channels_last`] converts an input batch.
//! - bfloat16: `VarStore::bfloat16` casts a store; a forward pass in bf16 then runs end to end (tested on
//!   CPU against fp32). Keeping fp32 master weights while computing in bf16 is the training runner's job
//!   (it owns the optimiser).
//! - Missing: tch's `autocast` switches only CUDA autocast to its default dtype (float16), with no way to
//!   choose bfloat16 nor to autocast on CPU, so bf16 here is manual casting, not autocast.

use tch::nn::VarStore;
use tch::Tensor;

/// The same values in channels-last strides (a no-op for tensors that are not 4-D).
pub fn channels_last(x: &Tensor) -> Tensor {
    if x.dim() != 4 {
        return x.shallow_clone();
    }
    x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

/// Whether a 4-D tensor has channels-last strides.
pub fn is_channels_last(x: &Tensor) -> bool {
    let (size, stride) = (x.size(), x.stride());
    size.len() == 4 && {
        let [_, c, h, w] = [size[0], size[1], size[2], size[3]];
        stride[1] == 1 && stride[3] == c && stride[2] == w * c && stride[0] == h * w * c
    }
}

/// Converts every 4-D variable (the conv weights) of `vs` to channels-last strides, in place.
pub fn to_channels_last(vs: &VarStore) {
    tch::no_grad(|| {
        for (_, mut var) in vs.variables() {
            if var.dim() == 4 {
                let converted = channels_last(&var);
                var.set_data(&converted);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Arch;
    use tch::nn::{self, ModuleT};
    use tch::{Device, Kind};

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        f64::try_from((a.to_kind(Kind::Float) - b.to_kind(Kind::Float)).abs().max()).unwrap()
    }

    #[test]
    fn channels_last_weights_and_inputs_give_the_same_outputs() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = "wrn-10-2".parse::<Arch>().unwrap().build(&vs.root());
        let x = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
        let want = net.forward_t(&x, false);
        assert!(!is_channels_last(&vs.variables()["group1.block0.conv0.weight"]));

        to_channels_last(&vs);
        let w = &vs.variables()["group1.block0.conv0.weight"];
        assert!(is_channels_last(w), "strides {:?}", w.stride());
        assert_eq!(w.size(), [64, 32, 3, 3]);
        let x_cl = channels_last(&x);
        assert!(is_channels_last(&x_cl));
        let got = net.forward_t(&x_cl, false);
        assert!(max_diff(&got, &want) < 1e-4, "{}", max_diff(&got, &want));
        // Training still works and the weights keep their layout.
        net.forward_t(&x_cl, true).sum(Kind::Float).backward();
        assert!(vs.variables()["conv0.weight"].grad().defined());
    }

    #[test]
    fn a_bf16_forward_pass_tracks_fp32() {
        tch::manual_seed(0);
        let mut vs = nn::VarStore::new(Device::Cpu);
        let net = "wrn-16-2".parse::<Arch>().unwrap().build(&vs.root());
        let x = Tensor::randn([4, 3, 32, 32], (Kind::Float, Device::Cpu));
        let want = net.forward_t(&x, false);
        vs.bfloat16();
        let got = net.forward_t(&x.to_kind(Kind::BFloat16), false);
        assert_eq!(got.kind(), Kind::BFloat16);
        let scale = f64::try_from(want.abs().max()).unwrap();
        assert!(max_diff(&got, &want) < 0.05 * scale, "{} vs scale {scale}", max_diff(&got, &want));
    }
}
