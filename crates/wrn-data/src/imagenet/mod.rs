//! ImageNet ILSVRC2012 preparation into the encoded-image cache of [`crate::encoded`], from either of
//! two sources: the official tars and devkit (`tars`, verified by hash) or Kaggle's zip ([`kaggle`],
//! checked by its layout), read in place without unpacking to disk.
//!
//! - [`devkit`]: the class order (sorted WNIDs) and the validation labels from the devkit.
//! - `convert`: each image sniffed, checked and, when it is not an RGB JPEG, converted.
//! - `tars`: the train tar of per-class tars and the val tar, streamed by one reader thread.
//! - [`kaggle`]: the Kaggle zip's layout check, and its images read by rayon workers.
//! - `writer`: the one split writer both sources feed, with its journal, so an interrupted prepare
//!   continues where it stopped.
//!
//! Every JPEG is decoded once to check it; files that are not RGB JPEGs are converted to RGB JPEG and
//! listed in the report; a file that does not decode, or whose image data stops before its end-of-image
//! marker (cut short), is left out and reported by name, and the rest is prepared.

mod convert;
pub mod devkit;
pub mod kaggle;
mod tars;
mod writer;

pub use convert::{jpeg_frame, JpegError};
pub use devkit::{read_devkit, synsets, val_number, ClassIndex, Synset, GROUND_TRUTH_MEMBER, META_MEMBER};

use crate::encoded::{self, EncodedSplit};
use crate::error::Result;
use crate::manifest::Manifest;
use crate::prepare::{PrepareOptions, PreparedReport};
use crate::store::Store;

/// Prepares ImageNet's train and val splits into encoded shards: from the official tars and devkit
/// (verified by hash) when they are all present, else from an alternative present in the dataset's
/// folder (the Kaggle zip, checked by its layout; see [`kaggle`]). A split already prepared from
/// the same files with the same options is kept, even once its files are gone. With neither form
/// present, the error says which files to bring, where to get them and the command to run.
pub fn prepare(store: &Store, manifest: &Manifest, opts: &PrepareOptions) -> Result<Vec<PreparedReport>> {
    let tars_present = manifest.files.iter().all(|f| store.file_path(manifest, f).exists());
    if !tars_present {
        let dataset_dir = store.dataset_dir(manifest);
        if let Some((name, _)) = manifest.alternatives.iter().find(|(_, a)| dataset_dir.join(&a.file).exists()) {
            return kaggle::prepare(store, manifest, name, opts);
        }
        if let Some(done) = already_prepared(store, manifest, opts) {
            return Ok(done);
        }
        if let Some(missing) = store.missing_manual(manifest) {
            return Err(missing);
        }
    }
    tars::prepare(store, manifest, opts)
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
            .then(|| writer::report_prepared(split, index_path.clone(), &done))
        })
        .collect()
}
