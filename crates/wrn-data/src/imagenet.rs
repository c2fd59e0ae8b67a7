//! ImageNet ILSVRC2012 class conventions from the devkit (`ILSVRC2012_devkit_t12.tar.gz`).
//!
//! Class index = position of the WNID in the sorted list of the 1000 leaf synsets (torchvision, timm,
//! Keras; fb.resnet.torch uses the same order 1-based). The devkit numbers synsets differently
//! (`ILSVRC2012_ID`, 1 = n02119789), so validation labels are mapped in two steps: the ground-truth
//! line *i* (the *i*-th val image in file-name order) holds an ILSVRC2012_ID; `meta.mat`'s `synsets`
//! gives its WNID; the WNID's sorted position is the class. Using `ID - 1` directly is the classic bug
//! (about 0.1% accuracy). Example: `ILSVRC2012_val_00000001.JPEG` -> ID 490 -> n01751748 -> class 65.
//!
//! [`prepare`] streams the train tar (a tar of per-class tars `<WNID>.tar` of `<WNID>_<k>.JPEG`) and the
//! val tar (flat `ILSVRC2012_val_<8 digits>.JPEG`, in no particular order: labels are keyed by the file
//! name, never by the position in the tar) without unpacking to disk, into the encoded-image cache of
//! [`crate::encoded`]. One thread reads the tar; each chunk of images is checked and converted in
//! parallel (rayon); shards are written in tar order and the index is sorted by name. Every JPEG is
//! decoded once to check it; files that are not RGB JPEGs (CMYK and grayscale JPEGs, the PNG named
//! `.JPEG`, sniffed by magic bytes and the frame header, not the extension) are converted to RGB JPEG
//! and listed in the report; a file that does not decode is left out and reported by name, and the rest
//! is prepared. Links, absolute paths and `..` inside the archives are refused. The train tar is first
//! checked, from its member headers alone (seeking over the data), to hold exactly one `<WNID>.tar` per
//! class of the devkit: missing, unexpected and doubled members are named with the tar before anything
//! is written.
//!
//! An interrupted prepare continues where it stopped: each shard in place is journalled (see
//! [`crate::encoded`]), and a prepare run again from the same files with the same options keeps the
//! journalled shards, passes over the images they hold without reading or decoding them (the tars'
//! members are seeked over: whole per-class tars, then within one by its member headers; the Kaggle
//! zip starts at the next image), and writes on from the next shard, into the same index and shards as
//! an uninterrupted prepare. The report and the log say `resumed: N images in K shards kept`.
//!
//! The split writer is shared: [`crate::kaggle`] feeds it the same images read in place from Kaggle's
//! zip, which [`prepare`] uses when that zip, and not the tars, is in the dataset's folder. Both give
//! the same cache (same names, labels, conversions and report); only the recorded sources differ.

use std::collections::BTreeMap;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;

use crate::cache::Source;
use crate::cifar::PreparedReport;
use crate::encoded::{
    self, Converted, EncodedMeta, EncodedSplit, JournalEntry, PrepareIdentity, Record, ShardWriter, Skipped,
};
use crate::error::{Error, IoContext, Result};
use crate::manifest::{FileEntry, Manifest};
use crate::mat::{self, Value};
use crate::store::Store;
use crate::zipdir::SharedFile;

pub const META_MEMBER: &str = "ILSVRC2012_devkit_t12/data/meta.mat";
pub const GROUND_TRUTH_MEMBER: &str = "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt";

/// One entry of `meta.mat`'s `synsets`.
#[derive(Debug, Clone, PartialEq)]
pub struct Synset {
    pub id: u32,
    pub wnid: String,
    pub words: String,
    pub num_children: u32,
}

/// The synsets of a parsed `meta.mat`.
pub fn synsets(vars: &[(String, Value)], origin: &Path) -> Result<Vec<Synset>> {
    let err = |detail: String| Error::Format { path: origin.into(), detail };
    let Some((_, Value::Struct { items, .. })) = vars.iter().find(|(n, _)| n == "synsets") else {
        return Err(err("no struct array `synsets`".into()));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let num = |f: &str| item.get(f).and_then(Value::scalar).filter(|v| *v >= 0.0 && v.fract() == 0.0);
            let text = |f: &str| item.get(f).and_then(Value::text).map(str::to_string);
            match (num("ILSVRC2012_ID"), text("WNID"), num("num_children")) {
                (Some(id), Some(wnid), Some(children)) => Ok(Synset {
                    id: id as u32,
                    wnid,
                    words: text("words").unwrap_or_default(),
                    num_children: children as u32,
                }),
                _ => Err(err(format!("synsets({}) lacks a numeric ILSVRC2012_ID, a WNID or num_children", i + 1))),
            }
        })
        .collect()
}

/// The class order: leaf WNIDs sorted, and the class of each leaf's ILSVRC2012_ID.
#[derive(Debug, Clone)]
pub struct ClassIndex {
    /// Class index -> WNID.
    pub wnids: Vec<String>,
    by_id: BTreeMap<u32, u16>,
}

impl ClassIndex {
    /// Builds the index from the synsets, expecting `classes` leaves (1000 for ILSVRC2012).
    pub fn new(synsets: &[Synset], classes: usize, origin: &Path) -> Result<ClassIndex> {
        let mut leaves: Vec<&Synset> = synsets.iter().filter(|s| s.num_children == 0).collect();
        if leaves.len() != classes {
            return Err(Error::Format {
                path: origin.into(),
                detail: format!("{} leaf synsets, expected {classes}", leaves.len()),
            });
        }
        leaves.sort_by(|a, b| a.wnid.cmp(&b.wnid));
        let by_id = leaves.iter().enumerate().map(|(class, s)| (s.id, class as u16)).collect();
        Ok(ClassIndex { wnids: leaves.iter().map(|s| s.wnid.clone()).collect(), by_id })
    }

    /// The class of an ILSVRC2012_ID.
    pub fn class_of_id(&self, id: u32) -> Option<u16> {
        self.by_id.get(&id).copied()
    }

    /// The class of a WNID (train images: the inner tar's name).
    pub fn class_of_wnid(&self, wnid: &str) -> Option<u16> {
        self.wnids.binary_search_by(|w| w.as_str().cmp(wnid)).ok().map(|i| i as u16)
    }

    /// Validation labels, one per ground-truth line (val images in file-name order).
    pub fn val_labels(&self, ground_truth: &str, origin: &Path) -> Result<Vec<u16>> {
        ground_truth
            .lines()
            .map(str::trim)
            .enumerate()
            .filter(|(_, l)| !l.is_empty())
            .map(|(i, line)| {
                line.parse::<u32>().ok().and_then(|id| self.class_of_id(id)).ok_or_else(|| Error::Format {
                    path: origin.into(),
                    detail: format!("line {}: `{line}` is not the ILSVRC2012_ID of a leaf class", i + 1),
                })
            })
            .collect()
    }
}

/// Reads the class index and validation labels from the devkit archive, streamed.
pub fn read_devkit(path: &Path, classes: usize) -> Result<(ClassIndex, Vec<u16>)> {
    let err = |detail: String| Error::Archive { path: path.into(), detail };
    let file = std::fs::File::open(path).at(path)?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    let (mut meta, mut truth) = (None, None);
    for item in archive.entries().map_err(|e| err(format!("not a readable tar.gz: {e}")))? {
        let mut item = item.map_err(|e| err(format!("truncated or corrupt archive: {e}")))?;
        let name = String::from_utf8_lossy(&item.path_bytes()).into_owned();
        if name == META_MEMBER {
            meta = Some(mat::read_from(&mut item, &path.join(META_MEMBER))?);
        } else if name == GROUND_TRUTH_MEMBER {
            let mut text = String::new();
            item.read_to_string(&mut text).map_err(|e| err(format!("member `{name}`: {e}")))?;
            truth = Some(text);
        }
    }
    let (Some(meta), Some(truth)) = (meta, truth) else {
        return Err(err(format!("missing member(s): {META_MEMBER} and/or {GROUND_TRUTH_MEMBER}")));
    };
    let index = ClassIndex::new(&synsets(&meta, &path.join(META_MEMBER))?, classes, &path.join(META_MEMBER))?;
    let labels = index.val_labels(&truth, &path.join(GROUND_TRUTH_MEMBER))?;
    Ok((index, labels))
}

/// How to prepare ImageNet.
#[derive(Debug, Clone)]
pub struct PrepareOptions {
    /// Re-encode images whose longer side exceeds this many pixels to fit it (`--max-side`).
    pub max_side: Option<u32>,
    /// Bytes per shard before a new one starts.
    pub shard_bytes: u64,
    /// JPEG quality of converted and re-encoded images.
    pub quality: u8,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// Stop with [`Error::Stopped`] once this many shards of a split are written and journalled in this
    /// run, as an interruption there would (a later prepare continues from them). For tests of
    /// resuming; `None` otherwise.
    pub stop_after_shards: Option<usize>,
}

impl Default for PrepareOptions {
    fn default() -> PrepareOptions {
        PrepareOptions { max_side: None, shard_bytes: 1 << 30, quality: 90, progress: false, stop_after_shards: None }
    }
}

/// `(width, height, components)` from a JPEG's frame header, or what is wrong.
pub fn jpeg_frame(bytes: &[u8]) -> std::result::Result<(u16, u16, u8), String> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return Err("no JPEG start-of-image marker".into());
    }
    let mut i = 2;
    loop {
        if i + 1 >= bytes.len() {
            return Err("ends before a frame header".into());
        }
        if bytes[i] != 0xFF {
            return Err(format!("byte {i}: expected a marker, found {:#04x}", bytes[i]));
        }
        let marker = bytes[i + 1];
        i += 2;
        match marker {
            0xFF => i -= 1, // fill byte
            0x01 | 0xD0..=0xD8 => {}
            0xD9 | 0xDA => return Err("no frame header before the image data".into()),
            _ => {
                let Some(len) = bytes.get(i..i + 2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]]))) else {
                    return Err("ends inside a marker segment".into());
                };
                if matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC) {
                    let f = bytes.get(i..i + 8).ok_or("ends inside the frame header")?;
                    let (h, w) = (u16::from_be_bytes([f[3], f[4]]), u16::from_be_bytes([f[5], f[6]]));
                    if w == 0 || h == 0 {
                        return Err(format!("frame of {w}x{h} pixels"));
                    }
                    return Ok((w, h, f[7]));
                }
                if len < 2 {
                    return Err(format!("marker segment of length {len}"));
                }
                i += len;
            }
        }
    }
}

/// One image after checking and converting.
struct Processed {
    /// Replacement bytes; `None` keeps the original.
    bytes: Option<Vec<u8>>,
    width: u32,
    height: u32,
    flags: u16,
    converted: Option<String>,
    /// Why the image is left out.
    skipped: Option<String>,
}

fn encode_rgb(
    rgb: &image::RgbImage,
    max_side: Option<u32>,
    quality: u8,
) -> std::result::Result<(Vec<u8>, u16), String> {
    let (w, h) = rgb.dimensions();
    let mut flags = 0;
    let resized;
    let img = match max_side {
        Some(m) if w.max(h) > m => {
            let (nw, nh) = if w >= h {
                (m, ((u64::from(h) * u64::from(m) + u64::from(w) / 2) / u64::from(w)).max(1) as u32)
            } else {
                (((u64::from(w) * u64::from(m) + u64::from(h) / 2) / u64::from(h)).max(1) as u32, m)
            };
            resized = image::imageops::resize(rgb, nw, nh, image::imageops::FilterType::CatmullRom);
            flags |= encoded::FLAG_RESIZED;
            &resized
        }
        _ => rgb,
    };
    let (w, h) = img.dimensions();
    let (w16, h16) = (u16::try_from(w).map_err(|_| "too wide")?, u16::try_from(h).map_err(|_| "too high")?);
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, quality)
        .encode(img.as_raw(), w16, h16, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| format!("JPEG encoding: {e}"))?;
    Ok((out, flags))
}

fn process(name: &str, bytes: &[u8], max_side: Option<u32>, quality: u8) -> Processed {
    let skip = |reason: String| Processed {
        bytes: None,
        width: 0,
        height: 0,
        flags: 0,
        converted: None,
        skipped: Some(reason),
    };
    let (format, from) = if bytes.starts_with(&[0xFF, 0xD8]) {
        match jpeg_frame(bytes) {
            Err(e) => return skip(format!("corrupt JPEG: {e}")),
            Ok((w, h, 3)) => {
                use zune_jpeg::zune_core::{bytestream::ZCursor, colorspace::ColorSpace, options::DecoderOptions};
                let options = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::RGB);
                let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
                let pixels = match decoder.decode() {
                    Ok(p) if p.len() == usize::from(w) * usize::from(h) * 3 => p,
                    Ok(p) => return skip(format!("corrupt JPEG: {} bytes decoded for {w}x{h}", p.len())),
                    Err(e) => return skip(format!("corrupt JPEG: {e}")),
                };
                if max_side.is_some_and(|m| u32::from(w.max(h)) > m) {
                    let rgb = image::RgbImage::from_raw(u32::from(w), u32::from(h), pixels).expect("sizes checked");
                    return match encode_rgb(&rgb, max_side, quality) {
                        Ok((out, flags)) => {
                            let (w, h) = jpeg_frame(&out).map(|(w, h, _)| (w, h)).unwrap_or_default();
                            Processed {
                                bytes: Some(out),
                                width: u32::from(w),
                                height: u32::from(h),
                                flags,
                                converted: None,
                                skipped: None,
                            }
                        }
                        Err(e) => skip(e),
                    };
                }
                return Processed {
                    bytes: None,
                    width: u32::from(w),
                    height: u32::from(h),
                    flags: 0,
                    converted: None,
                    skipped: None,
                };
            }
            Ok((_, _, 1)) => (image::ImageFormat::Jpeg, "grayscale JPEG".to_string()),
            Ok((_, _, 4)) => (image::ImageFormat::Jpeg, "CMYK JPEG".to_string()),
            Ok((_, _, c)) => (image::ImageFormat::Jpeg, format!("JPEG with {c} components")),
        }
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        let named = if name.to_ascii_lowercase().ends_with(".jpeg") || name.to_ascii_lowercase().ends_with(".jpg") {
            "PNG named .JPEG"
        } else {
            "PNG"
        };
        (image::ImageFormat::Png, named.to_string())
    } else {
        let head: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
        return skip(format!("neither a JPEG nor a PNG (starts with {})", head.join(" ")));
    };
    let rgb = match image::load_from_memory_with_format(bytes, format) {
        Ok(img) => img.to_rgb8(),
        Err(e) => return skip(format!("corrupt {from}: {e}")),
    };
    match encode_rgb(&rgb, max_side, quality) {
        Ok((out, flags)) => {
            let (w, h) = jpeg_frame(&out).map(|(w, h, _)| (w, h)).unwrap_or_default();
            Processed {
                bytes: Some(out),
                width: u32::from(w),
                height: u32::from(h),
                flags: flags | encoded::FLAG_CONVERTED,
                converted: Some(from),
                skipped: None,
            }
        }
        Err(e) => skip(e),
    }
}

/// An image read from an archive.
pub(crate) struct Item {
    /// The file name (no folders), as recorded in the index.
    pub name: String,
    pub label: u16,
    pub bytes: Vec<u8>,
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

/// Images per chunk handed from the reader to the parallel check.
pub(crate) const CHUNK: usize = 256;

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
fn read_train(path: &Path, classes: &ClassIndex, skip: u64, tx: &SyncSender<Result<Vec<Item>>>) -> Result<()> {
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
    tx: &SyncSender<Result<Vec<Item>>>,
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

/// The 1-based number of a val file name `ILSVRC2012_val_<8 digits>.JPEG`.
pub fn val_number(name: &str) -> Option<usize> {
    let digits = name.strip_prefix("ILSVRC2012_val_")?.strip_suffix(".JPEG")?;
    (digits.len() == 8 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok()).flatten()
}

/// Streams the val tar in chunks of images, labelled through the ground truth by file name, after the
/// first `skip` images, which are seeked over unread.
fn read_val(path: &Path, labels: &[u16], skip: u64, tx: &SyncSender<Result<Vec<Item>>>) -> Result<()> {
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

/// Removes the shards of `split` in `dir` that are not in `keep`.
fn remove_shards(dir: &Path, split: &str, keep: &[String]) {
    encoded::remove_split_files(dir, split, encoded::SHARD_EXTENSION, keep);
}

/// Removes the journal of `split` in `dir` and the shards that are not in `keep`.
fn remove_progress(dir: &Path, split: &str, keep: &[String]) {
    encoded::remove_split_files(dir, split, encoded::JOURNAL_EXTENSION, &[]);
    remove_shards(dir, split, keep);
}

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
        .then(|| report(split, index_path.clone(), &done.meta, done.len(), done.checksum(), None))
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

/// Writes one split into `dir`: `read` runs on its own thread and sends the images in chunks, in the
/// order they are stored (the tars' readers, the Kaggle zip's), after passing over as many as its first
/// argument says unread; each chunk is checked and converted in parallel and appended to the shards;
/// the index, sorted by name, is written last.
///
/// Each shard, once renamed into place, gets a journal entry (see [`encoded::resume`]): what it holds
/// and how far through the source it ends, with the identity of the inputs and options. A run with
/// the same identity keeps the journalled shards still in place, has `read` pass over the images they
/// cover and continues at the next shard, giving the same index and shards as a run from the start.
/// On an error the journalled shards stay for the next run and any other shard is removed; when the
/// source itself proves wrong (image count, a name twice) everything is removed. The journal goes
/// once the index is written, so nothing that looks complete is left before that.
pub(crate) fn write_split(
    job: &SplitJob,
    dir: &Path,
    classes: &[String],
    manifest: &Manifest,
    opts: &PrepareOptions,
    read: impl FnOnce(u64, &SyncSender<Result<Vec<Item>>>) -> Result<()> + Send,
) -> Result<PreparedReport> {
    let started = Instant::now();
    let index_path = encoded::index_path(dir, job.split);
    std::fs::create_dir_all(dir).at(dir)?;
    // The old index goes first, so shards being replaced never sit under a complete-looking index.
    if index_path.exists() {
        std::fs::remove_file(&index_path).at(&index_path)?;
    }
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
    let (resumed, discarded) = encoded::resume(dir, &identity);
    if let Some(note) = discarded {
        tracing::warn!("preparing {} {}: {note}", manifest.name, job.split);
    }
    let (kept_images, kept_shards, skip) = (resumed.records.len(), resumed.shards.len(), resumed.consumed);
    if kept_shards > 0 {
        tracing::info!(
            "preparing {} {}: resumed: {kept_images} images in {kept_shards} shards kept, continuing after \
             {skip} of {} source images",
            manifest.name,
            job.split,
            job.expected
        );
    }
    let kept_bytes: u64 = resumed.shards.iter().map(|s| s.size).sum();
    crate::space::ensure(
        dir,
        (job.bytes + job.bytes / 20).saturating_sub(kept_bytes),
        &format!("the prepared {} split of {}", job.split, manifest.name),
    )?;
    let bar = if opts.progress {
        ProgressBar::with_draw_target(Some(job.expected), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} images {per_sec} ETA {eta}")
            .expect("valid template"),
    );
    let resumed_note = if kept_shards > 0 { " (resumed)" } else { "" };
    bar.set_prefix(format!("preparing {} {}{resumed_note}", manifest.name, job.split));
    bar.set_position(skip);
    bar.reset_eta();
    let mut writer = ShardWriter::resume(dir, job.split, opts.shard_bytes, resumed.shards)?;
    let mut records: Vec<Record> = resumed.records;
    let (mut skipped, mut converted, mut resized) = (resumed.skipped, resumed.converted, resumed.resized);
    // Where the entries of the next journal entry start in the lists above.
    let mut since = (records.len(), skipped.len(), converted.len(), resized);
    let mut journalled: Vec<String> = writer.shards().iter().map(|s| s.file.clone()).collect();
    let (tx, rx) = sync_channel::<Result<Vec<Item>>>(4);
    let result = std::thread::scope(|scope| {
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
                    bar.inc(1);
                    if let Some(reason) = p.skipped.map(|r| r.trim().to_string()) {
                        tracing::warn!("{}: {} left out: {reason}", job.source.display(), item.name);
                        skipped.push(Skipped { name: item.name, reason });
                        continue;
                    }
                    let bytes = p.bytes.as_deref().unwrap_or(&item.bytes);
                    if let Some(shard) = writer.close_if_full(bytes.len() as u64)? {
                        let entry = JournalEntry {
                            identity: identity.clone(),
                            shard: shard.clone(),
                            consumed: (records.len() + skipped.len()) as u64,
                            records: records[since.0..].to_vec(),
                            skipped: skipped[since.1..].to_vec(),
                            converted: converted[since.2..].to_vec(),
                            resized: resized - since.3,
                        };
                        encoded::write_journal(dir, journalled.len(), &entry)?;
                        journalled.push(entry.shard.file);
                        since = (records.len(), skipped.len(), converted.len(), resized);
                        if opts.stop_after_shards.is_some_and(|n| journalled.len() - kept_shards >= n) {
                            return Err(Error::Stopped {
                                dataset: manifest.name.clone(),
                                split: job.split.to_string(),
                                shards: journalled.len(),
                            });
                        }
                    }
                    let (shard, offset) = writer.append(bytes)?;
                    if let Some(from) = p.converted {
                        converted.push(Converted { name: item.name.clone(), from });
                    }
                    resized += u64::from(p.flags & encoded::FLAG_RESIZED != 0);
                    records.push(Record {
                        shard,
                        label: item.label,
                        flags: p.flags,
                        offset,
                        length: bytes.len() as u32,
                        width: p.width.min(65535) as u16,
                        height: p.height.min(65535) as u16,
                        name: item.name,
                    });
                }
            }
            Ok(())
        })();
        let _ = reader.join();
        consumed
    });
    bar.finish_and_clear();
    // Interrupted: the journalled shards stay for the next run. The source is wrong: nothing stays.
    let interrupted = |e: Error| {
        remove_shards(dir, job.split, &journalled);
        e
    };
    let wrong = |e: Error| {
        remove_progress(dir, job.split, &[]);
        e
    };
    result.map_err(interrupted)?;
    let shards = writer.finish().map_err(interrupted)?;
    let total = records.len() as u64 + skipped.len() as u64;
    if total != job.expected {
        return Err(wrong(Error::Format {
            path: job.source.clone(),
            detail: format!("{total} images, the manifest says {} for `{}`", job.expected, job.split),
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
        dataset: manifest.name.clone(),
        split: job.split.to_string(),
        classes: classes.to_vec(),
        sources: job.sources.clone(),
        shards,
        skipped,
        converted,
        max_side: opts.max_side,
        resized,
    };
    let sha256 = encoded::write_index(&index_path, &meta, &records).map_err(interrupted)?;
    let keep: Vec<String> = meta.shards.iter().map(|s| s.file.clone()).collect();
    remove_progress(dir, job.split, &keep);
    let seconds = started.elapsed().as_secs_f64();
    let handled = total - skip;
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
    Ok(report(job.split, index_path, &meta, records.len(), sha256, Some(run)))
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

fn find_file<'a>(manifest: &'a Manifest, pick: impl Fn(&FileEntry) -> bool, what: &str) -> Result<&'a FileEntry> {
    manifest.files.iter().find(|f| pick(f)).ok_or_else(|| Error::Unsupported {
        dataset: manifest.name.clone(),
        detail: format!("the manifest has no {what}"),
    })
}

/// Prepares ImageNet's train and val splits into encoded shards: from the official tars and devkit
/// (verified by hash) when they are all present, else from an alternative present in the dataset's
/// folder (the Kaggle zip, checked by its layout; see [`crate::kaggle`]). A split already prepared from
/// the same files with the same options is kept, even once its files are gone. With neither form
/// present, the error says which files to bring, where to get them and the command to run.
pub fn prepare(store: &Store, manifest: &Manifest, opts: &PrepareOptions) -> Result<Vec<PreparedReport>> {
    let tars_present = manifest.files.iter().all(|f| store.file_path(manifest, f).exists());
    if !tars_present {
        let dataset_dir = store.dataset_dir(manifest);
        if let Some((name, _)) = manifest.alternatives.iter().find(|(_, a)| dataset_dir.join(&a.file).exists()) {
            return crate::kaggle::prepare(store, manifest, name, opts);
        }
        if let Some(done) = already_prepared(store, manifest, opts) {
            return Ok(done);
        }
        if let Some(missing) = crate::fetch::missing_manual(store, manifest) {
            return Err(missing);
        }
    }
    prepare_tars(store, manifest, opts)
}

/// The reports of every split when all are prepared, with `opts`, from files the manifest accepts.
fn already_prepared(store: &Store, manifest: &Manifest, opts: &PrepareOptions) -> Option<Vec<PreparedReport>> {
    let dir = store.prepared_dir(manifest);
    manifest
        .splits
        .iter()
        .map(|(split, &expected)| {
            let index_path = encoded::index_path(&dir, split);
            let done = EncodedSplit::open(&index_path).ok()?;
            (done.meta.max_side == opts.max_side
                && (done.len() + done.meta.skipped.len()) as u64 == expected
                && store.accepts_sources(manifest, &done.meta.sources))
            .then(|| report(split, index_path.clone(), &done.meta, done.len(), done.checksum(), None))
        })
        .collect()
}

fn prepare_tars(store: &Store, manifest: &Manifest, opts: &PrepareOptions) -> Result<Vec<PreparedReport>> {
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
        let read = |skip: u64, tx: &SyncSender<Result<Vec<Item>>>| {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_headers_and_val_names_are_parsed_or_refused() {
        let mut jpeg = Vec::new();
        jpeg_encoder::Encoder::new(&mut jpeg, 80).encode(&[7u8; 5 * 3], 5, 3, jpeg_encoder::ColorType::Luma).unwrap();
        assert_eq!(jpeg_frame(&jpeg), Ok((5, 3, 1)));
        assert!(jpeg_frame(&jpeg[..10]).unwrap_err().contains("before a frame header"));
        assert!(jpeg_frame(b"\x89PNG\r\n").unwrap_err().contains("start-of-image"));
        assert_eq!(val_number("ILSVRC2012_val_00000001.JPEG"), Some(1));
        assert_eq!(val_number("ILSVRC2012_val_00050000.JPEG"), Some(50000));
        for bad in ["ILSVRC2012_val_1.JPEG", "ILSVRC2012_val_0000000x.JPEG", "val/ILSVRC2012_val_00000001.JPEG"] {
            assert_eq!(val_number(bad), None, "{bad}");
        }
    }

    #[test]
    fn processing_keeps_rgb_jpegs_converts_odd_ones_and_reports_corrupt_ones() {
        let rgb: Vec<u8> = (0..40 * 30 * 3).map(|i| (i % 251) as u8).collect();
        let mut jpeg = Vec::new();
        jpeg_encoder::Encoder::new(&mut jpeg, 90).encode(&rgb, 40, 30, jpeg_encoder::ColorType::Rgb).unwrap();
        let p = process("a.JPEG", &jpeg, None, 90);
        assert!(p.bytes.is_none() && p.skipped.is_none() && (p.width, p.height) == (40, 30));
        let p = process("a.JPEG", &jpeg, Some(20), 90);
        assert_eq!((p.width, p.height, p.flags), (20, 15, encoded::FLAG_RESIZED));
        let p = process("c.JPEG", &jpeg[..jpeg.len() / 4], None, 90);
        assert!(p.skipped.is_some_and(|r| r.starts_with("corrupt JPEG")), "a JPEG cut short does not decode");
        let p = process("b.JPEG", b"GIF89a....", None, 90);
        assert!(p.skipped.unwrap().contains("neither a JPEG nor a PNG (starts with 47 49 46 38)"));
    }
}
