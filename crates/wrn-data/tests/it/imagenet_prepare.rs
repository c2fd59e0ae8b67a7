//! ImageNet end to end on the synthetic files in the real formats: `synth_imagenet` -> import by hash ->
//! prepare into JPEG shards and an index. Checks the labels (train by inner tar, val by file name through
//! the devkit to the sorted-WNID order), the odd files (converted and reported), the corrupt file (left
//! out and reported by name, the rest prepared), `--max-side`, re-runs, that bad archives are refused
//! with nothing left that looks complete, that the train tar holds exactly the per-class tars, and that
//! an interrupted prepare continues where it stopped into the same index and shards.

use crate::common::prepared_files;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wrn_data::encoded::{EncodedSplit, FLAG_CONVERTED};
use wrn_data::imagenet::jpeg_frame;
use wrn_data::manifest::Manifest;
use wrn_data::prepare::PrepareOptions;
use wrn_data::store::{State, Store};
use wrn_data::synth::{self, IMAGENET_SYNSETS};

fn synth_and_import(n: u64) -> (tempfile::TempDir, tempfile::TempDir, Manifest, Store) {
    let src = tempfile::tempdir().unwrap();
    let (m, path) = synth::synth_imagenet(src.path(), n, 3).unwrap();
    assert_eq!(Manifest::load(&path).unwrap(), m, "the manifest on disk is the one returned");
    let data = tempfile::tempdir().unwrap();
    let store = Store::new(data.path());
    let done = wrn_data::import::import(&store, &m, &[src.path().to_path_buf()], false).unwrap();
    assert_eq!(done.len(), 3, "train tar, val tar and devkit are recognised by hash");
    assert_eq!(store.status(&m).state, State::Verified);
    (src, data, m, store)
}

fn small_shards() -> PrepareOptions<'static> {
    PrepareOptions { shard_bytes: 64 << 10, ..PrepareOptions::default() }
}

#[test]
fn synthetic_imagenet_prepares_with_the_real_label_conventions() {
    let (_src, _data, m, store) = synth_and_import(120);
    let reports = wrn_data::ops::prepare_with(&store, &m, &small_shards()).unwrap();
    assert_eq!(reports.iter().map(|r| r.split.as_str()).collect::<Vec<_>>(), ["train", "val"]);
    assert_eq!(store.status(&m).state, State::Prepared);

    let mut sorted: Vec<&str> = IMAGENET_SYNSETS.iter().map(|s| s.0).collect();
    sorted.sort_unstable();
    let train = store.open_encoded(&m, "train").unwrap();
    train.verify().unwrap();
    assert_eq!(train.meta.classes, sorted);
    assert!(train.meta.shards.len() > 1, "64 KiB shards: {:?}", train.meta.shards.len());
    assert_eq!(train.len(), 119, "120 images less the corrupt one");
    assert_eq!(train.meta.skipped.len(), 1);
    assert_eq!(train.meta.skipped[0].name, synth::IMAGENET_CORRUPT);
    assert!(train.meta.skipped[0].reason.contains("corrupt JPEG"), "{:?}", train.meta.skipped);
    let converted: Vec<(&str, &str)> =
        train.meta.converted.iter().map(|c| (c.name.as_str(), c.from.as_str())).collect();
    assert_eq!(
        converted,
        [
            (synth::IMAGENET_CMYK, "CMYK JPEG"),
            (synth::IMAGENET_PNG, "PNG named .JPEG"),
            (synth::IMAGENET_GRAY, "grayscale JPEG"),
        ]
    );
    let notes = reports[0].notes.join("\n");
    assert!(notes.contains(synth::IMAGENET_CORRUPT) && notes.contains("converted n02105855_2933.JPEG"), "{notes}");
    for i in 0..train.len() {
        let name = train.name(i);
        // The class of a training image is its inner tar's WNID, the file-name prefix.
        assert_eq!(&name[..9], sorted[usize::from(train.label(i))], "{name}");
        // Every stored image is an RGB JPEG of the recorded size.
        let (w, h, comps) = jpeg_frame(train.encoded(i)).unwrap();
        let r = train.record(i);
        assert_eq!((comps, w, h), (3, r.width, r.height), "{name}");
        assert_eq!(r.flags & FLAG_CONVERTED != 0, converted.iter().any(|c| c.0 == name), "{name}");
    }
    assert!((1..train.len()).all(|i| train.name(i - 1) < train.name(i)), "the index is sorted by name");
    // Every class is present.
    let mut seen = [false; 10];
    train.labels().iter().for_each(|&l| seen[usize::from(l)] = true);
    assert!(seen.iter().all(|&s| s));

    let val = store.open_encoded(&m, "val").unwrap();
    val.verify().unwrap();
    assert_eq!(val.len(), 24);
    assert_eq!(val.name(0), "ILSVRC2012_val_00000001.JPEG");
    assert_eq!(sorted[usize::from(val.label(0))], "n01751748", "val image 1 -> n01751748");
    assert_eq!(val.label(0), 2, "the sea snake's sorted position, not its ILSVRC2012_ID - 1 (= 4)");
    // The ground truth holds IDs (meta.mat positions + 1); labels are sorted-WNID positions.
    let truth = devkit_truth(&store, &m);
    for i in 0..val.len() {
        assert_eq!(val.name(i), format!("ILSVRC2012_val_{:08}.JPEG", i + 1));
        let wnid = IMAGENET_SYNSETS[truth[i] - 1].0;
        assert_eq!(sorted[usize::from(val.label(i))], wnid, "val image {}", i + 1);
    }
    assert!(val.labels().iter().zip(&truth).any(|(&l, &id)| usize::from(l) != id - 1), "the mapping is exercised");
    let val_converted: Vec<&str> = val.meta.converted.iter().map(|c| c.from.as_str()).collect();
    assert_eq!(val_converted, ["CMYK JPEG", "grayscale JPEG"]);

    // Verification covers the shards, and a second prepare keeps what is done.
    assert!(wrn_data::ops::verify_all(&store, std::slice::from_ref(&m))
        .iter()
        .all(|l| matches!(l.result, Some(Ok(())))));
    let again = wrn_data::ops::prepare_with(&store, &m, &small_shards()).unwrap();
    assert!(again.iter().all(|r| r.notes.iter().any(|n| n.contains("already prepared"))), "{again:?}");
    assert_eq!(again[0].sha256, reports[0].sha256);
}

fn devkit_truth(store: &Store, m: &Manifest) -> Vec<usize> {
    let devkit = store.file_path(m, m.file("ILSVRC2012_devkit_t12.tar.gz").unwrap());
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(devkit).unwrap());
    let mut tar = tar::Archive::new(gz);
    for e in tar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().ends_with("ILSVRC2012_validation_ground_truth.txt") {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut e, &mut s).unwrap();
            return s.lines().map(|l| l.parse().unwrap()).collect();
        }
    }
    panic!("no ground truth");
}

#[test]
fn max_side_reencodes_large_images() {
    let (_src, _data, m, store) = synth_and_import(40);
    let opts = PrepareOptions { max_side: Some(64), ..PrepareOptions::default() };
    wrn_data::ops::prepare_with(&store, &m, &opts).unwrap();
    let train = store.open_encoded(&m, "train").unwrap();
    assert!(train.meta.resized > 10, "{}", train.meta.resized);
    for i in 0..train.len() {
        let (w, h, c) = jpeg_frame(train.encoded(i)).unwrap();
        assert!(w.max(h) <= 64 && c == 3, "{}: {w}x{h}", train.name(i));
    }
    // Another --max-side is another preparation, not "already prepared".
    let again = wrn_data::ops::prepare_with(&store, &m, &PrepareOptions::default()).unwrap();
    assert!(again[0].notes.iter().all(|n| !n.contains("already prepared")));
    assert_eq!(store.open_encoded(&m, "train").unwrap().meta.max_side, None);
}

/// Replaces the manifest's train tar with `bytes`, imports it, and returns the error of preparing.
fn prepare_with_train_tar(bytes: Vec<u8>) -> (String, PathBuf, tempfile::TempDir) {
    let (src, data, mut m, _) = synth_and_import(40);
    let path = src.path().join("bad_train.tar");
    std::fs::write(&path, &bytes).unwrap();
    let entry = m.files.iter_mut().find(|f| f.name == "ILSVRC2012_img_train.tar").unwrap();
    entry.size = bytes.len() as u64;
    entry.sha256 = format!("{:x}", Sha256::digest(&bytes));
    let store = Store::new(data.path());
    wrn_data::import::import(&store, &m, &[path], false).unwrap();
    let err = wrn_data::ops::prepare(&store, &m).unwrap_err().to_string();
    (err, store.prepared_dir(&m), data)
}

fn header(kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

#[test]
fn links_and_escaping_paths_in_the_archive_are_refused_leaving_nothing() {
    // A per-class tar holding one good image and then a symbolic link.
    let jpeg = {
        let mut out = Vec::new();
        jpeg_encoder::Encoder::new(&mut out, 90).encode(&[9u8; 8 * 8 * 3], 8, 8, jpeg_encoder::ColorType::Rgb).unwrap();
        out
    };
    let mut inner = tar::Builder::new(Vec::new());
    inner.append_data(&mut header(tar::EntryType::Regular, jpeg.len() as u64), "n01440764_1.JPEG", &jpeg[..]).unwrap();
    let mut link = header(tar::EntryType::Symlink, 0);
    inner.append_link(&mut link, "n01440764_2.JPEG", "/etc/passwd").unwrap();
    let inner = inner.into_inner().unwrap();
    let (err, dir, _keep) = prepare_with_train_tar(class_tars(&[("n01440764", inner.clone())], &[]));
    assert!(err.contains("n01440764_2.JPEG") && err.contains("is a link"), "{err}");
    assert!(leftovers(&dir).iter().all(|f| !f.starts_with("train")), "{:?}", leftovers(&dir));

    // A member whose path climbs out (written raw: the tar crate refuses to build one).
    let mut h = header(tar::EntryType::Regular, jpeg.len() as u64);
    h.as_gnu_mut().unwrap().name[..16].copy_from_slice(b"../n01440764.tar");
    h.set_cksum();
    let mut raw = h.as_bytes().to_vec();
    raw.extend(&jpeg);
    raw.resize(raw.len().div_ceil(512) * 512 + 1024, 0);
    let (err, dir, _keep) = prepare_with_train_tar(raw);
    assert!(err.contains("../n01440764.tar") && err.contains("leaves the archive"), "{err}");
    assert!(leftovers(&dir).iter().all(|f| !f.starts_with("train")), "{:?}", leftovers(&dir));

    // A class the devkit does not know.
    let (err, _, _keep) = prepare_with_train_tar(class_tars(&[], &[("n99999999.tar", inner)]));
    assert!(err.contains("unexpected member(s): `n99999999.tar`"), "{err}");
}

/// An image of `w` x `h` pixels.
fn tiny_jpeg(w: u16, h: u16) -> Vec<u8> {
    let mut out = Vec::new();
    let pixels = vec![90u8; usize::from(w) * usize::from(h) * 3];
    jpeg_encoder::Encoder::new(&mut out, 90).encode(&pixels, w, h, jpeg_encoder::ColorType::Rgb).unwrap();
    out
}

/// A train tar with one per-class tar for each synthetic class (the ones in `inner` as given, the
/// others holding one image) and then the `extra` members.
fn class_tars(inner: &[(&str, Vec<u8>)], extra: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut outer = tar::Builder::new(Vec::new());
    for (wnid, _) in IMAGENET_SYNSETS {
        let bytes = match inner.iter().find(|(w, _)| *w == wnid) {
            Some((_, bytes)) => bytes.clone(),
            None => {
                let jpeg = tiny_jpeg(8, 8);
                let mut one = tar::Builder::new(Vec::new());
                let mut h = header(tar::EntryType::Regular, jpeg.len() as u64);
                one.append_data(&mut h, format!("{wnid}_1.JPEG"), &jpeg[..]).unwrap();
                one.into_inner().unwrap()
            }
        };
        outer
            .append_data(&mut header(tar::EntryType::Regular, bytes.len() as u64), format!("{wnid}.tar"), &bytes[..])
            .unwrap();
    }
    for (name, bytes) in extra {
        outer.append_data(&mut header(tar::EntryType::Regular, bytes.len() as u64), name, &bytes[..]).unwrap();
    }
    outer.into_inner().unwrap()
}

/// The train tar without the per-class tars of `left_out` and with the `extra` members.
fn train_tar_without(left_out: &[&str], extra: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let all = class_tars(&[], extra);
    let mut outer = tar::Builder::new(Vec::new());
    for e in tar::Archive::new(&all[..]).entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        if left_out.iter().any(|w| name == format!("{w}.tar")) {
            continue;
        }
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut bytes).unwrap();
        outer.append_data(&mut header(tar::EntryType::Regular, bytes.len() as u64), &name, &bytes[..]).unwrap();
    }
    outer.into_inner().unwrap()
}

#[test]
fn the_train_tar_must_hold_exactly_the_per_class_tars() {
    // One class tar missing and a member that is not a class tar: both named, with the tar.
    let bytes = train_tar_without(&["n02119789"], &[("README.txt", b"hello".to_vec())]);
    let (err, dir, _keep) = prepare_with_train_tar(bytes);
    assert!(err.contains("ILSVRC2012_img_train.tar"), "{err}");
    assert!(err.contains("missing member(s): n02119789.tar (one per class"), "{err}");
    assert!(err.contains("unexpected member(s): `README.txt`"), "{err}");
    assert!(leftovers(&dir).iter().all(|f| !f.starts_with("train")), "{:?}", leftovers(&dir));

    // Many missing: the first few are listed, the rest counted; a class tar stored twice is named.
    let sorted = {
        let mut s: Vec<&str> = IMAGENET_SYNSETS.iter().map(|s| s.0).collect();
        s.sort_unstable();
        s
    };
    let twice = class_tars(&[], &[("n01440764.tar", Vec::new())]);
    let (err, _, _keep) = prepare_with_train_tar(twice);
    assert!(err.contains("member(s) stored twice: n01440764.tar"), "{err}");
    let (err, _, _keep) = prepare_with_train_tar(train_tar_without(&sorted[..8], &[]));
    let listed: Vec<String> = sorted[..5].iter().map(|w| format!("{w}.tar")).collect();
    assert!(err.contains(&format!("missing member(s): {} and 3 more", listed.join(", "))), "{err}");
    assert!(!err.contains("unexpected"), "{err}");
}

#[test]
fn a_truncated_train_tar_is_an_error_and_no_index_is_written() {
    let src = tempfile::tempdir().unwrap();
    let (_, _) = synth::synth_imagenet(src.path(), 40, 4).unwrap();
    let bytes = std::fs::read(src.path().join("ILSVRC2012_img_train.tar")).unwrap();
    let (err, dir, _keep) = prepare_with_train_tar(bytes[..bytes.len() / 2].to_vec());
    assert!(err.contains("ILSVRC2012_img_train.tar") || err.contains("images, the manifest says"), "{err}");
    assert!(!dir.join("train.wrni").exists());
    assert!(EncodedSplit::open(&dir.join("train.wrni")).is_err());
}

#[test]
fn fetch_with_the_synthetic_manifest_goes_from_nothing_to_prepared() {
    let src = tempfile::tempdir().unwrap();
    let (m, _) = synth::synth_imagenet(src.path(), 40, 5).unwrap();
    let data = tempfile::tempdir().unwrap();
    let store = Store::new(data.path());
    assert_eq!(store.status(&m).state, State::Missing);
    let opts = wrn_data::fetch::FetchOptions::default();
    let (fetched, prepared) = wrn_data::ops::fetch_and_prepare(&store, &m, &opts, false).unwrap();
    assert_eq!((fetched.len(), prepared.len()), (3, 2));
    let status = store.status(&m);
    assert_eq!(status.state, State::Prepared);
    assert_eq!(status.prepared.iter().map(|p| p.images).collect::<Vec<_>>(), [Some(39), Some(20)]);
    assert!(status.prepared.iter().all(|p| p.size_on_disk > 0));
}

/// A second data directory with the same synthetic files imported, prepared without interruption.
fn reference(src: &Path, m: &Manifest, opts: &PrepareOptions) -> (tempfile::TempDir, BTreeMap<String, Vec<u8>>) {
    let data = tempfile::tempdir().unwrap();
    let store = Store::new(data.path());
    wrn_data::import::import(&store, m, &[src.to_path_buf()], false).unwrap();
    wrn_data::ops::prepare_with(&store, m, opts).unwrap();
    let files = prepared_files(&store.prepared_dir(m));
    (data, files)
}

fn stop_after<'a>(opts: &PrepareOptions<'a>, shards: usize) -> PrepareOptions<'a> {
    PrepareOptions { stop_after_shards: Some(shards), ..opts.clone() }
}

#[test]
fn an_interrupted_prepare_continues_where_it_stopped_into_the_same_index_and_shards() {
    let (src, _data, m, store) = synth_and_import(300);
    let opts = PrepareOptions { shard_bytes: 16 << 10, ..PrepareOptions::default() };
    let (_ref_data, expected) = reference(src.path(), &m, &opts);
    let train_shards = expected.keys().filter(|f| f.starts_with("train-")).count();
    assert!(train_shards >= 8, "{train_shards} train shards");
    let dir = store.prepared_dir(&m);

    let err = wrn_data::ops::prepare_with(&store, &m, &stop_after(&opts, 3)).unwrap_err().to_string();
    assert!(err.contains("preparing imagenet train: stopped after 3 shard(s)"), "{err}");
    assert_eq!(
        leftovers(&dir).into_iter().collect::<std::collections::BTreeSet<_>>(),
        ["train-00000.wrnp", "train-00000.wrns", "train-00001.wrnp", "train-00001.wrns"]
            .into_iter()
            .chain(["train-00002.wrnp", "train-00002.wrns"])
            .map(String::from)
            .collect(),
        "three shards and their journal entries, no index, no temporary file"
    );
    assert!(store.open_encoded(&m, "train").is_err());
    assert_ne!(store.status(&m).state, State::Prepared);

    // A truncated shard ends what is kept: it and the ones after it are redone.
    let shard2 = dir.join("train-00002.wrns");
    let bytes = std::fs::read(&shard2).unwrap();
    std::fs::write(&shard2, &bytes[..bytes.len() - 1]).unwrap();
    let err = wrn_data::ops::prepare_with(&store, &m, &stop_after(&opts, 3)).unwrap_err().to_string();
    assert!(err.contains("stopped after 5 shard(s)"), "2 kept and 3 more: {err}");

    let reports = wrn_data::ops::prepare_with(&store, &m, &opts).unwrap();
    let kept: usize = {
        let split = store.open_encoded(&m, "train").unwrap();
        (0..split.len()).filter(|&i| split.record(i).shard < 5).count()
    };
    let notes = reports[0].notes.join("\n");
    assert!(notes.contains(&format!("resumed: {kept} images in 5 shards kept")), "{notes}");
    assert!(reports[1].notes.iter().all(|n| !n.contains("resumed")), "val was not interrupted");
    assert!(prepared_files(&dir) == expected, "the same index and shards, byte for byte, and no journal left");
    store.open_encoded(&m, "train").unwrap().verify().unwrap();
    assert_eq!(store.status(&m).state, State::Prepared);
}

#[test]
fn val_resumes_too_and_a_journal_of_other_inputs_or_unreadable_starts_the_split_over() {
    let (src, _data, m, store) = synth_and_import(300);
    let mut val_only = m.clone();
    val_only.splits.retain(|split, _| split == "val");
    let opts = PrepareOptions { shard_bytes: 8 << 10, ..PrepareOptions::default() };
    let (_ref_data, expected) = reference(src.path(), &val_only, &opts);
    assert!(expected.keys().filter(|f| f.starts_with("val-")).count() >= 4, "{:?}", expected.keys());
    let dir = store.prepared_dir(&m);

    let err = wrn_data::ops::prepare_with(&store, &val_only, &stop_after(&opts, 2)).unwrap_err().to_string();
    assert!(err.contains("preparing imagenet val: stopped after 2 shard(s)"), "{err}");
    // An unreadable journal entry: the split starts over (1 shard in this run, none kept).
    std::fs::write(dir.join("val-00000.wrnp"), b"{ not json").unwrap();
    let err = wrn_data::ops::prepare_with(&store, &val_only, &stop_after(&opts, 1)).unwrap_err().to_string();
    assert!(err.contains("stopped after 1 shard(s)"), "{err}");
    // Other options (another --max-side): the journal is not used.
    let resized = PrepareOptions { max_side: Some(48), ..opts.clone() };
    let err = wrn_data::ops::prepare_with(&store, &val_only, &stop_after(&resized, 2)).unwrap_err().to_string();
    assert!(err.contains("stopped after 2 shard(s)"), "{err}");
    let err = wrn_data::ops::prepare_with(&store, &val_only, &stop_after(&resized, 1)).unwrap_err().to_string();
    assert!(err.contains("stopped after 3 shard(s)"), "the same options resume: {err}");
    // Back to the first options: that journal is of other options, so the split starts over.
    let reports = wrn_data::ops::prepare_with(&store, &val_only, &opts).unwrap();
    assert!(reports[0].notes.iter().all(|n| !n.contains("resumed")), "{:?}", reports[0].notes);
    assert!(prepared_files(&dir) == expected);

    // And a resumed val split is the uninterrupted one.
    std::fs::remove_dir_all(&dir).unwrap();
    let err = wrn_data::ops::prepare_with(&store, &val_only, &stop_after(&opts, 2)).unwrap_err().to_string();
    assert!(err.contains("stopped after 2 shard(s)"), "{err}");
    let reports = wrn_data::ops::prepare_with(&store, &val_only, &opts).unwrap();
    assert!(reports[0].notes.iter().any(|n| n.starts_with("resumed: ") && n.ends_with(" images in 2 shards kept")));
    assert!(prepared_files(&dir) == expected);
}

/// The synthetic ImageNet (n = 40) with its file `name` replaced by `bytes`, imported by its new hash.
fn with_file(name: &str, bytes: &[u8]) -> (tempfile::TempDir, tempfile::TempDir, Manifest, Store) {
    let (src, data, mut m, _) = synth_and_import(40);
    let path = src.path().join(format!("replaced_{name}"));
    std::fs::write(&path, bytes).unwrap();
    let entry = m.files.iter_mut().find(|f| f.name == name).unwrap();
    entry.size = bytes.len() as u64;
    entry.sha256 = format!("{:x}", Sha256::digest(bytes));
    let store = Store::new(data.path());
    wrn_data::import::import(&store, &m, &[path], false).unwrap();
    (src, data, m, store)
}

/// A 200x150 RGB JPEG, large enough that a decoder fills a cut copy with grey without an error.
fn gradient_jpeg() -> Vec<u8> {
    let pixels: Vec<u8> = (0..200 * 150 * 3).map(|i| ((i / 3) % 200 + (i % 3) * 20) as u8).collect();
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, 90).encode(&pixels, 200, 150, jpeg_encoder::ColorType::Rgb).unwrap();
    out
}

#[test]
fn a_jpeg_cut_to_a_third_is_left_out_and_named() {
    let whole = gradient_jpeg();
    let cut = whole[..whole.len() / 3].to_vec();
    let mut inner = tar::Builder::new(Vec::new());
    for (name, bytes) in [("n01440764_1.JPEG", &whole), ("n01440764_2.JPEG", &cut)] {
        inner.append_data(&mut header(tar::EntryType::Regular, bytes.len() as u64), name, &bytes[..]).unwrap();
    }
    let train = class_tars(&[("n01440764", inner.into_inner().unwrap())], &[]);
    let (_src, _data, mut m, store) = with_file("ILSVRC2012_img_train.tar", &train);
    m.splits.insert("train".into(), 11);
    m.splits.remove("val");
    let reports = wrn_data::ops::prepare(&store, &m).unwrap();
    let train = store.open_encoded(&m, "train").unwrap();
    assert_eq!(train.len(), 10, "11 images less the cut one");
    let skipped: Vec<(&str, &str)> = train.meta.skipped.iter().map(|s| (s.name.as_str(), s.reason.as_str())).collect();
    assert_eq!(
        skipped,
        [("n01440764_2.JPEG", "corrupt JPEG: the image data ends before the end-of-image marker (a file cut short)")]
    );
    assert!(reports[0].notes.iter().any(|n| n.starts_with("left out n01440764_2.JPEG: corrupt JPEG")), "{reports:?}");
}

#[test]
fn bit_rot_in_a_tar_under_a_valid_stamp_fails_the_split_and_leaves_nothing() {
    let (_src, _data, m, store) = synth_and_import(40);
    wrn_data::ops::prepare_with(&store, &m, &small_shards()).unwrap();
    let entry = m.files.iter().find(|f| f.name == "ILSVRC2012_img_val.tar").unwrap();
    let path = store.file_path(&m, entry);
    let val = store.open_encoded(&m, "val").unwrap();
    assert_eq!(val.meta.sources[0].sha256, wrn_data::verify::sha256_file(&path, None).unwrap());
    drop(val);
    std::fs::remove_dir_all(store.prepared_dir(&m)).unwrap();

    // The last byte of the tar (in its end-of-archive blocks, which readers skip) flips; size and mtime
    // stay, so the stamp still matches.
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    *bytes.last_mut().unwrap() ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    std::fs::File::options().write(true).open(&path).unwrap().set_modified(mtime).unwrap();
    assert!(wrn_data::verify::is_stamped(&path, entry));
    let actual = wrn_data::verify::sha256_file(&path, None).unwrap();
    let err = wrn_data::ops::prepare_with(&store, &m, &small_shards()).unwrap_err().to_string();
    for part in [path.to_str().unwrap(), &entry.sha256, &actual, "wrn data fetch imagenet", "wrn data import imagenet"]
    {
        assert!(err.contains(part), "`{part}` not in: {err}");
    }
    let dir = store.prepared_dir(&m);
    assert!(leftovers(&dir).iter().all(|f| !f.starts_with("val")), "{:?}", leftovers(&dir));
    assert!(!wrn_data::verify::is_stamped(&path, entry));
}

#[test]
fn a_member_claiming_64_gib_in_a_small_tar_is_refused_before_it_is_read() {
    let mut tar = header(tar::EntryType::Regular, 64 << 30);
    tar.set_path("ILSVRC2012_val_00000001.JPEG").unwrap();
    tar.set_cksum();
    let bytes = [tar.as_bytes().as_slice(), &[0xFF; 100]].concat();
    let (_src, _data, m, store) = with_file("ILSVRC2012_img_val.tar", &bytes);
    let err = wrn_data::ops::prepare_with(&store, &m, &small_shards()).unwrap_err().to_string();
    assert!(err.contains("ILSVRC2012_img_val.tar"), "{err}");
    assert!(err.contains("member `ILSVRC2012_val_00000001.JPEG` claims 68719476736 bytes, more than the 612"), "{err}");
    assert!(leftovers(&store.prepared_dir(&m)).iter().all(|f| !f.starts_with("val")));
}

#[test]
fn a_devkit_member_stored_twice_is_refused_naming_it() {
    let src = tempfile::tempdir().unwrap();
    synth::synth_imagenet(src.path(), 40, 3).unwrap();
    let devkit = std::fs::read(src.path().join("ILSVRC2012_devkit_t12.tar.gz")).unwrap();
    let mut members = Vec::new();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&devkit[..]));
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut bytes).unwrap();
        members.push((name, bytes));
    }
    let meta = members.iter().find(|(n, _)| n == wrn_data::imagenet::META_MEMBER).unwrap().clone();
    members.push(meta);
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    for (name, bytes) in &members {
        tar.append_data(&mut header(tar::EntryType::Regular, bytes.len() as u64), name, &bytes[..]).unwrap();
    }
    let twice = tar.into_inner().unwrap().finish().unwrap();
    let (_src, _data, m, store) = with_file("ILSVRC2012_devkit_t12.tar.gz", &twice);
    let err = wrn_data::ops::prepare(&store, &m).unwrap_err().to_string();
    assert!(
        err.contains("ILSVRC2012_devkit_t12.tar.gz")
            && err.contains("member `ILSVRC2012_devkit_t12/data/meta.mat` appears twice"),
        "{err}"
    );
}
