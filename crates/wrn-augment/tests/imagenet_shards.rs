//! The ImageNet presets over the prepared shards: synthetic ImageNet in the real formats is prepared by
//! `wrn-data`, then the memory-mapped split is the loader's `EncodedSource`. Every stored image (the
//! converted CMYK, grayscale and PNG files included) decodes, and labels follow the split's.

use std::sync::Arc;

use wrn_augment::{EncodedSource, Loader, LoaderConfig, Pipeline, Preset};
use wrn_data::store::Store;

#[test]
fn prepared_imagenet_shards_feed_the_loader() {
    let src = tempfile::tempdir().unwrap();
    let (m, _) = wrn_data::synth::synth_imagenet(src.path(), 40, 11).unwrap();
    let data = tempfile::tempdir().unwrap();
    let store = Store::new(data.path());
    let opts = wrn_data::fetch::FetchOptions { progress: false, ..Default::default() };
    wrn_data::ops::fetch_and_prepare(&store, &m, &opts, false).unwrap();
    for (split, preset) in [("train", Preset::ImagenetTrain), ("val", Preset::ImagenetVal)] {
        let shards = Arc::new(store.open_encoded(&m, split).unwrap());
        let converted: Vec<String> = shards.meta.converted.iter().map(|c| c.name.clone()).collect();
        assert!(!converted.is_empty(), "{split} holds converted files");
        let source: Arc<dyn EncodedSource> = shards.clone();
        assert_eq!(source.name(0), shards.name(0));
        let config =
            LoaderConfig { batch_size: 8, seed: 1, shuffle: true, workers: 2, prefetch: 2, ..Default::default() };
        let loader = Loader::from_encoded(source, split, Pipeline::from_preset(preset, None).unwrap(), config).unwrap();
        let mut seen = vec![false; shards.len()];
        for batch in loader.epoch(0, 0) {
            assert_eq!(batch.decode_failures, 0, "{split}: every stored image decodes");
            assert_eq!(&batch.shape[1..], &[3, 224, 224]);
            for (&i, &label) in batch.indices.iter().zip(&batch.labels) {
                assert_eq!(label, i64::from(shards.label(i)));
                seen[i] = true;
            }
            // Not all zeros: the pictures arrive.
            assert!(batch.images.iter().any(|v| v.abs() > 0.5));
        }
        assert!(seen.iter().all(|&s| s), "{split}: one epoch visits every image");
    }
}
