//! ImageNet from the official tars: the train tar (a tar of per-class tars `<WNID>.tar` of
//! `<WNID>_<k>.JPEG`) and the val tar (flat `ILSVRC2012_val_<8 digits>.JPEG`, in no particular order:
//! labels are keyed by the file name, never by the position in the tar), streamed by one reader thread
//! without unpacking to disk. Links, absolute paths and `..` inside the archives are refused. The train
//! tar is first checked, from its member headers alone (seeking over the data), to hold exactly one
//! `<WNID>.tar` per class of the devkit: missing, unexpected and doubled members are named with the tar
//! before anything is written. On resuming, the images already in kept shards are seeked over: whole
//! per-class tars, then within one by its member headers.

use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use super::devkit::{read_devkit, val_number, ClassIndex, GROUND_TRUTH_MEMBER, META_MEMBER};
use super::writer::{kept, write_split, Item, Sender, SplitJob, CHUNK};
use crate::cache::Source;
use crate::error::{Error, IoContext, Result};
use crate::manifest::{FileEntry, Manifest};
use crate::prepare::{PrepareOptions, PreparedReport};
use crate::store::Store;
use crate::zipdir::SharedFile;

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
            crate::verify::ensure_verified(&devkit_path, devkit, None)?;
            let read = read_devkit(&devkit_path, manifest.classes.count)?;
            if split_len(manifest, "val").is_some_and(|n| n != read.1.len() as u64) {
                return Err(Error::Format {
                    path: devkit_path.join(GROUND_TRUTH_MEMBER),
                    detail: format!(
                        "{} labels, the manifest says {:?} val images",
                        read.1.len(),
                        split_len(manifest, "val")
                    ),
                });
            }
            devkit_read = Some(read);
        }
        let (classes, val_labels) = devkit_read.as_ref().expect("read above");
        crate::verify::ensure_verified(&tar_path, tar, None)?;
        if *split != "val" {
            check_train_members(&tar_path, classes)?;
        }
        let bytes = std::fs::metadata(&tar_path).at(&tar_path)?.len();
        let job = SplitJob { split, source: tar_path, bytes, expected, sources };
        let read = |skip: u64, tx: &Sender| {
            if *split == "val" {
                read_val(&job.source, val_labels, skip, tx)
            } else {
                read_train(&job.source, classes, skip, tx)
            }
        };
        reports.push(write_split(&job, &dir, &classes.wnids, manifest, opts, read)?);
    }
    Ok(reports)
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
/// over the members it does not read.
struct TarFile(BufReader<std::fs::File>);

impl Read for TarFile {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Seek for TarFile {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        match to {
            SeekFrom::Current(d) => {
                self.0.seek_relative(d)?;
                self.0.stream_position()
            }
            other => self.0.seek(other),
        }
    }
}

/// A tar over a file, read with `entries_with_seek`, so members left unread are seeked over.
fn open_tar(path: &Path) -> Result<tar::Archive<TarFile>> {
    let file = std::fs::File::open(path).at(path)?;
    Ok(tar::Archive::new(TarFile(BufReader::with_capacity(4 << 20, file))))
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
fn read_train(path: &Path, classes: &ClassIndex, skip: u64, tx: &Sender) -> Result<()> {
    let mut outer = open_tar(path)?;
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
        let sent = if skip > 0 {
            // The outer tar seeks over this member; a second reader walks its headers.
            let file = match &shared {
                Some(f) => f.clone(),
                None => shared.insert(SharedFile::open(path)?).clone(),
            };
            let window = Window { file, start: entry.raw_file_position(), len: entry.size(), pos: 0 };
            let mut inner = tar::Archive::new(window);
            let items = inner.entries_with_seek().map_err(|e| corrupt(&inner_path, "not a readable tar", e))?;
            send_images(items, &inner_path, label, &mut skip, &mut chunk, tx)?
        } else {
            let mut inner = tar::Archive::new(entry);
            let items = inner.entries().map_err(|e| corrupt(&inner_path, "not a readable tar", e))?;
            send_images(items, &inner_path, label, &mut skip, &mut chunk, tx)?
        };
        if !sent {
            return Ok(());
        }
    }
    let _ = tx.send(Ok(chunk));
    Ok(())
}

/// Adds the images of one per-class tar to `chunk`, sending every full chunk, after passing over
/// `skip` of them unread. `false` when the receiver has gone.
fn send_images<R: Read>(
    items: tar::Entries<R>,
    inner_path: &Path,
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
        let mut bytes = Vec::with_capacity(item.size() as usize);
        item.read_to_end(&mut bytes).map_err(|e| corrupt(inner_path, &format!("member `{image}`"), e))?;
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
    let mut outer = open_tar(path)?;
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
fn read_val(path: &Path, labels: &[u16], skip: u64, tx: &Sender) -> Result<()> {
    let mut archive = open_tar(path)?;
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
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut bytes).map_err(|e| corrupt(path, &format!("member `{name}`"), e))?;
        chunk.push(Item { name, label, bytes });
        if chunk.len() == CHUNK && tx.send(Ok(std::mem::take(&mut chunk))).is_err() {
            return Ok(());
        }
    }
    let _ = tx.send(Ok(chunk));
    Ok(())
}
