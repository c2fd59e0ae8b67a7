//! The ImageNet presets over the prepared shards: synthetic ImageNet in the real formats is prepared by
//! `wrn-data`, then the memory-mapped split is the loader's `EncodedSource`. Every stored image (the
//! converted CMYK, grayscale and PNG files included) decodes, and labels follow the split's; an image
//! damaged in its shard after preparation stops the epoch with an error naming the split, shard and image.

use std::path::Path;
use std::sync::Arc;

use wrn_augment::{Batch, EncodedSource, Loader, LoaderConfig, Pipeline, Preset, Resampling};
use wrn_data::manifest::Manifest;
use wrn_data::store::Store;

/// A batch's values; panics when it holds bytes.
fn f32s(b: &Batch) -> &[f32] {
    b.images.as_f32().expect("f32 images")
}

/// Synthetic ImageNet of `n` training images, prepared into `data`.
fn prepared(src: &Path, data: &Path, n: u64) -> (Store, Manifest) {
    let (m, _) = wrn_data::synth::synth_imagenet(src, n, 11).unwrap();
    let store = Store::new(data);
    wrn_data::ops::fetch_and_prepare(&store, &m, &wrn_data::fetch::FetchOptions::default(), false).unwrap();
    (store, m)
}

fn config(batch_size: usize, shuffle: bool) -> LoaderConfig {
    LoaderConfig { batch_size, seed: 1, shuffle, workers: 2, prefetch: 2, ..Default::default() }
}

#[test]
fn prepared_imagenet_shards_feed_the_loader() {
    let (src, data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (store, m) = prepared(src.path(), data.path(), 40);
    for (split, preset) in
        [("train", Preset::ImagenetTrain(Resampling::Torch)), ("val", Preset::ImagenetVal(Resampling::Torch))]
    {
        let shards = Arc::new(store.open_encoded(&m, split).unwrap());
        let converted: Vec<String> = shards.meta.converted.iter().map(|c| c.name.clone()).collect();
        assert!(!converted.is_empty(), "{split} holds converted files");
        let source: Arc<dyn EncodedSource> = shards.clone();
        assert_eq!(source.name(0), shards.name(0));
        let pipeline = Pipeline::from_preset(preset, None).unwrap();
        let loader = Loader::from_encoded(source, split, pipeline, config(8, true)).unwrap();
        let mut seen = vec![false; shards.len()];
        for batch in loader.epoch(0, 0) {
            assert_eq!(batch.decode_failures, 0, "{split}: every stored image decodes");
            assert_eq!(&batch.shape[1..], &[3, 224, 224]);
            for (&i, &label) in batch.indices.iter().zip(&batch.labels) {
                assert_eq!(label, i64::from(shards.label(i)));
                seen[i] = true;
            }
            // Not all zeros: the pictures arrive.
            assert!(f32s(&batch).iter().any(|v| v.abs() > 0.5));
        }
        assert!(seen.iter().all(|&s| s), "{split}: one epoch visits every image");
    }
}

#[test]
fn an_image_damaged_in_its_shard_stops_the_epoch_naming_split_shard_and_image() {
    let (src, data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (store, m) = prepared(src.path(), data.path(), 40);
    let split = store.open_encoded(&m, "val").unwrap();
    let (record, shard) = (split.record(3), split.meta.shards[split.record(3).shard as usize].file.clone());
    drop(split);
    // Image 3's bytes zeroed in place: the shard keeps its size, so only decoding (or a re-hash) can tell.
    let shard_path = store.prepared_dir(&m).join(&shard);
    let mut bytes = std::fs::read(&shard_path).unwrap();
    bytes[record.offset as usize..][..record.length as usize].fill(0);
    std::fs::write(&shard_path, &bytes).unwrap();

    let split: Arc<dyn EncodedSource> = Arc::new(store.open_encoded(&m, "val").expect("sizes and index still match"));
    let loader = |batch| {
        Loader::from_encoded(
            split.clone(),
            "val",
            Pipeline::from_preset(Preset::ImagenetVal(Resampling::Torch), None).unwrap(),
            config(batch, false),
        )
        .unwrap()
    };
    let mut epoch = loader(2).epoch(0, 0);
    assert!(epoch.try_next().unwrap().is_ok(), "images 0 and 1 decode");
    let err = epoch.try_next().unwrap().expect_err("image 3 is in the second batch").to_string();
    for part in [
        shard.as_str(),
        &format!("image {} (#3 of the val split of imagenet", record.name),
        "the shard is damaged",
        "run `wrn data verify imagenet`",
        "`wrn data prepare imagenet`",
    ] {
        assert!(err.contains(part), "`{part}` missing from: {err}");
    }
    assert!(epoch.try_next().is_none(), "the epoch ends at the error");
    let mut batch = Batch::default();
    assert_eq!(loader(4).fill(0, 0, &mut batch).unwrap_err().to_string(), err, "the same error, whatever the batch");
    // The iterator the runner uses stops with the error's message rather than a batch of zeros.
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| loader(4).epoch(0, 0).count()))
        .expect_err("the epoch does not finish");
    assert_eq!(panic.downcast_ref::<String>(), Some(&err));
}
