//! `wrn_train::trainer` on synthetic ImageNet in the real formats (train tar of per-class tars, val tar,
//! devkit), prepared into JPEG shards: a ResNet-18 with the prepared data's 10 classes takes training
//! steps through the ImageNet recipe and is evaluated on the val split; an image damaged in its shard after
//! preparation ends the run with an error.

use std::path::Path;

use wrn_data::store::Store;
use wrn_train::config::Experiment;
use wrn_train::run::{RunDir, Status};
use wrn_train::trainer::{self, TrainOptions};

/// Synthetic ImageNet (40 images) fetched and prepared under `root/data`, and a one-epoch ResNet-18
/// experiment on 8 training and 4 val images of it.
pub(crate) fn prepared(root: &Path) -> (Store, wrn_data::manifest::Manifest, Experiment) {
    let (m, manifest) = wrn_data::synth::synth_imagenet(&root.join("synth"), 40, 2).unwrap();
    let dir = root.join("data");
    let store = Store::new(&dir);
    wrn_data::ops::fetch_and_prepare(&store, &m, &wrn_data::fetch::FetchOptions::default(), false).unwrap();
    let exp = Experiment::resolve(
        None,
        &[
            "dataset=imagenet".into(),
            "arch=resnet-18".into(),
            "batch_size=4".into(),
            "epochs=1".into(),
            "scale.train_subset=8".into(),
            "scale.test_subset=4".into(),
            "data.workers=2".into(),
            "checkpoint_minutes=0".into(),
            format!("data.dir='{}'", dir.display()),
            format!("data.manifest='{}'", manifest.display()),
        ],
    )
    .unwrap();
    (store, m, exp)
}

pub(crate) fn train(run: &Path, exp: &Experiment) -> Result<wrn_train::run::RunResult, wrn_train::trainer::TrainError> {
    let mut options = TrainOptions::new("test", "test");
    options.log_steps = false;
    let _guard = crate::common::one_training_at_a_time();
    trainer::train(&RunDir::create(run).unwrap(), exp, &options, &wrn_progress::Silent)
}

#[test]
fn resnet18_trains_on_prepared_synthetic_imagenet() {
    let root = tempfile::tempdir().unwrap();
    let (_, _, exp) = prepared(root.path());
    let run = root.path().join("run");
    let result = train(&run, &exp).unwrap();
    assert_eq!(result.status, Status::Finished);
    let log = std::fs::read_to_string(run.join("train.log")).unwrap();
    assert!(log.contains("8 training images per epoch"), "{log}");
    let metrics = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert_eq!(metrics.lines().count(), 2, "a header and one epoch: {metrics}");
}

#[test]
fn an_image_damaged_after_preparation_ends_the_run_with_an_error_naming_it() {
    let root = tempfile::tempdir().unwrap();
    let (store, m, exp) = prepared(root.path());
    // Every val shard zeroed in place: sizes and the index still match, so only decoding can tell.
    let shards: Vec<String> =
        store.open_encoded(&m, "val").unwrap().meta.shards.iter().map(|s| s.file.clone()).collect();
    for shard in &shards {
        let path = store.prepared_dir(&m).join(shard);
        let len = std::fs::metadata(&path).unwrap().len() as usize;
        std::fs::write(&path, vec![0u8; len]).unwrap();
    }
    let run = root.path().join("run");
    // The training steps run; the evaluation meets the damaged images and the run ends with the error,
    // not a panic and not a result computed from zeros.
    let err = train(&run, &exp).expect_err("a damaged val image ends the run").to_string();
    assert!(shards.iter().any(|s| err.contains(s.as_str())), "the shard is named: {err}");
    for part in ["of the val split of imagenet", "run `wrn data verify imagenet`"] {
        assert!(err.contains(part), "`{part}` missing from: {err}");
    }
    assert!(!run.join(wrn_run::RESULT).exists(), "no result is written for the run");
}
