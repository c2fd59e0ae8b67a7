//! Throughput of the CIFAR training pipeline (reflect pad 4, random 32x32 crop, flip, mean/std; f32 NCHW
//! out) in images/s at 1 worker and at every core, beside a plain copy of the same output bytes measured
//! in the same run; ends with a summary of images/s and the ratio to the copy bound.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use wrn_augment::{Loader, LoaderConfig, Norm, Pipeline, Preset};
use wrn_data::cache::{write, PreparedSplit, SplitData, SplitMeta};

const IMAGES: usize = 10_240;
const BATCH: usize = 128;
const SAMPLE: usize = 3 * 32 * 32;

fn synthetic_split(dir: &Path) -> Arc<PreparedSplit> {
    let images: Vec<u8> = (0..IMAGES * SAMPLE).map(|k| (k.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let labels: Vec<u16> = (0..IMAGES).map(|i| (i % 10) as u16).collect();
    let meta = SplitMeta {
        dataset: "bench".into(),
        split: "train".into(),
        classes: (0..10).map(|i| i.to_string()).collect(),
        coarse_classes: vec![],
        sources: vec![],
    };
    let path = dir.join("train.wrnc");
    let data = SplitData {
        meta: &meta,
        height: 32,
        width: 32,
        channels: 3,
        images: &images,
        labels: &labels,
        coarse_labels: None,
    };
    write(&path, &data).expect("writing the synthetic split");
    Arc::new(PreparedSplit::open(&path).expect("opening the synthetic split"))
}

fn loader(split: &Arc<PreparedSplit>, workers: usize) -> Loader {
    let pipeline = Pipeline::from_preset(Preset::CifarTrain(Norm::MeanStd), None).unwrap();
    let config = LoaderConfig { batch_size: BATCH, seed: 1, workers, prefetch: 4, ..LoaderConfig::default() };
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

/// The copy bound: the epoch's output bytes (f32) copied batch by batch from a source as large as the
/// epoch into one batch buffer, on one thread.
struct Copy {
    src: Vec<f32>,
    dst: Vec<f32>,
}

impl Copy {
    fn new() -> Copy {
        Copy { src: (0..IMAGES * SAMPLE).map(|i| i as f32).collect(), dst: vec![0.0; BATCH * SAMPLE] }
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
    let mut copy = Copy::new();
    group.bench_function("copy_f32_1thread", |b| b.iter(|| copy.run()));
    for workers in [1, cores()] {
        let l = loader(&split, workers);
        let mut epoch = 0;
        group.bench_function(format!("pipeline_{workers}workers"), |b| {
            b.iter(|| {
                epoch += 1;
                run_epoch(&l, epoch)
            })
        });
    }
    group.finish();

    // Summary: best of five epochs each, interleaved so both sides see the same machine load.
    let best = |f: &mut dyn FnMut()| (0..5).map(|_| timed(&mut *f)).min().unwrap();
    let copy_t = best(&mut || copy.run());
    let rate = |t: Duration| IMAGES as f64 / t.as_secs_f64();
    println!("copy bound (1 thread): {:.0} images/s", rate(copy_t));
    for workers in [1, cores()] {
        let l = loader(&split, workers);
        let mut epoch = 100;
        let t = best(&mut || {
            epoch += 1;
            run_epoch(&l, epoch)
        });
        println!(
            "cifar-train, {workers} worker(s): {:.0} images/s = {:.1}% of {workers} x the copy bound",
            rate(t),
            100.0 * rate(t) / (workers as f64 * rate(copy_t))
        );
    }
}

fn timed(f: &mut dyn FnMut()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

criterion_group!(benches, augment);
criterion_main!(benches);
