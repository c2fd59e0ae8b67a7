//! ZCA on prepared splits: the fit is written once beside the split and reused, a damaged or stale file is
//! detected and refitted, and loaders built on ZCA presets yield the whitened pixels (checked against a
//! direct f64 computation) with the same augmentation as the pixel pipelines.

use std::path::Path;
use std::sync::Arc;

use wrn_augment::ops::{HFlip, Op, RandomCrop, ReflectPad};
use wrn_augment::zca::{default_path, global_contrast_normalize, GCN_SCALE};
use wrn_augment::{Batch, Draws, Loader, LoaderConfig, Norm, Pipeline, Preset, Source, Zca, ZcaParams};
use wrn_data::cache::{write_synthetic, PreparedSplit};

/// A batch's values; panics when it holds bytes.
fn f32s(b: &Batch) -> &[f32] {
    b.images.as_f32().expect("f32 images")
}

/// `n` images of `side x side x 3` with correlated, image-dependent pixels.
fn split(dir: &Path, name: &str, n: usize, side: usize, salt: usize) -> Arc<PreparedSplit> {
    let dim = side * side * 3;
    let images: Vec<u8> = (0..n * dim)
        .map(|k| {
            let (i, p) = (k / dim, k % dim);
            let base = (i * 37 + salt) % 97;
            (base + (p * (i % 7 + 1)) % 53 + ((p / 3) % side) * (i % 3)) as u8
        })
        .collect();
    let labels: Vec<u16> = (0..n).map(|i| (i % 2) as u16).collect();
    let path = dir.join(format!("{name}.wrnc"));
    Arc::new(write_synthetic(&path, (side as u32, side as u32), &images, &labels, 2).unwrap())
}

#[test]
fn the_fit_is_cached_beside_the_split_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let train = split(dir.path(), "train", 300, 4, 0);
    let path = default_path(&train);
    assert_eq!(path, dir.path().join("train.zca"));
    let fitted = Zca::fit_or_load(&train, &path, ZcaParams::default()).unwrap();
    assert_eq!((fitted.dim(), fitted.samples), (48, 300));
    assert_eq!(fitted.source_checksum, train.checksum());
    assert_eq!(Zca::load(&path).unwrap(), fitted);

    // A later call reads the file instead of refitting: a file with a planted count proves which was used.
    let mut planted = fitted.clone();
    planted.samples = 1;
    planted.save(&path).unwrap();
    assert_eq!(Zca::fit_or_load(&train, &path, ZcaParams::default()).unwrap(), planted);

    // Damage is named and refitted.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[200] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let err = Zca::load(&path).unwrap_err().to_string();
    assert!(err.contains("train.zca") && err.contains("SHA-256"), "{err}");
    assert_eq!(Zca::fit_or_load(&train, &path, ZcaParams::default()).unwrap(), fitted);
    std::fs::write(&path, &bytes[..100]).unwrap();
    assert!(Zca::load(&path).unwrap_err().to_string().contains("too short"));

    // A fit of another split, or with other parameters, is not reused.
    let other = split(dir.path(), "other", 300, 4, 5);
    let refit = Zca::fit_or_load(&other, &path, ZcaParams::default()).unwrap();
    assert_eq!(refit.source_checksum, other.checksum());
    assert_ne!(refit, fitted);
    let params = ZcaParams { gcn_scale: GCN_SCALE, filter_bias: 0.5 };
    let refit = Zca::fit_or_load(&other, &path, params).unwrap();
    assert_eq!(refit.params, params);
    assert_eq!(Zca::load(&path).unwrap(), refit);
}

#[test]
fn zca_test_preset_yields_whitened_pixels_in_chw_order() {
    let dir = tempfile::tempdir().unwrap();
    let train = split(dir.path(), "train", 400, 4, 0);
    let test = split(dir.path(), "test", 20, 4, 11);
    let zca = Arc::new(Zca::fit_or_load(&train, &default_path(&train), ZcaParams::default()).unwrap());
    let pipeline = Pipeline::from_preset(Preset::CifarTest(Norm::Zca), Some(zca.clone())).unwrap();
    let config = LoaderConfig { batch_size: 8, shuffle: false, workers: 2, ..LoaderConfig::default() };
    let loader = Loader::new(test.clone(), pipeline, config).unwrap();
    let batches: Vec<_> = loader.epoch(0, 0).collect();
    assert_eq!(batches.iter().map(|b| b.shape).collect::<Vec<_>>(), [[8, 3, 4, 4], [8, 3, 4, 4], [4, 3, 4, 4]]);
    let p = zca.matrix();
    for b in &batches {
        for (k, &i) in b.indices.iter().enumerate() {
            let mut x: Vec<f64> = test.image(i).iter().map(|&v| f64::from(v)).collect();
            global_contrast_normalize(&mut x, GCN_SCALE);
            for (v, m) in x.iter_mut().zip(zca.mean()) {
                *v -= f64::from(*m);
            }
            for row in 0..48 {
                let want: f64 = (0..48).map(|col| f64::from(p[(row, col)]) * x[col]).sum();
                // HWC position `row` is channel row % 3 of pixel row / 3.
                let got = f32s(b)[k * 48 + (row % 3) * 16 + row / 3];
                assert!((f64::from(got) - want).abs() < 1e-3, "image {i} value {row}: {got} vs {want}");
            }
        }
    }
}

#[test]
fn augmentation_on_whitened_pixels_is_deterministic_across_workers() {
    let dir = tempfile::tempdir().unwrap();
    let train = split(dir.path(), "train", 200, 6, 3);
    let zca = Arc::new(Zca::fit_split(&train, ZcaParams::default()).unwrap());
    let ops: Vec<Arc<dyn Op>> =
        vec![Arc::new(ReflectPad { pad: 2 }), Arc::new(RandomCrop { height: 6, width: 6 }), Arc::new(HFlip { p: 0.5 })];
    let pipeline =
        Pipeline { source: Source::Whitened(zca.clone()), ops: ops.clone(), draws: Draws::PerSample, preset: None };
    let run = |workers| {
        let config = LoaderConfig { batch_size: 32, seed: 5, workers, ..LoaderConfig::default() };
        Loader::new(train.clone(), pipeline.clone(), config).unwrap().epoch(1, 0).collect::<Vec<_>>()
    };
    let (a, b) = (run(1), run(2));
    assert_eq!(a, b);
    // Without the ops, the same loader yields the plain whitened split; the ops changed something.
    let plain = Pipeline { source: Source::Whitened(zca), ops: vec![], draws: Draws::PerSample, preset: None };
    let config = LoaderConfig { batch_size: 32, seed: 5, workers: 1, ..LoaderConfig::default() };
    let plain: Vec<_> = Loader::new(train.clone(), plain, config).unwrap().epoch(1, 0).collect();
    assert_eq!(plain[0].indices, a[0].indices);
    assert_ne!(f32s(&plain[0]), f32s(&a[0]));
    // A fit of another dimension is refused with the split named.
    let small = split(dir.path(), "small", 10, 4, 0);
    let err = Loader::new(
        small,
        Pipeline {
            source: Source::Whitened(Arc::new(Zca::fit_split(&train, ZcaParams::default()).unwrap())),
            ops: vec![],
            draws: Draws::PerSample,
            preset: None,
        },
        LoaderConfig::default(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("small.wrnc") && err.contains("108"), "{err}");
}
