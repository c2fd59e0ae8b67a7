//! `wrn_train::trainer` on synthetic ImageNet in the real formats (train tar of per-class tars, val tar,
//! devkit), prepared into JPEG shards: a ResNet-18 with the prepared data's 10 classes takes training
//! steps through the ImageNet recipe and is evaluated on the val split.

use wrn_data::store::Store;
use wrn_train::config::Experiment;
use wrn_train::run::{RunDir, Status};
use wrn_train::trainer::{self, TrainOptions};

#[test]
fn resnet18_trains_on_prepared_synthetic_imagenet() {
    let root = tempfile::tempdir().unwrap();
    let (m, manifest) = wrn_data::synth::synth_imagenet(&root.path().join("synth"), 40, 2).unwrap();
    let dir = root.path().join("data");
    let store = Store::new(&dir);
    let opts = wrn_data::fetch::FetchOptions { progress: false, ..Default::default() };
    wrn_data::ops::fetch_and_prepare(&store, &m, &opts, false).unwrap();
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
    let run = root.path().join("run");
    let mut options = TrainOptions::new("test", "test");
    options.progress = false;
    let result = trainer::train(&RunDir::create(&run).unwrap(), &exp, &options).unwrap();
    assert_eq!(result.status, Status::Finished);
    let log = std::fs::read_to_string(run.join("train.log")).unwrap();
    assert!(log.contains("8 training images per epoch"), "{log}");
    let metrics = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert_eq!(metrics.lines().count(), 2, "a header and one epoch: {metrics}");
}
