//! Ghost batch norm (`Arch::with_bn_group`): a network whose batch norm takes its training statistics over
//! groups of G images computes, on a batch of N, exactly what the plain network computes on each group
//! alone, as the GPUs of a data-parallel run without synchronised batch norm do: the same outputs and
//! gradients, and the running statistics of the first group (the first GPU's, or rank 0's). A last group
//! smaller than G is normalised alone; eval mode ignores the groups.

use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};
use wrn_nets::Arch;

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    f64::try_from((a - b).abs().max()).unwrap()
}

/// The same weights in a plain network and in one with `group` (copied: the seed is global to the
/// process and tests run in parallel).
fn pair(
    arch: &str,
    group: i64,
    input: [i64; 3],
) -> ((nn::VarStore, wrn_nets::Network), (nn::VarStore, wrn_nets::Network)) {
    let arch: Arch = arch.parse::<Arch>().unwrap().with_classes(10);
    tch::manual_seed(7);
    let plain_vs = nn::VarStore::new(Device::Cpu);
    let plain = arch.build_for_input(&plain_vs.root(), input);
    let mut ghost_vs = nn::VarStore::new(Device::Cpu);
    let ghost = arch.with_bn_group(Some(group)).build_for_input(&ghost_vs.root(), input);
    ghost_vs.copy(&plain_vs).unwrap();
    ((plain_vs, plain), (ghost_vs, ghost))
}

fn check(arch: &str, input: [i64; 3], batch: i64, group: i64) {
    let ((plain_vs, plain), (ghost_vs, ghost)) = pair(arch, group, input);
    // A third copy, before any forward pass moves the running statistics (tests run in parallel
    // threads, so libtorch's global generator cannot make the same weights twice).
    let mut first_vs = nn::VarStore::new(Device::Cpu);
    let first = arch.parse::<Arch>().unwrap().with_classes(10).build_for_input(&first_vs.root(), input);
    first_vs.copy(&plain_vs).unwrap();
    let [c, h, w] = input;
    let x = Tensor::randn([batch, c, h, w], (Kind::Float, Device::Cpu));

    // Groups of `group` (the last one shorter when `group` does not divide the batch), each alone.
    let mut want = Vec::new();
    let mut start = 0;
    while start < batch {
        let n = group.min(batch - start);
        want.push(plain.forward_t(&x.narrow(0, start, n), true));
        start += n;
    }
    let want = Tensor::cat(&want, 0);
    let got = ghost.forward_t(&x, true);
    let d = max_diff(&got, &want);
    assert!(d < 1e-5, "{arch} N={batch} G={group}: outputs differ by {d}");

    // Gradients of the same loss through both.
    (&got * 0.01).sum(Kind::Float).backward();
    (&want * 0.01).sum(Kind::Float).backward();
    let (ghost_vars, plain_vars) = (ghost_vs.variables(), plain_vs.variables());
    for (name, v) in ghost_vars.iter().filter(|(_, v)| v.requires_grad()) {
        let want = plain_vars[name].grad();
        let d = max_diff(&v.grad(), &want);
        let scale = f64::try_from(want.abs().max()).unwrap();
        assert!(d <= 1e-4 * (1.0 + scale), "{arch}: the gradient of {name} differs by {d}");
    }

    // Running statistics: the first group's, as a plain network that saw only it has them.
    let _ = first.forward_t(&x.narrow(0, 0, group), true);
    let expected = first_vs.variables();
    let mut compared = 0;
    for (name, t) in ghost_vars.iter().filter(|(n, _)| n.ends_with("running_mean") || n.ends_with("running_var")) {
        let (d, scale) = (max_diff(t, &expected[name]), f64::try_from(expected[name].abs().max()).unwrap());
        assert!(d <= 1e-5 * (1.0 + scale), "{arch}: {name} is not the first group's ({d} at scale {scale})");
        compared += 1;
    }
    assert!(compared > 4);
    // The plain network, which saw every group, has other statistics: the comparison can fail.
    let moved = plain_vars.iter().filter(|(n, _)| n.ends_with("running_mean"));
    assert!(moved.map(|(n, t)| max_diff(t, &expected[n])).fold(0.0, f64::max) > 1e-4);
}

#[test]
fn ghost_batch_norm_is_each_group_alone_in_a_wrn() {
    check("wrn-10-2", [3, 32, 32], 12, 4);
    check("wrn-10-1", [3, 32, 32], 10, 4);
}

#[test]
fn ghost_batch_norm_is_each_group_alone_in_a_resnet() {
    check("resnet-18", [3, 64, 64], 6, 3);
}

#[test]
fn eval_mode_and_a_batch_within_one_group_are_plain_batch_norm() {
    let ((plain_vs, plain), (ghost_vs, ghost)) = pair("wrn-10-1", 8, [3, 32, 32]);
    let x = Tensor::randn([6, 3, 32, 32], (Kind::Float, Device::Cpu));
    assert_eq!(max_diff(&ghost.forward_t(&x, true), &plain.forward_t(&x, true)), 0.0);
    // Both have now updated their running statistics from the same 6 images.
    assert_eq!(max_diff(&ghost.forward_t(&x, false), &plain.forward_t(&x, false)), 0.0);
    assert_eq!(ghost_vs.variables().len(), plain_vs.variables().len());
    // bf16 activations on f32 parameters, as bf16 training runs it.
    let ((_, plain), (_, ghost)) = pair("wrn-10-1", 2, [3, 32, 32]);
    let x = Tensor::randn([4, 3, 32, 32], (Kind::Float, Device::Cpu));
    let (a, b) = (ghost.forward_t(&x.to_kind(Kind::BFloat16), true), plain.forward_t(&x.narrow(0, 0, 2), true));
    assert_eq!(a.kind(), Kind::BFloat16);
    assert!(
        max_diff(&a.narrow(0, 0, 2).to_kind(Kind::Float), &b) < 0.1 * (1.0 + f64::try_from(b.abs().max()).unwrap())
    );
}
