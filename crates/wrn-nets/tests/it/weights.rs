//! Safetensors round trips and the errors of a file that does not fit.

use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};
use wrn_nets::{weights, Arch};

#[test]
fn saved_weights_load_into_a_fresh_network_and_give_the_same_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wrn.safetensors");
    tch::manual_seed(0);
    let arch: Arch = "wrn-16-2".parse().unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let net = arch.build(&vs.root());
    let x = Tensor::randn([3, 3, 32, 32], (Kind::Float, Device::Cpu));
    let _ = net.forward_t(&x, true); // moves the BN running statistics away from their initial values
    let want = net.forward_t(&x, false);
    weights::save(&vs, &path).unwrap();
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(files, ["wrn.safetensors"], "a temporary file was left behind");

    tch::manual_seed(1);
    let mut fresh = nn::VarStore::new(Device::Cpu);
    let other = arch.build(&fresh.root());
    assert!(f64::try_from((other.forward_t(&x, false) - &want).abs().max()).unwrap() > 1e-3);
    weights::load(&mut fresh, &path).unwrap();
    let got = other.forward_t(&x, false);
    assert_eq!(f64::try_from((got - want).abs().max()).unwrap(), 0.0);

    let names: Vec<String> = Tensor::read_safetensors(&path).unwrap().into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"group0.block0.bn0.num_batches_tracked".to_string()));
    assert!(names.contains(&"group1.block0.convdim.weight".to_string()));
}

#[test]
fn a_file_for_another_network_is_refused_with_every_difference_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wrn-16-2.safetensors");
    let vs = nn::VarStore::new(Device::Cpu);
    "wrn-16-2".parse::<Arch>().unwrap().build(&vs.root());
    weights::save(&vs, &path).unwrap();

    let mut wider = nn::VarStore::new(Device::Cpu);
    "wrn-16-4".parse::<Arch>().unwrap().build(&wider.root());
    let before = wider.variables()["conv0.weight"].copy();
    let err = weights::load(&mut wider, &path).unwrap_err().to_string();
    assert!(err.starts_with(&format!("{} does not fit this network (weights of another", path.display())), "{err}");
    assert!(
        err.contains("group0.block0.conv0.weight has shape [32, 16, 3, 3] in the file, [64, 16, 3, 3] in the network")
    );
    // Nothing was changed.
    assert!(wider.variables()["conv0.weight"].equal(&before));

    let mut thin = nn::VarStore::new(Device::Cpu);
    "wrn-16-1".parse::<Arch>().unwrap().build(&thin.root());
    let err = weights::load(&mut thin, &path).unwrap_err().to_string();
    assert!(err.contains("unexpected group0.block0.convdim.weight"), "{err}");
    let thin_path = dir.path().join("wrn-16-1.safetensors");
    weights::save(&thin, &thin_path).unwrap();
    let err = weights::load(&mut wider, &thin_path).unwrap_err().to_string();
    assert!(err.contains("missing group0.block0.convdim.weight"), "{err}");

    let mut deeper = nn::VarStore::new(Device::Cpu);
    "wrn-10-2".parse::<Arch>().unwrap().build(&deeper.root());
    let err = weights::load(&mut deeper, &path).unwrap_err().to_string();
    assert!(err.contains("unexpected group0.block1.conv0.weight"), "{err}");

    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"not a safetensors file").unwrap();
    let err = weights::load(&mut deeper, &garbage).unwrap_err().to_string();
    assert!(err.starts_with(&format!("cannot read weights from {}", garbage.display())), "{err}");
}
