//! Throughput of an input pipeline over a prepared split, beside a baseline measured in the same process:
//! the copy bound, the epoch's pixels read from the split and written as `f32` batch by batch into one
//! batch buffer on one thread, the least any pipeline over these pixels must do. Both sides read the same
//! bytes and write the same values, so both are bound by the same caches and memory; a copy of a
//! separate `f32` source as large as the epoch (the criterion bench's bound) is bound by memory bandwidth
//! alone and its ratio to the pipeline varied twofold with the load of a shared machine. Machines differ,
//! so a regression check compares ratios, not images/s (`wrn bench pipeline`, the nightly report).
//!
//! Each measurement repeats whole epochs until it has run for at least `min_seconds`; the pipeline and
//! the copy are measured in alternation, `rounds` times each, and the best of each is kept, so both sides
//! see the same machine load and a busy moment costs a round, not the figure. The unaugmented test preset
//! of the same family is measured the same way: the ratio of the pipeline to it isolates the cost of
//! augmenting, through the same loader, threads and bytes, and was the steadier ratio on a loaded
//! two-core machine (within about ±10% where the copy-bound ratio varied up to twofold).
//!
//! [`compare_resampling`] times Torch's bicubic resampling beside the fast one on the same JPEGs and
//! measures how far their val crops differ; [`val_crops`] gives those crops for a peer to compare with.
//!
//! [`measure_encoded`] does the same for the ImageNet presets over encoded images (prepared shards or a
//! folder of JPEGs), beside `imagenet-val`; a copy bound means nothing where decoding dominates, so it
//! has none, and its figure is compared with a peer pipeline on the same files (`make bench-peers`).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wrn_data::cache::PreparedSplit;

use crate::error::{Error, Result};
use crate::imagenet::EncodedSource;
use crate::loader::{ImageType, Loader, LoaderConfig};
use crate::preset::{Pipeline, Preset};

/// What [`measure`] runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// The pipeline measured (a preset over pixels: `cifar-train`, `cifar-test`, `svhn`).
    pub preset: Preset,
    /// Its unaugmented counterpart, measured beside it for information (`None`: skip).
    pub plain: Option<Preset>,
    pub batch_size: usize,
    /// Loader workers. With 1, the ratio to the one-thread copy bound does not depend on the core count.
    pub workers: usize,
    /// Alternating measurements of each side; the best is kept.
    pub rounds: usize,
    /// Least duration of one measurement (whole epochs are repeated until it is reached).
    pub min_seconds: f64,
    /// What the batches hold; with `u8` the copy bound copies bytes.
    pub image_type: ImageType,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            preset: Preset::CifarTrain(crate::Norm::MeanStd),
            plain: Some(Preset::CifarTest(crate::Norm::MeanStd)),
            batch_size: 128,
            workers: 1,
            rounds: 5,
            min_seconds: 0.25,
            image_type: ImageType::F32,
        }
    }
}

/// What [`measure`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct Throughput {
    pub preset: String,
    pub plain_preset: Option<String>,
    /// Samples per epoch.
    pub images: usize,
    pub batch_size: usize,
    pub workers: usize,
    pub rounds: usize,
    pub image_type: ImageType,
    /// The pipeline, best round.
    pub images_per_second: f64,
    /// The copy bound, best round (none over encoded images).
    pub copy_images_per_second: Option<f64>,
    /// The unaugmented preset, best round.
    pub plain_images_per_second: Option<f64>,
    /// `images_per_second / copy_images_per_second`.
    pub ratio_to_copy: Option<f64>,
    /// `images_per_second / plain_images_per_second`: the cost of augmenting, through the same loader on
    /// the same threads; the steadier of the two ratios on a loaded machine (what the nightly compares).
    pub ratio_to_plain: Option<f64>,
}

/// Measures `options.preset` over `split` against the copy bound (see the module doc).
pub fn measure(split: Arc<PreparedSplit>, options: &Options) -> Result<Throughput> {
    let (main, plain) = loaders(options, |pipeline, config| Loader::new(split.clone(), pipeline, config))?;
    let mut copy = Copy::new(&split, main.len(), options.batch_size);
    let image_type = options.image_type;
    Ok(alternate(options, &main, plain.as_ref(), Some(&mut || copy.run(image_type))))
}

/// Measures an ImageNet preset over encoded images beside `options.plain` (see the module doc).
pub fn measure_encoded(source: Arc<dyn EncodedSource>, options: &Options) -> Result<Throughput> {
    let (main, plain) =
        loaders(options, |pipeline, config| Loader::from_encoded(source.clone(), "bench", pipeline, config))?;
    Ok(alternate(options, &main, plain.as_ref(), None))
}

/// The loaders of `options.preset` and `options.plain`, made by `make` with the measured settings.
fn loaders(
    options: &Options,
    make: impl Fn(Pipeline, LoaderConfig) -> Result<Loader>,
) -> Result<(Loader, Option<Loader>)> {
    if options.rounds == 0 {
        return Err(Error::Config("rounds must be at least 1".into()));
    }
    let loader = |preset: Preset| -> Result<Loader> {
        let config = LoaderConfig {
            batch_size: options.batch_size,
            seed: 1,
            workers: options.workers,
            prefetch: 4,
            image_type: options.image_type,
            ..LoaderConfig::default()
        };
        make(Pipeline::from_preset(preset, None)?, config)
    };
    Ok((loader(options.preset)?, options.plain.map(loader).transpose()?))
}

/// The pipeline, its plain counterpart and the copy bound measured in alternation, best of each kept.
fn alternate(
    options: &Options,
    main: &Loader,
    plain: Option<&Loader>,
    mut copy: Option<&mut dyn FnMut()>,
) -> Throughput {
    let min = Duration::from_secs_f64(options.min_seconds);
    let mut epoch = 0u64;
    let (mut best_main, mut best_copy, mut best_plain) = (0.0f64, 0.0f64, 0.0f64);
    for _ in 0..options.rounds {
        if let Some(copy) = copy.as_mut() {
            best_copy = best_copy.max(rate(main.len(), min, copy));
        }
        best_main = best_main.max(rate(main.len(), min, || {
            epoch += 1;
            run_epoch(main, epoch)
        }));
        if let Some(plain) = plain {
            best_plain = best_plain.max(rate(plain.len(), min, || {
                epoch += 1;
                run_epoch(plain, epoch)
            }));
        }
    }
    let copied = copy.is_some();
    Throughput {
        preset: options.preset.to_string(),
        plain_preset: options.plain.map(|p| p.to_string()),
        images: main.len(),
        batch_size: options.batch_size,
        workers: options.workers,
        rounds: options.rounds,
        image_type: options.image_type,
        images_per_second: best_main,
        copy_images_per_second: copied.then_some(best_copy),
        plain_images_per_second: plain.is_some().then_some(best_plain),
        ratio_to_copy: copied.then_some(best_main / best_copy),
        ratio_to_plain: plain.is_some().then_some(best_main / best_plain),
    }
}

/// Images/s of `epoch` (which handles `images` samples), repeated until `min` has passed.
fn rate(images: usize, min: Duration, mut epoch: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut epochs = 0usize;
    while epochs == 0 || start.elapsed() < min {
        epoch();
        epochs += 1;
    }
    (epochs * images) as f64 / start.elapsed().as_secs_f64().max(1e-9)
}

/// One epoch through the queue, returning every batch for reuse as the training runner does.
fn run_epoch(loader: &Loader, epoch: u64) {
    let mut it = loader.epoch(epoch, 0);
    while let Some(b) = it.next() {
        black_box(&b.images);
        it.recycle(b);
    }
}

/// The copy bound: an epoch's pixels converted to `f32` (or copied, for `u8` batches) batch by batch into
/// one batch buffer, on one thread.
struct Copy<'a> {
    src: &'a [u8],
    values: Vec<f32>,
    bytes: Vec<u8>,
}

impl Copy<'_> {
    fn new(split: &PreparedSplit, images: usize, batch_size: usize) -> Copy<'_> {
        let sample = split.image_bytes();
        let batch = batch_size * sample;
        Copy { src: &split.images()[..images * sample], values: vec![0.0; batch], bytes: vec![0; batch] }
    }

    fn run(&mut self, image_type: ImageType) {
        for chunk in self.src.chunks(self.bytes.len()) {
            match image_type {
                ImageType::F32 => {
                    for (d, s) in self.values.iter_mut().zip(chunk) {
                        *d = f32::from(*s);
                    }
                    black_box(&self.values);
                }
                ImageType::U8 => {
                    self.bytes[..chunk.len()].copy_from_slice(chunk);
                    black_box(&self.bytes);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wrn_data::cache::write_synthetic;

    fn split(dir: &std::path::Path, n: usize) -> Arc<PreparedSplit> {
        let images: Vec<u8> = (0..n * 3072).map(|k| (k.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let labels: Vec<u16> = (0..n).map(|i| (i % 10) as u16).collect();
        Arc::new(write_synthetic(&dir.join("train.wrnc"), (32, 32), &images, &labels, 10).unwrap())
    }

    #[test]
    fn measures_the_pipeline_the_copy_bound_and_their_ratio() {
        let dir = tempfile::tempdir().unwrap();
        let options = Options { batch_size: 32, rounds: 2, min_seconds: 0.01, ..Options::default() };
        let t = measure(split(dir.path(), 100), &options).unwrap();
        assert_eq!((t.preset.as_str(), t.plain_preset.as_deref()), ("cifar-train", Some("cifar-test")));
        assert_eq!((t.images, t.batch_size, t.workers, t.rounds), (100, 32, 1, 2));
        let copy = t.copy_images_per_second.unwrap();
        assert!(t.images_per_second > 0.0 && copy > 0.0);
        assert!(t.plain_images_per_second.unwrap() > 0.0);
        assert_eq!(t.ratio_to_copy, Some(t.images_per_second / copy));
        assert_eq!(t.ratio_to_plain, Some(t.images_per_second / t.plain_images_per_second.unwrap()));
        // Augmenting and normalising reads and writes every value at least once more than a copy.
        assert!(t.ratio_to_copy.unwrap() < 1.0, "{:?}", t.ratio_to_copy);
    }

    #[test]
    fn u8_batches_are_measured_against_a_byte_copy() {
        let dir = tempfile::tempdir().unwrap();
        let options =
            Options { batch_size: 32, rounds: 1, min_seconds: 0.01, image_type: ImageType::U8, ..Options::default() };
        let t = measure(split(dir.path(), 100), &options).unwrap();
        assert_eq!(t.image_type, ImageType::U8);
        assert!(t.images_per_second > 0.0 && t.ratio_to_copy.unwrap() < 1.0, "{t:?}");
    }

    #[test]
    fn zero_rounds_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let options = Options { rounds: 0, ..Options::default() };
        assert!(measure(split(dir.path(), 10), &options).is_err());
    }
}

/// Torch's bicubic resampling beside the fast one over the same JPEGs ([`compare_resampling`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ResamplingComparison {
    pub images: usize,
    /// Decode and resize time of one `imagenet-val` / `imagenet-train` sample on one thread, in
    /// milliseconds (best of the rounds), with each resampling.
    pub val_ms_torch: f64,
    pub val_ms_fast: f64,
    pub train_ms_torch: f64,
    pub train_ms_fast: f64,
    /// Mean and largest per-image mean absolute difference (0–255 scale) of the val crops.
    pub val_mean_abs_difference: f64,
    pub val_max_image_difference: f64,
}

/// The val crops (224×224, HWC RGB, `f32` on the 0–255 scale) of every image of `source` resized with
/// `resampling`, back to back in the source's order.
pub fn val_crops(source: &dyn EncodedSource, resampling: crate::imagenet::Resampling) -> Result<Vec<f32>> {
    use crate::imagenet::{Decode, DecodeScratch, Sample};
    let decode = Decode::val().with_resampling(resampling);
    let mut scratch = DecodeScratch::default();
    let mut out = Vec::with_capacity(source.len() * 224 * 224 * 3);
    for i in 0..source.len() {
        let sample = decode.decode(source.encoded(i), &mut scratch, &mut crate::rng::sample_rng(0, 0, i as u64));
        match sample.map_err(|e| Error::Config(format!("{}: {}", source.name(i), e.0)))? {
            Sample::U8(bytes) => out.extend(bytes.iter().map(|&b| f32::from(b))),
            Sample::F32(values) => out.extend_from_slice(values),
        }
    }
    Ok(out)
}

/// Times Torch's and the fast resampling on every image of `source` (decode and resize on one thread,
/// best of `rounds` alternating passes) and compares their val crops.
pub fn compare_resampling(source: &dyn EncodedSource, rounds: usize) -> Result<ResamplingComparison> {
    use crate::imagenet::{Decode, DecodeScratch, Resampling};
    if source.is_empty() {
        return Err(Error::Config("no images to compare resampling on".into()));
    }
    let time = |decode: Decode| -> Result<f64> {
        let mut scratch = DecodeScratch::default();
        let started = Instant::now();
        for i in 0..source.len() {
            let mut rng = crate::rng::sample_rng(0, 0, i as u64);
            let sample = decode.decode(source.encoded(i), &mut scratch, &mut rng);
            black_box(sample.map_err(|e| Error::Config(format!("{}: {}", source.name(i), e.0)))?.len());
        }
        Ok(started.elapsed().as_secs_f64() * 1e3 / source.len() as f64)
    };
    let mut best = [f64::INFINITY; 4];
    for _ in 0..rounds.max(1) {
        for (k, r) in [Resampling::Torch, Resampling::Fast].into_iter().enumerate() {
            best[k] = best[k].min(time(Decode::val().with_resampling(r))?);
            best[2 + k] = best[2 + k].min(time(Decode::train().with_resampling(r))?);
        }
    }
    let (torch, fast) = (val_crops(source, Resampling::Torch)?, val_crops(source, Resampling::Fast)?);
    let per_image = 224 * 224 * 3;
    let differences: Vec<f64> = torch
        .chunks_exact(per_image)
        .zip(fast.chunks_exact(per_image))
        .map(|(a, b)| a.iter().zip(b).map(|(a, b)| f64::from((a - b).abs())).sum::<f64>() / per_image as f64)
        .collect();
    Ok(ResamplingComparison {
        images: source.len(),
        val_ms_torch: best[0],
        val_ms_fast: best[1],
        train_ms_torch: best[2],
        train_ms_fast: best[3],
        val_mean_abs_difference: differences.iter().sum::<f64>() / differences.len() as f64,
        val_max_image_difference: differences.iter().copied().fold(0.0, f64::max),
    })
}
