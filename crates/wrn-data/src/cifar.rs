//! CIFAR-10 and CIFAR-100 from their binary archives (`cifar-10-binary.tar.gz`, `cifar-100-binary.tar.gz`).
//!
//! Records: CIFAR-10 is `label, R[1024], G[1024], B[1024]` (3073 bytes); CIFAR-100 is
//! `coarse, fine, R, G, B` (3074 bytes); each plane is 32x32 row-major. The archive is streamed
//! (gzip + tar) without unpacking to disk; every member is checked against the manifest (no missing,
//! no extra, none twice, sizes and SHA-256 where known, no links or paths leaving the archive's folder;
//! a member's size is checked from its header before it is read, and members the manifest gives no
//! size are read up to a hard limit), the archive's own SHA-256 is computed as it streams and checked
//! against the manifest before anything is written (`prepare::check_source`), records
//! are converted to the NHWC prepared cache, and the class names in the archive are compared with
//! the manifest's. CIFAR-100 keeps the fine label as the label and the coarse label beside it.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::cache::{self, Source, SplitData, SplitMeta};
use crate::error::{Error, IoContext, Result};
use crate::manifest::{FileEntry, Format, Manifest, Member};
use crate::prepare::{self as shared, HashingReader, PreparedReport};
use crate::store::Store;

pub const SIDE: usize = 32;
pub const PIXELS: usize = SIDE * SIDE * 3;

/// Bytes per record of a CIFAR format.
pub fn record_size(format: Format) -> Option<usize> {
    match format {
        Format::Cifar10Binary => Some(1 + PIXELS),
        Format::Cifar100Binary => Some(2 + PIXELS),
        _ => None,
    }
}

/// Images (NHWC), labels and, for CIFAR-100, coarse labels decoded from records.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Decoded {
    pub images: Vec<u8>,
    pub labels: Vec<u16>,
    pub coarse: Option<Vec<u16>>,
}

/// Converts one image from CIFAR's planar R, G, B (each row-major) to interleaved HWC.
pub fn planes_to_hwc(planes: &[u8], hwc: &mut [u8]) {
    let plane = SIDE * SIDE;
    for p in 0..plane {
        hwc[3 * p] = planes[p];
        hwc[3 * p + 1] = planes[plane + p];
        hwc[3 * p + 2] = planes[2 * plane + p];
    }
}

/// Decodes the records of one member; `origin` names it in errors.
pub fn decode_records(
    bytes: &[u8],
    format: Format,
    classes: usize,
    coarse_classes: usize,
    origin: &Path,
) -> Result<Decoded> {
    let record = record_size(format)
        .ok_or_else(|| Error::Format { path: origin.into(), detail: format!("{format:?} is not a CIFAR format") })?;
    if !bytes.len().is_multiple_of(record) {
        return Err(Error::Format {
            path: origin.into(),
            detail: format!(
                "{} bytes is not a multiple of the {record}-byte record ({} whole records and {} bytes left over)",
                bytes.len(),
                bytes.len() / record,
                bytes.len() % record
            ),
        });
    }
    let n = bytes.len() / record;
    let header = record - PIXELS;
    let mut out = Decoded { images: vec![0; n * PIXELS], labels: Vec::with_capacity(n), coarse: None };
    let mut coarse = Vec::new();
    for (i, rec) in bytes.chunks_exact(record).enumerate() {
        let (label, coarse_label) = if header == 1 { (rec[0], None) } else { (rec[1], Some(rec[0])) };
        if usize::from(label) >= classes {
            return Err(Error::Format {
                path: origin.into(),
                detail: format!("record {i}: label {label} is not below the {classes} classes"),
            });
        }
        out.labels.push(u16::from(label));
        if let Some(c) = coarse_label {
            if usize::from(c) >= coarse_classes {
                return Err(Error::Format {
                    path: origin.into(),
                    detail: format!("record {i}: coarse label {c} is not below the {coarse_classes} classes"),
                });
            }
            coarse.push(u16::from(c));
        }
    }
    out.images.par_chunks_mut(PIXELS).zip(bytes.par_chunks_exact(record)).for_each(|(dst, rec)| {
        planes_to_hwc(&rec[header..], dst);
    });
    if header == 2 {
        out.coarse = Some(coarse);
    }
    Ok(out)
}

/// The largest member read when the manifest gives no size for it (CIFAR-100's train batch is 150 MB).
const MAX_MEMBER: u64 = 1 << 30;

/// Reads the members of a CIFAR archive into memory, checking them against the manifest entry.
/// Returns member path -> bytes for every listed member present.
pub fn read_archive(path: &Path, entry: &FileEntry) -> Result<BTreeMap<String, Vec<u8>>> {
    let file = std::fs::File::open(path).at(path)?;
    read_members(HashingReader::new(file), path, entry).map(|(members, _)| members)
}

/// Like [`read_archive`], from the open file, also returning the SHA-256 of every byte of the archive,
/// hashed as it streams.
fn read_members(
    source: HashingReader<std::fs::File>,
    path: &Path,
    entry: &FileEntry,
) -> Result<(BTreeMap<String, Vec<u8>>, String)> {
    let err = |detail: String| Error::Archive { path: path.into(), detail };
    let gz = flate2::read::GzDecoder::new(std::io::BufReader::with_capacity(1 << 20, source));
    let mut archive = tar::Archive::new(gz);
    let mut found = BTreeMap::new();
    let entries = archive.entries().map_err(|e| err(format!("not a readable tar.gz: {e}")))?;
    for item in entries {
        let mut item = item.map_err(|e| err(format!("truncated or corrupt archive: {e}")))?;
        let Some(member) = listed_member(&item, path, entry)? else { continue };
        if found.contains_key(&member.path) {
            return Err(err(format!("member `{}` appears twice; an archive holds each member once", member.path)));
        }
        let bytes = read_member(&mut item, member, path)?;
        found.insert(member.path.clone(), bytes);
    }
    let missing: Vec<&str> =
        entry.members.iter().filter(|m| !m.optional && !found.contains_key(&m.path)).map(|m| m.path.as_str()).collect();
    if !missing.is_empty() {
        return Err(err(format!("missing member(s): {}", missing.join(", "))));
    }
    let source = archive.into_inner().into_inner().into_inner();
    let sha256 = source.finish().map_err(|e| err(format!("reading to the end: {e}")))?;
    Ok((found, sha256))
}

/// The manifest's member for a tar member: a regular file at a safe path that the manifest lists;
/// `None` for a directory.
fn listed_member<'a, R: Read>(item: &tar::Entry<R>, path: &Path, entry: &'a FileEntry) -> Result<Option<&'a Member>> {
    let err = |detail: String| Error::Archive { path: path.into(), detail };
    let name = String::from_utf8_lossy(&item.path_bytes()).into_owned();
    let trimmed = name.trim_end_matches('/');
    if !crate::manifest::is_safe_relative(trimmed) {
        return Err(err(format!("member `{name}` has an absolute path or `..`; refusing to read it")));
    }
    let kind = item.header().entry_type();
    if kind.is_dir() {
        return Ok(None);
    }
    if !kind.is_file() {
        return Err(err(format!("member `{name}` is a {kind:?}, not a regular file (links are refused)")));
    }
    match entry.members.iter().find(|m| m.path == trimmed) {
        Some(member) => Ok(Some(member)),
        None => Err(err(format!("unexpected member `{name}` (not in the manifest)"))),
    }
}

/// Reads one member, whose header's size is checked against the manifest's before anything is read
/// (and, when the manifest gives none, against [`MAX_MEMBER`]); its SHA-256 is checked when listed.
fn read_member<R: Read>(item: &mut tar::Entry<R>, member: &Member, path: &Path) -> Result<Vec<u8>> {
    let err = |detail: String| Error::Archive { path: path.into(), detail };
    let (name, claimed) = (&member.path, item.size());
    match member.size {
        Some(size) if claimed != size => {
            return Err(err(format!("member `{name}` is {claimed} bytes, expected {size}")))
        }
        None if claimed > MAX_MEMBER => {
            return Err(err(format!(
                "member `{name}` claims {claimed} bytes, more than the {MAX_MEMBER} a member may have"
            )))
        }
        _ => {}
    }
    let mut bytes = Vec::with_capacity(claimed.min(64 << 20) as usize);
    item.take(claimed)
        .read_to_end(&mut bytes)
        .map_err(|e| err(format!("member `{name}`: truncated or corrupt archive: {e}")))?;
    if bytes.len() as u64 != claimed {
        return Err(err(format!(
            "member `{name}`: {} of its {claimed} bytes present (truncated archive)",
            bytes.len()
        )));
    }
    if let Some(expected) = &member.sha256 {
        let actual = format!("{:x}", Sha256::digest(&bytes));
        if &actual != expected {
            return Err(err(format!("member `{name}`: SHA-256 {actual}, expected {expected}")));
        }
    }
    Ok(bytes)
}

/// Class names from a label-names member: one per line, blank lines and surrounding whitespace ignored.
pub fn parse_names(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes).lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()
}

fn check_names(archive: &Path, member: &str, found: &[u8], expected: &[String]) -> Result<()> {
    let names = parse_names(found);
    if !expected.is_empty() && names != expected {
        return Err(Error::Archive {
            path: archive.into(),
            detail: format!("member `{member}` lists classes {names:?}, the manifest {expected:?}"),
        });
    }
    Ok(())
}

/// Prepares every split of a CIFAR dataset from its archive into the prepared cache. The archive is
/// hashed as it streams and checked against the manifest's SHA-256 before anything is written.
pub fn prepare(store: &Store, manifest: &Manifest) -> Result<Vec<PreparedReport>> {
    let entry = manifest.files.first().ok_or_else(|| Error::Unsupported {
        dataset: manifest.name.clone(),
        detail: "the manifest lists no files; a CIFAR manifest lists its archive".into(),
    })?;
    let archive = store.file_path(manifest, entry);
    let file = shared::open_source(&archive, entry)?;
    let (members, source_sha256) = read_members(HashingReader::new(file), &archive, entry)?;
    shared::check_source(&archive, entry, manifest, &source_sha256)?;
    let class_names = class_names(manifest, &members, &archive)?;
    let source = Source { file: entry.name.clone(), sha256: source_sha256 };
    let mut reports = Vec::new();
    for (split, &expected_n) in &manifest.splits {
        let all = decode_split(manifest, entry, &members, split, &archive)?;
        if all.labels.len() as u64 != expected_n {
            return Err(Error::Archive {
                path: archive.clone(),
                detail: format!("split `{split}` has {} records, the manifest says {expected_n}", all.labels.len()),
            });
        }
        let meta = SplitMeta {
            dataset: manifest.name.clone(),
            split: split.clone(),
            classes: class_names.clone(),
            coarse_classes: manifest.classes.coarse.clone(),
            sources: vec![source.clone()],
        };
        let path = cache::split_path(&store.prepared_dir(manifest), split);
        let data = SplitData {
            meta: &meta,
            height: SIDE as u32,
            width: SIDE as u32,
            channels: 3,
            images: &all.images,
            labels: &all.labels,
            coarse_labels: all.coarse.as_deref(),
        };
        let sha256 = cache::write(&path, &data)?;
        reports.push(PreparedReport { split: split.clone(), path, images: all.labels.len(), sha256, notes: vec![] });
    }
    Ok(reports)
}

/// The class names (the manifest's, or read from the archive's label-names member), checked against
/// the class count and against the names the archive lists.
fn class_names(manifest: &Manifest, members: &BTreeMap<String, Vec<u8>>, archive: &Path) -> Result<Vec<String>> {
    let classes = &manifest.classes;
    let class_names = if classes.names.is_empty() {
        let src = classes.source.as_deref().unwrap_or_default();
        parse_names(members.get(src).map(Vec::as_slice).unwrap_or_default())
    } else {
        classes.names.clone()
    };
    if class_names.len() != classes.count {
        return Err(Error::Archive {
            path: archive.into(),
            detail: format!("{} class names, expected {}", class_names.len(), classes.count),
        });
    }
    for (src, expected) in [(&classes.source, &classes.names), (&classes.coarse_source, &classes.coarse)] {
        if let Some((src, bytes)) = src.as_ref().and_then(|s| members.get(s).map(|b| (s, b))) {
            check_names(archive, src, bytes, expected)?;
        }
    }
    Ok(class_names)
}

/// The records of every member of `split`, decoded and concatenated in manifest order.
fn decode_split(
    manifest: &Manifest,
    entry: &FileEntry,
    members: &BTreeMap<String, Vec<u8>>,
    split: &str,
    archive: &Path,
) -> Result<Decoded> {
    let classes = &manifest.classes;
    let mut all = Decoded::default();
    for m in entry.members.iter().filter(|m| m.split.as_deref() == Some(split)) {
        let origin = archive.join(&m.path);
        let Some(bytes) = members.get(&m.path) else { continue };
        let d = decode_records(bytes, manifest.format, classes.count, classes.coarse.len(), &origin)?;
        all.images.extend_from_slice(&d.images);
        all.labels.extend_from_slice(&d.labels);
        if let Some(c) = d.coarse {
            all.coarse.get_or_insert_with(Vec::new).extend_from_slice(&c);
        }
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-built CIFAR-10 record: label, then R, G, B planes where pixel (r, c) of plane ch holds
    /// `ch*100 + r + c` (wrapping).
    fn record10(label: u8) -> Vec<u8> {
        let mut rec = vec![label];
        for ch in 0..3u32 {
            for r in 0..32u32 {
                for c in 0..32u32 {
                    rec.push((ch * 100 + r + c) as u8);
                }
            }
        }
        rec
    }

    #[test]
    fn cifar10_records_decode_to_hwc_with_their_labels() {
        let bytes: Vec<u8> = [record10(3), record10(9)].concat();
        let d = decode_records(&bytes, Format::Cifar10Binary, 10, 0, Path::new("b.bin")).unwrap();
        assert_eq!(d.labels, [3, 9]);
        assert_eq!(d.coarse, None);
        assert_eq!(d.images.len(), 2 * PIXELS);
        // pixel (row 5, col 7): R, G, B interleaved.
        let at = (5 * 32 + 7) * 3;
        assert_eq!(&d.images[at..at + 3], &[12, 112, 212]);
        // top-left of the second image
        assert_eq!(&d.images[PIXELS..PIXELS + 3], &[0, 100, 200]);
    }

    #[test]
    fn cifar100_keeps_fine_as_label_and_coarse_beside_it() {
        let mut rec = vec![7u8, 42];
        rec.extend(record10(0)[1..].iter());
        let d = decode_records(&rec, Format::Cifar100Binary, 100, 20, Path::new("t.bin")).unwrap();
        assert_eq!((d.labels[0], d.coarse.unwrap()[0]), (42, 7));
    }

    #[test]
    fn bad_records_name_the_file_and_the_fault() {
        let bytes = [record10(1), vec![0; 10]].concat();
        let err = decode_records(&bytes, Format::Cifar10Binary, 10, 0, Path::new("x/data_batch_1.bin"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("x/data_batch_1.bin") && err.contains("not a multiple of the 3073-byte record"), "{err}");
        let err = decode_records(&record10(10), Format::Cifar10Binary, 10, 0, Path::new("b")).unwrap_err().to_string();
        assert!(err.contains("label 10"), "{err}");
    }

    #[test]
    fn label_names_are_parsed_leniently() {
        assert_eq!(parse_names(b"airplane\n automobile \n\n\n"), ["airplane", "automobile"]);
    }
}
