//! Numerical parity with PyTorch 2.11: the fixtures in `tests/fixtures/` were written by
//! `make_parity_fixtures.py` (run by hand) from the official PyTorch port's WRN and from torchvision's
//! resnet18, with fixed weights, in train and eval mode, with the gradients of a cross-entropy loss.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};
use wrn_nets::{weights, Arch};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn read(name: &str) -> BTreeMap<String, Tensor> {
    Tensor::read_safetensors(fixture(name)).unwrap().into_iter().collect()
}

/// Asserts `max |got − want| ≤ rtol · max |want| + atol`.
fn assert_close(what: &str, got: &Tensor, want: &Tensor, rtol: f64) {
    assert_eq!(got.size(), want.size(), "{what}: shape");
    let diff = f64::try_from((got - want).abs().max()).unwrap();
    let scale = f64::try_from(want.abs().max()).unwrap();
    assert!(diff <= rtol * scale + 1e-6, "{what}: max difference {diff:e} at scale {scale:e}");
}

/// The formula of `fixed_weights` in the fixture script: value i of the k-th tensor (names sorted) is
/// sin(0.7 i + 1.3 k), scaled by the tensor's role.
fn fixed_weights(names: &[(String, Vec<i64>)]) -> BTreeMap<String, Tensor> {
    let mut sorted: Vec<&(String, Vec<i64>)> = names.iter().collect();
    sorted.sort();
    let mut out = BTreeMap::new();
    for (k, (name, shape)) in sorted.into_iter().enumerate() {
        if name.ends_with("num_batches_tracked") {
            continue;
        }
        let n: i64 = shape.iter().product();
        let v = (Tensor::arange(n, (Kind::Double, Device::Cpu)) * 0.7 + 1.3 * k as f64).sin().reshape(shape);
        let w = if shape.len() >= 2 {
            v / (shape[1..].iter().product::<i64>() as f64).sqrt()
        } else if name.ends_with("running_var") {
            &v * &v * 0.5 + 1.0
        } else if name.ends_with("running_mean") || name.ends_with("bias") {
            v * 0.1
        } else {
            v * 0.2 + 1.0
        };
        out.insert(name.clone(), w.to_kind(Kind::Float));
    }
    out
}

#[test]
fn wrn_matches_the_official_pytorch_port() {
    let f = read("wrn_10_1.safetensors");
    let weights: Vec<(String, Tensor)> =
        f.iter().filter_map(|(n, t)| n.strip_prefix("weights.").map(|n| (n.to_string(), t.shallow_clone()))).collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wrn.safetensors");
    Tensor::write_safetensors(&weights, &path).unwrap();

    let mut vs = nn::VarStore::new(Device::Cpu);
    let net = "wrn-10-1".parse::<Arch>().unwrap().build(&vs.root());
    weights::load(&mut vs, &path).unwrap();
    let logits = net.forward_t(&f["input"], true);
    assert_close("train logits", &logits, &f["logits_train"], 1e-4);
    logits.cross_entropy_for_logits(&f["labels"]).backward();
    let vars = vs.variables();
    for (name, var) in &vars {
        if var.requires_grad() {
            assert_close(&format!("gradient of {name}"), &var.grad(), &f[&format!("grad.{name}")], 1e-3);
        } else {
            assert_close(&format!("updated {name}"), var, &f[&format!("after.{name}")], 1e-4);
        }
    }
    assert_close("eval logits", &net.forward_t(&f["input"], false), &f["logits_eval"], 1e-4);
}

#[test]
fn resnet18_matches_torchvision() {
    let names: Vec<(String, Vec<i64>)> =
        serde_json::from_str(&std::fs::read_to_string(fixture("resnet18_names.json")).unwrap()).unwrap();
    let mut vs = nn::VarStore::new(Device::Cpu);
    let net = "resnet-18".parse::<Arch>().unwrap().build(&vs.root());

    // The same names and shapes as torchvision's state_dict, less its BN step counters.
    let ours: BTreeMap<String, Vec<i64>> = vs.variables().into_iter().map(|(n, t)| (n, t.size())).collect();
    let theirs: BTreeMap<String, Vec<i64>> =
        names.iter().filter(|(n, _)| !n.ends_with("num_batches_tracked")).cloned().collect();
    assert_eq!(ours, theirs);

    // Loaded through a torchvision-named file, as a user loads torchvision's weights.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resnet18.safetensors");
    let mut fixed: Vec<(String, Tensor)> = fixed_weights(&names).into_iter().collect();
    fixed.extend(
        names.iter().filter(|(n, _)| n.ends_with("num_batches_tracked")).map(|(n, _)| (n.clone(), Tensor::from(0i64))),
    );
    Tensor::write_safetensors(&fixed, &path).unwrap();
    weights::load(&mut vs, &path).unwrap();

    let f = read("resnet18.safetensors");
    let logits = net.forward_t(&f["input"], true);
    assert_close("train logits", &logits, &f["logits_train"], 1e-4);
    logits.cross_entropy_for_logits(&f["labels"]).backward();
    let vars = vs.variables();
    for (name, var) in &vars {
        if var.requires_grad() {
            let norm = var.grad().norm().reshape([1]);
            assert_close(&format!("gradient norm of {name}"), &norm, &f[&format!("gradnorm.{name}")], 1e-3);
        }
    }
    for name in ["fc.bias", "bn1.weight", "bn1.bias"] {
        assert_close(&format!("gradient of {name}"), &vars[name].grad(), &f[&format!("grad.{name}")], 1e-3);
    }
    let rows = vars["fc.weight"].grad().narrow(0, 0, 8);
    assert_close("gradient of fc.weight[:8]", &rows, &f["grad.fc.weight.rows0to8"], 1e-3);
    for name in ["bn1.running_mean", "bn1.running_var"] {
        assert_close(&format!("updated {name}"), &vars[name], &f[&format!("after.{name}")], 1e-4);
    }
    assert_close("eval logits", &net.forward_t(&f["input"], false), &f["logits_eval"], 1e-4);
}
