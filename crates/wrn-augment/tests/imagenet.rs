//! The ImageNet presets over real JPEG bytes (encoded here with jpeg-encoder): values of the val recipe on
//! solid colours, determinism of the train recipe across worker counts, and corrupt images counted and
//! replaced by zeros without disturbing the other samples; a folder in `ImageFolder` layout as a source,
//! and the ImageNet pipelines' throughput over it.

use std::sync::Arc;

use jpeg_encoder::{ColorType, Encoder};
use wrn_augment::imagenet::{IMAGENET_MEAN, IMAGENET_STD};
use wrn_augment::throughput::{measure_encoded, Options};
use wrn_augment::{EncodedImages, EncodedSource, Loader, LoaderConfig, Pipeline, Preset};

fn jpeg(w: usize, h: usize, pixel: impl Fn(usize, usize) -> [u8; 3]) -> Vec<u8> {
    let pixel = &pixel;
    let rgb: Vec<u8> = (0..h).flat_map(|y| (0..w).flat_map(move |x| pixel(x, y))).collect::<Vec<u8>>();
    let mut out = Vec::new();
    Encoder::new(&mut out, 92).encode(&rgb, w as u16, h as u16, ColorType::Rgb).unwrap();
    out
}

fn textured(i: usize) -> Vec<u8> {
    let (w, h) = (300 + 37 * (i % 5), 240 + 23 * (i % 3));
    jpeg(w, h, move |x, y| [(x * 255 / w) as u8, (y * 255 / h) as u8, ((x / 16 + y / 16 + i) % 2 * 200) as u8])
}

fn config(batch_size: usize, workers: usize) -> LoaderConfig {
    LoaderConfig { batch_size, seed: 3, shuffle: false, workers, prefetch: 2, ..LoaderConfig::default() }
}

fn loader(images: EncodedImages, preset: Preset, config: LoaderConfig) -> Loader {
    let source: Arc<dyn EncodedSource> = Arc::new(images);
    Loader::from_encoded(source, "toy-shard", Pipeline::from_preset(preset, None).unwrap(), config).unwrap()
}

#[test]
fn val_recipe_normalises_solid_colours() {
    let colours = [[200u8, 30, 90], [10, 250, 128]];
    let mut images = EncodedImages::new();
    for (k, c) in colours.iter().enumerate() {
        images.push(format!("solid{k}.jpg"), jpeg(320 + 80 * k, 260, |_, _| *c), k as u16);
    }
    let l = loader(images, Preset::ImagenetVal, config(2, 1));
    let b = l.epoch(0, 0).next().unwrap();
    assert_eq!((b.shape, b.labels.clone(), b.decode_failures), ([2, 3, 224, 224], vec![0, 1], 0));
    for (k, c) in colours.iter().enumerate() {
        for ch in 0..3 {
            let want = (f32::from(c[ch]) / 255.0 - IMAGENET_MEAN[ch]) / IMAGENET_STD[ch];
            let plane = &b.images[(k * 3 + ch) * 224 * 224..(k * 3 + ch + 1) * 224 * 224];
            let worst = plane.iter().map(|v| (v - want).abs()).fold(0.0, f32::max);
            // JPEG's chroma quantisation moves a solid colour by a few levels at most.
            assert!(worst < 0.1, "image {k} channel {ch}: off by {worst}");
        }
    }
}

#[test]
fn train_recipe_is_deterministic_across_workers_and_random_across_epochs() {
    let mut images = EncodedImages::new();
    for i in 0..12 {
        images.push(format!("img{i}.jpg"), textured(i), (i % 4) as u16);
    }
    let one = loader(images.clone(), Preset::ImagenetTrain, config(4, 1));
    let two = loader(images, Preset::ImagenetTrain, LoaderConfig { shuffle: true, ..config(4, 2) });
    let a: Vec<_> = one.epoch(1, 0).collect();
    let b: Vec<_> = two.epoch(1, 0).collect();
    // Same sample, same epoch: bit-identical whatever the worker count and the batch it falls in.
    for x in &a {
        for (k, &i) in x.indices.iter().enumerate() {
            let (bb, kk) = b.iter().find_map(|y| y.indices.iter().position(|&j| j == i).map(|p| (y, p))).unwrap();
            let n = 3 * 224 * 224;
            assert_eq!(x.images[k * n..(k + 1) * n], bb.images[kk * n..(kk + 1) * n], "sample {i}");
            assert!(x.images[k * n..(k + 1) * n].iter().all(|v| v.is_finite()));
        }
    }
    let again: Vec<_> = one.epoch(2, 0).collect();
    assert_ne!(again[0].images, a[0].images, "another epoch draws other crops");
}

#[test]
fn corrupt_images_are_counted_and_replaced_by_zeros() {
    let good = |i| textured(i);
    let mut clean = EncodedImages::new();
    let mut damaged = EncodedImages::new();
    for i in 0..4 {
        clean.push(format!("img{i}.jpg"), good(i), 0);
    }
    damaged.push("img0.jpg", good(0), 0);
    damaged.push("garbage.jpg", b"this is not a jpeg".to_vec(), 0);
    damaged.push("header-only.jpg", good(2)[..20].to_vec(), 0);
    damaged.push("img3.jpg", good(3), 0);
    for preset in [Preset::ImagenetTrain, Preset::ImagenetVal] {
        let a = loader(clean.clone(), preset, config(4, 2)).epoch(0, 0).next().unwrap();
        let b = loader(damaged.clone(), preset, config(4, 2)).epoch(0, 0).next().unwrap();
        assert_eq!((a.decode_failures, b.decode_failures), (0, 2));
        let n = 3 * 224 * 224;
        assert!(b.images[n..3 * n].iter().all(|&v| v == 0.0));
        assert_eq!(a.images[..n], b.images[..n]);
        assert_eq!(a.images[3 * n..], b.images[3 * n..]);
    }
}

#[test]
fn pipelines_and_sources_must_match() {
    let mut images = EncodedImages::new();
    images.push("a.jpg", textured(0), 0);
    let source: Arc<dyn EncodedSource> = Arc::new(images);
    let cifar = Pipeline::from_preset(Preset::Svhn, None).unwrap();
    let err = Loader::from_encoded(source.clone(), "shard-7", cifar, config(1, 1)).err().unwrap().to_string();
    assert!(err.contains("shard-7") && err.contains("does not decode encoded images"), "{err}");
    let err = Loader::from_encoded(
        source,
        "shard-7",
        Pipeline::from_preset(Preset::ImagenetVal, None).unwrap(),
        LoaderConfig { subset: Some(2), ..config(1, 1) },
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("subset of 2") && err.contains("shard-7"), "{err}");
}

#[test]
fn a_folder_in_image_folder_layout_is_a_source_and_its_throughput_is_measured() {
    let dir = tempfile::tempdir().unwrap();
    // Classes numbered by sorted folder name, as torchvision's ImageFolder does; other files ignored.
    for (class, files) in [("zebra", 2), ("aardvark", 3)] {
        std::fs::create_dir_all(dir.path().join(class)).unwrap();
        for i in 0..files {
            let ext = if i == 0 { "JPEG" } else { "jpg" };
            std::fs::write(dir.path().join(class).join(format!("{i}.{ext}")), textured(i)).unwrap();
        }
        std::fs::write(dir.path().join(class).join("notes.txt"), "not an image").unwrap();
    }
    std::fs::write(dir.path().join("README"), "not a class").unwrap();
    let (images, classes) = EncodedImages::from_folder(dir.path()).unwrap();
    assert_eq!(classes, ["aardvark", "zebra"]);
    assert_eq!(images.len(), 5);
    let labels: Vec<u16> = (0..images.len()).map(|i| images.label(i)).collect();
    assert_eq!(labels, [0, 0, 0, 1, 1]);
    assert_eq!(images.name(0), "aardvark/0.JPEG");
    assert_eq!(images.encoded(3), &textured(0)[..]);

    let options = Options {
        preset: Preset::ImagenetTrain,
        plain: Some(Preset::ImagenetVal),
        batch_size: 2,
        rounds: 1,
        min_seconds: 0.0,
        ..Options::default()
    };
    let t = measure_encoded(Arc::new(images), &options).unwrap();
    assert_eq!((t.preset.as_str(), t.plain_preset.as_deref(), t.images), ("imagenet-train", Some("imagenet-val"), 5));
    assert!(t.images_per_second > 0.0 && t.plain_images_per_second.unwrap() > 0.0);
    assert_eq!((t.copy_images_per_second, t.ratio_to_copy), (None, None));

    let empty = tempfile::tempdir().unwrap();
    let err = EncodedImages::from_folder(empty.path()).unwrap_err().to_string();
    assert!(err.contains(&empty.path().display().to_string()) && err.contains("no JPEG files"), "{err}");
}
