//! `wrn data import <dataset> <path>...`: registers files the user already has, whatever their names,
//! by size and then SHA-256 against the manifest. The only way in for ImageNet, whose files cannot be
//! downloaded anonymously.
//!
//! Each path is a file or a folder (searched up to three levels deep). A file is hashed only when its
//! size equals that of a manifest file not yet verified, so a folder of unrelated files costs nothing. A
//! match is placed at its manifest name in the dataset's folder as a hard link, else a symbolic link
//! (no second copy of 140 GB), or copied with `copy`; then stamped as verified. A file named explicitly
//! that matches nothing is an error naming it, its size and its hash.
//!
//! A zip is first tried against the manifest's alternatives (ImageNet's Kaggle zip): recognised by its
//! layout, whatever its name, and checked from its central directory without reading the images
//! ([`crate::imagenet::kaggle::check`]); one that passes is placed under the alternative's file name the same way
//! and stamped as layout-checked. One of the layout that fails is an error naming the zip and every
//! problem found; a zip of some other layout is passed over (an error when named explicitly).

use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::error::{Error, IoContext, Result};
use crate::imagenet::kaggle;
use crate::manifest::{FileEntry, Manifest};
use crate::store::Store;
use crate::{verify, zipdir};

/// What happened to one manifest file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Imported {
    pub file: String,
    pub source: PathBuf,
    pub dest: PathBuf,
    /// `hard link`, `symbolic link`, `copy`, or `already present`.
    pub how: &'static str,
    /// What was checked: `SHA-256`, or for an alternative its layout and what it holds.
    pub checked: String,
}

fn walk(path: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(path).at(path)? {
        let p = entry.at(path)?.path();
        if p.is_dir() {
            if depth > 0 {
                walk(&p, depth - 1, out)?;
            }
        } else if p.is_file() {
            out.push(p);
        }
    }
    Ok(())
}

fn place(source: &Path, dest: &Path, copy: bool) -> Result<&'static str> {
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).at(dir)?;
    }
    if dest.exists() || dest.is_symlink() {
        std::fs::remove_file(dest).at(dest)?;
    }
    if !copy {
        if std::fs::hard_link(source, dest).is_ok() {
            return Ok("hard link");
        }
        #[cfg(unix)]
        {
            let absolute = std::fs::canonicalize(source).at(source)?;
            if std::os::unix::fs::symlink(&absolute, dest).is_ok() {
                return Ok("symbolic link");
            }
        }
    }
    let size = std::fs::metadata(source).at(source)?.len();
    crate::space::ensure(dest.parent().unwrap_or(Path::new(".")), size, &format!("a copy of {}", source.display()))?;
    let part = crate::store::part_path(dest);
    std::fs::copy(source, &part).at(&part)?;
    std::fs::rename(&part, dest).at(dest)?;
    Ok("copy")
}

/// Imports the files of `manifest` found among `paths`.
pub fn import(store: &Store, manifest: &Manifest, paths: &[PathBuf], copy: bool) -> Result<Vec<Imported>> {
    let mut done: Vec<Imported> = Vec::new();
    let mut candidates: Vec<(PathBuf, bool)> = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found = Vec::new();
            walk(p, 3, &mut found)?;
            found.sort();
            candidates.extend(found.into_iter().map(|f| (f, false)));
        } else {
            std::fs::metadata(p).at(p)?;
            candidates.push((p.clone(), true));
        }
    }
    for (path, explicit) in candidates {
        if !manifest.alternatives.is_empty() && zipdir::is_zip(&path) {
            if let Some(imported) = import_alternative(store, manifest, &path, explicit, copy)? {
                done.push(imported);
                continue;
            }
        }
        let size = std::fs::metadata(&path).at(&path)?.len();
        let pending: Vec<&FileEntry> =
            manifest.files.iter().filter(|f| f.size == size && !done.iter().any(|d| d.file == f.name)).collect();
        if pending.is_empty() {
            if explicit {
                let detail = match manifest.alternatives.values().next() {
                    Some(alt) if zipdir::is_zip(&path) => kaggle::not_this_layout(alt),
                    _ => format!("{size} bytes: no file of {} has this size", manifest.name),
                };
                return Err(Error::Format { path, detail });
            }
            continue;
        }
        // Already in place and verified: nothing to hash.
        if let Some(f) = pending.iter().find(|f| {
            let dest = store.file_path(manifest, f);
            verify::is_stamped(&dest, f) && same_file(&dest, &path)
        }) {
            let dest = store.file_path(manifest, f);
            done.push(Imported {
                file: f.name.clone(),
                source: path,
                dest,
                how: "already present",
                checked: "SHA-256".into(),
            });
            continue;
        }
        let bar = ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("hashing {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}")
                .expect("valid template"),
        );
        bar.set_message(path.file_name().unwrap_or_default().to_string_lossy().into_owned());
        let sha = verify::sha256_file(&path, Some(&bar))?;
        bar.finish_and_clear();
        match pending.iter().find(|f| f.sha256 == sha) {
            Some(f) => {
                let dest = store.file_path(manifest, f);
                let how = if verify::is_stamped(&dest, f) || same_file(&dest, &path) {
                    "already present"
                } else {
                    place(&path, &dest, copy)?
                };
                verify::write_stamp(&dest, &sha)?;
                done.push(Imported { file: f.name.clone(), source: path, dest, how, checked: "SHA-256".into() });
            }
            None => {
                let names: Vec<&str> = pending.iter().map(|f| f.name.as_str()).collect();
                return Err(Error::Format {
                    path,
                    detail: format!(
                        "{size} bytes like {}, but its SHA-256 {sha} matches no file of {}",
                        names.join(", "),
                        manifest.name
                    ),
                });
            }
        }
    }
    if done.is_empty() {
        let mut wanted: Vec<String> =
            manifest.files.iter().map(|f| format!("{} ({} bytes, SHA-256 {})", f.name, f.size, f.sha256)).collect();
        wanted.extend(manifest.alternatives.values().map(|a| format!("or instead {} ({})", a.file, a.title)));
        return Err(Error::Unsupported {
            dataset: manifest.name.clone(),
            detail: format!("none of the given paths holds a file of this dataset; expected: {}", wanted.join("; ")),
        });
    }
    Ok(done)
}

/// Checks a zip against each alternative of the manifest; places and stamps the first it matches.
/// `None` when it is of no alternative's layout.
fn import_alternative(
    store: &Store,
    manifest: &Manifest,
    path: &Path,
    explicit: bool,
    copy: bool,
) -> Result<Option<Imported>> {
    for (name, alt) in &manifest.alternatives {
        // In a folder, a zip that is not even readable is someone else's, unless it has this name.
        let named = path.file_name().is_some_and(|n| n == alt.file.as_str());
        if !explicit && !named && zipdir::read_central_directory(path, |_| Ok(())).is_err() {
            tracing::warn!("{}: not a readable zip; passed over", path.display());
            return Ok(None);
        }
        let Some(zip) = kaggle::check(path, manifest, name)? else { continue };
        let dest = store.alternative_path(manifest, alt);
        // The zip already in the dataset's folder is never replaced by itself.
        let how = if same_file(&dest, path) {
            "already present"
        } else {
            verify::remove_stamp(&dest);
            place(path, &dest, copy)?
        };
        verify::write_layout_stamp(&dest, name, &zip.digest)?;
        let count = |split: &str| zip.splits.get(split).map_or(0, Vec::len);
        let checked = format!(
            "layout checked, no published checksum: {} classes, {} train and {} val images",
            zip.wnids.len(),
            count("train"),
            count("val")
        );
        return Ok(Some(Imported { file: alt.file.clone(), source: path.into(), dest, how, checked }));
    }
    Ok(None)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) if x == y => true,
        _ => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::MetadataExt;
                matches!((std::fs::metadata(a), std::fs::metadata(b)), (Ok(x), Ok(y)) if x.dev() == y.dev() && x.ino() == y.ino())
            }
            #[cfg(not(unix))]
            false
        }
    }
}
