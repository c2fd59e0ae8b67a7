//! Throughput of the CIFAR training pipeline (reflect pad 4, random 32x32 crop, flip, mean/std; f32 NCHW
//! out) in images/s at 1 worker and at every core, beside a plain copy of the same output bytes measured
//! in the same run; the same for `u8` batches (the crop and flip only, the normalisation left to the GPU)
//! beside a byte copy. Ends with a summary of images/s and the ratios to the copy bounds.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use wrn_augment::{ImageType, Loader, LoaderConfig, Norm, Pipeline, Preset};
use wrn_data::cache::{write_synthetic, PreparedSplit};

const IMAGES: usize = 10_240;
const BATCH: usize = 128;
const SAMPLE: usize = 3 * 32 * 32;

fn synthetic_split(dir: &Path) -> Arc<PreparedSplit> {
    let images: Vec<u8> = (0..IMAGES * SAMPLE).map(|k| (k.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let labels: Vec<u16> = (0..IMAGES).map(|i| (i % 10) as u16).collect();
    let split = write_synthetic(&dir.join("train.wrnc"), (32, 32), &images, &labels, 10);
    Arc::new(split.expect("writing the synthetic split"))
}

fn loader(split: &Arc<PreparedSplit>, workers: usize, image_type: ImageType) -> Loader {
    let pipeline = Pipeline::from_preset(Preset::CifarTrain(Norm::MeanStd), None).unwrap();
    let config =
        LoaderConfig { batch_size: BATCH, seed: 1, workers, prefetch: 4, image_type, ..LoaderConfig::default() };
    Loader::new(split.clone(), pipeline, config).unwrap()
}

/// One epoch through the queue, returning every batch for reuse as the training runner does.
fn run_epoch(loader: &Loader, epoch: u64) {
    let it = loader.epoch(epoch, 0);
    let mut it = it;
    while let Some(b) = it.next() {
        black_box(&b.images);
        it.recycle(b);
    }
}

/// The copy bounds: the epoch's output bytes (f32, or u8) copied batch by batch from a source as large as
/// the epoch into one batch buffer, on one thread.
struct Copy<T> {
    src: Vec<T>,
    dst: Vec<T>,
}

impl<T: std::marker::Copy + Default> Copy<T> {
    fn new(value: impl Fn(usize) -> T) -> Copy<T> {
        Copy { src: (0..IMAGES * SAMPLE).map(value).collect(), dst: vec![T::default(); BATCH * SAMPLE] }
    }
    fn run(&mut self) {
        for chunk in self.src.chunks(BATCH * SAMPLE) {
            self.dst[..chunk.len()].copy_from_slice(chunk);
            black_box(&self.dst);
        }
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn augment(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let split = synthetic_split(dir.path());
    let mut group = c.benchmark_group("augment_cifar_train");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(IMAGES as u64));
    let mut copy = Copy::new(|i| i as f32);
    let mut copy_u8 = Copy::new(|i| i as u8);
    group.bench_function("copy_f32_1thread", |b| b.iter(|| copy.run()));
    group.bench_function("copy_u8_1thread", |b| b.iter(|| copy_u8.run()));
    for (image_type, name) in [(ImageType::F32, ""), (ImageType::U8, "u8_")] {
        for workers in [1, cores()] {
            let l = loader(&split, workers, image_type);
            let mut epoch = 0;
            group.bench_function(format!("pipeline_{name}{workers}workers"), |b| {
                b.iter(|| {
                    epoch += 1;
                    run_epoch(&l, epoch)
                })
            });
        }
    }
    group.finish();

    // Summary: best of five epochs each, interleaved so both sides see the same machine load.
    let best = |f: &mut dyn FnMut()| (0..5).map(|_| timed(&mut *f)).min().unwrap();
    let rate = |t: Duration| IMAGES as f64 / t.as_secs_f64();
    let (mut copy_f32, mut copy_u8) = (|| copy.run(), || copy_u8.run());
    let copies: [(ImageType, &mut dyn FnMut()); 2] = [(ImageType::F32, &mut copy_f32), (ImageType::U8, &mut copy_u8)];
    for (image_type, copy) in copies {
        let copy_rate = rate(best(copy));
        println!("{image_type:?} copy bound (1 thread): {copy_rate:.0} images/s");
        for workers in [1, cores()] {
            let l = loader(&split, workers, image_type);
            let mut epoch = 100;
            let t = best(&mut || {
                epoch += 1;
                run_epoch(&l, epoch)
            });
            println!(
                "cifar-train {image_type:?}, {workers} worker(s): {:.0} images/s = {:.1}% of {workers} x the copy bound",
                rate(t),
                100.0 * rate(t) / (workers as f64 * copy_rate)
            );
        }
    }
}

fn timed(f: &mut dyn FnMut()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

criterion_group!(benches, augment);
criterion_main!(benches);
