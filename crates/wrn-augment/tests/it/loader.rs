//! Behaviour of the loader and the CIFAR/SVHN presets on prepared splits written by `wrn-data`: crop
//! offsets and flips (uniform over the 81 offsets, about half flipped, each output equal to a direct
//! reference computation), determinism across worker counts and queue depths, resuming mid-epoch,
//! `drop_last` and `subset`, buffer reuse, `u8` batches, and stopping cleanly when an epoch is dropped
//! early.

use std::path::Path;
use std::sync::Arc;

use wrn_augment::ops::{DivideValues, HFlip, Op, RandomCrop, CIFAR_MEAN, CIFAR_STD};
use wrn_augment::{
    Batch, BatchImages, Draws, ImageType, Loader, LoaderConfig, Norm, Pipeline, Preset, Resampling, Shard, ValueStep,
};
use wrn_data::cache::{write_synthetic, PreparedSplit};

/// A batch's values; panics when it holds bytes.
fn f32s(b: &Batch) -> &[f32] {
    b.images.as_f32().expect("f32 images")
}

fn split_at(path: &Path, h: usize, w: usize, images: &[u8], labels: &[u16]) -> Arc<PreparedSplit> {
    Arc::new(write_synthetic(path, (h as u32, w as u32), images, labels, 10).unwrap())
}

/// `n` 32x32 images whose pixels are a function of (image, y, x, channel), labels `i % 10`.
fn varied_split(dir: &Path, n: usize) -> Arc<PreparedSplit> {
    let images: Vec<u8> =
        (0..n * 32 * 32 * 3).map(|k| ((k / 3072) * 31 + (k % 3072) * 7 + (k % 3072) / 96) as u8).collect();
    let labels: Vec<u16> = (0..n).map(|i| (i % 10) as u16).collect();
    split_at(&dir.join("varied.wrnc"), 32, 32, &images, &labels)
}

fn cfg(batch_size: usize, workers: usize) -> LoaderConfig {
    LoaderConfig { batch_size, seed: 17, workers, prefetch: 2, ..LoaderConfig::default() }
}

fn cifar_train() -> Pipeline {
    Pipeline::from_preset(Preset::CifarTrain(Norm::MeanStd), None).unwrap()
}

fn collect(loader: &Loader, epoch: u64, start: usize) -> Vec<Batch> {
    loader.epoch(epoch, start).collect()
}

/// The source index under torch `reflect` padding, written out independently of the ops module.
fn reflect(i: i64, n: i64) -> usize {
    (if i < 0 {
        -i
    } else if i >= n {
        2 * n - 2 - i
    } else {
        i
    }) as usize
}

#[test]
fn crops_cover_all_81_offsets_uniformly_flips_half_and_each_output_matches_a_reference() {
    // Every image is the same coordinate chart: channel 0 holds 7x, channel 1 holds 7y, channel 2 holds 3.
    let n = 8100;
    let chart: Vec<u8> =
        (0..32 * 32).flat_map(|p| [(7 * (p % 32)) as u8, (7 * (p / 32)) as u8, 3]).collect::<Vec<u8>>();
    let images = chart.repeat(n);
    let dir = tempfile::tempdir().unwrap();
    let split = split_at(&dir.path().join("chart.wrnc"), 32, 32, &images, &vec![0; n]);
    let loader = Loader::new(split, cifar_train(), cfg(500, 2)).unwrap();
    let mut counts = [[0usize; 9]; 9];
    let mut flips = 0;
    for batch in loader.epoch(3, 0) {
        for (s, out) in f32s(&batch).chunks_exact(3 * 1024).enumerate() {
            let raw = |ch: usize, y: usize, x: usize| {
                let v = out[ch * 1024 + y * 32 + x] * CIFAR_STD[ch] + CIFAR_MEAN[ch];
                let r = v.round();
                assert!((v - r).abs() < 1e-3, "sample {} value {v}", batch.indices[s]);
                r as i64
            };
            // The centre pixels never come from the padding, so they identify the crop and the flip.
            let (sx_a, sx_b, sy) = (raw(0, 16, 10) / 7, raw(0, 16, 20) / 7, raw(1, 16, 10) / 7);
            let flip = sx_a > sx_b;
            let dx = if flip { sx_a - (31 - 10) + 4 } else { sx_a - 10 + 4 } as usize;
            let dy = (sy - 16 + 4) as usize;
            assert!(dx < 9 && dy < 9, "offset ({dy}, {dx})");
            counts[dy][dx] += 1;
            flips += usize::from(flip);
            // The whole output equals pad-reflect 4, crop at (dy, dx), optional flip, normalise.
            for ch in 0..3 {
                for y in 0..32 {
                    for x in 0..32 {
                        let cx = if flip { 31 - x } else { x };
                        let (sy, sx) = (reflect((y + dy) as i64 - 4, 32), reflect((cx + dx) as i64 - 4, 32));
                        let expected = f32::from(chart[(sy * 32 + sx) * 3 + ch]);
                        assert_eq!(raw(ch, y, x), expected as i64, "sample {} ({ch},{y},{x})", batch.indices[s]);
                    }
                }
            }
        }
    }
    // Chi-square over 81 cells of expected count 100 (80 degrees of freedom; p = 0.001 at 124.8).
    let chi2: f64 = counts.iter().flatten().map(|&c| (c as f64 - 100.0).powi(2) / 100.0).sum();
    assert!(counts.iter().flatten().all(|&c| c > 0), "an offset never drawn: {counts:?}");
    assert!(chi2 < 124.8, "chi-square {chi2}: {counts:?}");
    // Flips: binomial(8100, 0.5), standard deviation 45; four of them either side.
    assert!((4050 - 180..=4050 + 180).contains(&flips), "{flips} flips of 8100");
}

#[test]
fn one_worker_and_several_give_bit_identical_batches() {
    let dir = tempfile::tempdir().unwrap();
    let split = varied_split(dir.path(), 300);
    let one = Loader::new(split.clone(), cifar_train(), cfg(64, 1)).unwrap();
    let many = Loader::new(split.clone(), cifar_train(), LoaderConfig { prefetch: 5, ..cfg(64, 3) }).unwrap();
    for epoch in [0, 1] {
        let (a, b) = (collect(&one, epoch, 0), collect(&many, epoch, 0));
        assert_eq!(a.len(), 5);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.indices, y.indices);
            assert_eq!(x.labels, y.labels);
            assert_eq!(x.shape, y.shape);
            assert!(f32s(x).iter().zip(f32s(y)).all(|(p, q)| p.to_bits() == q.to_bits()), "epoch {epoch}");
        }
    }
    // The batches are not trivially equal: epochs and seeds change both order and augmentation.
    let (e0, e1) = (collect(&one, 0, 0), collect(&one, 1, 0));
    assert_ne!(e0[0].indices, e1[0].indices);
    let other_seed = Loader::new(split, cifar_train(), LoaderConfig { seed: 18, ..cfg(64, 1) }).unwrap();
    assert_ne!(collect(&other_seed, 0, 0)[0].indices, e0[0].indices);
}

#[test]
fn the_same_sample_gets_the_same_augmentation_whatever_its_batch() {
    // Shuffled or not, with any batch size, sample i of epoch e comes out identical.
    let dir = tempfile::tempdir().unwrap();
    let split = varied_split(dir.path(), 40);
    let by_sample = |config: LoaderConfig| {
        let loader = Loader::new(split.clone(), cifar_train(), config).unwrap();
        let mut out = vec![Vec::new(); 40];
        for b in loader.epoch(2, 0) {
            for (k, &i) in b.indices.iter().enumerate() {
                out[i] = f32s(&b)[k * 3072..(k + 1) * 3072].to_vec();
            }
        }
        out
    };
    let a = by_sample(cfg(7, 2));
    let b = by_sample(LoaderConfig { shuffle: false, ..cfg(16, 1) });
    assert_eq!(a, b);
}

#[test]
fn resuming_at_a_step_gives_the_tail_of_the_full_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let split = varied_split(dir.path(), 100);
    let loader = Loader::new(split, cifar_train(), cfg(16, 2)).unwrap();
    let full = collect(&loader, 4, 0);
    assert_eq!(full.len(), 7);
    assert_eq!(full.iter().map(|b| b.step).collect::<Vec<_>>(), (0..7).collect::<Vec<_>>());
    for start in [1, 3, 6] {
        assert_eq!(collect(&loader, 4, start), full[start..].to_vec(), "start {start}");
    }
    assert!(collect(&loader, 4, 7).is_empty());
    let mut one = Batch::default();
    loader.fill(4, 2, &mut one).unwrap();
    assert_eq!(one, full[2]);
}

#[test]
fn every_sample_once_per_epoch_with_drop_last_and_subset() {
    let dir = tempfile::tempdir().unwrap();
    let split = varied_split(dir.path(), 10);
    let sizes = |c: LoaderConfig| {
        let loader = Loader::new(split.clone(), cifar_train(), c).unwrap();
        let batches = collect(&loader, 0, 0);
        assert_eq!(batches.len(), loader.batches_per_epoch());
        let mut seen: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
        seen.sort_unstable();
        for b in &batches {
            assert_eq!(f32s(b).len(), b.shape.iter().product::<usize>());
            assert_eq!(b.labels, b.indices.iter().map(|&i| (i % 10) as i64).collect::<Vec<_>>());
        }
        (batches.iter().map(|b| b.shape[0]).collect::<Vec<_>>(), seen)
    };
    let (s, seen) = sizes(cfg(4, 1));
    assert_eq!((s, seen), (vec![4, 4, 2], (0..10).collect()));
    let (s, seen) = sizes(LoaderConfig { drop_last: true, ..cfg(4, 1) });
    assert_eq!((s, seen.len()), (vec![4, 4], 8));
    let (s, seen) = sizes(LoaderConfig { subset: Some(6), ..cfg(4, 2) });
    assert_eq!((s, seen), (vec![4, 2], (0..6).collect()));
    let (s, seen) = sizes(LoaderConfig { subset: Some(6), drop_last: true, ..cfg(4, 2) });
    assert_eq!((s, seen.len()), (vec![4], 4));
    let (_, seen) = sizes(LoaderConfig { shuffle: false, ..cfg(3, 1) });
    assert_eq!(seen, (0..10).collect::<Vec<_>>());
    let err = Loader::new(split.clone(), cifar_train(), LoaderConfig { subset: Some(11), ..cfg(4, 1) }).err().unwrap();
    assert!(err.to_string().contains("subset of 11") && err.to_string().contains("varied.wrnc"), "{err}");
    assert!(Loader::new(split, cifar_train(), cfg(0, 1)).is_err());
}

#[test]
fn dropping_an_epoch_early_stops_its_producer() {
    let dir = tempfile::tempdir().unwrap();
    let split = varied_split(dir.path(), 400);
    let loader = Loader::new(split, cifar_train(), cfg(4, 2)).unwrap();
    let mut it = loader.epoch(0, 0);
    let first = it.next().unwrap();
    assert_eq!(first.step, 0);
    drop(it); // joins the producer; a hang here fails the test by never finishing
    let built = loader.batches_built();
    // At most: the one taken, a full queue of 2, and one being filled when the queue closed.
    assert!(built <= 4, "{built} of 100 batches were built after the epoch was dropped");
    // The loader is still usable, and a dropped epoch with nothing taken also stops.
    drop(loader.epoch(1, 0));
    assert_eq!(collect(&loader, 2, 95).len(), 5);
}

#[test]
fn recycled_buffers_are_refilled_and_waiting_is_measured() {
    let dir = tempfile::tempdir().unwrap();
    let split = varied_split(dir.path(), 64);
    let loader = Loader::new(split, cifar_train(), LoaderConfig { prefetch: 1, ..cfg(8, 1) }).unwrap();
    let reference = collect(&loader, 0, 0);
    let mut it = loader.epoch(0, 0);
    let mut seen = Vec::new();
    let mut pointers = std::collections::HashSet::new();
    while let Some(b) = it.next() {
        pointers.insert(f32s(&b).as_ptr() as usize);
        seen.push(b.clone());
        it.recycle(b);
    }
    assert_eq!(seen, reference, "recycled buffers give the same batches");
    // Eight batches went through at most a handful of buffers (queue of 1, one being filled, one held).
    assert!(pointers.len() <= 4, "{} distinct buffers", pointers.len());
    assert!(it.wait_time() > std::time::Duration::ZERO);
}

#[test]
fn svhn_and_cifar_test_are_deterministic_normalisations_in_index_order() {
    let dir = tempfile::tempdir().unwrap();
    let split = varied_split(dir.path(), 5);
    let config = LoaderConfig { shuffle: false, ..cfg(5, 1) };
    let svhn = Loader::new(split.clone(), Pipeline::from_preset(Preset::Svhn, None).unwrap(), config.clone()).unwrap();
    let test = Pipeline::from_preset(Preset::CifarTest(Norm::MeanStd), None).unwrap();
    let test = Loader::new(split.clone(), test, config).unwrap();
    let (s, t) = (&collect(&svhn, 0, 0)[0], &collect(&test, 7, 0)[0]);
    assert_eq!(s.shape, [5, 3, 32, 32]);
    for i in 0..5 {
        let img = split.image(i);
        for ch in 0..3 {
            for p in 0..1024 {
                let v = f32::from(img[p * 3 + ch]);
                assert_eq!(f32s(s)[i * 3072 + ch * 1024 + p], v / 255.0);
                let expected = (v - CIFAR_MEAN[ch]) / CIFAR_STD[ch];
                assert!((f32s(t)[i * 3072 + ch * 1024 + p] - expected).abs() < 1e-5);
            }
        }
    }
    assert_eq!(s.decode_failures, 0);
}

#[test]
fn a_pipeline_that_does_not_fit_the_images_is_refused_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let split = split_at(&dir.path().join("tiny.wrnc"), 4, 4, &[0; 2 * 48], &[0, 1]);
    let err = Loader::new(split.clone(), cifar_train(), cfg(2, 1)).err().unwrap().to_string();
    assert!(err.contains("tiny.wrnc") && err.contains("reflect-pad(4)"), "{err}");
    let imagenet = Pipeline::from_preset(Preset::ImagenetVal(Resampling::Torch), None).unwrap();
    let err = Loader::new(split, imagenet, cfg(2, 1)).err().unwrap().to_string();
    assert!(err.contains("tiny.wrnc") && err.contains("reads encoded images"), "{err}");
}

#[test]
fn concatenated_splits_read_as_one_in_order() {
    // SVHN trains on train + extra: sample i of the second split is sample len(first) + i of the whole.
    let dir = tempfile::tempdir().unwrap();
    let a = varied_split(dir.path(), 3);
    let b_images: Vec<u8> = (0..2 * 3072).map(|k| (k % 251) as u8).collect();
    let b = split_at(&dir.path().join("extra.wrnc"), 32, 32, &b_images, &[7, 9]);
    let config = LoaderConfig { shuffle: false, ..cfg(5, 2) };
    let svhn = || Pipeline::from_preset(Preset::Svhn, None).unwrap();
    let both = Loader::concat(vec![a.clone(), b.clone()], svhn(), config.clone()).unwrap();
    assert_eq!(both.len(), 5);
    let batch = &collect(&both, 0, 0)[0];
    assert_eq!(batch.labels, [0, 1, 2, 7, 9]);
    for (i, (split, j)) in [(&a, 0), (&a, 1), (&a, 2), (&b, 0), (&b, 1)].into_iter().enumerate() {
        let img = split.image(j);
        for p in 0..1024 {
            assert_eq!(f32s(batch)[i * 3072 + p], f32::from(img[p * 3]) / 255.0, "sample {i}");
        }
    }
    // Shuffled epochs draw from both splits, each sample once.
    let shuffled = Loader::concat(vec![a.clone(), b.clone()], svhn(), cfg(5, 2)).unwrap();
    let mut seen: Vec<usize> = collect(&shuffled, 3, 0).iter().flat_map(|b| b.indices.clone()).collect();
    seen.sort();
    assert_eq!(seen, [0, 1, 2, 3, 4]);
    // Splits of different image shapes cannot be read as one.
    let small = split_at(&dir.path().join("small.wrnc"), 4, 4, &[0; 48], &[0]);
    let err = Loader::concat(vec![a, small], svhn(), config).err().unwrap().to_string();
    assert!(err.contains("small.wrnc"), "{err}");
}

#[test]
fn u8_batches_are_the_f32_batches_before_their_value_step_for_every_pixel_preset() {
    let dir = tempfile::tempdir().unwrap();
    let split = varied_split(dir.path(), 150);
    let u8_cfg = |workers| LoaderConfig { image_type: ImageType::U8, ..cfg(64, workers) };
    for preset in [Preset::CifarTrain(Norm::MeanStd), Preset::CifarTest(Norm::MeanStd), Preset::Svhn] {
        let pipeline = || Pipeline::from_preset(preset, None).unwrap();
        let f32_loader = Loader::new(split.clone(), pipeline(), cfg(64, 1)).unwrap();
        let one = Loader::new(split.clone(), pipeline(), u8_cfg(1)).unwrap();
        let three = Loader::new(split.clone(), pipeline(), u8_cfg(3)).unwrap();
        assert!(f32_loader.deferred_step().is_none());
        let step = one.deferred_step().expect("a u8 loader defers its value step").clone();
        match (&step, preset) {
            (ValueStep::Normalize { mean, .. }, Preset::CifarTrain(_) | Preset::CifarTest(_)) => {
                assert_eq!(mean, &CIFAR_MEAN.to_vec())
            }
            (ValueStep::Divide(d), Preset::Svhn) => assert_eq!(*d, 255.0),
            other => panic!("{preset}: unexpected step {other:?}"),
        }
        for epoch in [0, 3] {
            let (f, a, b) = (collect(&f32_loader, epoch, 0), collect(&one, epoch, 0), collect(&three, epoch, 0));
            assert_eq!(a.len(), 3);
            for ((f, a), b) in f.iter().zip(&a).zip(&b) {
                assert_eq!((&a.indices, &a.labels, a.shape), (&f.indices, &f.labels, f.shape));
                let (bytes, values) = (a.images.as_u8().expect("u8 images"), f32s(f));
                assert_eq!(a.images, b.images, "{preset} epoch {epoch}: worker count changed the bytes");
                assert_eq!(bytes.len(), values.len());
                let plane = 32 * 32;
                let stepped = bytes.iter().enumerate().map(|(k, &v)| step.apply(v, k / plane % 3));
                assert!(
                    stepped.zip(values).all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{preset} epoch {epoch}: the step of the bytes differs from the f32 batch"
                );
            }
        }
    }
    // A batch recycled from an f32 loader into a u8 one holds bytes only, and back.
    let one = Loader::new(split.clone(), cifar_train(), u8_cfg(1)).unwrap();
    let f32_loader = Loader::new(split.clone(), cifar_train(), cfg(64, 1)).unwrap();
    let mut batch = collect(&f32_loader, 0, 0).remove(0);
    one.fill(0, 0, &mut batch).unwrap();
    assert_eq!(batch.images.as_u8().map(<[u8]>::len), Some(64 * 3072));
    f32_loader.fill(0, 0, &mut batch).unwrap();
    assert_eq!(batch, collect(&f32_loader, 0, 0).remove(0));

    // Pipelines whose values are not a per-byte step of the cropped pixels cannot deliver bytes.
    let scaled_then_flipped =
        Pipeline::new(vec![Arc::new(DivideValues { divisor: 2.0 }), Arc::new(HFlip { p: 0.5 }) as Arc<dyn Op>]);
    let err = Loader::new(split, scaled_then_flipped, u8_cfg(1)).err().unwrap().to_string();
    assert!(err.contains("varied.wrnc") && err.contains("cannot deliver u8 batches"), "{err}");
}

/// The crop offset `(dy, dx)` and flip of each sample of a batch of 4×4 crops from the 8×8 image whose
/// value at (y, x) is `8y + x`.
fn windows(b: &Batch) -> Vec<((usize, usize), bool)> {
    let values: Vec<f32> = match &b.images {
        wrn_augment::BatchImages::F32(v) => v.clone(),
        wrn_augment::BatchImages::U8(v) => v.iter().map(|&x| f32::from(x)).collect(),
    };
    values
        .chunks_exact(3 * 16)
        .map(|s| {
            let flipped = s[1] < s[0];
            let corner = s[0] as usize - if flipped { 3 } else { 0 };
            ((corner / 8, corner % 8), flipped)
        })
        .collect()
}

#[test]
fn drawn_per_batch_every_sample_shares_the_crop_and_exactly_half_are_flipped() {
    let dir = tempfile::tempdir().unwrap();
    let n = 96;
    let image: Vec<u8> = (0..64u8).flat_map(|v| [v, v, v]).collect();
    let images: Vec<u8> = image.iter().copied().cycle().take(n * 64 * 3).collect();
    let split = split_at(&dir.path().join("grid.wrnc"), 8, 8, &images, &vec![0; n]);
    let pipeline = || Pipeline {
        draws: Draws::PerBatch,
        ..Pipeline::new(vec![
            Arc::new(RandomCrop { height: 4, width: 4 }),
            Arc::new(HFlip { p: 0.5 }),
            Arc::new(DivideValues { divisor: 1.0 }),
        ])
    };
    let epoch = |config: LoaderConfig| -> Vec<Vec<((usize, usize), bool)>> {
        let loader = Loader::new(split.clone(), pipeline(), config).unwrap();
        loader.epoch(2, 0).map(|b| windows(&b)).collect()
    };
    let batches = epoch(cfg(16, 1));
    assert_eq!(batches.len(), 6);
    let mut offsets = std::collections::BTreeSet::new();
    for batch in &batches {
        assert!(batch.iter().all(|(o, _)| *o == batch[0].0), "one crop for the batch: {batch:?}");
        assert_eq!(batch.iter().filter(|(_, f)| *f).count(), 8, "exactly half flipped: {batch:?}");
        offsets.insert(batch[0].0);
    }
    assert!(offsets.len() > 1, "each batch draws its own crop: {offsets:?}");
    // The same batches from any number of workers, as bytes, and from a resumed epoch.
    assert_eq!(epoch(cfg(16, 3)), batches);
    assert_eq!(epoch(LoaderConfig { image_type: ImageType::U8, ..cfg(16, 2) }), batches);
    let loader = Loader::new(split.clone(), pipeline(), cfg(16, 2)).unwrap();
    assert_eq!(loader.epoch(2, 4).map(|b| windows(&b)).collect::<Vec<_>>(), batches[4..]);
    // Per sample, the batch's images disagree.
    let per_sample =
        Loader::new(split.clone(), Pipeline { draws: Draws::PerSample, ..pipeline() }, cfg(16, 1)).unwrap();
    let batch = windows(&per_sample.epoch(2, 0).next().unwrap());
    assert!(batch.iter().any(|(o, _)| *o != batch[0].0), "{batch:?}");
    // The v1 presets draw per batch; the others per sample.
    let v1 = Pipeline::from_preset(Preset::CifarTrainV1(Norm::MeanStd), None).unwrap();
    assert_eq!(v1.draws, Draws::PerBatch);
    assert!(v1.to_string().ends_with("(drawn per batch)"), "{v1}");
    assert_eq!(cifar_train().draws, Draws::PerSample);
}

#[test]
fn the_shards_of_a_batch_together_are_the_whole_batch() {
    // 3 ranks over batches of 10 (parts of 3, 3, 4) and a last batch of 7 (2, 2, 3): per-sample and
    // per-batch draws (cifar-train-v1 shares the crop and flips exactly half of the whole batch), f32
    // and u8 batches.
    let dir = tempfile::tempdir().unwrap();
    let split = varied_split(dir.path(), 27);
    for preset in [Preset::CifarTrain(Norm::MeanStd), Preset::CifarTrainV1(Norm::MeanStd)] {
        for image_type in [ImageType::F32, ImageType::U8] {
            let config = |shard| LoaderConfig { image_type, shard, ..cfg(10, 2) };
            let loader = |shard| {
                Loader::new(split.clone(), Pipeline::from_preset(preset, None).unwrap(), config(shard)).unwrap()
            };
            let whole = collect(&loader(Shard::default()), 4, 0);
            let parts: Vec<Vec<Batch>> =
                (0..3).map(|index| collect(&loader(Shard { index, count: 3 }), 4, 0)).collect();
            assert_eq!(whole.len(), 3);
            for (step, batch) in whole.iter().enumerate() {
                let pieces: Vec<&Batch> = parts.iter().map(|p| &p[step]).collect();
                let lens: Vec<usize> = pieces.iter().map(|b| b.len()).collect();
                assert_eq!(lens, if step < 2 { vec![3, 3, 4] } else { vec![2, 2, 3] }, "{preset:?} step {step}");
                let joined: Vec<usize> = pieces.iter().flat_map(|b| b.indices.clone()).collect();
                assert_eq!(joined, batch.indices);
                let labels: Vec<i64> = pieces.iter().flat_map(|b| b.labels.clone()).collect();
                assert_eq!(labels, batch.labels);
                let images = |b: &Batch| match &b.images {
                    BatchImages::F32(v) => v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>(),
                    BatchImages::U8(v) => v.iter().map(|&x| u32::from(x)).collect(),
                };
                let joined: Vec<u32> = pieces.iter().flat_map(|b| images(b)).collect();
                assert_eq!(joined, images(batch), "{preset:?} {image_type:?} step {step}");
                assert_eq!(pieces[1].shape[0], lens[1]);
            }
        }
    }
    let err = Loader::new(split, cifar_train(), LoaderConfig { shard: Shard { index: 3, count: 3 }, ..cfg(10, 1) });
    assert!(err.err().unwrap().to_string().contains("part 3 of 3"));
}
