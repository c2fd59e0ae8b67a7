//! `wrn_train::eval`: a finished run's weights, evaluated by `evaluate_weights` as a checkpoint, as a
//! state dict under the network's own names and (ImageNet) as the authors' export with batch norm folded
//! into the convolutions, give the figures of the run's last epoch; the result folder says evaluated,
//! and a folder holding a trained run is refused.

use std::collections::BTreeMap;
use std::path::Path;

use tch::{Kind, Tensor};
use wrn_run::{EpochMetrics, RunFolder, Status};
use wrn_train::config::Experiment;
use wrn_train::eval::{self, EvalError, EvalOptions};
use wrn_train::run::RunDir;

fn evaluate(weights: &Path, out: &Path, exp: &Experiment) -> Result<wrn_run::RunResult, EvalError> {
    let options = EvalOptions {
        weights: weights.to_path_buf(),
        label: "test-weights".into(),
        device: None,
        wrn_version: "test".into(),
        git_sha: "test".into(),
    };
    let _guard = crate::common::one_training_at_a_time();
    eval::evaluate_weights(&RunDir::create_for(out, "wrn eval").unwrap(), exp, &options, &wrn_progress::Silent)
}

fn last_epoch(run: &Path) -> EpochMetrics {
    RunFolder::at(run).read_metrics().unwrap().pop().unwrap()
}

/// The checkpoint's network tensors under the network's own names (a state dict).
fn state_dict(run: &Path) -> BTreeMap<String, Tensor> {
    let named = wrn_train::run::read_checkpoint(&run.join(wrn_run::CHECKPOINT)).unwrap();
    named.into_iter().filter_map(|(n, t)| n.strip_prefix(wrn_train::run::MODEL_PREFIX).map(|n| (n.into(), t))).collect()
}

fn write(path: &Path, tensors: &BTreeMap<String, Tensor>) {
    let named: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    Tensor::write_safetensors(&named, path).unwrap();
}

fn assert_same(result: &wrn_run::RunResult, epoch: &EpochMetrics, tolerance: f64) {
    let e = result.evaluation.as_ref().unwrap();
    let close = |a: f64, b: f64| (a - b).abs() <= tolerance * b.abs().max(1.0);
    assert!(close(e.loss, epoch.test_loss), "loss {} vs the run's {}", e.loss, epoch.test_loss);
    assert_eq!(result.final_test_error, Some(epoch.test_error));
    assert_eq!(result.final_test_top5_error, Some(epoch.test_top5_error));
}

#[test]
fn a_cifar_runs_checkpoint_and_its_state_dict_evaluate_to_its_last_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let exp = crate::train::experiment(&["epochs=2", "scale.train_subset=128", "scale.test_subset=96", "dropout=0.3"]);
    assert_eq!(crate::train::train(&run, &exp, false, None).unwrap().status, Status::Finished);
    let last = last_epoch(&run);

    let out = dir.path().join("eval-checkpoint");
    let result = evaluate(&run.join(wrn_run::CHECKPOINT), &out, &exp).unwrap();
    assert_eq!(result.status, Status::Evaluated);
    assert!(!result.is_finished() && !result.full_scale, "an evaluation is never a trained result");
    let e = result.evaluation.as_ref().unwrap();
    assert_eq!((e.format.as_str(), e.split.as_str(), e.images), ("checkpoint", "test", 96));
    // The same weights, loader and thread count: the same numbers to the bit.
    assert_same(&result, &last, 0.0);
    assert_eq!(RunFolder::at(&out).read_result().unwrap(), Some(result));
    assert!(std::fs::read_to_string(out.join(wrn_run::CONFIG)).unwrap().contains("wrn-10-1"));

    let file = dir.path().join("state_dict.safetensors");
    write(&file, &state_dict(&run));
    let result = evaluate(&file, &dir.path().join("eval-state-dict"), &exp).unwrap();
    assert_eq!(result.evaluation.as_ref().unwrap().format, "state-dict");
    assert_same(&result, &last, 0.0);

    // A folder that holds a trained run is never overwritten by an evaluation.
    let err = evaluate(&file, &run, &exp).unwrap_err().to_string();
    assert!(err.contains("holds a trained run"), "{err}");
    assert_eq!(RunFolder::at(&run).read_result().unwrap().unwrap().status, Status::Finished);
    // Weights of another network are refused, naming the file and the tensors that do not fit.
    let wider = Experiment { arch: "wrn-10-2".parse().unwrap(), ..exp.clone() };
    let err = evaluate(&file, &dir.path().join("eval-wider"), &wider).unwrap_err().to_string();
    assert!(err.contains("state_dict.safetensors does not fit this network") && err.contains("has shape"), "{err}");
}

/// The authors' export of a network: each convolution followed by its batch norm becomes one convolution
/// with a bias (`w · γ/√(v+ε)`, `β − μ · γ/√(v+ε)`), under their names.
fn fold_as_the_authors_exported(model: &BTreeMap<String, Tensor>) -> BTreeMap<String, Tensor> {
    let mut out = BTreeMap::new();
    let fold = |conv: &str, bn: &str, to: &str, out: &mut BTreeMap<String, Tensor>| {
        let t = |k: &str| model[&format!("{bn}.{k}")].to_kind(Kind::Double);
        let scale = t("weight") / (t("running_var") + 1e-5).sqrt();
        let w = model[&format!("{conv}.weight")].to_kind(Kind::Double) * scale.view([-1, 1, 1, 1]);
        out.insert(format!("{to}.weight"), w.to_kind(Kind::Float));
        out.insert(format!("{to}.bias"), (t("bias") - t("running_mean") * scale).to_kind(Kind::Float));
    };
    fold("conv1", "bn1", "conv0", &mut out);
    for name in model.keys().filter_map(|n| n.strip_suffix(".conv1.weight")) {
        let Some((layer, block)) = name.split_once('.') else { continue };
        let g: u32 = layer.strip_prefix("layer").unwrap().parse().unwrap();
        let to = format!("group{}.block{block}", g - 1);
        for i in 1..=3 {
            if model.contains_key(&format!("{name}.conv{i}.weight")) {
                fold(&format!("{name}.conv{i}"), &format!("{name}.bn{i}"), &format!("{to}.conv{}", i - 1), &mut out);
            }
        }
        if model.contains_key(&format!("{name}.downsample.0.weight")) {
            fold(&format!("{name}.downsample.0"), &format!("{name}.downsample.1"), &format!("{to}.conv_dim"), &mut out);
        }
    }
    out.insert("fc.weight".into(), model["fc.weight"].shallow_clone());
    out.insert("fc.bias".into(), model["fc.bias"].shallow_clone());
    out
}

#[test]
fn an_imagenet_run_evaluates_to_its_last_epoch_also_as_the_authors_folded_export() {
    let root = tempfile::tempdir().unwrap();
    let (_, _, exp) = crate::train_imagenet::prepared(root.path());
    let run = root.path().join("run");
    assert_eq!(crate::train_imagenet::train(&run, &exp).unwrap().status, Status::Finished);
    let last = last_epoch(&run);

    let result = evaluate(&run.join(wrn_run::CHECKPOINT), &root.path().join("eval"), &exp).unwrap();
    let e = result.evaluation.as_ref().unwrap();
    assert_eq!((e.split.as_str(), e.images), ("val", 4));
    assert_same(&result, &last, 0.0);

    let folded = fold_as_the_authors_exported(&state_dict(&run));
    assert!(folded.keys().all(|k| !k.contains("bn")) && folded.contains_key("group3.block0.conv_dim.bias"));
    let file = root.path().join("authors.safetensors");
    write(&file, &folded);
    let result = evaluate(&file, &root.path().join("eval-authors"), &exp).unwrap();
    assert_eq!(result.evaluation.as_ref().unwrap().format, "authors-export");
    // Folding rounds differently: the same predictions, the loss within float error.
    assert_same(&result, &last, 1e-4);
}
