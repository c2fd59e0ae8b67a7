//! Speed options that tch allows: channels-last memory layout and bfloat16 compute.
//!
//! - Channels-last: tch exposes no memory-format argument, but a tensor permuted to NHWC, made contiguous
//!   and permuted back keeps its NCHW shape with NHWC strides (`[H·W·C, 1, W·C, C]`), which libtorch treats
//!   as `channels_last` (cuDNN and oneDNN then pick their NHWC kernels, the fast path for tensor cores).
//!   [`to_channels_last`] converts every 4-D variable of a store in place with `set_data`, so optimiser
//!   references stay valid; [`channels_last`] converts an input batch.
//! - bfloat16: a bf16 input runs the whole network in bf16 on its `f32` weights, which the layers cast on
//!   use (see `layers`): the weights stay the `f32` master copy, their gradients arrive in `f32`, and the
//!   optimiser and checkpoints never see bf16. [`bf16`] casts an input batch.
//! - Missing: tch's `autocast` switches only CUDA autocast to its default dtype (float16), with no way to
//!   choose bfloat16 nor to autocast on CPU, so bf16 here is the networks' own casting, not autocast.

use tch::nn::VarStore;
use tch::{Kind, Tensor};

/// The values of `x` in bfloat16, the input that makes a network compute in bf16.
pub fn bf16(x: &Tensor) -> Tensor {
    x.to_kind(Kind::BFloat16)
}

/// The same values in channels-last strides (a no-op for tensors that are not 4-D): always the canonical
/// `[H·W·C, 1, W·C, C]`, also along dimensions of size 1 (a 1×1 kernel), which are the strides the
/// convolution's backward pass gives the weight's gradient; DDP's Reducer warns when a gradient's strides
/// differ from its parameter's.
pub fn channels_last(x: &Tensor) -> Tensor {
    if x.dim() != 4 {
        return x.shallow_clone();
    }
    let size = x.size();
    let (c, h, w) = (size[1], size[2], size[3]);
    let mut out = Tensor::empty_strided(&size, [h * w * c, 1, w * c, c], (x.kind(), x.device()));
    tch::no_grad(|| out.copy_(x));
    out
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
    fn channels_last_strides_are_canonical_along_dimensions_of_size_one() {
        let x = Tensor::arange(64 * 32, (Kind::Float, tch::Device::Cpu)).view([64, 32, 1, 1]);
        let y = channels_last(&x);
        assert_eq!(y.stride(), [32, 1, 32, 32]);
        assert!(is_channels_last(&y) && y.equal(&x));
        let z = channels_last(&Tensor::zeros([2, 3, 4, 5], (Kind::Float, tch::Device::Cpu)));
        assert_eq!(z.stride(), [60, 1, 15, 3]);
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
    fn a_bf16_pass_tracks_fp32_and_trains_the_f32_weights() {
        for arch in ["wrn-16-2", "resnet-18"] {
            tch::manual_seed(0);
            let vs = nn::VarStore::new(Device::Cpu);
            let net = arch.parse::<Arch>().unwrap().build(&vs.root());
            let side = if arch.starts_with("resnet") { 64 } else { 32 };
            let x = Tensor::randn([4, 3, side, side], (Kind::Float, Device::Cpu));
            let want = net.forward_t(&x, false);
            let got = net.forward_t(&bf16(&x), false);
            assert_eq!(got.kind(), Kind::BFloat16, "{arch}");
            let scale = f64::try_from(want.abs().max()).unwrap();
            assert!(max_diff(&got, &want) < 0.05 * scale, "{arch}: {} vs scale {scale}", max_diff(&got, &want));

            // Every parameter and BN statistic stays f32 and every weight gets an f32 gradient close to the
            // f32 pass's. Compared with BN's running statistics (eval mode): at initialisation, the
            // training-mode gradient below a BN is the small remainder of terms that BN's centring cancels,
            // which bf16's 8-bit mantissa moves by tens of percent; that bf16 training still learns is
            // `wrn-train`'s test.
            let grads = |input: &Tensor| {
                vs.trainable_variables().iter_mut().for_each(Tensor::zero_grad);
                net.forward_t(input, false).to_kind(Kind::Float).square().mean(Kind::Float).backward();
                let mut g: Vec<(String, Tensor)> = vs
                    .variables()
                    .into_iter()
                    .filter(|(_, v)| v.requires_grad())
                    .map(|(n, v)| (n, v.grad().copy()))
                    .collect();
                g.sort_by(|a, b| a.0.cmp(&b.0));
                g
            };
            let (g32, g16) = (grads(&x), grads(&bf16(&x)));
            for (name, v) in vs.variables() {
                assert_eq!(v.kind(), Kind::Float, "{arch}: {name} left f32");
            }
            for ((name, a), (_, b)) in g32.iter().zip(&g16) {
                assert_eq!(b.kind(), Kind::Float, "{arch}: gradient of {name}");
                let norm = |t: &Tensor| f64::try_from(t.norm()).unwrap();
                let relative = norm(&(a - b)) / norm(a).max(1e-12);
                assert!(relative < 0.2, "{arch}: {name} gradient off by {relative} of its norm");
            }
        }
    }
}
