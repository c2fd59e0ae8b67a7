//! The optimiser and a training step against PyTorch 2.11: three `torch.optim.SGD(lr=0.1, momentum=0.9,
//! nesterov=True, weight_decay=5e-4)` steps of a WRN-10-1 in train mode (fixture written by
//! `tests/fixtures/make_sgd_fixtures.py`).

use std::collections::BTreeMap;
use std::path::Path;

use tch::nn::{self, ModuleT};
use tch::{Device, Tensor};
use wrn_nets::{weights, Arch};
use wrn_train::config::Optimizer;
use wrn_train::sgd::Sgd;

fn rel_diff(got: &Tensor, want: &Tensor) -> f64 {
    let diff = f64::try_from((got - want).abs().max()).unwrap();
    diff / f64::try_from(want.abs().max()).unwrap().max(1e-12)
}

#[test]
fn three_steps_match_torch_optim_sgd() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sgd_wrn_10_1.safetensors");
    let f: BTreeMap<String, Tensor> = Tensor::read_safetensors(path).unwrap().into_iter().collect();
    let initial: Vec<(String, Tensor)> =
        f.iter().filter_map(|(n, t)| n.strip_prefix("initial.").map(|n| (n.to_string(), t.shallow_clone()))).collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("initial.safetensors");
    Tensor::write_safetensors(&initial, &file).unwrap();

    let mut vs = nn::VarStore::new(Device::Cpu);
    let net = "wrn-10-1".parse::<Arch>().unwrap().build(&vs.root());
    weights::load(&mut vs, &file).unwrap();
    let config = Optimizer { lr: 0.1, momentum: 0.9, dampening: 0.0, weight_decay: 5e-4, nesterov: true };
    let mut sgd = Sgd::new(&vs, config);
    for step in 0..3 {
        sgd.zero_grad();
        let loss = net
            .forward_t(&f[&format!("step{step}.input")], true)
            .cross_entropy_for_logits(&f[&format!("step{step}.labels")]);
        let want_loss = f64::try_from(&f[&format!("step{step}.loss")]).unwrap();
        let got_loss = f64::try_from(&loss).unwrap();
        assert!((got_loss - want_loss).abs() <= 1e-4 * want_loss.abs(), "step {step}: loss {got_loss} vs {want_loss}");
        loss.backward();
        sgd.step(0.1);
        if step == 0 || step == 2 {
            // One step within 1e-5 relative; three within 1e-4 (errors compound through BN statistics).
            let tolerance = if step == 0 { 1e-5 } else { 1e-4 };
            for (name, var) in vs.variables() {
                let d = rel_diff(&var, &f[&format!("after{step}.{name}")]);
                assert!(d <= tolerance, "after step {step}: {name} differs by {d:e} relative");
            }
        }
    }
}
