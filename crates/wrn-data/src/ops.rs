//! The operations behind `wrn data ...`, so the binary only parses arguments: choosing manifests,
//! fetching then preparing, verifying everything on disk, and dispatching to the format readers.

use std::path::Path;

use crate::cifar;
use crate::error::{Error, Result};
use crate::fetch::{self, FetchOptions, Fetched};
use crate::manifest::{self, Format, Manifest};
use crate::prepare::{PrepareOptions, PreparedReport};
use crate::store::Store;
use crate::verify;

/// The manifests a command works on: `--manifest FILE`, one built-in dataset, or all built-in ones.
pub fn manifests(dataset: Option<&str>, manifest_file: Option<&Path>) -> Result<Vec<Manifest>> {
    match (dataset, manifest_file) {
        (None, None) => Manifest::all_builtin(),
        (d, m) => Ok(vec![manifest::resolve(d, m)?]),
    }
}

/// Prepares every split of a dataset whose files are verified.
pub fn prepare(store: &Store, manifest: &Manifest) -> Result<Vec<PreparedReport>> {
    prepare_with(store, manifest, &PrepareOptions::default())
}

/// Like [`prepare`], with ImageNet's options (ignored by the other formats).
/// A manifest whose `format` finds none of its files to prepare is an error naming the manifest, the
/// format and the files, never a silent success.
pub fn prepare_with(store: &Store, manifest: &Manifest, opts: &PrepareOptions) -> Result<Vec<PreparedReport>> {
    let reports = match manifest.format {
        Format::Cifar10Binary | Format::Cifar100Binary => cifar::prepare(store, manifest)?,
        Format::SvhnMat => crate::svhn::prepare(store, manifest)?,
        Format::ImagenetTars => crate::imagenet::prepare(store, manifest, opts)?,
    };
    if reports.is_empty() {
        return Err(nothing_to_prepare(manifest));
    }
    Ok(reports)
}

/// The error for a manifest whose format prepares none of its files.
fn nothing_to_prepare(manifest: &Manifest) -> Error {
    let format = serde_json::to_value(manifest.format).ok().and_then(|v| v.as_str().map(String::from));
    let format = format.unwrap_or_else(|| format!("{:?}", manifest.format));
    let files: Vec<String> = manifest
        .files
        .iter()
        .map(|f| match &f.split {
            Some(split) => format!("{} (split `{split}`)", f.name),
            None => format!("{} (no split)", f.name),
        })
        .collect();
    let splits: Vec<&str> = manifest.splits.keys().map(String::as_str).collect();
    Error::Unsupported {
        dataset: manifest.name.clone(),
        detail: format!(
            "the manifest's format `{format}` prepared none of its files [{}] into its splits [{}]; nothing was \
             written. Fix `format` or the files' `split` in the manifest (datasets/{}.toml, or the file given \
             to --manifest), then run `wrn data prepare` again",
            files.join(", "),
            splits.join(", "),
            manifest.name
        ),
    }
}

/// Fetches a dataset's files, then prepares it unless `skip_prepare` or it is already prepared from
/// the same files. Both report through `opts.progress`.
pub fn fetch_and_prepare(
    store: &Store,
    manifest: &Manifest,
    opts: &FetchOptions,
    skip_prepare: bool,
) -> Result<(Vec<Fetched>, Vec<PreparedReport>)> {
    let fetched = fetch::fetch_dataset(store, manifest, opts)?;
    let prepared = match skip_prepare || store.is_prepared(manifest) {
        true => vec![],
        false => prepare_with(store, manifest, &PrepareOptions { progress: opts.progress, ..Default::default() })?,
    };
    Ok((fetched, prepared))
}

/// One line of `wrn data verify`.
#[derive(Debug)]
pub struct VerifyLine {
    pub dataset: String,
    pub item: String,
    pub path: std::path::PathBuf,
    /// `None` when the file is absent.
    pub result: Option<Result<()>>,
}

/// Re-hashes every file on disk (ignoring stamps) and every prepared split; re-checks the layout of
/// the alternatives on disk (absent ones are not listed).
pub fn verify_all(store: &Store, manifests: &[Manifest]) -> Vec<VerifyLine> {
    let mut lines = Vec::new();
    for m in manifests {
        for f in &m.files {
            let path = store.file_path(m, f);
            let result = path.exists().then(|| verify::check_file(&path, f, None));
            lines.push(VerifyLine { dataset: m.name.clone(), item: f.name.clone(), path, result });
        }
        // Alternatives present (the Kaggle zip) have no published checksum: their layout is checked again.
        for (name, a) in &m.alternatives {
            let path = store.alternative_path(m, a);
            if path.exists() {
                let result = Some(crate::imagenet::kaggle::check_and_stamp(&path, m, name).map(|_| ()));
                lines.push(VerifyLine { dataset: m.name.clone(), item: a.file.clone(), path, result });
            }
        }
        for (split, path) in store.split_paths(m) {
            let result = path.exists().then(|| store.verify_split(m, &split));
            lines.push(VerifyLine { dataset: m.name.clone(), item: format!("prepared {split}"), path, result });
        }
    }
    lines
}
