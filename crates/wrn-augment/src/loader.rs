//! The loader (contract 2, augment → train): turns a prepared split and a [`Pipeline`] into epochs of
//! [`Batch`]es. A producer thread per epoch fills one batch at a time on the loader's rayon pool (one
//! sample per task) and hands it to a bounded queue of `prefetch` batches; the consumer iterates
//! [`EpochBatches`], returns spent batches with [`EpochBatches::recycle`] so their buffers are refilled
//! instead of reallocated, and reads how long it waited with [`EpochBatches::wait_time`].
//!
//! Determinism: the order of an epoch depends only on (seed, epoch) and every random choice for a sample
//! only on (seed, epoch, sample index) (see [`crate::rng`]), so the batches do not depend on the number of
//! workers, on the queue depth, or on where an epoch is resumed.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use rayon::prelude::*;
use wrn_data::cache::PreparedSplit;

use crate::error::{Error, Result};
use crate::imagenet::{ColourAffine, ColourRows, Decode, DecodeError, DecodeScratch, EncodedSource};
use crate::ops::{Draw, Fused, Image, ValueStep};
use crate::preset::{Draws, Pipeline, Source};
use crate::rng::{batch_draws, epoch_order, sample_rng, BatchDraw, SampleRng};

/// One batch, fully preprocessed (or, in `u8`, up to the pipeline's value step).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// NCHW images, `n*c*h*w` of them: values, or bytes before the value step.
    pub images: BatchImages,
    /// `[n, c, h, w]`.
    pub shape: [usize; 4],
    /// Class index of each sample.
    pub labels: Vec<i64>,
    /// The samples' indices in the split, in batch order.
    pub indices: Vec<usize>,
    pub epoch: u64,
    /// Batch index within the epoch, from 0.
    pub step: usize,
    /// Samples of an in-memory source ([`crate::EncodedImages`]) whose encoded image could not be decoded
    /// and were replaced by zeros; always 0 for raw pixels and prepared shards (which stop the epoch).
    pub decode_failures: usize,
}

impl Batch {
    /// The number of samples.
    pub fn len(&self) -> usize {
        self.shape[0]
    }
    pub fn is_empty(&self) -> bool {
        self.shape[0] == 0
    }
}

/// A batch's NCHW images, in the loader's [`ImageType`].
#[derive(Debug, Clone, PartialEq)]
pub enum BatchImages {
    /// The pipeline's values ([`ImageType::F32`]).
    F32(Vec<f32>),
    /// The pixels before the pipeline's value step ([`ImageType::U8`]): [`Loader::deferred_step`] turns
    /// each into the value [`BatchImages::F32`] would hold.
    U8(Vec<u8>),
}

impl Default for BatchImages {
    fn default() -> Self {
        BatchImages::F32(Vec::new())
    }
}

impl BatchImages {
    /// The number of values (or bytes).
    pub fn len(&self) -> usize {
        match self {
            BatchImages::F32(v) => v.len(),
            BatchImages::U8(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The values, when the images are [`BatchImages::F32`].
    pub fn as_f32(&self) -> Option<&[f32]> {
        match self {
            BatchImages::F32(v) => Some(v),
            BatchImages::U8(_) => None,
        }
    }
    /// The bytes, when the images are [`BatchImages::U8`].
    pub fn as_u8(&self) -> Option<&[u8]> {
        match self {
            BatchImages::U8(v) => Some(v),
            BatchImages::F32(_) => None,
        }
    }

    /// `len` values to fill, in this buffer when it already holds values (its allocation is reused).
    fn f32_mut(&mut self, len: usize) -> &mut [f32] {
        if !matches!(self, BatchImages::F32(_)) {
            *self = BatchImages::F32(Vec::new());
        }
        let BatchImages::F32(v) = self else { unreachable!("just made f32") };
        v.resize(len, 0.0);
        v
    }

    /// `len` bytes to fill, in this buffer when it already holds bytes (its allocation is reused).
    fn u8_mut(&mut self, len: usize) -> &mut [u8] {
        if !matches!(self, BatchImages::U8(_)) {
            *self = BatchImages::U8(Vec::new());
        }
        let BatchImages::U8(v) = self else { unreachable!("just made u8") };
        v.resize(len, 0);
        v
    }
}

/// The element type of a batch's images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageType {
    /// The pipeline's values.
    #[default]
    F32,
    /// The pixels before the pipeline's value step (a quarter of the bytes to fill and to copy to a GPU,
    /// which applies the step itself). Pixel pipelines of padding, crops and flips ending in at most one
    /// normalisation or scaling deliver them: `cifar-train`, `cifar-test` and `svhn`.
    U8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoaderConfig {
    pub batch_size: usize,
    pub seed: u64,
    /// Visit the samples in a fresh random order each epoch (otherwise in index order).
    pub shuffle: bool,
    /// Leave out the last batch when it would be smaller than `batch_size`.
    pub drop_last: bool,
    /// Threads filling batches; 0 means one per available core.
    pub workers: usize,
    /// Batches that may wait, ready, in the queue (at least 1).
    pub prefetch: usize,
    /// Use only the first N samples of the split (smoke runs).
    pub subset: Option<usize>,
    /// What the batches' images hold.
    pub image_type: ImageType,
    /// Of each batch, only this part (one rank's of a run over several processes).
    pub shard: Shard,
}

/// Which part of every batch a loader fills: part `index` of `count` near-equal parts, in order. The
/// epoch's order, the batches and each sample's augmentation stay those of the whole batch (they depend
/// on (seed, epoch, index) and, for per-batch draws, on the sample's place in the whole batch), so the
/// `count` parts together are exactly the batch one loader would fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Default for Shard {
    /// The whole batch.
    fn default() -> Shard {
        Shard { index: 0, count: 1 }
    }
}

impl Shard {
    /// The positions of this part in a batch of `len` samples: `[len·index/count, len·(index+1)/count)`.
    pub fn part(&self, len: usize) -> std::ops::Range<usize> {
        (len * self.index / self.count)..(len * (self.index + 1) / self.count)
    }
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            batch_size: 128,
            seed: 0,
            shuffle: true,
            drop_last: false,
            workers: 0,
            prefetch: 4,
            subset: None,
            image_type: ImageType::F32,
            shard: Shard::default(),
        }
    }
}

/// What a worker reads samples from.
enum Data {
    Pixels,
    Whitened(Vec<f32>),
    Jpeg(Decode),
}

/// Prepared splits read as one: sample `i` lives in the first split whose end is past `i`.
struct Splits {
    parts: Vec<Arc<PreparedSplit>>,
    /// Cumulative lengths: `ends[k]` = samples in `parts[..=k]`.
    ends: Vec<usize>,
}

impl Splits {
    fn new(parts: Vec<Arc<PreparedSplit>>) -> Splits {
        let ends = parts
            .iter()
            .scan(0, |total, p| {
                *total += p.len();
                Some(*total)
            })
            .collect();
        Splits { parts, ends }
    }

    fn len(&self) -> usize {
        self.ends.last().copied().unwrap_or(0)
    }

    /// The split holding sample `i`, and its index there.
    fn locate(&self, i: usize) -> (&PreparedSplit, usize) {
        let k = self.ends.partition_point(|&end| end <= i);
        let start = if k == 0 { 0 } else { self.ends[k - 1] };
        (&self.parts[k], i - start)
    }

    fn image(&self, i: usize) -> &[u8] {
        let (split, j) = self.locate(i);
        split.image(j)
    }

    fn label(&self, i: usize) -> u16 {
        let (split, j) = self.locate(i);
        split.label(j)
    }

    fn name(&self, i: usize) -> String {
        let (split, j) = self.locate(i);
        format!("{} #{j}", split.path().display())
    }
}

/// Where the samples and labels are.
enum Samples {
    Prepared(Splits),
    Encoded(Arc<dyn EncodedSource>),
}

impl Samples {
    fn label(&self, i: usize) -> u16 {
        match self {
            Samples::Prepared(s) => s.label(i),
            Samples::Encoded(s) => s.label(i),
        }
    }

    fn name(&self, i: usize) -> String {
        match self {
            Samples::Prepared(s) => s.name(i),
            Samples::Encoded(s) => s.name(i),
        }
    }

    /// The error that stops the epoch when sample `i` does not decode (`why`), or `None` to replace it
    /// by zeros and count it.
    fn decode_failure(&self, i: usize, why: &str) -> Option<Error> {
        match self {
            Samples::Prepared(_) => None,
            Samples::Encoded(s) => s.decode_failure(i, why),
        }
    }
}

/// A worker's reusable buffers.
#[derive(Default)]
struct Worker {
    img: Image,
    decode: DecodeScratch,
    /// The fused kernel's column table.
    cols: Vec<usize>,
    /// The colour kernel's rows.
    rows: ColourRows,
}

struct Inner {
    samples: Samples,
    pipeline: Pipeline,
    data: Data,
    /// The one-pass kernel for the pipeline's ops, when the source is the cache's pixels and one exists.
    fused: Option<Fused>,
    /// The one-pass kernel for the ops after decoding, when the source is JPEG and one exists.
    colour: Option<ColourAffine>,
    config: LoaderConfig,
    n: usize,
    in_shape: [usize; 3],
    out_shape: [usize; 3],
    pool: rayon::ThreadPool,
    built: AtomicUsize,
}

pub struct Loader {
    inner: Arc<Inner>,
    recycle_tx: Sender<Batch>,
    recycle_rx: Receiver<Batch>,
}

impl Loader {
    /// Checks the pipeline against the split's image shape and the configuration, whitens the split when
    /// the pipeline's source asks for it, and starts the worker pool.
    pub fn new(split: Arc<PreparedSplit>, pipeline: Pipeline, config: LoaderConfig) -> Result<Loader> {
        Loader::concat(vec![split], pipeline, config)
    }

    /// A loader over several prepared splits read as one, in order (SVHN's train + extra): sample `i` of
    /// the second split is sample `len(first) + i` of the whole. The splits must share their image shape.
    pub fn concat(splits: Vec<Arc<PreparedSplit>>, pipeline: Pipeline, config: LoaderConfig) -> Result<Loader> {
        let Some(first) = splits.first() else {
            return Err(Error::Config("a loader needs at least one prepared split".into()));
        };
        let path = std::path::PathBuf::from(
            splits.iter().map(|s| s.path().display().to_string()).collect::<Vec<_>>().join(" + "),
        );
        let (h, w, c) = first.shape();
        if let Some(other) = splits.iter().find(|s| s.shape() != (h, w, c)) {
            let detail = format!(
                "{} holds {:?} images, {} holds {:?}",
                first.path().display(),
                (h, w, c),
                other.path().display(),
                other.shape()
            );
            return Err(Error::Pipeline { path, detail });
        }
        let samples = Splits::new(splits);
        let n = epoch_len(samples.len(), &path, &config)?;
        let data = match &pipeline.source {
            Source::Pixels => Data::Pixels,
            Source::Whitened(zca) if samples.parts.len() == 1 => Data::Whitened(zca.whiten_split(&samples.parts[0])?),
            Source::Whitened(_) => {
                let detail = "ZCA whitening reads one split, not several".to_string();
                return Err(Error::Pipeline { path, detail });
            }
            Source::Jpeg(_) => {
                let detail = format!("pipeline {pipeline} reads encoded images, not a prepared split");
                return Err(Error::Pipeline { path, detail });
            }
        };
        Loader::build(Samples::Prepared(samples), (n, path), [c, h, w], data, pipeline, config)
    }

    /// A loader over encoded (JPEG) images, for the ImageNet pipelines; `name` appears in messages.
    pub fn from_encoded(
        source: Arc<dyn EncodedSource>,
        name: &str,
        pipeline: Pipeline,
        config: LoaderConfig,
    ) -> Result<Loader> {
        let path = std::path::PathBuf::from(name);
        let Source::Jpeg(decode) = pipeline.source else {
            let detail = format!("pipeline {pipeline} does not decode encoded images");
            return Err(Error::Pipeline { path, detail });
        };
        let n = epoch_len(source.len(), &path, &config)?;
        let size = decode.size();
        Loader::build(Samples::Encoded(source), (n, path), [3, size, size], Data::Jpeg(decode), pipeline, config)
    }

    fn build(
        samples: Samples,
        (n, path): (usize, std::path::PathBuf),
        in_shape: [usize; 3],
        data: Data,
        pipeline: Pipeline,
        config: LoaderConfig,
    ) -> Result<Loader> {
        if config.batch_size == 0 {
            return Err(Error::Config("batch_size must be at least 1".into()));
        }
        if config.shard.count == 0 || config.shard.index >= config.shard.count {
            let Shard { index, count } = config.shard;
            return Err(Error::Config(format!("part {index} of {count} of each batch does not exist")));
        }
        if config.prefetch == 0 {
            return Err(Error::Config("prefetch must be at least 1".into()));
        }
        let out_shape = pipeline
            .output_shape(in_shape)
            .map_err(|e| Error::Pipeline { path: path.clone(), detail: e.to_string() })?;
        let workers = if config.workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            config.workers
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(workers)
            .thread_name(|i| format!("wrn-augment-{i}"))
            .build()
            .map_err(|e| Error::Config(format!("cannot start {workers} workers: {e}")))?;
        let (recycle_tx, recycle_rx) = unbounded();
        let fused = if matches!(data, Data::Pixels) { Fused::plan(&pipeline.ops) } else { None };
        let colour = if matches!(data, Data::Jpeg(_)) { ColourAffine::plan(&pipeline.ops) } else { None };
        if config.image_type == ImageType::U8 && !pipeline.delivers_u8() {
            let detail = format!(
                "pipeline {pipeline} cannot deliver u8 batches: only pixel pipelines of padding, crops and flips \
                 ending in one normalisation or scaling can (cifar-train, cifar-test, svhn); use f32"
            );
            return Err(Error::Pipeline { path, detail });
        }
        let built = AtomicUsize::new(0);
        let inner = Inner { samples, pipeline, fused, colour, data, config, n, in_shape, out_shape, pool, built };
        Ok(Loader { inner: Arc::new(inner), recycle_tx, recycle_rx })
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.inner.config
    }
    pub fn pipeline(&self) -> &Pipeline {
        &self.inner.pipeline
    }
    /// With [`ImageType::U8`], the step that turns each delivered byte into the value an `f32` batch
    /// would hold (`None` with `f32`).
    pub fn deferred_step(&self) -> Option<&ValueStep> {
        match self.inner.config.image_type {
            ImageType::F32 => None,
            ImageType::U8 => self.inner.fused.as_ref().map(Fused::value_step),
        }
    }

    /// Samples per epoch (the subset when one is set).
    pub fn len(&self) -> usize {
        self.inner.n
    }
    pub fn is_empty(&self) -> bool {
        self.inner.n == 0
    }
    /// `[c, h, w]` of one output sample.
    pub fn sample_shape(&self) -> [usize; 3] {
        self.inner.out_shape
    }
    /// Batches one epoch yields.
    pub fn batches_per_epoch(&self) -> usize {
        self.inner.batches_per_epoch()
    }
    /// Batches filled so far by this loader, over all epochs (a batch that was being filled when its
    /// epoch was dropped counts once it is complete).
    pub fn batches_built(&self) -> usize {
        self.inner.built.load(Ordering::SeqCst)
    }

    /// Fills batch `step` of `epoch` on the calling thread's behalf (using the worker pool), reusing
    /// `batch`'s buffers. The same batch the epoch iterator yields at that step; an image of a prepared
    /// split that does not decode is an error naming the split, the shard and the image.
    pub fn fill(&self, epoch: u64, step: usize, batch: &mut Batch) -> Result<()> {
        let order = epoch_order(self.inner.config.seed, epoch, self.inner.n, self.inner.config.shuffle);
        self.inner.fill(&order, epoch, step, batch)
    }

    /// The batches of `epoch` from `start_step` on: exactly the tail of an uninterrupted epoch. A batch
    /// that cannot be filled (an image of a prepared split that does not decode: damage) ends the epoch
    /// with its error: [`EpochBatches::try_next`] returns it, `next` panics with its message.
    pub fn epoch(&self, epoch: u64, start_step: usize) -> EpochBatches {
        let inner = Arc::clone(&self.inner);
        let (tx, rx) = bounded(inner.config.prefetch);
        let cancel = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&cancel);
        let recycled = self.recycle_rx.clone();
        let handle = std::thread::Builder::new()
            .name("wrn-augment-epoch".into())
            .spawn(move || {
                let order = epoch_order(inner.config.seed, epoch, inner.n, inner.config.shuffle);
                for step in start_step..inner.batches_per_epoch() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let mut batch = recycled.try_recv().unwrap_or_default();
                    let filled = inner.fill(&order, epoch, step, &mut batch);
                    let failed = filled.is_err();
                    inner.built.fetch_add(usize::from(!failed), Ordering::SeqCst);
                    if tx.send(filled.map(|()| batch)).is_err() || failed {
                        break;
                    }
                }
            })
            .expect("spawning the epoch producer thread");
        EpochBatches {
            rx: Some(rx),
            handle: Some(handle),
            cancel,
            recycle_tx: self.recycle_tx.clone(),
            wait: Duration::ZERO,
        }
    }
}

impl Inner {
    fn batches_per_epoch(&self) -> usize {
        let bs = self.config.batch_size;
        if self.config.drop_last {
            self.n / bs
        } else {
            self.n.div_ceil(bs)
        }
    }

    /// Fills batch `step` of `epoch`; an image of a prepared split that does not decode is an error.
    fn fill(&self, order: &[usize], epoch: u64, step: usize, batch: &mut Batch) -> Result<()> {
        let bs = self.config.batch_size;
        let start = (step * bs).min(order.len());
        let whole = &order[start..(start + bs).min(order.len())];
        let part = self.config.shard.part(whole.len());
        let indices = &whole[part.clone()];
        let [c, h, w] = self.out_shape;
        batch.shape = [indices.len(), c, h, w];
        batch.indices.clear();
        batch.indices.extend_from_slice(indices);
        batch.labels.clear();
        batch.labels.extend(indices.iter().map(|&i| i64::from(self.samples.label(i))));
        batch.epoch = epoch;
        batch.step = step;
        batch.decode_failures = 0;
        let sample = c * h * w;
        let seed = self.config.seed;
        // What the batch shares, by position, when the pipeline draws per batch.
        let shared =
            (self.pipeline.draws == Draws::PerBatch).then(|| batch_draws(seed, epoch, step as u64, whole.len()));
        let batch_draw = |k: usize| shared.as_ref().map(|d| &d[part.start + k]);
        if let (ImageType::U8, Some(f), Samples::Prepared(s)) = (self.config.image_type, &self.fused, &self.samples) {
            let images = batch.images.u8_mut(indices.len() * sample);
            self.pool.install(|| {
                images.par_chunks_mut(sample).zip(indices.par_iter()).enumerate().for_each_init(
                    Vec::new,
                    |cols, (k, (out, &i))| {
                        let mut rng = sample_rng(seed, epoch, i as u64);
                        let draw = batch_draw(k).map_or(Draw::Sample(&mut rng), Draw::Batch);
                        f.run_bytes(s.image(i), self.in_shape, draw, cols, out)
                    },
                )
            });
            return Ok(());
        }
        let images = batch.images.f32_mut(indices.len() * sample);
        let failures = AtomicUsize::new(0);
        // The first sample in batch order whose source calls a decode failure damage: the batch's error
        // whatever the number of workers.
        let damage: Mutex<Option<(usize, Error)>> = Mutex::new(None);
        self.pool.install(|| {
            images.par_chunks_mut(sample).zip(indices.par_iter()).enumerate().for_each_init(
                Worker::default,
                |wk, (k, (out, &i))| {
                    if let Err(e) = self.sample(i, wk, (&mut sample_rng(seed, epoch, i as u64), batch_draw(k)), out) {
                        out.fill(0.0);
                        match self.samples.decode_failure(i, &e.0) {
                            Some(err) => {
                                let mut first = damage.lock().unwrap_or_else(|p| p.into_inner());
                                if first.as_ref().is_none_or(|(at, _)| k < *at) {
                                    *first = Some((k, err));
                                }
                            }
                            None => {
                                tracing::warn!(
                                    "sample {i} ({}) does not decode ({}); replaced by zeros",
                                    self.samples.name(i),
                                    e.0
                                );
                                failures.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                },
            )
        });
        batch.decode_failures = failures.into_inner();
        match damage.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some((_, err)) => Err(err),
            None => Ok(()),
        }
    }

    /// Writes sample `i`'s values into `out`: by a one-pass kernel where there is one, else loaded into the
    /// worker's image and the ops run one by one.
    fn sample(
        &self,
        i: usize,
        wk: &mut Worker,
        (rng, batch): (&mut SampleRng, Option<&BatchDraw>),
        out: &mut [f32],
    ) -> std::result::Result<(), DecodeError> {
        match (&self.fused, &self.colour, &self.data, &self.samples) {
            (Some(f), _, _, Samples::Prepared(s)) => {
                let draw = batch.map_or(Draw::Sample(rng), Draw::Batch);
                f.run(s.image(i), self.in_shape, draw, &mut wk.cols, out)
            }
            (_, Some(k), Data::Jpeg(d), Samples::Encoded(s)) => {
                let [_, h, w] = self.in_shape;
                let pixels = d.decode(s.encoded(i), &mut wk.decode, rng)?;
                k.run(pixels, [w, h], rng, &mut wk.rows, out);
            }
            _ => {
                self.load(i, wk, rng)?;
                for op in &self.pipeline.ops {
                    match batch {
                        Some(b) => op.apply_in_batch(&mut wk.img, rng, b),
                        None => op.apply(&mut wk.img, rng),
                    }
                }
                out.copy_from_slice(&wk.img.data);
            }
        }
        Ok(())
    }

    /// Loads sample `i` into the worker's image, before the ops.
    fn load(&self, i: usize, wk: &mut Worker, rng: &mut SampleRng) -> std::result::Result<(), DecodeError> {
        let [c, h, w] = self.in_shape;
        match (&self.data, &self.samples) {
            (Data::Pixels, Samples::Prepared(s)) => wk.img.load_hwc_u8(s.image(i), h, w, c),
            (Data::Whitened(v), _) => {
                let len = c * h * w;
                wk.img.load_hwc_f32(&v[i * len..(i + 1) * len], h, w, c)
            }
            (Data::Jpeg(d), Samples::Encoded(s)) => d.run(s.encoded(i), &mut wk.img, &mut wk.decode, rng)?,
            _ => unreachable!("sources and samples are paired by the constructors"),
        }
        Ok(())
    }
}

/// The batches of one epoch, filled ahead of the consumer. Dropping it stops its producer (the batch
/// being filled is finished and discarded) and joins the producer thread.
pub struct EpochBatches {
    rx: Option<Receiver<Result<Batch>>>,
    handle: Option<JoinHandle<()>>,
    cancel: Arc<AtomicBool>,
    recycle_tx: Sender<Batch>,
    wait: Duration,
}

impl EpochBatches {
    /// Time the consumer has spent blocked in `next()` waiting for a batch.
    pub fn wait_time(&self) -> Duration {
        self.wait
    }

    /// Returns a spent batch so its buffers are reused for a later batch (of this or a later epoch).
    pub fn recycle(&self, batch: Batch) {
        let _ = self.recycle_tx.send(batch);
    }

    fn stop(&mut self) -> std::thread::Result<()> {
        self.cancel.store(true, Ordering::SeqCst);
        drop(self.rx.take());
        self.handle.take().map_or(Ok(()), |h| h.join())
    }
}

impl EpochBatches {
    /// The next batch, `None` at the end of the epoch, or the error that ended it (the epoch yields
    /// nothing after it).
    pub fn try_next(&mut self) -> Option<Result<Batch>> {
        let rx = self.rx.as_ref()?;
        let t = Instant::now();
        let got = rx.recv();
        self.wait += t.elapsed();
        match got {
            Ok(Ok(b)) => Some(Ok(b)),
            Ok(Err(e)) => {
                let _ = self.stop();
                Some(Err(e))
            }
            Err(_) => {
                // The producer is done; surface its panic, if any, rather than a silently short epoch.
                if let Err(panic) = self.stop() {
                    std::panic::resume_unwind(panic);
                }
                None
            }
        }
    }
}

impl Iterator for EpochBatches {
    type Item = Batch;
    /// The next batch; panics with the error's message when a batch cannot be filled (damaged prepared
    /// data), rather than ending the epoch short or yielding zeros.
    fn next(&mut self) -> Option<Batch> {
        match self.try_next()? {
            Ok(b) => Some(b),
            Err(e) => panic!("{e}"),
        }
    }
}

impl Drop for EpochBatches {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// The samples per epoch: the subset when one is set and fits.
fn epoch_len(len: usize, name: &std::path::Path, config: &LoaderConfig) -> Result<usize> {
    match config.subset {
        Some(s) if s > len => Err(Error::Config(format!("subset of {s} samples, but {} has {len}", name.display()))),
        Some(s) => Ok(s),
        None => Ok(len),
    }
}
