//! The prepared cache of encoded images (contract 1 for ImageNet): per split, packed shards of JPEG bytes
//! and one index, written once by `wrn data prepare` and memory-mapped read-only by the augmentation
//! stage, which decodes each sample itself.
//!
//! ```text
//! <data>/<dataset>/prepared/<split>.wrni          the index (below); the split is complete only when it exists
//! <data>/<dataset>/prepared/<split>-00000.wrns    shard 0: JPEG files back to back, no header, no padding
//! <data>/<dataset>/prepared/<split>-00001.wrns    ...
//! <data>/<dataset>/prepared/<split>-00000.wrnp    journal entry of shard 0, only while the split is being prepared
//! ```
//!
//! Index format version 1, all integers little-endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `b"WRNJPEG\0"` |
//! | 8 | 4 | format version (`1`) |
//! | 12 | 4 | record size in bytes (`32`) |
//! | 16 | 8 | `n`, the number of images |
//! | 24 | 4 | number of shards |
//! | 28 | 4 | `meta_len`, bytes of the JSON metadata that follows the header |
//! | 32 | 8 | `records_offset` (multiple of 8) |
//! | 40 | 8 | `names_offset` |
//! | 48 | 8 | `names_len` |
//! | 56 | 8 | reserved, `0` |
//! | 64 | `meta_len` | UTF-8 JSON [`EncodedMeta`]: dataset, split, class names, sources, shards (file, size, SHA-256), images left out and why, files converted and why |
//! | `records_offset` | `32n` | one record per image, sorted by name (below) |
//! | `names_offset` | `names_len` | the images' original names, UTF-8, back to back |
//! | `names_offset + names_len` | 32 | SHA-256 of every byte before it |
//!
//! A record: `shard: u32`, `label: u16` (class index), `flags: u16` (bit 0: converted to RGB JPEG at
//! prepare time, bit 1: re-encoded to a smaller size), `offset: u64` and `length: u32` (the JPEG's bytes
//! in the shard), `width: u16`, `height: u16` (of the stored JPEG, saturated at 65535), `name_offset: u32`
//! and `name_len: u32` (within the names section).
//!
//! The shards are written to temporary names and renamed, then the index likewise, last: a prepare that
//! stops early leaves no index, so nothing that looks complete.
//!
//! Each shard, once renamed into place, gets a journal entry `<split>-NNNNN.wrnp`, also written to a
//! temporary name and renamed: JSON [`JournalEntry`] with the shard's name, size and SHA-256, its
//! records, the images left out, converted and re-encoded since the previous shard's end, how many
//! source images have been taken up to its end, and the [`PrepareIdentity`] (dataset, split, classes,
//! the source files with their verified SHA-256, `--max-side`, JPEG quality, shard size, format
//! versions). One file per shard, so the journal grows by what each shard adds and is never rewritten.
//! A prepare run again reads it with [`resume`]: entries 0, 1, ... are kept while each has the same
//! identity, continues the one before and its shard is in place at its recorded size (a missing or
//! truncated shard ends what is kept; the shards after it are redone); an entry of other inputs or
//! options, or one that does not read, is discarded with a note and the split starts over from there.
//! The preparation continues at the next shard and source image, so the index and shards are those of
//! an uninterrupted prepare. The journal is removed once the index is written.
//!
//! [`EncodedSplit::open`], what everything that reads the images uses, checks the header, exact sizes,
//! every record's bounds and label and each shard's size, and re-hashes the index (small: about 80 MB for
//! ImageNet's training split), so a changed label is refused before a batch is made; the shards (140 GB)
//! are hashed only by [`EncodedSplit::verify`]. Every image decoded when the split was prepared, so one
//! that does not decode while training is damage: [`EncodedSplit::damaged`] is the error that stops the
//! run. [`EncodedSplit::open_unhashed`] skips the index's hash, for listings. A reader refuses any other
//! version.

use std::io::Write;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cache::Source;
use crate::error::{Error, IoContext, Result};

pub const MAGIC: &[u8; 8] = b"WRNJPEG\0";
pub const VERSION: u32 = 1;
pub const HEADER_LEN: usize = 64;
pub const RECORD_LEN: usize = 32;
pub const INDEX_EXTENSION: &str = "wrni";
pub const SHARD_EXTENSION: &str = "wrns";
/// The journal of a preparation in progress: one entry per shard in place.
pub const JOURNAL_EXTENSION: &str = "wrnp";
/// Version of the journal entries' JSON.
pub const JOURNAL_VERSION: u32 = 1;
/// Record flag: the original was not an RGB JPEG and was converted at prepare time.
pub const FLAG_CONVERTED: u16 = 1;
/// Record flag: re-encoded to a smaller size (`--max-side`).
pub const FLAG_RESIZED: u16 = 2;

/// A shard of an encoded split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// File name, beside the index.
    pub file: String,
    pub size: u64,
    pub sha256: String,
}

/// An original file that was not an RGB JPEG and was converted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Converted {
    pub name: String,
    /// What it was: `CMYK JPEG`, `grayscale JPEG`, `PNG named .JPEG`, ...
    pub from: String,
}

/// An original file left out of the split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub name: String,
    pub reason: String,
}

/// The JSON metadata of an index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncodedMeta {
    pub dataset: String,
    pub split: String,
    /// Class names (ImageNet: WNIDs) in label order.
    pub classes: Vec<String>,
    /// The files the split was prepared from, with their SHA-256.
    pub sources: Vec<Source>,
    pub shards: Vec<Shard>,
    /// Images of the source left out (corrupt), by name.
    pub skipped: Vec<Skipped>,
    /// Images converted to RGB JPEG (CMYK, grayscale, PNG), by name.
    pub converted: Vec<Converted>,
    /// `--max-side`, when images were re-encoded to fit it.
    pub max_side: Option<u32>,
    /// Images re-encoded to fit `max_side`.
    pub resized: u64,
}

/// One image of an encoded split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub shard: u32,
    pub label: u16,
    pub flags: u16,
    pub offset: u64,
    pub length: u32,
    pub width: u16,
    pub height: u16,
    pub name: String,
}

/// The path of a split's index in a dataset's `prepared/` folder.
pub fn index_path(prepared_dir: &Path, split: &str) -> PathBuf {
    prepared_dir.join(format!("{split}.{INDEX_EXTENSION}"))
}

/// The file name of shard `k` of a split.
pub fn shard_name(split: &str, k: usize) -> String {
    format!("{split}-{k:05}.{SHARD_EXTENSION}")
}

/// The file name of the journal entry of shard `k` of a split.
pub fn journal_name(split: &str, k: usize) -> String {
    format!("{split}-{k:05}.{JOURNAL_EXTENSION}")
}

/// Writes shards one after the other, each to a temporary file renamed into place once full.
pub struct ShardWriter {
    dir: PathBuf,
    split: String,
    max_bytes: u64,
    current: Option<(wrn_fs::AtomicFile, std::io::BufWriter<std::fs::File>, Sha256, u64)>,
    shards: Vec<Shard>,
}

impl ShardWriter {
    /// Starts writing shards of `split` into `dir`, starting a new shard once one holds `max_bytes`.
    pub fn new(dir: &Path, split: &str, max_bytes: u64) -> Result<ShardWriter> {
        ShardWriter::resume(dir, split, max_bytes, Vec::new())
    }

    /// Continues after the shards `kept` (already in place in `dir`, numbered from 0): the next shard
    /// written is number `kept.len()`.
    pub fn resume(dir: &Path, split: &str, max_bytes: u64, kept: Vec<Shard>) -> Result<ShardWriter> {
        std::fs::create_dir_all(dir).at(dir)?;
        Ok(ShardWriter { dir: dir.into(), split: split.into(), max_bytes, current: None, shards: kept })
    }

    /// Closes the open shard when a file of `len` bytes would take it past the limit (a shard holds at
    /// least one file); returns the shard closed, now in place under its name.
    pub fn close_if_full(&mut self, len: u64) -> Result<Option<&Shard>> {
        if self.current.as_ref().is_some_and(|c| c.3 > 0 && c.3 + len > self.max_bytes) {
            self.finish_shard()?;
            return Ok(self.shards.last());
        }
        Ok(None)
    }

    /// The shards closed so far, kept ones included.
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// Appends one file; returns (shard, offset).
    pub fn append(&mut self, bytes: &[u8]) -> Result<(u32, u64)> {
        self.close_if_full(bytes.len() as u64)?;
        if self.current.is_none() {
            let tmp = wrn_fs::AtomicFile::create(&self.dir.join(shard_name(&self.split, self.shards.len())))?;
            let file = tmp.as_file().try_clone().at(tmp.path())?;
            self.current = Some((tmp, std::io::BufWriter::with_capacity(1 << 20, file), Sha256::new(), 0));
        }
        let (tmp, out, hash, len) = self.current.as_mut().expect("a shard is open");
        out.write_all(bytes).at(tmp.path())?;
        hash.update(bytes);
        let offset = *len;
        *len += bytes.len() as u64;
        Ok((self.shards.len() as u32, offset))
    }

    fn finish_shard(&mut self) -> Result<()> {
        let Some((tmp, mut out, hash, size)) = self.current.take() else { return Ok(()) };
        out.flush().at(tmp.path())?;
        drop(out);
        tmp.commit()?;
        let file = shard_name(&self.split, self.shards.len());
        self.shards.push(Shard { file, size, sha256: format!("{:x}", hash.finalize()) });
        Ok(())
    }

    /// Closes the last shard; returns every shard written.
    pub fn finish(mut self) -> Result<Vec<Shard>> {
        self.finish_shard()?;
        Ok(std::mem::take(&mut self.shards))
    }
}

/// Writes the index of a split atomically to `path` (the shards are already in place); returns its
/// SHA-256 (the trailer) as hex. `records` are written in the order given.
pub fn write_index(path: &Path, meta: &EncodedMeta, records: &[Record]) -> Result<String> {
    let err = |detail: String| Error::Cache { path: path.into(), detail };
    let mut names = Vec::new();
    let mut table = Vec::with_capacity(records.len() * RECORD_LEN);
    for (i, r) in records.iter().enumerate() {
        if usize::from(r.label) >= meta.classes.len() {
            return Err(err(format!("label {} of image {i} is not below the {} classes", r.label, meta.classes.len())));
        }
        let shard = meta.shards.get(r.shard as usize).ok_or_else(|| err(format!("image {i}: no shard {}", r.shard)))?;
        if r.offset + u64::from(r.length) > shard.size {
            return Err(err(format!("image {i} runs past the end of {}", shard.file)));
        }
        table.extend(r.shard.to_le_bytes());
        table.extend(r.label.to_le_bytes());
        table.extend(r.flags.to_le_bytes());
        table.extend(r.offset.to_le_bytes());
        table.extend(r.length.to_le_bytes());
        table.extend(r.width.to_le_bytes());
        table.extend(r.height.to_le_bytes());
        table.extend((names.len() as u32).to_le_bytes());
        table.extend((r.name.len() as u32).to_le_bytes());
        names.extend(r.name.as_bytes());
    }
    if names.len() > u32::MAX as usize {
        return Err(err("names exceed 4 GiB".into()));
    }
    let json = serde_json::to_vec(meta).expect("metadata serialises");
    let records_offset = (HEADER_LEN + json.len()).div_ceil(8) * 8;
    let names_offset = records_offset + table.len();
    let mut bytes = Vec::with_capacity(names_offset + names.len() + 32);
    bytes.extend(MAGIC);
    bytes.extend(VERSION.to_le_bytes());
    bytes.extend((RECORD_LEN as u32).to_le_bytes());
    bytes.extend((records.len() as u64).to_le_bytes());
    bytes.extend((meta.shards.len() as u32).to_le_bytes());
    bytes.extend((json.len() as u32).to_le_bytes());
    bytes.extend((records_offset as u64).to_le_bytes());
    bytes.extend((names_offset as u64).to_le_bytes());
    bytes.extend((names.len() as u64).to_le_bytes());
    bytes.extend(0u64.to_le_bytes());
    bytes.extend(&json);
    bytes.resize(records_offset, 0);
    bytes.extend(&table);
    bytes.extend(&names);
    let digest = Sha256::digest(&bytes);
    bytes.extend(digest);

    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).at(dir)?;
    crate::space::ensure(dir, bytes.len() as u64, &format!("the index {}", path.display()))?;
    wrn_fs::atomic_write(path, &bytes)?;
    Ok(format!("{digest:x}"))
}

/// What a split is prepared from and how: a journal is used only by a preparation of the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrepareIdentity {
    pub journal_version: u32,
    pub index_version: u32,
    pub dataset: String,
    pub split: String,
    /// The source files with their verified SHA-256 (the Kaggle zip: its layout digest).
    pub sources: Vec<Source>,
    /// Class names in label order.
    pub classes: Vec<String>,
    pub max_side: Option<u32>,
    pub quality: u8,
    pub shard_bytes: u64,
}

/// The journal entry of one shard in place: what it holds and how far through the source it ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub identity: PrepareIdentity,
    pub shard: Shard,
    /// Source images taken (stored or left out) from the start of the split to this shard's end.
    pub consumed: u64,
    /// The shard's images, in the order written.
    pub records: Vec<Record>,
    /// Images left out, converted and re-encoded since the previous shard's end.
    pub skipped: Vec<Skipped>,
    pub converted: Vec<Converted>,
    pub resized: u64,
}

/// Writes the journal entry of shard `k` of `split` atomically into `dir` (the shard is in place).
pub fn write_journal(dir: &Path, k: usize, entry: &JournalEntry) -> Result<()> {
    let path = dir.join(journal_name(&entry.identity.split, k));
    let json = serde_json::to_vec(entry).expect("a journal entry serialises");
    Ok(wrn_fs::atomic_write(&path, &json)?)
}

/// What the journal of an interrupted preparation lets a new one keep.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resumed {
    /// The shards kept, numbered from 0.
    pub shards: Vec<Shard>,
    pub records: Vec<Record>,
    pub skipped: Vec<Skipped>,
    pub converted: Vec<Converted>,
    pub resized: u64,
    /// Source images the kept shards cover (stored or left out): the next preparation starts after them.
    pub consumed: u64,
}

/// Reads the journal of `identity`'s split in `dir`: entry 0, 1, ... are kept while each reads, has the
/// same identity, continues the one before and its shard is in place with the recorded size; a missing
/// or truncated shard ends what is kept. Every other journal entry of the split is removed. Returns what
/// is kept and, when an entry was discarded, why (for the log; never an error).
pub fn resume(dir: &Path, identity: &PrepareIdentity) -> (Resumed, Option<String>) {
    let split = identity.split.as_str();
    let mut kept = Resumed::default();
    let mut note = None;
    loop {
        let k = kept.shards.len();
        let path = dir.join(journal_name(split, k));
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => {
                note = Some(format!("{}: {e}; preparing from shard {k}", path.display()));
                break;
            }
        };
        let why = match serde_json::from_slice::<JournalEntry>(&bytes) {
            Err(e) => Some(format!("unreadable ({e})")),
            Ok(entry) => match check_entry(dir, k, &entry, identity, kept.consumed) {
                Ok(()) => {
                    kept.consumed = entry.consumed;
                    kept.records.extend(entry.records);
                    kept.skipped.extend(entry.skipped);
                    kept.converted.extend(entry.converted);
                    kept.resized += entry.resized;
                    kept.shards.push(entry.shard);
                    continue;
                }
                Err(why) => Some(why),
            },
        };
        if let Some(why) = why {
            let then = if k == 0 { "starting the split over".to_string() } else { format!("preparing from shard {k}") };
            note = Some(format!("journal {} discarded: {why}; {then}", path.display()));
        }
        break;
    }
    let keep: Vec<String> = (0..kept.shards.len()).map(|k| journal_name(split, k)).collect();
    remove_split_files(dir, split, JOURNAL_EXTENSION, &keep);
    (kept, note)
}

fn check_entry(
    dir: &Path,
    k: usize,
    entry: &JournalEntry,
    identity: &PrepareIdentity,
    consumed: u64,
) -> std::result::Result<(), String> {
    if entry.identity != *identity {
        return Err("written by a preparation from other files or with other options".into());
    }
    let shard = &entry.shard;
    if shard.file != shard_name(&identity.split, k) {
        return Err(format!("it describes {}, expected {}", shard.file, shard_name(&identity.split, k)));
    }
    let taken = consumed + entry.records.len() as u64 + entry.skipped.len() as u64;
    let inside = |r: &Record| r.shard as usize == k && r.offset + u64::from(r.length) <= shard.size;
    if entry.consumed != taken || !entry.records.iter().all(inside) {
        return Err("its records do not add up".into());
    }
    match std::fs::metadata(dir.join(&shard.file)) {
        Ok(m) if m.len() == shard.size => Ok(()),
        Ok(m) => {
            Err(format!("{} is {} bytes, the journal says {} (truncated or replaced)", shard.file, m.len(), shard.size))
        }
        Err(e) => Err(format!("{}: {e}", shard.file)),
    }
}

/// Removes the files `<split>-*.<extension>` in `dir` whose names are not in `keep`.
pub fn remove_split_files(dir: &Path, split: &str, extension: &str, keep: &[String]) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let suffix = format!(".{extension}");
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let ours = name.strip_prefix(&format!("{split}-")).is_some_and(|r| r.ends_with(&suffix));
        if ours && !keep.contains(&name) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// An encoded split: its index and shards, memory-mapped read-only.
pub struct EncodedSplit {
    path: PathBuf,
    index: Mmap,
    shards: Vec<Mmap>,
    pub meta: EncodedMeta,
    n: usize,
    records: usize,
    names: usize,
}

fn map(path: &Path) -> Result<Mmap> {
    let file = std::fs::File::open(path).at(path)?;
    // SAFETY: opened read-only; prepare replaces files by rename and never writes them in place.
    unsafe { Mmap::map(&file) }.at(path)
}

/// The advice that ends every damage error: the commands that check and rebuild a split.
fn rebuild_advice(dataset: &str, index: &Path) -> String {
    format!(
        "run `wrn data verify {dataset}` to check the index and every shard, then delete {} and run \
         `wrn data prepare {dataset}` to prepare the split again",
        index.display()
    )
}

/// Maps the shards `meta` lists, beside the index at `index`, each checked against its recorded size.
fn map_shards(index: &Path, meta: &EncodedMeta) -> Result<Vec<Mmap>> {
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut shards = Vec::with_capacity(meta.shards.len());
    for s in &meta.shards {
        if s.file.contains('/') || !crate::manifest::is_safe_relative(&s.file) {
            let detail = format!("shard name `{}` is not a plain file name", s.file);
            return Err(Error::Cache { path: index.into(), detail });
        }
        let p = dir.join(&s.file);
        let m = map(&p)?;
        if m.len() as u64 != s.size {
            let detail = format!(
                "{} bytes, the index says {} (truncated or replaced); {}",
                m.len(),
                s.size,
                rebuild_advice(&meta.dataset, index)
            );
            return Err(Error::Cache { path: p, detail });
        }
        shards.push(m);
    }
    Ok(shards)
}

impl EncodedSplit {
    /// Maps the index at `path` and its shards, checks the header, sizes and every record, and re-hashes
    /// the index against its trailer (the shards' checksums only by [`EncodedSplit::verify`]): an index
    /// whose bytes are not those prepared is refused, with the commands that check and rebuild it.
    pub fn open(path: &Path) -> Result<EncodedSplit> {
        let split = EncodedSplit::open_unhashed(path)?;
        match split.verify_index() {
            Err(Error::Checksum { expected, actual, .. }) => Err(Error::Cache {
                path: path.into(),
                detail: format!(
                    "its SHA-256 is {actual}, its trailer records {expected}: the index changed after it was \
                     prepared (damaged on disk or written over), and training on it would read wrong labels or \
                     images; {}",
                    rebuild_advice(&split.meta.dataset, path)
                ),
            }),
            other => other.map(|()| split),
        }
    }

    /// The error for image `i`, which does not decode (`why`) although it did when the split was
    /// prepared: names the split, the shard and the image, and the commands that check and rebuild it.
    pub fn damaged(&self, i: usize, why: &str) -> Error {
        let r = self.raw(i);
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let shard =
            self.meta.shards.get(r.shard as usize).map_or_else(|| format!("shard {}", r.shard), |s| s.file.clone());
        Error::Cache {
            path: dir.join(&shard),
            detail: format!(
                "image {} (#{i} of the {} split of {}, {} bytes at offset {}) does not decode ({why}), though every \
                 image decoded when the split was prepared: the shard is damaged; {}",
                self.name(i),
                self.meta.split,
                self.meta.dataset,
                r.length,
                r.offset,
                rebuild_advice(&self.meta.dataset, &self.path)
            ),
        }
    }

    /// Maps the index at `path` and its shards, and checks the header, sizes and every record, without
    /// the checksums (see [`EncodedSplit::verify`]): for listings and status, which must not read every
    /// byte. Training opens with [`EncodedSplit::open`].
    pub fn open_unhashed(path: &Path) -> Result<EncodedSplit> {
        let err = |detail: String| Error::Cache { path: path.into(), detail };
        let index = map(path)?;
        if index.len() < HEADER_LEN + 32 {
            return Err(err(format!("{} bytes, shorter than a header", index.len())));
        }
        if &index[0..8] != MAGIC {
            return Err(err("not a wrn encoded-image index (bad magic)".into()));
        }
        let u32_at = |o: usize| u32::from_le_bytes(index[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(index[o..o + 8].try_into().unwrap());
        if u32_at(8) != VERSION {
            return Err(err(format!(
                "format version {}, this build reads version {VERSION}; prepare again",
                u32_at(8)
            )));
        }
        if u32_at(12) as usize != RECORD_LEN {
            return Err(err(format!("record size {}, expected {RECORD_LEN}", u32_at(12))));
        }
        let (n, shard_count, meta_len) = (u64_at(16), u32_at(24) as u64, u64::from(u32_at(28)));
        let (records, names, names_len) = (u64_at(32), u64_at(40), u64_at(48));
        let expected_records = (HEADER_LEN as u64 + meta_len).div_ceil(8) * 8;
        let sizes = n.checked_mul(RECORD_LEN as u64).and_then(|t| t.checked_add(records));
        if records != expected_records || sizes != Some(names) {
            return Err(err("section offsets disagree with the header sizes".into()));
        }
        if names.checked_add(names_len).and_then(|e| e.checked_add(32)) != Some(index.len() as u64) {
            return Err(err(format!(
                "{} bytes, expected {} for {n} images (truncated or damaged)",
                index.len(),
                names.saturating_add(names_len).saturating_add(32)
            )));
        }
        let meta: EncodedMeta = serde_json::from_slice(&index[HEADER_LEN..HEADER_LEN + meta_len as usize])
            .map_err(|e| err(format!("metadata: {e}")))?;
        if meta.shards.len() as u64 != shard_count {
            return Err(err(format!("{} shards in the metadata, {shard_count} in the header", meta.shards.len())));
        }
        let shards = map_shards(path, &meta)?;
        let split = EncodedSplit {
            path: path.into(),
            index,
            shards,
            meta,
            n: n as usize,
            records: records as usize,
            names: names as usize,
        };
        for i in 0..split.n {
            let r = split.raw(i);
            if usize::from(r.label) >= split.meta.classes.len() {
                return Err(err(format!("label {} of image {i} is out of range", r.label)));
            }
            let fits =
                split.shards.get(r.shard as usize).is_some_and(|s| r.offset + u64::from(r.length) <= s.len() as u64);
            if !fits {
                return Err(err(format!("image {i} points outside its shard")));
            }
            if r.name_end > names_len as usize || r.name_start > r.name_end {
                return Err(err(format!("the name of image {i} runs past the names section")));
            }
        }
        Ok(split)
    }

    fn raw(&self, i: usize) -> RawRecord {
        assert!(i < self.n, "image {i} of {}", self.n);
        let b = &self.index[self.records + i * RECORD_LEN..self.records + (i + 1) * RECORD_LEN];
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let name_start = u32_at(24) as usize;
        RawRecord {
            shard: u32_at(0),
            label: u16_at(4),
            flags: u16_at(6),
            offset: u64::from_le_bytes(b[8..16].try_into().unwrap()),
            length: u32_at(16),
            width: u16_at(20),
            height: u16_at(22),
            name_start,
            name_end: name_start.saturating_add(u32_at(28) as usize),
        }
    }

    /// Re-hashes the index and compares with its trailer.
    fn verify_index(&self) -> Result<()> {
        let end = self.index.len() - 32;
        let actual = format!("{:x}", Sha256::digest(&self.index[..end]));
        let expected: String = self.index[end..].iter().map(|b| format!("{b:02x}")).collect();
        if actual != expected {
            return Err(Error::Checksum { path: self.path.clone(), expected, actual });
        }
        Ok(())
    }

    /// Re-hashes the index and every shard, and compares with the trailer and the recorded SHA-256.
    pub fn verify(&self) -> Result<()> {
        self.verify_index()?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        for (s, m) in self.meta.shards.iter().zip(&self.shards) {
            let actual = format!("{:x}", Sha256::digest(&m[..]));
            if actual != s.sha256 {
                return Err(Error::Checksum { path: dir.join(&s.file), expected: s.sha256.clone(), actual });
            }
        }
        Ok(())
    }

    /// The SHA-256 recorded in the index's trailer, as hex.
    pub fn checksum(&self) -> String {
        self.index[self.index.len() - 32..].iter().map(|b| format!("{b:02x}")).collect()
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn len(&self) -> usize {
        self.n
    }
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
    /// The encoded bytes of image `i`. Panics when `i >= len()`.
    pub fn encoded(&self, i: usize) -> &[u8] {
        let r = self.raw(i);
        &self.shards[r.shard as usize][r.offset as usize..r.offset as usize + r.length as usize]
    }
    /// The class index of image `i`. Panics when `i >= len()`.
    pub fn label(&self, i: usize) -> u16 {
        self.raw(i).label
    }
    /// The original name of image `i`. Panics when `i >= len()`.
    pub fn name(&self, i: usize) -> &str {
        let r = self.raw(i);
        let names = &self.index[self.names..self.index.len() - 32];
        std::str::from_utf8(&names[r.name_start..r.name_end]).unwrap_or("<name is not UTF-8>")
    }
    /// Image `i`'s record.
    pub fn record(&self, i: usize) -> Record {
        let r = self.raw(i);
        Record {
            shard: r.shard,
            label: r.label,
            flags: r.flags,
            offset: r.offset,
            length: r.length,
            width: r.width,
            height: r.height,
            name: self.name(i).to_string(),
        }
    }
    pub fn labels(&self) -> Vec<u16> {
        (0..self.n).map(|i| self.label(i)).collect()
    }
    /// Bytes of the index and shards on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.index.len() as u64 + self.meta.shards.iter().map(|s| s.size).sum::<u64>()
    }
}

struct RawRecord {
    shard: u32,
    label: u16,
    flags: u16,
    offset: u64,
    length: u32,
    width: u16,
    height: u16,
    name_start: usize,
    name_end: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(shards: Vec<Shard>) -> EncodedMeta {
        EncodedMeta {
            dataset: "toy".into(),
            split: "train".into(),
            classes: vec!["n01".into(), "n02".into()],
            sources: vec![Source { file: "toy.tar".into(), sha256: "00".repeat(32) }],
            shards,
            skipped: vec![Skipped { name: "bad.JPEG".into(), reason: "corrupt".into() }],
            converted: vec![],
            max_side: None,
            resized: 0,
        }
    }

    fn record(shard: u32, offset: u64, length: u32, label: u16, name: &str) -> Record {
        Record { shard, label, flags: 0, offset, length, width: 3, height: 2, name: name.into() }
    }

    #[test]
    fn written_shards_and_index_read_back_and_damage_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 10 + usize::from(i)]).collect();
        let mut w = ShardWriter::new(dir.path(), "train", 25).unwrap();
        let places: Vec<(u32, u64)> = files.iter().map(|f| w.append(f).unwrap()).collect();
        let shards = w.finish().unwrap();
        assert_eq!(places, [(0, 0), (0, 10), (1, 0), (1, 12), (2, 0)], "a new shard once one would pass 25 bytes");
        assert_eq!(shards.iter().map(|s| s.file.as_str()).collect::<Vec<_>>()[0], "train-00000.wrns");
        let records: Vec<Record> = files
            .iter()
            .zip(&places)
            .enumerate()
            .map(|(i, (f, &(s, o)))| record(s, o, f.len() as u32, (i % 2) as u16, &format!("img_{i}.JPEG")))
            .collect();
        let path = index_path(dir.path(), "train");
        let digest = write_index(&path, &meta(shards.clone()), &records).unwrap();
        let split = EncodedSplit::open(&path).unwrap();
        split.verify().unwrap();
        assert_eq!((split.len(), split.checksum()), (5, digest));
        for (i, f) in files.iter().enumerate() {
            assert_eq!(split.encoded(i), &f[..]);
            assert_eq!(split.record(i), records[i]);
        }
        assert_eq!(split.meta, meta(shards.clone()));
        // Only the index and the three shards; no temporary files.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 4);

        // A flipped byte in a shard fails verification naming the shard; a shorter shard fails open.
        let shard1 = dir.path().join("train-00001.wrns");
        let good = std::fs::read(&shard1).unwrap();
        let mut bad = good.clone();
        bad[3] ^= 1;
        std::fs::write(&shard1, &bad).unwrap();
        let err = EncodedSplit::open(&path).unwrap().verify().unwrap_err().to_string();
        assert!(err.contains("train-00001.wrns") && err.contains("SHA-256 mismatch"), "{err}");
        std::fs::write(&shard1, &good[1..]).unwrap();
        let err = EncodedSplit::open(&path).err().unwrap().to_string();
        assert!(err.contains("train-00001.wrns") && err.contains("truncated"), "{err}");
        std::fs::write(&shard1, &good).unwrap();
        // A damaged index.
        let index = std::fs::read(&path).unwrap();
        std::fs::write(&path, &index[..index.len() - 1]).unwrap();
        assert!(EncodedSplit::open(&path).err().unwrap().to_string().contains("truncated"));
        let mut v2 = index.clone();
        v2[8] = 2;
        std::fs::write(&path, &v2).unwrap();
        assert!(EncodedSplit::open(&path).err().unwrap().to_string().contains("version 2"));
        let mut flipped = index.clone();
        let last = flipped.len() - 40;
        flipped[last] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        let err = EncodedSplit::open_unhashed(&path).unwrap().verify().unwrap_err().to_string();
        assert!(err.contains("train.wrni") && err.contains("SHA-256 mismatch"), "{err}");
        let err = EncodedSplit::open(&path).err().expect("a changed index is refused at open").to_string();
        assert!(err.contains("train.wrni") && err.contains("changed after it was prepared"), "{err}");
    }

    #[test]
    fn a_changed_index_is_refused_at_open_and_a_damaged_image_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ShardWriter::new(dir.path(), "train", 16).unwrap();
        let places: Vec<(u32, u64)> = (0..3u8).map(|i| w.append(&[i; 10]).unwrap()).collect();
        let shards = w.finish().unwrap();
        let records: Vec<Record> =
            places.iter().enumerate().map(|(i, &(s, o))| record(s, o, 10, 0, &format!("n01_{i}.JPEG"))).collect();
        let path = index_path(dir.path(), "train");
        write_index(&path, &meta(shards), &records).unwrap();
        let good = std::fs::read(&path).unwrap();
        let split = EncodedSplit::open(&path).unwrap();
        let err = split.damaged(1, "premature end of data").to_string();
        for part in [
            "train-00001.wrns",
            "image n01_1.JPEG (#1 of the train split of toy",
            "premature end of data",
            "the shard is damaged",
            "run `wrn data verify toy`",
            "`wrn data prepare toy`",
        ] {
            assert!(err.contains(part), "`{part}` missing from: {err}");
        }
        drop(split);

        // Image 1's label changed from class 0 to class 1, still a valid class: only the hash can tell.
        let mut relabelled = good.clone();
        let records_at = u64::from_le_bytes(good[32..40].try_into().unwrap()) as usize;
        relabelled[records_at + RECORD_LEN + 4] = 1;
        std::fs::write(&path, &relabelled).unwrap();
        let err = EncodedSplit::open(&path).err().expect("a changed index is refused").to_string();
        assert!(err.contains("train.wrni") && err.contains("changed after it was prepared"), "{err}");
        assert!(err.contains("`wrn data verify toy`") && err.contains("`wrn data prepare toy`"), "{err}");
        assert_eq!(EncodedSplit::open_unhashed(&path).unwrap().label(1), 1, "listings open it without the hash");
    }

    #[test]
    fn records_outside_the_classes_or_shards_are_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ShardWriter::new(dir.path(), "val", 1 << 20).unwrap();
        w.append(b"abcd").unwrap();
        let shards = w.finish().unwrap();
        let path = index_path(dir.path(), "val");
        let err = write_index(&path, &meta(shards.clone()), &[record(0, 0, 4, 2, "a")]).unwrap_err().to_string();
        assert!(err.contains("label 2"), "{err}");
        let err = write_index(&path, &meta(shards), &[record(0, 2, 4, 0, "a")]).unwrap_err().to_string();
        assert!(err.contains("past the end of val-00000.wrns"), "{err}");
        assert!(!path.exists());
    }
}
