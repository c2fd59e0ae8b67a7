//! Dataset manifests (`datasets/*.toml`): what a dataset is made of, as data.
//!
//! A manifest names the dataset, the reader that prepares it (`format`), its splits and classes, and
//! every file: canonical URL and mirrors, size, SHA-256 and MD5, and the archive members expected (with
//! member checksums where known, so a repacked mirror can still be checked member by member). Files
//! marked `manual = true` cannot be downloaded anonymously (ImageNet) and are registered with
//! `wrn data import`. The four built-in manifests are compiled in; [`Manifest::load`] reads any other.
//!
//! `alternatives` describes other distributions of the same data that can stand in for `files`, each
//! by its layout since no checksum is published for it: ImageNet's Kaggle zip (`[alternatives.kaggle]`,
//! read by [`crate::imagenet::kaggle`]) names the zip, where to get it, the members holding the class list and the
//! val labels, and the folder of each split, whose image counts are the manifest's `splits`.
//!
//! [`Manifest::validate`] checks what the type system cannot: hex digests of the right length, unique
//! and safe file and member names, class lists that match their counts, alternatives whose folders
//! cover exactly the dataset's splits. Unknown keys are errors.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};

/// The reader that turns a dataset's files into the prepared cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// `cifar-10-binary.tar.gz`: 3073-byte records (label, R, G, B planes).
    Cifar10Binary,
    /// `cifar-100-binary.tar.gz`: 3074-byte records (coarse label, fine label, R, G, B planes).
    Cifar100Binary,
    /// SVHN cropped digits, MATLAB level-5 `.mat` files.
    SvhnMat,
    /// ImageNet ILSVRC2012: the train tar of per-class tars, the val tar and the devkit.
    ImagenetTars,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Short name used on the command line and as the folder under the data directory.
    pub name: String,
    pub title: String,
    pub format: Format,
    pub homepage: String,
    pub citation: String,
    pub licence: String,
    /// Instructions for files that must be fetched by hand (ImageNet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manual: Option<String>,
    /// Split name -> number of images.
    pub splits: BTreeMap<String, u64>,
    pub classes: Classes,
    pub files: Vec<FileEntry>,
    /// Other distributions of the same images, by short name (`kaggle`), checked by their layout.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub alternatives: BTreeMap<String, Alternative>,
}

/// The layout of an alternative distribution, and so its reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlternativeFormat {
    /// ImageNet as Kaggle's `imagenet-object-localization-challenge.zip`: one folder of images per
    /// split, the class list as `<WNID> <words>` lines, val labels in a CSV (see [`crate::imagenet::kaggle`]).
    KaggleZip,
}

/// One alternative distribution: a single file that stands in for all of the manifest's `files`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alternative {
    pub title: String,
    pub format: AlternativeFormat,
    /// The file's name as distributed, and its name in the dataset's folder once imported.
    pub file: String,
    /// Where to get it (a page to download from by hand, or `file://` for synthetic data).
    pub url: String,
    /// How to get it and register it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manual: Option<String>,
    /// The member listing the classes, one `<WNID> <words>` line each.
    pub class_list: String,
    /// The member holding the val labels (`ImageId,PredictionString`; the first WNID is the label).
    pub val_labels: String,
    /// Split -> the folder (a member prefix ending in `/`) holding its images; every split of the
    /// dataset, and no other.
    pub folders: BTreeMap<String, String>,
}
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Classes {
    pub count: usize,
    /// Class names in label order (empty when they come only from `source`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// The archive member (or file) the names come from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Coarse class names (CIFAR-100's 20 superclasses), in label order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub coarse: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coarse_source: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// File name on disk (no directories).
    pub name: String,
    /// Canonical URL. `file://` URLs are read from the local disk (synthetic manifests use them).
    pub url: String,
    /// Further URLs with byte-identical copies, tried in order after `url`.
    #[serde(default)]
    pub mirrors: Vec<String>,
    /// Not downloadable anonymously: fetch prints `Manifest::manual` instead.
    #[serde(default, skip_serializing_if = "is_false")]
    pub manual: bool,
    pub size: u64,
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    /// The split a plain (non-archive) file holds, e.g. SVHN's `train_32x32.mat`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
    /// Archive members expected; any member not listed is an error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<Member>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Path inside the archive (relative, `/`-separated).
    pub path: String,
    /// The split whose records this member holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    /// May be absent from the archive.
    #[serde(default, skip_serializing_if = "is_false")]
    pub optional: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The names of the built-in datasets, as a message lists them (`cifar10, cifar100, svhn, imagenet`).
pub fn builtin_names() -> String {
    BUILTIN.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(", ")
}

/// The built-in manifests, as shipped in `datasets/`.
pub const BUILTIN: [(&str, &str); 4] = [
    ("cifar10", include_str!("../../../datasets/cifar10.toml")),
    ("cifar100", include_str!("../../../datasets/cifar100.toml")),
    ("svhn", include_str!("../../../datasets/svhn.toml")),
    ("imagenet", include_str!("../../../datasets/imagenet.toml")),
];

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A dataset's or an alternative's name: non-empty ASCII letters, digits, `-` or `_`.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A URL that fetch can read: `http://`, `https://` or `file://`.
fn is_fetchable(url: &str) -> bool {
    url.starts_with("https://") || url.starts_with("http://") || url.starts_with("file://")
}

/// A relative path with no `..`, no root and no empty components.
pub(crate) fn is_safe_relative(path: &str) -> bool {
    !path.is_empty() && !path.contains('\\') && Path::new(path).components().all(|c| matches!(c, Component::Normal(_)))
}

impl Manifest {
    /// Parses and validates a manifest; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Manifest> {
        let manifest: Manifest =
            toml::from_str(text).map_err(|e| Error::Manifest { path: origin.into(), detail: e.to_string() })?;
        manifest.validate().map_err(|detail| Error::Manifest { path: origin.into(), detail })?;
        Ok(manifest)
    }

    /// Reads a manifest file.
    pub fn load(path: &Path) -> Result<Manifest> {
        let text = std::fs::read_to_string(path).at(path)?;
        Manifest::parse(&text, path)
    }

    /// A built-in manifest by dataset name.
    pub fn builtin(name: &str) -> Result<Manifest> {
        let (_, text) = BUILTIN
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| Error::UnknownDataset { name: name.to_string(), known: builtin_names() })?;
        Manifest::parse(text, &Path::new("datasets").join(format!("{name}.toml")))
    }

    /// Every built-in manifest, in a fixed order.
    pub fn all_builtin() -> Result<Vec<Manifest>> {
        BUILTIN.iter().map(|(name, _)| Manifest::builtin(name)).collect()
    }

    /// Writes the manifest as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a manifest always serialises")
    }

    /// Checks the invariants the types cannot express; returns what is wrong.
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.validate_header()?;
        let mut names = BTreeSet::new();
        for f in &self.files {
            if !names.insert(&f.name) {
                return Err(format!("file `{}`: listed twice", f.name));
            }
            self.validate_file(f).map_err(|what| format!("file `{}`: {what}", f.name))?;
            let mut paths = BTreeSet::new();
            for m in &f.members {
                let ctx = |what: String| format!("file `{}`, member `{}`: {what}", f.name, m.path);
                self.validate_member(m).map_err(ctx)?;
                if !paths.insert(&m.path) {
                    return Err(ctx("listed twice".into()));
                }
            }
        }
        for (name, a) in &self.alternatives {
            self.validate_alternative(name, a, &names).map_err(|what| format!("alternative `{name}`: {what}"))?;
        }
        Ok(())
    }

    /// The name, the splits and the classes.
    fn validate_header(&self) -> std::result::Result<(), String> {
        if !is_plain_name(&self.name) {
            return Err(format!("name `{}` must be non-empty ASCII letters, digits, `-` or `_`", self.name));
        }
        if self.splits.is_empty() || self.splits.values().any(|&n| n == 0) {
            return Err("every dataset needs at least one split, each with a non-zero size".into());
        }
        let c = &self.classes;
        if c.count == 0 {
            return Err("classes.count must be positive".into());
        }
        if !c.names.is_empty() && c.names.len() != c.count {
            return Err(format!("classes.names has {} names, classes.count is {}", c.names.len(), c.count));
        }
        if c.names.is_empty() && c.source.is_none() {
            return Err("classes need `names` or a `source`".into());
        }
        if self.files.is_empty() {
            return Err("no files".into());
        }
        Ok(())
    }

    /// One file: its name, size, digests, URLs and split.
    fn validate_file(&self, f: &FileEntry) -> std::result::Result<(), String> {
        if f.name.contains('/') || !is_safe_relative(&f.name) {
            return Err("the name must be a plain file name".into());
        }
        if f.size == 0 {
            return Err("size must be positive".into());
        }
        if !is_hex(&f.sha256, 64) {
            return Err(format!("sha256 `{}` is not 64 lowercase hex digits", f.sha256));
        }
        if let Some(md5) = f.md5.as_deref().filter(|h| !is_hex(h, 32)) {
            return Err(format!("md5 `{md5}` is not 32 lowercase hex digits"));
        }
        if let Some(url) = std::iter::once(&f.url).chain(&f.mirrors).find(|u| !is_fetchable(u)) {
            return Err(format!("URL `{url}` is not http(s):// or file://"));
        }
        self.validate_split(f.split.as_deref())
    }

    /// One archive member: a safe path, digests, split.
    fn validate_member(&self, m: &Member) -> std::result::Result<(), String> {
        if !is_safe_relative(&m.path) {
            return Err("must be a relative path without `..`".into());
        }
        if let Some(h) = m.sha256.as_deref().filter(|h| !is_hex(h, 64)) {
            return Err(format!("sha256 `{h}` is not 64 lowercase hex digits"));
        }
        if let Some(h) = m.md5.as_deref().filter(|h| !is_hex(h, 32)) {
            return Err(format!("md5 `{h}` is not 32 lowercase hex digits"));
        }
        self.validate_split(m.split.as_deref())
    }

    /// A split named by a file or member must be one of the dataset's.
    fn validate_split(&self, split: Option<&str>) -> std::result::Result<(), String> {
        match split {
            Some(split) if !self.splits.contains_key(split) => {
                Err(format!("split `{split}` is not among the dataset's splits"))
            }
            _ => Ok(()),
        }
    }

    /// One alternative: its name, file, URL and members, and folders that cover exactly the dataset's
    /// splits without overlapping.
    fn validate_alternative(
        &self,
        name: &str,
        a: &Alternative,
        files: &BTreeSet<&String>,
    ) -> std::result::Result<(), String> {
        if !is_plain_name(name) {
            return Err("the name must be non-empty ASCII letters, digits, `-` or `_`".into());
        }
        if a.file.contains('/') || !is_safe_relative(&a.file) {
            return Err(format!("file `{}` must be a plain file name", a.file));
        }
        if files.contains(&a.file) {
            return Err(format!("file `{}` is also one of the dataset's files", a.file));
        }
        if !is_fetchable(&a.url) {
            return Err(format!("URL `{}` is not http(s):// or file://", a.url));
        }
        if let Some(member) = [&a.class_list, &a.val_labels].into_iter().find(|m| !is_safe_relative(m)) {
            return Err(format!("member `{member}` must be a relative path without `..`"));
        }
        if a.folders.keys().ne(self.splits.keys()) {
            let folders: Vec<&str> = a.folders.keys().map(String::as_str).collect();
            let splits: Vec<&str> = self.splits.keys().map(String::as_str).collect();
            return Err(format!(
                "folders for splits [{}], but the dataset's splits are [{}]",
                folders.join(", "),
                splits.join(", ")
            ));
        }
        for (split, folder) in &a.folders {
            if !is_safe_relative(folder.strip_suffix('/').unwrap_or("")) {
                return Err(format!(
                    "folder `{folder}` of split `{split}` must be a relative path without `..`, ending in `/`"
                ));
            }
        }
        let folders: Vec<&String> = a.folders.values().collect();
        if let Some((x, y)) = folders
            .iter()
            .enumerate()
            .flat_map(|(i, x)| folders[i + 1..].iter().map(move |y| (x, y)))
            .find(|(x, y)| x.starts_with(y.as_str()) || y.starts_with(x.as_str()))
        {
            return Err(format!("folders `{x}` and `{y}` overlap"));
        }
        Ok(())
    }

    /// The file entry with this name.
    pub fn file(&self, name: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.name == name)
    }

    /// Total bytes of all files.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// The alternative distributed as the file named `file`.
    pub fn alternative_for(&self, file: &str) -> Option<(&str, &Alternative)> {
        self.alternatives.iter().find(|(_, a)| a.file == file).map(|(n, a)| (n.as_str(), a))
    }
}

/// Loads `--manifest FILE` when given, else the built-in manifest of `dataset`; with both, the file's
/// dataset name must match.
pub fn resolve(dataset: Option<&str>, manifest: Option<&Path>) -> Result<Manifest> {
    match (dataset, manifest) {
        (_, Some(path)) => {
            let m = Manifest::load(path)?;
            if let Some(name) = dataset {
                if name != m.name {
                    return Err(Error::Manifest {
                        path: path.into(),
                        detail: format!("describes dataset `{}`, not `{name}`", m.name),
                    });
                }
            }
            Ok(m)
        }
        (Some(name), None) => Manifest::builtin(name),
        (None, None) => Err(Error::UnknownDataset { name: String::new(), known: builtin_names() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_manifest_parses_and_is_well_formed() {
        let all = Manifest::all_builtin().unwrap();
        assert_eq!(
            all.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["cifar10", "cifar100", "svhn", "imagenet"]
        );
        for m in &all {
            for f in &m.files {
                assert!(is_hex(&f.sha256, 64), "{}: {}", m.name, f.name);
                assert!(f.md5.as_deref().is_some_and(|h| is_hex(h, 32)), "{}: {} has an MD5", m.name, f.name);
                assert!(f.url.starts_with("https://") || f.url.starts_with("http://"));
            }
            // Round trip: what we write is what we read.
            assert_eq!(&Manifest::parse(&m.to_toml(), Path::new("roundtrip")).unwrap(), m);
        }
    }

    #[test]
    fn builtin_manifests_carry_the_published_facts() {
        let c10 = Manifest::builtin("cifar10").unwrap();
        assert_eq!(c10.format, Format::Cifar10Binary);
        assert_eq!(c10.files[0].size, 170_052_171);
        assert_eq!(c10.classes.names[0], "airplane");
        assert_eq!(c10.splits["train"], 50_000);
        let train_bytes: u64 =
            c10.files[0].members.iter().filter(|m| m.split.as_deref() == Some("train")).filter_map(|m| m.size).sum();
        assert_eq!(train_bytes, 50_000 * 3073);
        let c100 = Manifest::builtin("cifar100").unwrap();
        assert_eq!((c100.classes.names.len(), c100.classes.coarse.len()), (100, 20));
        assert_eq!(c100.classes.names.iter().collect::<BTreeSet<_>>().len(), 100, "fine names are distinct");
        assert_eq!(c100.files[0].members[0].size, Some(50_000 * 3074));
        let svhn = Manifest::builtin("svhn").unwrap();
        assert_eq!(svhn.splits.values().sum::<u64>(), 73_257 + 26_032 + 531_131);
        let imagenet = Manifest::builtin("imagenet").unwrap();
        assert!(imagenet.files.iter().all(|f| f.manual));
        assert_eq!(imagenet.file("ILSVRC2012_img_train.tar").unwrap().size, 147_897_477_120);
        assert_eq!(imagenet.file("ILSVRC2012_img_val.tar").unwrap().size, 6_744_924_160);
        let kaggle = &imagenet.alternatives["kaggle"];
        assert_eq!(kaggle.format, AlternativeFormat::KaggleZip);
        assert_eq!(kaggle.file, "imagenet-object-localization-challenge.zip");
        assert_eq!(
            (kaggle.class_list.as_str(), kaggle.val_labels.as_str()),
            ("LOC_synset_mapping.txt", "LOC_val_solution.csv")
        );
        assert_eq!(kaggle.folders["train"], "ILSVRC/Data/CLS-LOC/train/");
        assert_eq!(kaggle.folders["val"], "ILSVRC/Data/CLS-LOC/val/");
        assert_eq!(imagenet.alternative_for(&kaggle.file).map(|(n, _)| n), Some("kaggle"));
        assert!(Manifest::all_builtin()
            .unwrap()
            .iter()
            .filter(|m| m.name != "imagenet")
            .all(|m| m.alternatives.is_empty()));
    }

    #[test]
    fn malformed_alternatives_are_rejected_with_the_reason() {
        let good = include_str!("../../../datasets/imagenet.toml");
        let cases = [
            (
                good.replace("val = \"ILSVRC/Data/CLS-LOC/val/\"", "test = \"ILSVRC/Data/CLS-LOC/val/\""),
                "folders for splits [test, train]",
            ),
            (good.replace("\"ILSVRC/Data/CLS-LOC/train/\"", "\"../ILSVRC/train/\""), "without `..`, ending in `/`"),
            (good.replace("\"ILSVRC/Data/CLS-LOC/train/\"", "\"ILSVRC/Data/CLS-LOC/train\""), "ending in `/`"),
            (good.replace("\"ILSVRC/Data/CLS-LOC/train/\"", "\"ILSVRC/Data/CLS-LOC/\""), "overlap"),
            (good.replace("class_list = ", "classes_list = "), "unknown field"),
            (good.replace("format = \"kaggle-zip\"", "format = \"rar\""), "unknown variant"),
            (
                good.replace("file = \"imagenet-object-localization-challenge.zip\"", "file = \"a/b.zip\""),
                "plain file name",
            ),
        ];
        for (text, expected) in cases {
            assert_ne!(text, good, "{expected}: the replacement applies");
            let err = Manifest::parse(&text, Path::new("bad.toml")).unwrap_err().to_string();
            assert!(err.contains("bad.toml") && err.contains(expected), "{expected}: {err}");
        }
    }

    #[test]
    fn malformed_manifests_are_rejected_with_the_reason() {
        let good = include_str!("../../../datasets/cifar10.toml");
        let cases = [
            (good.replace("c4a38c50a1bc", "C4A38C50A1BC"), "sha256"),
            (good.replace("c32a1d4ab5d03f1284b67883e8d87530", "c32a1d4ab5d03f1284b67883e8d8753"), "md5"),
            (good.replace("\"cifar-10-batches-bin/readme.html\"", "\"../readme.html\""), "without `..`"),
            (good.replace("\"frog\", ", ""), "9 names"),
            (good.replace("name = \"cifar-10-binary.tar.gz\"", "name = \"a/b.tar.gz\""), "plain file name"),
            (good.replace("size = 170052171", "size = 170052171\nsizes = 1"), "unknown field"),
            (good.replace("https://www.cs.toronto.edu/~kriz/cifar-10-binary", "ftp://x/y"), "not http"),
        ];
        for (text, expected) in cases {
            let err = Manifest::parse(&text, Path::new("bad.toml")).unwrap_err().to_string();
            assert!(err.contains("bad.toml") && err.contains(expected), "{expected}: {err}");
        }
    }

    #[test]
    fn unknown_dataset_names_the_known_ones() {
        let err = Manifest::builtin("mnist").unwrap_err().to_string();
        assert!(err.contains("mnist") && err.contains("cifar10"), "{err}");
    }
}
