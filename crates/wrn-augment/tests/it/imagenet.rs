//! The ImageNet presets over real JPEG bytes (encoded here with jpeg-encoder): values of the val recipe on
//! solid colours, determinism of the train recipe across worker counts, and corrupt images counted and
//! replaced by zeros without disturbing the other samples; the loader's one-pass colour kernel against the
//! decode stage and the ops one by one; a folder in `ImageFolder` layout as a source,
//! the ImageNet pipelines' throughput over it, large images decoded at a reduced DCT scale (the fast
//! resampling), and Torch's bicubic against the fast path.

use std::sync::Arc;

use jpeg_encoder::{ColorType, Encoder};
use wrn_augment::imagenet::{imagenet_ops, CropBox, Decode, DecodeScratch, IMAGENET_MEAN, IMAGENET_STD};
use wrn_augment::ops::Image;
use wrn_augment::rng::sample_rng;
use wrn_augment::throughput::{measure_encoded, Options};
use wrn_augment::{Batch, EncodedImages, EncodedSource, Loader, LoaderConfig, Pipeline, Preset, Resampling};

/// A batch's values; panics when it holds bytes.
fn f32s(b: &Batch) -> &[f32] {
    b.images.as_f32().expect("f32 images")
}

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
    let l = loader(images, Preset::ImagenetVal(Resampling::Torch), config(2, 1));
    let b = l.epoch(0, 0).next().unwrap();
    assert_eq!((b.shape, b.labels.clone(), b.decode_failures), ([2, 3, 224, 224], vec![0, 1], 0));
    for (k, c) in colours.iter().enumerate() {
        for ch in 0..3 {
            let want = (f32::from(c[ch]) / 255.0 - IMAGENET_MEAN[ch]) / IMAGENET_STD[ch];
            let plane = &f32s(&b)[(k * 3 + ch) * 224 * 224..(k * 3 + ch + 1) * 224 * 224];
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
    let one = loader(images.clone(), Preset::ImagenetTrain(Resampling::Torch), config(4, 1));
    let two = loader(images, Preset::ImagenetTrain(Resampling::Torch), LoaderConfig { shuffle: true, ..config(4, 2) });
    let a: Vec<_> = one.epoch(1, 0).collect();
    let b: Vec<_> = two.epoch(1, 0).collect();
    // Same sample, same epoch: bit-identical whatever the worker count and the batch it falls in.
    for x in &a {
        for (k, &i) in x.indices.iter().enumerate() {
            let (bb, kk) = b.iter().find_map(|y| y.indices.iter().position(|&j| j == i).map(|p| (y, p))).unwrap();
            let n = 3 * 224 * 224;
            assert_eq!(f32s(x)[k * n..(k + 1) * n], f32s(bb)[kk * n..(kk + 1) * n], "sample {i}");
            assert!(f32s(x)[k * n..(k + 1) * n].iter().all(|v| v.is_finite()));
        }
    }
    let again: Vec<_> = one.epoch(2, 0).collect();
    assert_ne!(f32s(&again[0]), f32s(&a[0]), "another epoch draws other crops");
}

#[test]
fn loader_batches_match_the_decode_stage_then_the_ops_one_by_one() {
    let mut images = EncodedImages::new();
    for i in 0..6 {
        images.push(format!("img{i}.jpg"), textured(i), 0);
    }
    let n = 3 * 224 * 224;
    let both = |r| {
        [
            (Preset::ImagenetTrain(r), Decode::train().with_resampling(r), true),
            (Preset::ImagenetVal(r), Decode::val().with_resampling(r), false),
        ]
    };
    for (preset, decode, train) in both(Resampling::Torch).into_iter().chain(both(Resampling::Fast)) {
        let batch = loader(images.clone(), preset, config(6, 2)).epoch(1, 0).next().unwrap();
        let (ops, mut scratch, mut img) = (imagenet_ops(train), DecodeScratch::default(), Image::new());
        for (k, &i) in batch.indices.iter().enumerate() {
            let mut rng = sample_rng(3, 1, i as u64);
            decode.run(images.encoded(i), &mut img, &mut scratch, &mut rng).unwrap();
            ops.iter().for_each(|op| op.apply(&mut img, &mut rng));
            let got = &f32s(&batch)[k * n..(k + 1) * n];
            let worst = got.iter().zip(&img.data).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-4, "{preset:?} sample {i}: off by {worst}");
        }
    }
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
    for preset in [Preset::ImagenetTrain(Resampling::Torch), Preset::ImagenetVal(Resampling::Fast)] {
        let a = loader(clean.clone(), preset, config(4, 2)).epoch(0, 0).next().unwrap();
        let b = loader(damaged.clone(), preset, config(4, 2)).epoch(0, 0).next().unwrap();
        assert_eq!((a.decode_failures, b.decode_failures), (0, 2));
        let n = 3 * 224 * 224;
        assert!(f32s(&b)[n..3 * n].iter().all(|&v| v == 0.0));
        assert_eq!(f32s(&a)[..n], f32s(&b)[..n]);
        assert_eq!(f32s(&a)[3 * n..], f32s(&b)[3 * n..]);
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
        Pipeline::from_preset(Preset::ImagenetVal(Resampling::Torch), None).unwrap(),
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
        preset: Preset::ImagenetTrain(Resampling::Torch),
        plain: Some(Preset::ImagenetVal(Resampling::Torch)),
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

/// The window `bx` of a `w x h` JPEG decoded at full size by zune-jpeg, resized to `size x size` (or the
/// whole image resized to `intermediate` and its centre taken), as CHW values 0-255: the full-scale
/// reference for a reduced-scale decode.
fn full_scale_reference(bytes: &[u8], bx: CropBox, intermediate: Option<(usize, usize)>, size: usize) -> Vec<f32> {
    use fast_image_resize::images::{Image as FirImage, ImageRef};
    use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
    use zune_jpeg::zune_core::{bytestream::ZCursor, colorspace::ColorSpace, options::DecoderOptions};
    let options = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    let rgb = decoder.decode().unwrap();
    let (w, h) = decoder.dimensions().unwrap();
    let src = ImageRef::new(w as u32, h as u32, &rgb, PixelType::U8x3).unwrap();
    let alg = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::CatmullRom));
    let hwc = match intermediate {
        None => {
            let mut dst = FirImage::new(size as u32, size as u32, PixelType::U8x3);
            let opts = alg.crop(bx.x as f64, bx.y as f64, bx.width as f64, bx.height as f64);
            Resizer::new().resize(&src, &mut dst, &opts).unwrap();
            dst.into_vec()
        }
        Some((rw, rh)) => {
            let mut dst = FirImage::new(rw as u32, rh as u32, PixelType::U8x3);
            Resizer::new().resize(&src, &mut dst, &alg).unwrap();
            let scaled = dst.into_vec();
            (0..size).flat_map(|y| scaled[((bx.y + y) * rw + bx.x) * 3..][..size * 3].to_vec()).collect()
        }
    };
    (0..3).flat_map(|ch| hwc.iter().skip(ch).step_by(3).map(|&v| f32::from(v)).collect::<Vec<_>>()).collect()
}

#[test]
fn large_images_decode_at_a_reduced_dct_scale_close_to_the_full_scale_decode() {
    // The scale: the largest of 1/2, 1/4, 1/8 at which the window (train) or the image (val) still has
    // at least the output's pixels in each direction.
    let (train, val) =
        (Decode::train().with_resampling(Resampling::Fast), Decode::val().with_resampling(Resampling::Fast));
    let bx = |width, height| CropBox { x: 0, y: 0, width, height };
    assert_eq!(train.dct_scale(2000, 2000, &bx(448, 448), None), 2);
    assert_eq!(train.dct_scale(2000, 2000, &bx(447, 900), None), 1);
    assert_eq!(train.dct_scale(2000, 2000, &bx(900, 1000), None), 4);
    assert_eq!(train.dct_scale(2000, 2000, &bx(1800, 1900), None), 8);
    assert_eq!(val.dct_scale(1024, 768, &bx(224, 224), Some((341, 256))), 2);
    assert_eq!(val.dct_scale(500, 375, &bx(224, 224), Some((341, 256))), 1);
    assert_eq!(val.dct_scale(2048, 2048, &bx(224, 224), Some((256, 256))), 8);

    // A 1600x1200 colour image with 64-pixel waves (a window misplaced by a few pixels shows) and the
    // same as greyscale.
    let (w, h) = (1600, 1200);
    let wave = |x: usize, y: usize| (128.0 + 100.0 * ((x + 2 * y) as f32 / 64.0 * std::f32::consts::TAU).sin()) as u8;
    let colour = jpeg(w, h, move |x, y| [(x * 255 / w) as u8, (y * 255 / h) as u8, wave(x, y)]);
    let grey_rgb: Vec<u8> = (0..h).flat_map(|y| (0..w).map(move |x| wave(x, y))).collect();
    let mut grey = Vec::new();
    Encoder::new(&mut grey, 92).encode(&grey_rgb, w as u16, h as u16, ColorType::Luma).unwrap();

    let mut scales = std::collections::BTreeSet::new();
    for (name, bytes) in [("colour", &colour), ("grey", &grey)] {
        for (decode, i) in [(val, 0u64)].into_iter().chain((0..40).map(|i| (train, i))) {
            let (bx, intermediate) = decode.draw(w, h, &mut sample_rng(5, 0, i));
            let scale = decode.dct_scale(w, h, &bx, intermediate);
            scales.insert(scale);
            let (mut img, mut scratch) = (Image::new(), DecodeScratch::default());
            decode.run(bytes, &mut img, &mut scratch, &mut sample_rng(5, 0, i)).unwrap();
            let reference = full_scale_reference(bytes, bx, intermediate, 224);
            let diff: Vec<f32> = img.data.iter().zip(&reference).map(|(a, b)| (a - b).abs()).collect();
            let mean = diff.iter().sum::<f32>() / diff.len() as f32;
            assert!(mean < 3.0, "{name} sample {i} at 1/{scale}: mean difference {mean} from the full-scale decode");
            if scale > 1 {
                assert!(mean > 0.0, "{name} sample {i}: 1/{scale} was asked for, yet the output is the full decode's");
            }
            if name == "grey" {
                let plane = 224 * 224;
                assert!(img.data[..plane] == img.data[plane..2 * plane] && img.data[..plane] == img.data[2 * plane..]);
            }
        }
    }
    assert_eq!(scales, [1, 2, 4].into(), "the draws exercise every scale a 1600x1200 image allows");
}

/// The mean absolute difference (0–255 scale) between the val crops of `bytes` resized by Torch's
/// bicubic and by the fast path.
fn val_difference(bytes: &[u8]) -> f32 {
    let mut crops = Vec::new();
    for r in [Resampling::Torch, Resampling::Fast] {
        let (mut img, mut scratch) = (Image::new(), DecodeScratch::default());
        Decode::val().with_resampling(r).run(bytes, &mut img, &mut scratch, &mut sample_rng(1, 0, 0)).unwrap();
        crops.push(img.data);
    }
    crops[0].iter().zip(&crops[1]).map(|(a, b)| (a - b).abs()).sum::<f32>() / crops[0].len() as f32
}

#[test]
fn torch_resampling_is_the_fast_path_on_smooth_images_and_aliases_where_the_fast_path_averages() {
    // A smooth 800x600 picture: the two resamplings agree to about a grey level.
    let (w, h) = (800, 600);
    let smooth = jpeg(w, h, move |x, y| {
        let wave = (128.0 + 60.0 * ((x + y) as f32 / 90.0).sin()) as u8;
        [(x * 255 / w) as u8, (y * 255 / h) as u8, wave]
    });
    let d = val_difference(&smooth);
    assert!(d > 0.0 && d < 1.5, "smooth picture: mean difference {d}");
    // Stripes two pixels wide, shrunk 2.3 times: the fast path averages them to grey, Torch's bicubic
    // samples them (no antialiasing) and keeps stripes, as fb.resnet.torch trained on.
    let stripes = jpeg(w, h, |x, _| if x / 2 % 2 == 0 { [255; 3] } else { [0; 3] });
    let d = val_difference(&stripes);
    assert!(d > 20.0, "stripes: mean difference only {d}");
}

#[test]
fn the_resampling_comparison_times_both_and_its_crops_are_the_val_recipes() {
    use wrn_augment::throughput::{compare_resampling, val_crops};
    let mut images = EncodedImages::new();
    for i in 0..3 {
        images.push(format!("img{i}.jpg"), textured(i), 0);
    }
    let c = compare_resampling(&images, 1).unwrap();
    assert_eq!(c.images, 3);
    assert!([c.val_ms_torch, c.val_ms_fast, c.train_ms_torch, c.train_ms_fast].iter().all(|&ms| ms > 0.0));
    assert!(c.val_mean_abs_difference > 0.0 && c.val_max_image_difference >= c.val_mean_abs_difference);
    let crops = val_crops(&images, Resampling::Torch).unwrap();
    assert_eq!(crops.len(), 3 * 224 * 224 * 3);
    let (mut img, mut scratch) = (Image::new(), DecodeScratch::default());
    Decode::val().run(images.encoded(2), &mut img, &mut scratch, &mut sample_rng(0, 0, 2)).unwrap();
    let hwc = &crops[2 * 224 * 224 * 3..];
    let plane = 224 * 224;
    assert!((0..plane).all(|p| (0..3).all(|c| hwc[p * 3 + c] == img.data[c * plane + p])));
    assert!(compare_resampling(&EncodedImages::new(), 1).unwrap_err().to_string().contains("no images"));
}

/// Catmull-Rom weights of the four taps at `t` (Keys' cubic convolution with a = −1/2).
fn catmull_rom_weights(t: f64) -> [f64; 4] {
    let (t2, t3) = (t * t, t * t * t);
    [-0.5 * t3 + t2 - 0.5 * t, 1.5 * t3 - 2.5 * t2 + 1.0, -1.5 * t3 + 2.0 * t2 + 0.5 * t, 0.5 * t3 - 0.5 * t2]
}

/// A reference of Torch's bicubic `image.scale` in `f64`, from its definition rather than its code:
/// output (x, y) samples the input at (x·(W−1)/(w−1), y·(H−1)/(h−1)) with Catmull-Rom in both directions,
/// inputs beyond an edge continued linearly, the last output of a line its last input.
fn reference_bicubic(src: &[u8], (w, h): (usize, usize), (ow, oh): (usize, usize)) -> Vec<f64> {
    let line_weights = |n_in: usize, n_out: usize| -> Vec<Vec<(f64, usize)>> {
        (0..n_out)
            .map(|d| {
                if d == n_out - 1 {
                    return vec![(1.0, n_in - 1)];
                }
                let at = d as f64 * (n_in - 1) as f64 / (n_out - 1) as f64;
                let i = at.floor() as usize;
                let wts = catmull_rom_weights(at - i as f64);
                // Taps i−1..i+2; one beyond an edge is 2·(edge) − (next inside), spread onto those two.
                let mut taps = Vec::new();
                for (k, wt) in wts.into_iter().enumerate() {
                    let j = i as i64 - 1 + k as i64;
                    if j < 0 {
                        taps.extend([(2.0 * wt, i), (-wt, i + 1)]);
                    } else if j as usize >= n_in {
                        taps.extend([(2.0 * wt, i + 1), (-wt, i)]);
                    } else {
                        taps.push((wt, j as usize));
                    }
                }
                taps
            })
            .collect()
    };
    let (wx, wy) = (line_weights(w, ow), line_weights(h, oh));
    let mut out = vec![0.0; ow * oh * 3];
    for (y, ty) in wy.iter().enumerate() {
        for (x, tx) in wx.iter().enumerate() {
            for c in 0..3 {
                out[(y * ow + x) * 3 + c] = ty
                    .iter()
                    .map(|&(a, j)| a * tx.iter().map(|&(b, i)| b * f64::from(src[(j * w + i) * 3 + c])).sum::<f64>())
                    .sum();
            }
        }
    }
    out
}

#[test]
fn torch_bicubic_agrees_with_a_reference_resize_of_a_known_image() {
    use wrn_augment::imagenet::scale_bicubic;
    // A 41x33 picture of gradients, a disc and fine stripes, scaled up (to 57x47) and down (to 19x14).
    let (w, h) = (41, 33);
    let src: Vec<u8> = (0..h)
        .flat_map(|y| {
            (0..w).flat_map(move |x| {
                let disc = if (x as i64 - 20).pow(2) + (y as i64 - 16).pow(2) < 100 { 200 } else { 30 };
                [(x * 6) as u8, disc, if x % 3 == 0 { 255 } else { (y * 7) as u8 }]
            })
        })
        .collect();
    let whole = CropBox { x: 0, y: 0, width: w, height: h };
    for (ow, oh) in [(57, 47), (19, 14)] {
        let (mut rows, mut ours) = (Vec::new(), Vec::new());
        scale_bicubic((&src, w, h), whole, [0, 0, ow, oh, ow, oh], (&mut rows, &mut ours));
        let want = reference_bicubic(&src, (w, h), (ow, oh));
        let worst = ours.iter().zip(&want).map(|(a, b)| (f64::from(*a) - b).abs()).fold(0.0, f64::max);
        assert!(worst < 1e-3, "{w}x{h} to {ow}x{oh}: off the reference by {worst}");
        // Overshoot beyond 0..255 is kept, as Torch keeps it on floats.
        assert!(ours.iter().any(|&v| !(0.0..=255.0).contains(&v)), "{ow}x{oh}: no overshoot to check");
    }
}
