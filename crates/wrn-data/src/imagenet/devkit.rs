//! ImageNet ILSVRC2012 class conventions from the devkit (`ILSVRC2012_devkit_t12.tar.gz`).
//!
//! Class index = position of the WNID in the sorted list of the 1000 leaf synsets (torchvision, timm,
//! Keras; fb.resnet.torch uses the same order 1-based). The devkit numbers synsets differently
//! (`ILSVRC2012_ID`, 1 = n02119789), so validation labels are mapped in two steps: the ground-truth
//! line *i* (the *i*-th val image in file-name order) holds an ILSVRC2012_ID; `meta.mat`'s `synsets`
//! gives its WNID; the WNID's sorted position is the class. Using `ID - 1` directly is the classic bug
//! (about 0.1% accuracy). Example: `ILSVRC2012_val_00000001.JPEG` -> ID 490 -> n01751748 -> class 65.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::mat::{self, Value};
use crate::prepare::HashingReader;

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

/// The largest devkit member read (`meta.mat` is 2 MB, the ground truth 0.3 MB).
const MAX_MEMBER: u64 = 64 << 20;

/// Reads the class index and validation labels from the devkit archive, streamed.
pub fn read_devkit(path: &Path, classes: usize) -> Result<(ClassIndex, Vec<u16>)> {
    let file = std::fs::File::open(path).at(path)?;
    read_devkit_hashed(HashingReader::new(file), path, classes).map(|(index, labels, _)| (index, labels))
}

/// Like [`read_devkit`], from the open file, also returning the SHA-256 of every byte of the archive.
pub(crate) fn read_devkit_hashed(
    source: HashingReader<std::fs::File>,
    path: &Path,
    classes: usize,
) -> Result<(ClassIndex, Vec<u16>, String)> {
    let err = |detail: String| Error::Archive { path: path.into(), detail };
    let gz = flate2::read::GzDecoder::new(std::io::BufReader::new(source));
    let mut archive = tar::Archive::new(gz);
    let (mut meta, mut truth) = (None, None);
    for item in archive.entries().map_err(|e| err(format!("not a readable tar.gz: {e}")))? {
        let mut item = item.map_err(|e| err(format!("truncated or corrupt archive: {e}")))?;
        let name = String::from_utf8_lossy(&item.path_bytes()).into_owned();
        let wanted = name == META_MEMBER || name == GROUND_TRUTH_MEMBER;
        if wanted && (if name == META_MEMBER { meta.is_some() } else { truth.is_some() }) {
            return Err(err(format!("member `{name}` appears twice; an archive holds each member once")));
        }
        if wanted && item.size() > MAX_MEMBER {
            return Err(err(format!("member `{name}` claims {} bytes, more than {MAX_MEMBER}", item.size())));
        }
        if name == META_MEMBER {
            let size = item.size();
            meta = Some(mat::read_from(&mut item, size, &path.join(META_MEMBER))?);
        } else if name == GROUND_TRUTH_MEMBER {
            let mut text = String::new();
            item.read_to_string(&mut text).map_err(|e| err(format!("member `{name}`: {e}")))?;
            truth = Some(text);
        }
    }
    let (Some(meta), Some(truth)) = (meta, truth) else {
        return Err(err(format!("missing member(s): {META_MEMBER} and/or {GROUND_TRUTH_MEMBER}")));
    };
    let sha256 = archive.into_inner().into_inner().into_inner().finish().map_err(|e| err(format!("{e}")))?;
    let index = ClassIndex::new(&synsets(&meta, &path.join(META_MEMBER))?, classes, &path.join(META_MEMBER))?;
    let labels = index.val_labels(&truth, &path.join(GROUND_TRUTH_MEMBER))?;
    Ok((index, labels, sha256))
}

/// The 1-based number of a val file name `ILSVRC2012_val_<8 digits>.JPEG`.
pub fn val_number(name: &str) -> Option<usize> {
    let digits = name.strip_prefix("ILSVRC2012_val_")?.strip_suffix(".JPEG")?;
    (digits.len() == 8 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn val_names_are_parsed_or_refused() {
        assert_eq!(val_number("ILSVRC2012_val_00000001.JPEG"), Some(1));
        assert_eq!(val_number("ILSVRC2012_val_00050000.JPEG"), Some(50000));
        for bad in ["ILSVRC2012_val_1.JPEG", "ILSVRC2012_val_0000000x.JPEG", "val/ILSVRC2012_val_00000001.JPEG"] {
            assert_eq!(val_number(bad), None, "{bad}");
        }
    }
}
