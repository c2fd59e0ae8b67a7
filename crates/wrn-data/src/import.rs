//! `wrn data import <dataset> <path>...`: registers files the user already has, whatever their names,
//! by size and then SHA-256 against the manifest. The only way in for ImageNet, whose files cannot be
//! downloaded anonymously.
//!
//! Each path is a file or a folder (searched up to three levels deep). A file is hashed only when its
//! size equals that of a manifest file not yet verified, so a folder of unrelated files costs nothing. A
//! match is placed at its manifest name in the dataset's folder as a hard link, else a symbolic link
//! (no second copy of 140 GB), or copied with `copy`; then stamped as verified. A file named explicitly
//! that matches nothing is an error naming it, its size and its hash.

use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::error::{Error, IoContext, Result};
use crate::manifest::{FileEntry, Manifest};
use crate::store::Store;
use crate::verify;

/// What happened to one manifest file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Imported {
    pub file: String,
    pub source: PathBuf,
    pub dest: PathBuf,
    /// `hard link`, `symbolic link`, `copy`, or `already present`.
    pub how: &'static str,
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
    let part = crate::fetch::part_path(dest);
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
        let size = std::fs::metadata(&path).at(&path)?.len();
        let pending: Vec<&FileEntry> =
            manifest.files.iter().filter(|f| f.size == size && !done.iter().any(|d| d.file == f.name)).collect();
        if pending.is_empty() {
            if explicit {
                return Err(Error::Format {
                    path,
                    detail: format!("{size} bytes: no file of {} has this size", manifest.name),
                });
            }
            continue;
        }
        // Already in place and verified: nothing to hash.
        if let Some(f) = pending.iter().find(|f| {
            let dest = store.file_path(manifest, f);
            verify::is_stamped(&dest, f) && same_file(&dest, &path)
        }) {
            let dest = store.file_path(manifest, f);
            done.push(Imported { file: f.name.clone(), source: path, dest, how: "already present" });
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
                let how = if verify::is_stamped(&dest, f) { "already present" } else { place(&path, &dest, copy)? };
                verify::write_stamp(&dest, &sha)?;
                done.push(Imported { file: f.name.clone(), source: path, dest, how });
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
        let wanted: Vec<String> =
            manifest.files.iter().map(|f| format!("{} ({} bytes, SHA-256 {})", f.name, f.size, f.sha256)).collect();
        return Err(Error::Unsupported {
            dataset: manifest.name.clone(),
            detail: format!("none of the given paths holds a file of this dataset; expected: {}", wanted.join("; ")),
        });
    }
    Ok(done)
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
