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
//!
//! A source is placed by its canonical path, so a symbolic link given (relative or not) becomes a link
//! to, or a copy of, the file it points to, never a copy of the link that would dangle in the data
//! directory; a link to nothing is refused saying where it points. A copy goes through
//! [`wrn_fs::AtomicFile`] and keeps the source's restrictive permission bits. Hashing and copying are
//! counted through [`wrn_progress`].

use std::path::{Path, PathBuf};

use std::io::{Read, Write};

use wrn_progress::{Progress, Silent, Unit};

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

/// Puts `source` at `dest`: a hard link, else a symbolic link to its canonical path, or a copy.
fn place(source: &Path, dest: &Path, copy: bool, progress: &dyn Progress) -> Result<&'static str> {
    // A link given is placed as the file it points to: hard-linking a relative link would copy the link.
    let source = &std::fs::canonicalize(source).at(source)?;
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
        if std::os::unix::fs::symlink(source, dest).is_ok() {
            return Ok("symbolic link");
        }
    }
    copy_file(source, dest, progress)?;
    Ok("copy")
}

/// Copies `source` to `dest` through an [`wrn_fs::AtomicFile`], counting the bytes; the copy keeps the
/// source's restrictive permission bits (a `rw-------` file is not made readable to others).
fn copy_file(source: &Path, dest: &Path, progress: &dyn Progress) -> Result<()> {
    let meta = std::fs::metadata(source).at(source)?;
    let what = format!("a copy of {}", source.display());
    crate::space::ensure(dest.parent().unwrap_or(Path::new(".")), meta.len(), &what)?;
    let mut input = std::fs::File::open(source).at(source)?;
    let mut out = wrn_fs::AtomicFile::create(dest)?;
    let name = dest.file_name().unwrap_or_default().to_string_lossy();
    let task = progress.task(&format!("copying {name}"), Unit::Bytes, Some(meta.len()), 0);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let k = input.read(&mut buf).at(source)?;
        if k == 0 {
            break;
        }
        out.write_all(&buf[..k]).at(dest)?;
        task.advance(k as u64);
    }
    out.commit()?;
    task.finish();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let placed = std::fs::metadata(dest).at(dest)?.permissions().mode();
        let mode = placed & (meta.permissions().mode() | 0o200) & 0o777;
        std::fs::set_permissions(dest, std::fs::Permissions::from_mode(mode)).at(dest)?;
    }
    Ok(())
}

/// The files to consider: folders searched three levels deep (`false`: found, not named), files as
/// given (`true`). A symbolic link to nothing is refused with where it points.
fn candidates(paths: &[PathBuf]) -> Result<Vec<(PathBuf, bool)>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found = Vec::new();
            walk(p, 3, &mut found)?;
            found.sort();
            out.extend(found.into_iter().map(|f| (f, false)));
            continue;
        }
        if let (Ok(target), Err(_)) = (std::fs::read_link(p), std::fs::metadata(p)) {
            let detail = format!(
                "a symbolic link to {}, which does not exist (a relative link is resolved from the link's own \
                 folder); import the file itself",
                target.display()
            );
            return Err(Error::Format { path: p.clone(), detail });
        }
        std::fs::metadata(p).at(p)?;
        out.push((p.clone(), true));
    }
    Ok(out)
}

/// Imports the files of `manifest` found among `paths`, reporting nothing while hashing and copying.
pub fn import(store: &Store, manifest: &Manifest, paths: &[PathBuf], copy: bool) -> Result<Vec<Imported>> {
    import_with(store, manifest, paths, copy, &Silent)
}

/// Imports the files of `manifest` found among `paths`; hashing and copying are counted on `progress`.
pub fn import_with(
    store: &Store,
    manifest: &Manifest,
    paths: &[PathBuf],
    copy: bool,
    progress: &dyn Progress,
) -> Result<Vec<Imported>> {
    let mut done: Vec<Imported> = Vec::new();
    for (path, explicit) in candidates(paths)? {
        if !manifest.alternatives.is_empty() && zipdir::is_zip(&path) {
            if let Some(imported) = import_alternative(store, manifest, &path, explicit, copy, progress)? {
                done.push(imported);
                continue;
            }
        }
        if let Some(imported) = import_file(store, manifest, path, explicit, copy, &done, progress)? {
            done.push(imported);
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

/// Matches one file against the manifest files not yet imported, by size then SHA-256; places and
/// stamps it. `None` for a file found in a folder that is of no size the manifest lists.
fn import_file(
    store: &Store,
    manifest: &Manifest,
    path: PathBuf,
    explicit: bool,
    copy: bool,
    done: &[Imported],
    progress: &dyn Progress,
) -> Result<Option<Imported>> {
    let size = std::fs::metadata(&path).at(&path)?.len();
    let pending: Vec<&FileEntry> =
        manifest.files.iter().filter(|f| f.size == size && !done.iter().any(|d| d.file == f.name)).collect();
    if pending.is_empty() {
        if !explicit {
            return Ok(None);
        }
        let detail = match manifest.alternatives.values().next() {
            Some(alt) if zipdir::is_zip(&path) => kaggle::not_this_layout(alt),
            _ => format!("{size} bytes: no file of {} has this size", manifest.name),
        };
        return Err(Error::Format { path, detail });
    }
    let imported = |f: &FileEntry, source: PathBuf, how| Imported {
        file: f.name.clone(),
        source,
        dest: store.file_path(manifest, f),
        how,
        checked: "SHA-256".into(),
    };
    // Already in place and verified: nothing to hash.
    if let Some(f) = pending.iter().find(|f| {
        let dest = store.file_path(manifest, f);
        verify::is_stamped(&dest, f) && same_file(&dest, &path)
    }) {
        return Ok(Some(imported(f, path, "already present")));
    }
    let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let task = progress.task(&format!("hashing {name}"), Unit::Bytes, Some(size), 0);
    let sha = verify::sha256_file(&path, Some(&*task))?;
    task.finish();
    let Some(f) = pending.iter().find(|f| f.sha256 == sha) else {
        let names: Vec<&str> = pending.iter().map(|f| f.name.as_str()).collect();
        let detail = format!(
            "{size} bytes like {}, but its SHA-256 {sha} matches no file of {}",
            names.join(", "),
            manifest.name
        );
        return Err(Error::Format { path, detail });
    };
    let dest = store.file_path(manifest, f);
    let how = if verify::is_stamped(&dest, f) || same_file(&dest, &path) {
        "already present"
    } else {
        place(&path, &dest, copy, progress)?
    };
    verify::write_stamp(&dest, &sha)?;
    Ok(Some(imported(f, path, how)))
}

/// Checks a zip against each alternative of the manifest; places and stamps the first it matches.
/// `None` when it is of no alternative's layout.
fn import_alternative(
    store: &Store,
    manifest: &Manifest,
    path: &Path,
    explicit: bool,
    copy: bool,
    progress: &dyn Progress,
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
            place(path, &dest, copy, progress)?
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
