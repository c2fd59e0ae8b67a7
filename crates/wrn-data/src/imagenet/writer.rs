//! The split writer both ImageNet sources feed ([`super::tars`], [`super::kaggle`]): a source sends
//! its images in chunks of [`Item`]s, in the order they are stored, from its own thread; each chunk is
//! checked and converted in parallel ([`super::convert`]) and appended to the shards in order; the index,
//! sorted by name, is written last. Both sources give the same cache (same names, labels, conversions
//! and report); only the recorded sources differ.
//!
//! An interrupted prepare continues where it stopped: each shard in place is journalled (see
//! [`crate::encoded`]), and a prepare run again from the same files with the same options keeps the
//! journalled shards, has the source pass over the images they hold without reading or decoding them,
//! and writes on from the next shard, into the same index and shards as an uninterrupted prepare. The
//! report and the log say `resumed: N images in K shards kept`.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::time::Instant;

use rayon::prelude::*;
use wrn_progress::{Progress, Task, Unit};

use super::convert::{process, Processed};
use crate::cache::Source;
use crate::encoded::{
    self, Converted, EncodedMeta, EncodedSplit, JournalEntry, PrepareIdentity, Record, Resumed, Shard, ShardWriter,
    Skipped,
};
use crate::error::{Error, IoContext, Result};
use crate::manifest::Manifest;
use crate::prepare::{PrepareOptions, PreparedReport};

/// Images per chunk handed from a source's reader to the parallel check.
pub(crate) const CHUNK: usize = 256;

/// An image read from an archive.
pub(crate) struct Item {
    /// The file name (no folders), as recorded in the index.
    pub name: String,
    pub label: u16,
    pub bytes: Vec<u8>,
}

/// Where a source sends its chunks of images (or the error that stopped it).
pub(crate) type Sender = SyncSender<Result<Vec<Item>>>;

/// One split to write: where its images come from and what to expect of them.
pub(crate) struct SplitJob<'a> {
    pub split: &'a str,
    /// The file the images are read from, named in errors.
    pub source: PathBuf,
    /// About the bytes the prepared split takes (checked against the free space, plus 5%).
    pub bytes: u64,
    /// Images the manifest gives the split (prepared plus left out).
    pub expected: u64,
    /// What the index records it was prepared from.
    pub sources: Vec<Source>,
}

/// The report of a split already prepared from `sources` with the same options, if there is one.
pub(crate) fn kept(
    dir: &Path,
    split: &str,
    sources: &[Source],
    expected: u64,
    opts: &PrepareOptions,
) -> Option<PreparedReport> {
    let index_path = encoded::index_path(dir, split);
    let done = EncodedSplit::open(&index_path).ok()?;
    (done.meta.sources == sources
        && done.meta.max_side == opts.max_side
        && (done.len() + done.meta.skipped.len()) as u64 == expected)
        .then(|| report_prepared(split, index_path.clone(), &done))
}

/// The report of a split found prepared, at `index_path`.
pub(crate) fn report_prepared(split: &str, index_path: PathBuf, done: &EncodedSplit) -> PreparedReport {
    report(split, index_path, &done.meta, done.len(), done.checksum(), None)
}

/// What one run of [`write_split`] did, for its report.
struct Run {
    seconds: f64,
    /// Source images handled in this run (stored or left out).
    handled: u64,
    /// Images and shards kept from an interrupted run.
    kept_images: usize,
    kept_shards: usize,
}

/// Writes one split into `dir`: `read` runs on its own thread and sends the images in chunks, after
/// passing over as many as its first argument says unread (those in the shards kept from an
/// interrupted run with the same identity); each chunk is checked, converted and appended to the
/// shards, and each shard in place is journalled; the index, sorted by name, is written last.
///
/// On an error the journalled shards stay for the next run and any other shard is removed; when the
/// source itself proves wrong (image count, a name twice, its SHA-256) everything is removed. The journal goes
/// once the index is written, so nothing that looks complete is left before that.
pub(crate) fn write_split(
    job: &SplitJob,
    dir: &Path,
    classes: &[String],
    manifest: &Manifest,
    opts: &PrepareOptions,
    read: impl FnOnce(u64, &Sender) -> Result<()> + Send,
) -> Result<PreparedReport> {
    let started = Instant::now();
    let index_path = encoded::index_path(dir, job.split);
    let identity = PrepareIdentity {
        journal_version: encoded::JOURNAL_VERSION,
        index_version: encoded::VERSION,
        dataset: manifest.name.clone(),
        split: job.split.to_string(),
        sources: job.sources.clone(),
        classes: classes.to_vec(),
        max_side: opts.max_side,
        quality: opts.quality,
        shard_bytes: opts.shard_bytes,
    };
    let resumed = start(dir, &index_path, &identity, job.expected)?;
    let (kept_images, kept_shards, skip) = (resumed.records.len(), resumed.shards.len(), resumed.consumed);
    let kept_bytes: u64 = resumed.shards.iter().map(|s| s.size).sum();
    crate::space::ensure(
        dir,
        (job.bytes + job.bytes / 20).saturating_sub(kept_bytes),
        &format!("the prepared {} split of {}", job.split, manifest.name),
    )?;
    let task = progress_task(opts.progress, &identity, job.expected, skip, kept_shards > 0);
    let mut shards = Shards::resume(dir, identity, opts.stop_after_shards, resumed)?;
    let result = convert_all(&mut shards, job, opts, task.as_ref(), skip, read);
    match &result {
        Ok(()) => task.finish(),
        Err(e) => task.abandon(&e.to_string()),
    }
    result.map_err(|e| shards.interrupted(e))?;
    let (meta, images, sha256) = shards.write_index(job, &index_path)?;
    let seconds = started.elapsed().as_secs_f64();
    let handled = (images + meta.skipped.len()) as u64 - skip;
    let resumed_log = if kept_shards > 0 {
        format!(" (resumed: {kept_images} images in {kept_shards} shards kept)")
    } else {
        String::new()
    };
    tracing::info!(
        "prepared {} {}: {} images in {seconds:.1} s ({:.0} images/s){resumed_log}",
        manifest.name,
        job.split,
        handled,
        handled as f64 / seconds.max(1e-9)
    );
    let run = Run { seconds, handled, kept_images, kept_shards };
    Ok(report(job.split, index_path, &meta, images, sha256, Some(run)))
}

/// Clears the way for writing `identity`'s split into `dir` and reads what an interrupted run left
/// there. The old index goes first, so shards being replaced never sit under a complete-looking index.
fn start(dir: &Path, index_path: &Path, identity: &PrepareIdentity, expected: u64) -> Result<Resumed> {
    std::fs::create_dir_all(dir).at(dir)?;
    if index_path.exists() {
        std::fs::remove_file(index_path).at(index_path)?;
    }
    let (resumed, discarded) = encoded::resume(dir, identity);
    if let Some(note) = discarded {
        tracing::warn!("preparing {} {}: {note}", identity.dataset, identity.split);
    }
    if !resumed.shards.is_empty() {
        tracing::info!(
            "preparing {} {}: resumed: {} images in {} shards kept, continuing after {} of {expected} source \
             images",
            identity.dataset,
            identity.split,
            resumed.records.len(),
            resumed.shards.len(),
            resumed.consumed,
        );
    }
    Ok(resumed)
}

/// The task counting the split's images, already at the `skip` images kept.
fn progress_task(
    progress: &dyn Progress,
    identity: &PrepareIdentity,
    expected: u64,
    skip: u64,
    resumed: bool,
) -> Box<dyn Task> {
    let resumed_note = if resumed { " (resumed)" } else { "" };
    let label = format!("preparing {} {}{resumed_note}", identity.dataset, identity.split);
    progress.task(&label, Unit::Items("images"), Some(expected), skip)
}

/// Runs `read` on its own thread, from image `skip` on, and adds every image it sends to `shards`,
/// each chunk checked and converted in parallel.
fn convert_all(
    shards: &mut Shards,
    job: &SplitJob,
    opts: &PrepareOptions,
    task: &dyn Task,
    skip: u64,
    read: impl FnOnce(u64, &Sender) -> Result<()> + Send,
) -> Result<()> {
    let (tx, rx) = sync_channel::<Result<Vec<Item>>>(4);
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || {
            if let Err(e) = read(skip, &tx) {
                let _ = tx.send(Err(e));
            }
        });
        // `rx` moves into the closure, so an early return drops it and unblocks the reader.
        let consumed = (|| -> Result<()> {
            for chunk in rx {
                let chunk = chunk?;
                let done: Vec<Processed> =
                    chunk.par_iter().map(|it| process(&it.name, &it.bytes, opts.max_side, opts.quality)).collect();
                for (item, p) in chunk.into_iter().zip(done) {
                    task.advance(1);
                    shards.add(item, p, &job.source)?;
                }
            }
            Ok(())
        })();
        let _ = reader.join();
        consumed
    })
}

/// The shards of the split being written and what they hold so far, kept ones included.
struct Shards<'a> {
    dir: &'a Path,
    identity: PrepareIdentity,
    writer: ShardWriter,
    records: Vec<Record>,
    skipped: Vec<Skipped>,
    converted: Vec<Converted>,
    resized: u64,
    /// Where the entries of the next journal entry start in the lists above.
    since: (usize, usize, usize, u64),
    /// The shard files journalled, kept ones first.
    journalled: Vec<String>,
    kept_shards: usize,
    /// Stop once this many shards are journalled in this run ([`PrepareOptions::stop_after_shards`]).
    stop_after: Option<usize>,
}

impl<'a> Shards<'a> {
    /// Continues after what `resumed` keeps.
    fn resume(dir: &'a Path, identity: PrepareIdentity, stop_after: Option<usize>, resumed: Resumed) -> Result<Self> {
        let writer = ShardWriter::resume(dir, &identity.split, identity.shard_bytes, resumed.shards)?;
        let journalled: Vec<String> = writer.shards().iter().map(|s| s.file.clone()).collect();
        Ok(Shards {
            dir,
            since: (resumed.records.len(), resumed.skipped.len(), resumed.converted.len(), resumed.resized),
            kept_shards: journalled.len(),
            journalled,
            identity,
            writer,
            records: resumed.records,
            skipped: resumed.skipped,
            converted: resumed.converted,
            resized: resumed.resized,
            stop_after,
        })
    }

    /// Adds one checked image of `source`: left out with its reason, or appended to the shards (the
    /// shard it fills closed and journalled first).
    fn add(&mut self, item: Item, p: Processed, source: &Path) -> Result<()> {
        if let Some(reason) = p.skipped.map(|r| r.trim().to_string()) {
            tracing::warn!("{}: {} left out: {reason}", source.display(), item.name);
            self.skipped.push(Skipped { name: item.name, reason });
            return Ok(());
        }
        let bytes = p.bytes.as_deref().unwrap_or(&item.bytes);
        if let Some(shard) = self.writer.close_if_full(bytes.len() as u64)?.cloned() {
            self.journal(shard)?;
        }
        let (shard, offset) = self.writer.append(bytes)?;
        if let Some(from) = p.converted {
            self.converted.push(Converted { name: item.name.clone(), from });
        }
        self.resized += u64::from(p.flags & encoded::FLAG_RESIZED != 0);
        self.records.push(Record {
            shard,
            label: item.label,
            flags: p.flags,
            offset,
            length: bytes.len() as u32,
            width: p.width.min(65535) as u16,
            height: p.height.min(65535) as u16,
            name: item.name,
        });
        Ok(())
    }

    /// Journals `shard`, just put in place: what it holds and how far through the source it ends. Stops
    /// with [`Error::Stopped`] once as many shards as asked are journalled in this run.
    fn journal(&mut self, shard: Shard) -> Result<()> {
        let (records, skipped, converted, resized) = self.since;
        let entry = JournalEntry {
            identity: self.identity.clone(),
            shard,
            consumed: (self.records.len() + self.skipped.len()) as u64,
            records: self.records[records..].to_vec(),
            skipped: self.skipped[skipped..].to_vec(),
            converted: self.converted[converted..].to_vec(),
            resized: self.resized - resized,
        };
        encoded::write_journal(self.dir, self.journalled.len(), &entry)?;
        self.journalled.push(entry.shard.file);
        self.since = (self.records.len(), self.skipped.len(), self.converted.len(), self.resized);
        if self.stop_after.is_some_and(|n| self.journalled.len() - self.kept_shards >= n) {
            return Err(Error::Stopped {
                dataset: self.identity.dataset.clone(),
                split: self.identity.split.clone(),
                shards: self.journalled.len(),
            });
        }
        Ok(())
    }

    /// After an interruption: the journalled shards stay for the next run, any other shard goes. When
    /// the source proved changed on disk, nothing stays: the shards hold what the changed file gave.
    fn interrupted(&self, e: Error) -> Error {
        match e {
            Error::SourceChanged { .. } => remove_progress(self.dir, &self.identity.split, &[]),
            _ => remove_shards(self.dir, &self.identity.split, &self.journalled),
        }
        e
    }

    /// Closes the last shard, checks the images against `job` and writes the index to `index_path`,
    /// sorted by name, then removes the journal. Returns the index's metadata, its number of images
    /// and its SHA-256. When the source proves wrong (image count, a name twice), nothing stays.
    fn write_index(self, job: &SplitJob, index_path: &Path) -> Result<(EncodedMeta, usize, String)> {
        let Shards { dir, identity, writer, mut records, mut skipped, mut converted, resized, journalled, .. } = self;
        let split = identity.split.as_str();
        let interrupted = |e: Error| {
            remove_shards(dir, split, &journalled);
            e
        };
        let wrong = |e: Error| {
            remove_progress(dir, split, &[]);
            e
        };
        let shards = writer.finish().map_err(interrupted)?;
        let total = records.len() as u64 + skipped.len() as u64;
        if total != job.expected {
            return Err(wrong(Error::Format {
                path: job.source.clone(),
                detail: format!("{total} images, the manifest says {} for `{split}`", job.expected),
            }));
        }
        records.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(w) = records.windows(2).find(|w| w[0].name == w[1].name) {
            return Err(wrong(Error::Archive {
                path: job.source.clone(),
                detail: format!("`{}` appears twice", w[0].name),
            }));
        }
        skipped.sort_by(|a, b| a.name.cmp(&b.name));
        converted.sort_by(|a, b| a.name.cmp(&b.name));
        let meta = EncodedMeta {
            dataset: identity.dataset.clone(),
            split: split.to_string(),
            classes: identity.classes.clone(),
            sources: identity.sources.clone(),
            shards,
            skipped,
            converted,
            max_side: identity.max_side,
            resized,
        };
        let sha256 = encoded::write_index(index_path, &meta, &records).map_err(interrupted)?;
        let keep: Vec<String> = meta.shards.iter().map(|s| s.file.clone()).collect();
        remove_progress(dir, split, &keep);
        Ok((meta, records.len(), sha256))
    }
}

/// Removes the shards of `split` in `dir` that are not in `keep`.
fn remove_shards(dir: &Path, split: &str, keep: &[String]) {
    encoded::remove_split_files(dir, split, encoded::SHARD_EXTENSION, keep);
}

/// Removes the journal of `split` in `dir` and the shards that are not in `keep`.
fn remove_progress(dir: &Path, split: &str, keep: &[String]) {
    encoded::remove_split_files(dir, split, encoded::JOURNAL_EXTENSION, &[]);
    remove_shards(dir, split, keep);
}

fn report(
    split: &str,
    path: PathBuf,
    meta: &EncodedMeta,
    images: usize,
    sha256: String,
    run: Option<Run>,
) -> PreparedReport {
    let mut notes: Vec<String> =
        meta.converted.iter().map(|c| format!("converted {} ({} -> RGB JPEG)", c.name, c.from)).collect();
    notes.extend(meta.skipped.iter().map(|s| format!("left out {}: {}", s.name, s.reason)));
    if meta.resized > 0 {
        notes.push(format!("{} images re-encoded to fit {} pixels", meta.resized, meta.max_side.unwrap_or(0)));
    }
    match run {
        Some(run) if run.kept_shards > 0 => {
            notes.push(format!("resumed: {} images in {} shards kept", run.kept_images, run.kept_shards));
            notes.push(format!(
                "{:.0} images/s ({} more images in {:.2} s)",
                run.handled as f64 / run.seconds.max(1e-9),
                run.handled,
                run.seconds
            ));
        }
        Some(run) => notes.push(format!(
            "{:.0} images/s ({images} images in {:.2} s)",
            run.handled as f64 / run.seconds.max(1e-9),
            run.seconds
        )),
        None => notes.push("already prepared from the same files".into()),
    }
    PreparedReport { split: split.into(), path, images, sha256, notes }
}
