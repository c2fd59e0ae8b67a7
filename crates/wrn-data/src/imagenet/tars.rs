//! ImageNet from the official tars: the train tar (a tar of per-class tars `<WNID>.tar` of
//! `<WNID>_<k>.JPEG`) and the val tar (flat `ILSVRC2012_val_<8 digits>.JPEG`, in no particular order:
//! labels are keyed by the file name, never by the position in the tar), streamed by one reader thread
//! without unpacking to disk. Links, absolute paths and `..` inside the archives are refused. The train
//! tar is first checked, from its member headers alone (seeking over the data), to hold exactly one
//! `<WNID>.tar` per class of the devkit: missing, unexpected and doubled members are named with the tar
//! before anything is written. On resuming, the images already in kept shards are seeked over: whole
//! per-class tars, then within one by its member headers.
//!
//! Each tar is hashed as it streams (the bytes seeked over are read through the hash), and the split
//! fails with nothing left of it when the hash differs from the manifest's, as does the devkit, hashed
//! before its labels are used. A member's size is checked from its header against the archive holding
//! it before it is read.

use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::devkit::{read_devkit_hashed, val_number, ClassIndex, GROUND_TRUTH_MEMBER, META_MEMBER};
use super::writer::{kept, write_split, Item, Sender, SplitJob, CHUNK};
use crate::cache::Source;
use crate::error::{Error, IoContext, Result};
use crate::manifest::{FileEntry, Manifest};
use crate::prepare::{self as prepare_shared, HashingReader, PrepareOptions, PreparedReport};
use crate::store::Store;
use crate::zipdir::SharedFile;

/// The largest image member read (an index record holds a `u32` length).
const MAX_IMAGE: u64 = 1 << 30;

/// Prepares the splits of `manifest` from the official tars and devkit in the store (each verified by
/// hash first), keeping those already prepared from the same files with the same options.
pub(crate) fn prepare(store: &Store, manifest: &Manifest, opts: &PrepareOptions) -> Result<Vec<PreparedReport>> {
    let devkit = find_file(manifest, |f| f.members.iter().any(|m| m.path == META_MEMBER), "devkit (with meta.mat)")?;
    let devkit_path = store.file_path(manifest, devkit);
    let dir = store.prepared_dir(manifest);
    let mut reports = Vec::new();
    let mut devkit_read: Option<(ClassIndex, Vec<u16>)> = None;
    for (split, &expected) in &manifest.splits {
        let tar = find_file(manifest, |f| f.split.as_deref() == Some(split), &format!("file for split `{split}`"))?;
        let tar_path = store.file_path(manifest, tar);
        let sources = vec![
            Source { file: tar.name.clone(), sha256: tar.sha256.clone() },
            Source { file: devkit.name.clone(), sha256: devkit.sha256.clone() },
        ];
        if let Some(done) = kept(&dir, split, &sources, expected, opts) {
            reports.push(done);
            continue;
        }
        if devkit_read.is_none() {
            devkit_read = Some(checked_devkit(&devkit_path, devkit, manifest)?);
        }
        let (classes, val_labels) = devkit_read.as_ref().expect("read above");
        prepare_shared::open_source(&tar_path, tar)?;
        if *split != "val" {
            check_train_members(&tar_path, classes)?;
        }
        let bytes = std::fs::metadata(&tar_path).at(&tar_path)?.len();
        let job = SplitJob { split, source: tar_path, bytes, expected, sources };
        let source = SourceFile { entry: tar, manifest };
        let read = |skip: u64, tx: &Sender| {
            if *split == "val" {
                read_val(&job.source, source, val_labels, skip, tx)
            } else {
                read_train(&job.source, source, classes, skip, tx)
            }
        };
        reports.push(write_split(&job, &dir, &classes.wnids, manifest, opts, read)?);
    }
    Ok(reports)
}

/// The devkit's class index and val labels, its bytes hashed as they are read and checked against the
/// manifest, and the labels counted against the val split.
fn checked_devkit(path: &Path, devkit: &FileEntry, manifest: &Manifest) -> Result<(ClassIndex, Vec<u16>)> {
    let file = prepare_shared::open_source(path, devkit)?;
    let (index, labels, sha256) = read_devkit_hashed(HashingReader::new(file), path, manifest.classes.count)?;
    prepare_shared::check_source(path, devkit, manifest, &sha256)?;
    if let Some(n) = split_len(manifest, "val").filter(|&n| n != labels.len() as u64) {
        return Err(Error::Format {
            path: path.join(GROUND_TRUTH_MEMBER),
            detail: format!("{} labels, the manifest says {n} val images", labels.len()),
        });
    }
    Ok((index, labels))
}

fn split_len(manifest: &Manifest, split: &str) -> Option<u64> {
    manifest.splits.get(split).copied()
}

fn find_file<'a>(manifest: &'a Manifest, pick: impl Fn(&FileEntry) -> bool, what: &str) -> Result<&'a FileEntry> {
    manifest.files.iter().find(|f| pick(f)).ok_or_else(|| Error::Unsupported {
        dataset: manifest.name.clone(),
        detail: format!("the manifest has no {what}"),
    })
}

/// Checks a tar member: a regular file (directories are skipped) at a safe relative path. Returns its
/// path, or `None` for a directory.
fn member_name<R: Read>(entry: &tar::Entry<R>, archive: &Path) -> Result<Option<String>> {
    let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
    let err = |detail: String| Error::Archive { path: archive.into(), detail };
    let kind = entry.header().entry_type();
    if kind.is_dir() {
        return match crate::manifest::is_safe_relative(name.trim_end_matches('/')) {
            true => Ok(None),
            false => Err(err(format!("member `{name}` leaves the archive's folder (absolute or `..`)"))),
        };
    }
    if kind.is_symlink() || kind.is_hard_link() {
        return Err(err(format!("member `{name}` is a link; links are refused")));
    }
    if !(kind.is_file() || kind == tar::EntryType::Continuous) {
        return Err(err(format!("member `{name}` is not a regular file ({kind:?})")));
    }
    if !crate::manifest::is_safe_relative(&name) {
        return Err(err(format!("member `{name}` leaves the archive's folder (absolute or `..`)")));
    }
    Ok(Some(name))
}

/// A buffered file whose short forward seeks keep the buffer: the tar reader seeks over padding and
/// over the members it does not read. When hashing, every byte passes through the hash in file order:
/// forward seeks read over what they pass instead ([`TarFile::finish`] gives the file's SHA-256).
struct TarFile {
    file: BufReader<std::fs::File>,
    /// `None` when not hashing, or once a seek other than forward has made the hash meaningless.
    hash: Option<Sha256>,
}

impl TarFile {
    /// Reads the rest of the file and returns the SHA-256 of all of it (`None` when not hashing).
    fn finish(mut self) -> std::io::Result<Option<String>> {
        if self.hash.is_none() {
            return Ok(None);
        }
        std::io::copy(&mut self, &mut std::io::sink())?;
        Ok(self.hash.map(|h| format!("{:x}", h.finalize())))
    }
}

impl Read for TarFile {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        if let Some(hash) = &mut self.hash {
            hash.update(&buf[..n]);
        }
        Ok(n)
    }
}

impl Seek for TarFile {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        match to {
            SeekFrom::Current(d) if d >= 0 && self.hash.is_some() => {
                let passed = std::io::copy(&mut (&mut *self).take(d as u64), &mut std::io::sink())?;
                if passed < d as u64 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the file ends inside a member",
                    ));
                }
                self.file.stream_position()
            }
            SeekFrom::Current(d) => {
                self.file.seek_relative(d)?;
                self.file.stream_position()
            }
            other => {
                self.hash = None;
                self.file.seek(other)
            }
        }
    }
}

/// A tar over a file, read with `entries_with_seek`, so members left unread are seeked over; with
/// `hashed`, every byte is hashed on the way ([`TarFile::finish`]).
fn open_tar(path: &Path, hashed: bool) -> Result<tar::Archive<TarFile>> {
    let file = std::fs::File::open(path).at(path)?;
    let hash = hashed.then(Sha256::new);
    Ok(tar::Archive::new(TarFile { file: BufReader::with_capacity(4 << 20, file), hash }))
}

/// Reads what is left of a hashed tar and checks the file's SHA-256 against the manifest's.
fn check_hashed(archive: tar::Archive<TarFile>, path: &Path, source: &SourceFile) -> Result<()> {
    let sha256 = archive.into_inner().finish().map_err(|e| corrupt(path, "reading to the end", e))?;
    match sha256 {
        Some(sha256) => prepare_shared::check_source(path, source.entry, source.manifest, &sha256),
        None => Ok(()),
    }
}

/// A source file of the manifest, whose SHA-256 is checked as it is read.
#[derive(Clone, Copy)]
struct SourceFile<'a> {
    entry: &'a FileEntry,
    manifest: &'a Manifest,
}

/// Reads one image member, whose header's size is checked first against `limit` (the bytes of the
/// archive or per-class tar holding it) and the largest image an index records.
fn read_image<R: Read>(item: &mut tar::Entry<R>, name: &str, archive: &Path, limit: u64) -> Result<Vec<u8>> {
    let claimed = item.size();
    if claimed > limit.min(MAX_IMAGE) {
        return Err(Error::Archive {
            path: archive.into(),
            detail: format!(
                "member `{name}` claims {claimed} bytes, more than the {} its archive can hold",
                limit.min(MAX_IMAGE)
            ),
        });
    }
    let mut bytes = Vec::with_capacity(claimed.min(16 << 20) as usize);
    item.take(claimed).read_to_end(&mut bytes).map_err(|e| corrupt(archive, &format!("member `{name}`"), e))?;
    if bytes.len() as u64 != claimed {
        return Err(Error::Archive {
            path: archive.into(),
            detail: format!("member `{name}`: {} of its {claimed} bytes present (truncated archive)", bytes.len()),
        });
    }
    Ok(bytes)
}

/// The bytes `start..start + len` of a file: a member of the train tar, read as a tar of its own with
/// its members' data seeked over.
struct Window {
    file: SharedFile,
    start: u64,
    len: u64,
    pos: u64,
}

impl Read for Window {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if n == 0 {
            return Ok(0);
        }
        self.file.seek(SeekFrom::Start(self.start + self.pos))?;
        let n = self.file.read(&mut buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Window {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.pos = crate::zipdir::seek_target(self.pos, self.len, to, "member")?;
        Ok(self.pos)
    }
}

fn corrupt(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::Archive { path: path.into(), detail: format!("{what}: {e} (truncated or corrupt)") }
}

/// Streams the train tar of per-class tars in chunks of images, after the first `skip` images, which
/// are seeked over unread (whole per-class tars at once; within one, from its member headers).
fn read_train(path: &Path, source: SourceFile, classes: &ClassIndex, skip: u64, tx: &Sender) -> Result<()> {
    let mut outer = open_tar(path, true)?;
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut skip = skip;
    let mut shared: Option<SharedFile> = None;
    for entry in outer.entries_with_seek().map_err(|e| corrupt(path, "not a readable tar", e))? {
        let entry = entry.map_err(|e| corrupt(path, "reading a member", e))?;
        let Some(name) = member_name(&entry, path)? else { continue };
        let wnid = name.strip_suffix(".tar").filter(|w| !w.contains('/')).ok_or_else(|| Error::Archive {
            path: path.into(),
            detail: format!("member `{name}` is not a per-class tar `<WNID>.tar`"),
        })?;
        let label = classes.class_of_wnid(wnid).ok_or_else(|| Error::Archive {
            path: path.into(),
            detail: format!("member `{name}`: {wnid} is not a class of the devkit's meta.mat"),
        })?;
        let inner_path = path.join(&name);
        if entry.size() > source.entry.size {
            return Err(Error::Archive {
                path: path.into(),
                detail: format!("member `{name}` claims {} bytes, more than the whole tar", entry.size()),
            });
        }
        let sent = if skip > 0 {
            // The outer tar seeks over this member; a second reader walks its headers.
            let file = match &shared {
                Some(f) => f.clone(),
                None => shared.insert(SharedFile::open(path)?).clone(),
            };
            let window = Window { file, start: entry.raw_file_position(), len: entry.size(), pos: 0 };
            let mut inner = tar::Archive::new(window);
            let items = inner.entries_with_seek().map_err(|e| corrupt(&inner_path, "not a readable tar", e))?;
            send_images(items, (&inner_path, entry.size()), label, &mut skip, &mut chunk, tx)?
        } else {
            let size = entry.size();
            let mut inner = tar::Archive::new(entry);
            let items = inner.entries().map_err(|e| corrupt(&inner_path, "not a readable tar", e))?;
            send_images(items, (&inner_path, size), label, &mut skip, &mut chunk, tx)?
        };
        if !sent {
            return Ok(());
        }
    }
    check_hashed(outer, path, &source)?;
    let _ = tx.send(Ok(chunk));
    Ok(())
}

/// Adds the images of one per-class tar to `chunk`, sending every full chunk, after passing over
/// `skip` of them unread. `false` when the receiver has gone.
fn send_images<R: Read>(
    items: tar::Entries<R>,
    (inner_path, inner_size): (&Path, u64),
    label: u16,
    skip: &mut u64,
    chunk: &mut Vec<Item>,
    tx: &Sender,
) -> Result<bool> {
    for item in items {
        let mut item = item.map_err(|e| corrupt(inner_path, "reading a member", e))?;
        let Some(image) = member_name(&item, inner_path)? else { continue };
        if *skip > 0 {
            *skip -= 1;
            continue;
        }
        let bytes = read_image(&mut item, &image, inner_path, inner_size)?;
        chunk.push(Item { name: image, label, bytes });
        if chunk.len() == CHUNK && tx.send(Ok(std::mem::take(chunk))).is_err() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Checks, from its member headers alone, that the train tar holds exactly the per-class tars
/// `<WNID>.tar` of the devkit's classes, one each: an error names the tar and the members missing,
/// unexpected or stored twice.
fn check_train_members(path: &Path, classes: &ClassIndex) -> Result<()> {
    let mut outer = open_tar(path, false)?;
    let mut count = vec![0usize; classes.wnids.len()];
    let mut unexpected = Vec::new();
    for entry in outer.entries_with_seek().map_err(|e| corrupt(path, "not a readable tar", e))? {
        let entry = entry.map_err(|e| corrupt(path, "reading a member", e))?;
        let Some(name) = member_name(&entry, path)? else { continue };
        match name.strip_suffix(".tar").filter(|w| !w.contains('/')).and_then(|w| classes.class_of_wnid(w)) {
            Some(class) => count[usize::from(class)] += 1,
            None => unexpected.push(format!("`{name}`")),
        }
    }
    let tars = |pick: fn(usize) -> bool| -> Vec<String> {
        classes.wnids.iter().zip(&count).filter(|(_, &n)| pick(n)).map(|(w, _)| format!("{w}.tar")).collect()
    };
    let (missing, twice) = (tars(|n| n == 0), tars(|n| n > 1));
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!("missing member(s): {} (one per class of the devkit's meta.mat)", listed(&missing)));
    }
    if !unexpected.is_empty() {
        problems.push(format!(
            "unexpected member(s): {} (not a per-class tar `<WNID>.tar` of the devkit's classes)",
            listed(&unexpected)
        ));
    }
    if !twice.is_empty() {
        problems.push(format!("member(s) stored twice: {}", listed(&twice)));
    }
    match problems.is_empty() {
        true => Ok(()),
        false => Err(Error::Archive { path: path.into(), detail: problems.join("; ") }),
    }
}

/// Names listed in an error: the first few, then how many more.
fn listed(names: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut out = names.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > SHOWN {
        out.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    out
}

/// Streams the val tar in chunks of images, labelled through the ground truth by file name, after the
/// first `skip` images, which are seeked over unread.
fn read_val(path: &Path, source: SourceFile, labels: &[u16], skip: u64, tx: &Sender) -> Result<()> {
    let mut archive = open_tar(path, true)?;
    let len = source.entry.size;
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut skip = skip;
    for entry in archive.entries_with_seek().map_err(|e| corrupt(path, "not a readable tar", e))? {
        let mut entry = entry.map_err(|e| corrupt(path, "reading a member", e))?;
        let Some(name) = member_name(&entry, path)? else { continue };
        let label = match val_number(&name) {
            Some(k) if (1..=labels.len()).contains(&k) => labels[k - 1],
            Some(k) => {
                return Err(Error::Archive {
                    path: path.into(),
                    detail: format!("member `{name}`: image {k}, but the ground truth has {} lines", labels.len()),
                })
            }
            None => {
                return Err(Error::Archive {
                    path: path.into(),
                    detail: format!("member `{name}` is not named ILSVRC2012_val_<8 digits>.JPEG"),
                })
            }
        };
        if skip > 0 {
            skip -= 1;
            continue;
        }
        let bytes = read_image(&mut entry, &name, path, len)?;
        chunk.push(Item { name, label, bytes });
        if chunk.len() == CHUNK && tx.send(Ok(std::mem::take(&mut chunk))).is_err() {
            return Ok(());
        }
    }
    check_hashed(archive, path, &source)?;
    let _ = tx.send(Ok(chunk));
    Ok(())
}
