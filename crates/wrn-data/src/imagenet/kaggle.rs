//! ImageNet as Kaggle's `imagenet-object-localization-challenge.zip`, checked by its layout and read in
//! place (never unpacked).
//!
//! ```text
//! LOC_synset_mapping.txt                                  one `<WNID> <words>` line per class
//! LOC_val_solution.csv                                    ImageId,PredictionString
//!                                                         ILSVRC2012_val_00008726,n02119789 255 142 454 329 n02119789 44 21 322 295
//! ILSVRC/Data/CLS-LOC/train/<WNID>/<WNID>_<k>.JPEG        the train images, one folder per class
//! ILSVRC/Data/CLS-LOC/val/ILSVRC2012_val_<8 digits>.JPEG  the val images
//! ILSVRC/Data/CLS-LOC/test/..., ILSVRC/Annotations/..., ILSVRC/ImageSets/..., the other CSVs: ignored
//! ```
//!
//! The member and folder names come from the manifest (`[alternatives.kaggle]`), the counts from its
//! `splits` and `classes.count`. The JPEG files are the official tars' own bytes, odd ones included, so
//! preparation gives the same cache as the tars: the same class order (sorted WNIDs, whatever the order
//! of the mapping file), train labels from the folder, and a val image's label the sorted position of
//! the first WNID of its PredictionString (all of an image's boxes share its class).
//!
//! No checksum is published for the zip (about 160 GB), so [`check`] checks its layout instead, from
//! the central directory ([`crate::zipdir`]) and the two small text members, reading nothing else: both
//! present and parseable, the class count, one train folder per class and no other, the image counts
//! per split, a label for every val image and an image for every label, no image member that is a link
//! (a link elsewhere is ignored),
//! encrypted, compressed other than stored or deflate, or that leaves the archive (absolute or `..`).
//! Every problem found is reported at once, naming the zip. The check's digest (SHA-256 over the names,
//! sizes and CRC-32s of the members that matter) stands in for the file's hash in its stamp and in the
//! prepared index's sources. The members' CRC-32s are checked as they are read.
//!
//! On a zip of the real size (1.43 million members) the check reads the central directory alone and
//! holds the `zip` crate's parsed copy of it, which it needs to read the text members.
//!
//! [`prepare`] feeds the images to the same split writer as the tars (`super::writer`): chunks of
//! images in stored order, each chunk read in parallel by workers that each clone one
//! `zip::ZipArchive` over a shared positional reader, then checked and converted in parallel.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::devkit::val_number;
use super::writer::{kept, write_split, Item, Sender, SplitJob, CHUNK};
use crate::cache::Source;
use crate::error::{Error, Result};
use crate::manifest::{is_safe_relative, Alternative, AlternativeFormat, Manifest};
use crate::prepare::{PrepareOptions, PreparedReport};
use crate::store::Store;
use crate::zipdir::{self, CentralEntry, SharedFile, DEFLATED, STORED};

/// The largest image member accepted (an index record holds a `u32` length).
const MAX_IMAGE: u64 = 1 << 30;
/// The largest text member read.
const MAX_TEXT: u64 = 256 << 20;
/// Problems listed in one error; the rest are counted.
const MAX_PROBLEMS: usize = 12;

/// The header of the val labels.
pub const VAL_HEADER: &str = "ImageId,PredictionString";

/// A checked Kaggle zip: its classes, and every image of each split with its label.
#[derive(Debug, Clone)]
pub struct KaggleZip {
    pub path: PathBuf,
    /// Class index -> WNID (sorted).
    pub wnids: Vec<String>,
    /// Split -> its images, in stored order.
    pub splits: BTreeMap<String, Vec<ZipImage>>,
    /// SHA-256 (hex) over the name, size and CRC-32 of every member that matters, in name order.
    pub digest: String,
}

/// One image member of the zip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZipImage {
    /// The member's path in the zip.
    pub member: String,
    pub label: u16,
    /// Uncompressed bytes.
    pub size: u64,
}

impl ZipImage {
    /// The file name, as the index records it (the same as in the official tars).
    pub fn name(&self) -> &str {
        self.member.rsplit('/').next().unwrap_or(&self.member)
    }
}

/// `n` and eight digits.
pub fn is_wnid(s: &str) -> bool {
    s.len() == 9 && s.starts_with('n') && s[1..].bytes().all(|b| b.is_ascii_digit())
}

/// `1281167` -> `1,281,167`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// What is wrong with one of the zip's text members: the member and, for a line, its number (from 1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("{member} line {line}: `{text}` does not start with a WNID (n and 8 digits)")]
    NotWnid { member: String, line: usize, text: String },
    #[error("{member} line {line}: {wnid} is listed twice")]
    ListedTwice { member: String, line: usize, wnid: String },
    #[error("{member}: the header is `{found}`, expected `{VAL_HEADER}`")]
    Header { member: String, found: String },
    #[error("{member} line {line}: `{text}` is not `ImageId,PredictionString`")]
    NotARow { member: String, line: usize, text: String },
    #[error("{member} line {line}: `{text}` does not give an image and a PredictionString starting with a WNID")]
    NoLabel { member: String, line: usize, text: String },
    #[error("{member} line {line}: {id} has a second row")]
    SecondRow { member: String, line: usize, id: String },
    #[error("{member}: {detail} (damaged zip)")]
    Unreadable { member: String, detail: String },
    #[error("{member} is larger than {MAX_TEXT} bytes")]
    TooLarge { member: String },
    #[error("{member} is not UTF-8 text")]
    NotUtf8 { member: String },
}

/// The WNIDs of a class list (`<WNID> <words>` lines), in file order; `member` names it in errors.
pub fn parse_class_list(text: &str, member: &str) -> std::result::Result<Vec<String>, TextError> {
    let mut wnids = Vec::new();
    let mut seen = HashSet::new();
    for (k, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let wnid = line.split_once(' ').map_or(line, |(w, _)| w);
        if !is_wnid(wnid) {
            return Err(TextError::NotWnid { member: member.into(), line: k + 1, text: line.into() });
        }
        if !seen.insert(wnid) {
            return Err(TextError::ListedTwice { member: member.into(), line: k + 1, wnid: wnid.into() });
        }
        wnids.push(wnid.to_string());
    }
    Ok(wnids)
}

/// The val labels (`ImageId,PredictionString` rows): ImageId -> the first WNID of its PredictionString.
pub fn parse_val_solution(text: &str, member: &str) -> std::result::Result<HashMap<String, String>, TextError> {
    let mut lines = text.lines().enumerate();
    let header = lines.next().map_or("", |(_, l)| l.trim_start_matches('\u{feff}').trim_end_matches('\r'));
    if header != VAL_HEADER {
        return Err(TextError::Header { member: member.into(), found: header.into() });
    }
    let mut labels = HashMap::new();
    for (k, line) in lines {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let (member, text, line_no) = (member.to_string(), line.to_string(), k + 1);
        let Some((id, prediction)) = line.split_once(',') else {
            return Err(TextError::NotARow { member, line: line_no, text });
        };
        let wnid = prediction.split_whitespace().next().unwrap_or("");
        if id.is_empty() || !is_wnid(wnid) {
            return Err(TextError::NoLabel { member, line: line_no, text });
        }
        if labels.insert(id.to_string(), wnid.to_string()).is_some() {
            return Err(TextError::SecondRow { member, line: line_no, id: id.into() });
        }
    }
    Ok(labels)
}

/// The problems found by a check, in the order found.
#[derive(Default)]
struct Problems {
    shown: Vec<String>,
    more: usize,
}

impl Problems {
    fn push(&mut self, problem: String) {
        if self.shown.len() < MAX_PROBLEMS {
            self.shown.push(problem);
        } else {
            self.more += 1;
        }
    }

    fn into_error(self, path: &Path) -> Option<Error> {
        let n = self.shown.len() + self.more;
        let mut detail = match n {
            0 => return None,
            1 => self.shown[0].clone(),
            _ => format!("{n} problems: {}", self.shown.join("; ")),
        };
        if self.more > 0 {
            detail.push_str(&format!("; and {} more", self.more));
        }
        Some(Error::Archive { path: path.into(), detail })
    }
}

/// The alternative `name` of `manifest`, which must be a Kaggle zip.
fn alternative<'a>(manifest: &'a Manifest, name: &str) -> Result<&'a Alternative> {
    match manifest.alternatives.get(name) {
        Some(a) if a.format == AlternativeFormat::KaggleZip => Ok(a),
        _ => Err(Error::Unsupported {
            dataset: manifest.name.clone(),
            detail: format!("the manifest has no Kaggle-zip alternative `{name}`"),
        }),
    }
}

/// Reads a text member through the zip crate.
fn read_text(archive: &mut zip::ZipArchive<SharedFile>, member: &str) -> std::result::Result<String, TextError> {
    let unreadable = |e: &dyn std::fmt::Display| TextError::Unreadable { member: member.into(), detail: e.to_string() };
    let file = archive.by_name(member).map_err(|e| unreadable(&e))?;
    let mut bytes = Vec::new();
    file.take(MAX_TEXT + 1).read_to_end(&mut bytes).map_err(|e| unreadable(&e))?;
    if bytes.len() as u64 > MAX_TEXT {
        return Err(TextError::TooLarge { member: member.into() });
    }
    String::from_utf8(bytes).map_err(|_| TextError::NotUtf8 { member: member.into() })
}

/// A member that matters: (name, uncompressed size, CRC-32).
type Member = (String, u64, u32);

/// The members that matter, in stored order: the two text members, the train and the val images.
#[derive(Default)]
struct Members {
    text: Vec<Member>,
    train: Vec<Member>,
    val: Vec<Member>,
}

/// Where the layout keeps each split's images (`None`: the manifest has no such split).
struct Folders<'a> {
    train: Option<&'a str>,
    val: Option<&'a str>,
}

impl Folders<'_> {
    /// The WNID folder of a train member.
    fn wnid_of(&self, member: &str) -> String {
        let prefix = self.train.unwrap_or_default();
        member[prefix.len()..].split('/').next().unwrap_or_default().to_string()
    }
}

/// The text members as read (`None` when absent or unreadable, which is a problem listed).
struct Texts {
    class_list: Option<String>,
    val_labels: Option<String>,
}

/// Checks the zip at `path` against the Kaggle layout of `manifest`'s alternative `name`, from its
/// central directory and its two text members. `Ok(None)` when it is a zip but holds none of the
/// layout's members or folders (some other zip); an error naming the zip and listing every problem
/// when it is this layout but not as the manifest describes it.
pub fn check(path: &Path, manifest: &Manifest, name: &str) -> Result<Option<KaggleZip>> {
    let alt = alternative(manifest, name)?;
    labelled_splits_only(manifest, alt)?;
    let folders = Folders {
        train: alt.folders.get("train").map(String::as_str),
        val: alt.folders.get("val").map(String::as_str),
    };
    let mut problems = Problems::default();
    let members = scan(path, alt, &folders, &mut problems)?;
    if members.text.is_empty() && members.train.is_empty() && members.val.is_empty() {
        return Ok(None);
    }
    let digest = digest(&members, &mut problems);
    let texts = read_texts(path, alt, &members.text, &mut problems)?;
    let wnids = check_classes(texts.class_list, alt, manifest, &members.train, &folders, &mut problems);
    for (split, found) in [("train", members.train.len()), ("val", members.val.len())] {
        if let Some(&expected) = manifest.splits.get(split) {
            if found as u64 != expected {
                problems.push(format!("{split} has {} images, expected {}", grouped(found as u64), grouped(expected)));
            }
        }
    }
    let val_label_of = check_val_labels(texts.val_labels, alt, &members.val, wnids.as_deref(), &mut problems);
    if let Some(error) = problems.into_error(path) {
        return Err(error);
    }
    let wnids = wnids.expect("no problems, so the class list was read");
    let label = |wnid: &str| class_of(&wnids, wnid).expect("checked above") as u16;
    let image = |(member, size, _): Member, label: u16| ZipImage { label, member, size };
    let train: Vec<ZipImage> = members
        .train
        .into_iter()
        .map(|m| {
            let l = label(&folders.wnid_of(&m.0));
            image(m, l)
        })
        .collect();
    let val: Vec<ZipImage> = members
        .val
        .into_iter()
        .map(|m| {
            let l = label(&val_label_of[image_id(&m.0)]);
            image(m, l)
        })
        .collect();
    let splits = [("train".to_string(), train), ("val".to_string(), val)]
        .into_iter()
        .filter(|(split, _)| alt.folders.contains_key(split))
        .collect();
    Ok(Some(KaggleZip { path: path.into(), wnids, splits, digest }))
}

/// The layout labels train (by folder) and val (by the solution CSV) only.
fn labelled_splits_only(manifest: &Manifest, alt: &Alternative) -> Result<()> {
    match alt.folders.keys().find(|split| *split != "train" && *split != "val") {
        Some(split) => Err(Error::Unsupported {
            dataset: manifest.name.clone(),
            detail: format!(
                "split `{split}`: the Kaggle layout labels train (by folder) and val (by {}) only",
                alt.val_labels
            ),
        }),
        None => Ok(()),
    }
}

/// Walks the central directory: sorts the members that matter and lists the problems of each.
fn scan(path: &Path, alt: &Alternative, folders: &Folders, problems: &mut Problems) -> Result<Members> {
    let mut members = Members::default();
    zipdir::read_central_directory(path, |e: &CentralEntry| {
        if !is_safe_relative(e.name.trim_end_matches('/')) {
            problems.push(format!("member `{}` leaves the archive's folder (absolute or `..`)", e.name));
            return Ok(());
        }
        if e.is_dir() {
            return Ok(());
        }
        let in_train = folders.train.and_then(|f| e.name.strip_prefix(f));
        let in_val = folders.val.and_then(|f| e.name.strip_prefix(f));
        let text = e.name == alt.class_list || e.name == alt.val_labels;
        if !(text || in_train.is_some() || in_val.is_some()) {
            return Ok(());
        }
        if let Some(problem) = unreadable(e) {
            problems.push(problem);
        }
        let entry = (e.name.clone(), e.size, e.crc32);
        if text {
            members.text.push(entry);
        } else if let Some(rest) = in_train {
            match rest.split_once('/') {
                Some((wnid, file)) if !wnid.is_empty() && !file.is_empty() && !file.contains('/') => {
                    members.train.push(entry);
                }
                _ => problems.push(format!(
                    "unexpected member `{}`: train images are {}<WNID>/<file>",
                    e.name,
                    folders.train.unwrap_or_default()
                )),
            }
        } else if let Some(rest) = in_val {
            match val_number(rest) {
                Some(_) => members.val.push(entry),
                None => problems.push(format!(
                    "unexpected member `{}`: val images are {}ILSVRC2012_val_<8 digits>.JPEG",
                    e.name,
                    folders.val.unwrap_or_default()
                )),
            }
        }
        Ok(())
    })?;
    Ok(members)
}

/// Why a member that matters cannot be read as it is, if it cannot.
fn unreadable(e: &CentralEntry) -> Option<String> {
    if e.is_symlink() {
        Some(format!("member `{}` is a link; links are refused", e.name))
    } else if e.encrypted {
        Some(format!("member `{}` is encrypted", e.name))
    } else if e.method != STORED && e.method != DEFLATED {
        Some(format!(
            "member `{}` uses compression method {}; only stored (0) and deflate (8) are read",
            e.name, e.method
        ))
    } else if e.size > MAX_IMAGE {
        Some(format!("member `{}` claims {} bytes, more than an image or list can be", e.name, e.size))
    } else {
        None
    }
}

/// The digest over the members that matter, in name order, which also shows any name stored twice.
fn digest(members: &Members, problems: &mut Problems) -> String {
    let mut digested: Vec<&Member> = members.text.iter().chain(&members.train).chain(&members.val).collect();
    digested.sort_unstable();
    for twice in digested.windows(2).filter(|w| w[0].0 == w[1].0) {
        problems.push(format!("member `{}` appears twice", twice[0].0));
    }
    let mut hash = Sha256::new();
    for (name, size, crc) in &digested {
        hash.update(format!("{name}\0{size}\0{crc:08x}\n"));
    }
    format!("{:x}", hash.finalize())
}

/// Reads the class list and the val labels through the zip crate; a missing or unreadable one is a
/// problem.
fn read_texts(path: &Path, alt: &Alternative, text: &[Member], problems: &mut Problems) -> Result<Texts> {
    let has = |member: &str| text.iter().any(|(n, _, _)| n == member);
    let (has_class_list, has_val_labels) = (has(&alt.class_list), has(&alt.val_labels));
    let mut texts = Texts { class_list: None, val_labels: None };
    if has_class_list || has_val_labels {
        let mut archive = zip::ZipArchive::new(SharedFile::open(path)?)
            .map_err(|e| Error::Archive { path: path.into(), detail: format!("not readable as a zip: {e}") })?;
        for (present, member, out) in [
            (has_class_list, &alt.class_list, &mut texts.class_list),
            (has_val_labels, &alt.val_labels, &mut texts.val_labels),
        ] {
            if present {
                match read_text(&mut archive, member) {
                    Ok(text) => *out = Some(text),
                    Err(problem) => problems.push(problem.to_string()),
                }
            }
        }
    }
    if !has_class_list {
        problems.push(format!("missing {}", alt.class_list));
    }
    if !has_val_labels {
        problems.push(format!("missing {}", alt.val_labels));
    }
    Ok(texts)
}

/// The class of a WNID in the sorted `wnids`.
fn class_of(wnids: &[String], wnid: &str) -> Option<usize> {
    wnids.binary_search_by(|w| w.as_str().cmp(wnid)).ok()
}

/// The sorted WNIDs of the class list, checked for the class count and one train folder per class.
fn check_classes(
    class_list: Option<String>,
    alt: &Alternative,
    manifest: &Manifest,
    train: &[Member],
    folders: &Folders,
    problems: &mut Problems,
) -> Option<Vec<String>> {
    let mut wnids: Option<Vec<String>> = None;
    match parse_class_list(&class_list?, &alt.class_list) {
        Ok(list) if list.len() != manifest.classes.count => problems.push(format!(
            "{} lists {} classes, expected {}",
            alt.class_list,
            grouped(list.len() as u64),
            grouped(manifest.classes.count as u64)
        )),
        Ok(mut list) => {
            list.sort_unstable();
            wnids = Some(list);
        }
        Err(problem) => problems.push(problem.to_string()),
    }
    if let Some(wnids) = &wnids {
        let found: BTreeSet<String> = train.iter().map(|(m, _, _)| folders.wnid_of(m)).collect();
        for folder in &found {
            if class_of(wnids, folder).is_none() {
                problems.push(format!("train folder {folder} not in {}", alt.class_list));
            }
        }
        for wnid in wnids.iter().filter(|w| !found.contains(*w)) {
            problems.push(format!(
                "class {wnid} of {} has no train images (no folder {}{wnid}/)",
                alt.class_list,
                folders.train.unwrap_or_default()
            ));
        }
    }
    wnids
}

/// The val labels (ImageId -> WNID), checked: a row for every image, an image for every row, every
/// label a class (when the classes were read).
fn check_val_labels(
    val_labels: Option<String>,
    alt: &Alternative,
    val: &[Member],
    wnids: Option<&[String]>,
    problems: &mut Problems,
) -> HashMap<String, String> {
    let Some(text) = val_labels else { return HashMap::new() };
    let (label_of, parsed) = match parse_val_solution(&text, &alt.val_labels) {
        Ok(labels) => (labels, true),
        Err(problem) => {
            problems.push(problem.to_string());
            (HashMap::new(), false)
        }
    };
    let stems: HashSet<&str> = val.iter().map(|(m, _, _)| image_id(m)).collect();
    for (member, _, _) in val {
        let id = image_id(member);
        match (label_of.get(id), wnids) {
            (None, _) if parsed => {
                problems.push(format!("val image {} has no row in {}", file_name(member), alt.val_labels))
            }
            (Some(wnid), Some(wnids)) if class_of(wnids, wnid).is_none() => {
                problems.push(format!("{}: {id} is labelled {wnid}, not in {}", alt.val_labels, alt.class_list))
            }
            _ => {}
        }
    }
    let mut extra: Vec<&String> = label_of.keys().filter(|id| !stems.contains(id.as_str())).collect();
    if !extra.is_empty() {
        extra.sort_unstable();
        problems.push(format!(
            "{} has rows for {} images the zip does not hold (first: {})",
            alt.val_labels,
            grouped(extra.len() as u64),
            extra[0]
        ));
    }
    label_of
}

fn file_name(member: &str) -> &str {
    member.rsplit('/').next().unwrap_or(member)
}

/// `…/ILSVRC2012_val_00000001.JPEG` -> `ILSVRC2012_val_00000001`.
fn image_id(member: &str) -> &str {
    let name = file_name(member);
    name.rsplit_once('.').map_or(name, |(stem, _)| stem)
}

/// What a zip that is not of this layout lacks, for errors.
pub fn not_this_layout(alt: &Alternative) -> String {
    let folders: Vec<&str> = alt.folders.values().map(String::as_str).collect();
    format!(
        "a zip, but not {}: it holds none of {}, {}, {}",
        alt.file,
        alt.class_list,
        alt.val_labels,
        folders.join(", ")
    )
}

/// Checks the zip at `path` and stamps it as layout-checked; a zip that fails loses its stamp.
pub fn check_and_stamp(path: &Path, manifest: &Manifest, name: &str) -> Result<KaggleZip> {
    let alt = alternative(manifest, name)?;
    let checked = check(path, manifest, name)
        .and_then(|zip| zip.ok_or_else(|| Error::Archive { path: path.into(), detail: not_this_layout(alt) }));
    match checked {
        Ok(zip) => {
            if crate::verify::layout_stamp(path, name).as_deref() != Some(zip.digest.as_str()) {
                crate::verify::write_layout_stamp(path, name, &zip.digest)?;
            }
            Ok(zip)
        }
        Err(e) => {
            crate::verify::remove_stamp(path);
            Err(e)
        }
    }
}

/// Reads one image member (its CRC-32 checked by the zip crate at the end).
fn read_image(path: &Path, archive: &mut zip::ZipArchive<SharedFile>, image: &ZipImage) -> Result<Item> {
    let err = |detail: String| Error::Archive { path: path.into(), detail };
    let index = archive
        .index_for_name(&image.member)
        .ok_or_else(|| err(format!("member `{}` is listed but the zip reader does not find it", image.member)))?;
    let file = archive.by_index(index).map_err(|e| err(format!("member `{}`: {e}", image.member)))?;
    let mut bytes = Vec::with_capacity(image.size.min(16 << 20) as usize);
    file.take(image.size + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| err(format!("member `{}`: {e} (damaged zip: download it again)", image.member)))?;
    if bytes.len() as u64 != image.size {
        return Err(err(format!(
            "member `{}`: {} bytes read, the central directory says {} (damaged zip: download it again)",
            image.member,
            bytes.len(),
            image.size
        )));
    }
    Ok(Item { name: image.name().to_string(), label: image.label, bytes })
}

/// Sends a split's images in chunks, each chunk read in parallel (each worker with its own clone of
/// the archive).
fn read_images(path: &Path, archive: &zip::ZipArchive<SharedFile>, images: &[ZipImage], tx: &Sender) -> Result<()> {
    for chunk in images.chunks(CHUNK) {
        let items: Vec<Item> = chunk
            .par_iter()
            .map_init(|| archive.clone(), |a, image| read_image(path, a, image))
            .collect::<Result<_>>()?;
        if tx.send(Ok(items)).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// Prepares ImageNet from the Kaggle zip of alternative `name` in the dataset's folder (checked, and
/// stamped, first) into the same encoded cache as the tars. A split already prepared from the same zip
/// (same digest) with the same options is kept.
pub fn prepare(store: &Store, manifest: &Manifest, name: &str, opts: &PrepareOptions) -> Result<Vec<PreparedReport>> {
    let alt = alternative(manifest, name)?;
    let path = store.alternative_path(manifest, alt);
    let zip = check_and_stamp(&path, manifest, name)?;
    let dir = store.prepared_dir(manifest);
    let sources = vec![Source { file: alt.file.clone(), sha256: zip.digest.clone() }];
    let mut archive: Option<zip::ZipArchive<SharedFile>> = None;
    let mut reports = Vec::new();
    for (split, &expected) in &manifest.splits {
        if let Some(done) = kept(&dir, split, &sources, expected, opts) {
            reports.push(done);
            continue;
        }
        let images = zip.splits.get(split).map(Vec::as_slice).unwrap_or_default();
        if archive.is_none() {
            let opened = zip::ZipArchive::new(SharedFile::open(&path)?)
                .map_err(|e| Error::Archive { path: path.clone(), detail: format!("not readable as a zip: {e}") })?;
            archive = Some(opened);
        }
        let archive = archive.as_ref().expect("opened above");
        let job = SplitJob {
            split,
            source: path.clone(),
            bytes: images.iter().map(|i| i.size).sum(),
            expected,
            sources: sources.clone(),
        };
        let read = |skip: u64, tx: &Sender| {
            let rest = usize::try_from(skip).ok().and_then(|skip| images.get(skip..)).unwrap_or_default();
            read_images(&path, archive, rest, tx)
        };
        reports.push(write_split(&job, &dir, &zip.wnids, manifest, opts, read)?);
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_lists_and_val_solutions_parse_or_say_what_is_wrong() {
        let list = "n01440764 tench, Tinca tinca\r\nn01443537 goldfish, Carassius auratus\n\n";
        assert_eq!(parse_class_list(list, "m.txt").unwrap(), ["n01440764", "n01443537"]);
        let err = parse_class_list("n01440764 tench\nfish n01443537\n", "m.txt").unwrap_err().to_string();
        assert!(err.contains("m.txt line 2") && err.contains("does not start with a WNID"), "{err}");
        let err = parse_class_list("n01440764 tench\nn01440764 tench\n", "m.txt").unwrap_err().to_string();
        assert!(err.contains("listed twice"), "{err}");

        let csv =
            "ImageId,PredictionString\nILSVRC2012_val_00008726,n02119789 255 142 454 329 n02119789 44 21 322 295 \n\
                   ILSVRC2012_val_00000001,n01751748 10 20 30 40\n";
        let labels = parse_val_solution(csv, "v.csv").unwrap();
        assert_eq!(labels["ILSVRC2012_val_00008726"], "n02119789");
        assert_eq!(labels["ILSVRC2012_val_00000001"], "n01751748");
        let err = parse_val_solution("Id,Label\n", "v.csv").unwrap_err().to_string();
        assert!(err.contains("header is `Id,Label`"), "{err}");
        let err = parse_val_solution("ImageId,PredictionString\nILSVRC2012_val_00000001,255 142\n", "v.csv")
            .unwrap_err()
            .to_string();
        assert!(err.contains("v.csv line 2"), "{err}");
        let twice = "ImageId,PredictionString\nA,n01751748 1 2 3 4\nA,n01751748 1 2 3 4\n";
        assert!(parse_val_solution(twice, "v.csv").unwrap_err().to_string().contains("second row"));
        assert_eq!(grouped(1_281_167), "1,281,167");
        assert_eq!(grouped(999), "999");
        assert_eq!(image_id("a/b/ILSVRC2012_val_00000001.JPEG"), "ILSVRC2012_val_00000001");
    }
}
