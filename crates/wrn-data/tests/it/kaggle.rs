//! ImageNet as the Kaggle zip, end to end on synthetic data: `synth_imagenet_as(.., KaggleZip)` -> import
//! (recognised and checked by its layout, never hashed) -> prepare in place into the same encoded cache
//! as the official tars of the same seed. Also: val labels from `LOC_val_solution.csv`, every layout
//! problem reported naming the zip, corrupt and damaged members, `verify` re-checking the layout, and
//! the message saying what to bring when ImageNet is missing, and an interrupted prepare from the zip
//! continuing where it stopped.

use crate::common::prepared_files;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use wrn_data::encoded::EncodedSplit;
use wrn_data::manifest::Manifest;
use wrn_data::prepare::PrepareOptions;
use wrn_data::store::{State, Store};
use wrn_data::synth::{self, ImagenetForm, IMAGENET_SYNSETS};

const ZIP: &str = "imagenet-object-localization-challenge.zip";

struct Synth {
    dir: tempfile::TempDir,
    manifest: Manifest,
}

impl Synth {
    fn new(n: u64, seed: u64, form: ImagenetForm) -> Synth {
        let dir = tempfile::tempdir().unwrap();
        let (manifest, path) = synth::synth_imagenet_as(dir.path(), n, seed, form).unwrap();
        assert_eq!(Manifest::load(&path).unwrap(), manifest, "the manifest on disk is the one returned");
        Synth { dir, manifest }
    }

    fn zip(&self) -> PathBuf {
        self.dir.path().join(ZIP)
    }
}

fn small_shards() -> PrepareOptions<'static> {
    PrepareOptions { shard_bytes: 64 << 10, ..PrepareOptions::default() }
}

/// Every image of two prepared splits, by name: label, flags, size and bytes.
fn assert_same_split(a: &EncodedSplit, b: &EncodedSplit) {
    assert_eq!(a.len(), b.len());
    assert_eq!(a.meta.classes, b.meta.classes);
    assert_eq!(a.meta.skipped, b.meta.skipped);
    assert_eq!(a.meta.converted, b.meta.converted);
    for i in 0..a.len() {
        let (ra, rb) = (a.record(i), b.record(i));
        assert_eq!(
            (&ra.name, ra.label, ra.flags, ra.width, ra.height),
            (&rb.name, rb.label, rb.flags, rb.width, rb.height)
        );
        assert_eq!(a.encoded(i), b.encoded(i), "{}", ra.name);
    }
}

#[test]
fn the_kaggle_zip_prepares_exactly_as_the_tars_of_the_same_seed() {
    let tars = Synth::new(120, 3, ImagenetForm::Tars);
    let kaggle = Synth::new(120, 3, ImagenetForm::KaggleZip);
    // The same images: the manifests describe byte-identical tars.
    for (a, b) in tars.manifest.files.iter().zip(&kaggle.manifest.files) {
        assert_eq!((&a.name, a.size, &a.sha256), (&b.name, b.size, &b.sha256));
        assert!(!a.manual && b.manual, "the Kaggle form does not write the tars");
    }
    assert!(!kaggle.dir.path().join("ILSVRC2012_img_train.tar").exists());

    let data_tars = tempfile::tempdir().unwrap();
    let store_tars = Store::new(data_tars.path());
    wrn_data::import::import(&store_tars, &tars.manifest, &[tars.dir.path().to_path_buf()], false).unwrap();
    wrn_data::ops::prepare_with(&store_tars, &tars.manifest, &small_shards()).unwrap();

    // Imported from its folder, recognised by its layout whatever its name.
    let m = &kaggle.manifest;
    let downloads = tempfile::tempdir().unwrap();
    let renamed = downloads.path().join("nested").join("imagenet (1).zip");
    std::fs::create_dir_all(renamed.parent().unwrap()).unwrap();
    std::fs::copy(kaggle.zip(), &renamed).unwrap();
    let data = tempfile::tempdir().unwrap();
    let store = Store::new(data.path());
    assert_eq!(store.status(m).state, State::Missing);
    let done = wrn_data::import::import(&store, m, &[downloads.path().to_path_buf()], false).unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].file.as_str(), done[0].how, &done[0].source), (ZIP, "hard link", &renamed));
    assert!(done[0].checked.contains("layout checked") && done[0].checked.contains("120 train"), "{done:?}");
    let status = store.status(m);
    assert_eq!((status.state, status.via.as_deref()), (State::Verified, Some("kaggle")));
    assert_eq!(status.alternatives[0].state, State::Verified);
    assert!(status.files.iter().all(|f| f.state == State::Missing));

    let reports = wrn_data::ops::prepare_with(&store, m, &small_shards()).unwrap();
    assert_eq!(reports.iter().map(|r| r.split.as_str()).collect::<Vec<_>>(), ["train", "val"]);
    let notes = reports[0].notes.join("\n");
    assert!(notes.contains(&format!("left out {}", synth::IMAGENET_CORRUPT)), "{notes}");
    assert!(notes.contains(&format!("converted {} (PNG named .JPEG -> RGB JPEG)", synth::IMAGENET_PNG)), "{notes}");
    assert_eq!(store.status(m).state, State::Prepared);
    for split in ["train", "val"] {
        let from_zip = store.open_encoded(m, split).unwrap();
        from_zip.verify().unwrap();
        let from_tars = store_tars.open_encoded(&tars.manifest, split).unwrap();
        assert_same_split(&from_zip, &from_tars);
        assert_eq!(from_zip.meta.sources.len(), 1);
        assert_eq!(from_zip.meta.sources[0].file, ZIP);
        assert_eq!(Some(&from_zip.meta.sources[0].sha256), store.alternative_digest(m, "kaggle").as_ref());
    }
    assert_eq!(store.open_encoded(m, "train").unwrap().len(), 119, "120 images less the corrupt one");

    // Verification re-checks the zip's layout (no hash) and re-hashes the prepared splits.
    let lines = wrn_data::ops::verify_all(&store, std::slice::from_ref(m));
    assert!(lines.iter().any(|l| l.item == ZIP && matches!(l.result, Some(Ok(())))), "{lines:?}");
    assert!(lines.iter().all(|l| l.result.as_ref().is_none_or(|r| r.is_ok())), "{lines:?}");
    // Fetching finds the zip standing in for the tars; preparing again keeps what is done.
    let opts = wrn_data::fetch::FetchOptions::default();
    let (fetched, prepared) = wrn_data::ops::fetch_and_prepare(&store, m, &opts, false).unwrap();
    assert_eq!((fetched.len(), fetched[0].file.as_str(), prepared.len()), (1, ZIP, 0));
    let again = wrn_data::ops::prepare_with(&store, m, &small_shards()).unwrap();
    assert!(again.iter().all(|r| r.notes.iter().any(|n| n.contains("already prepared"))), "{again:?}");
    // Importing it again finds it in place; another copy of it is linked in its stead.
    let again = wrn_data::import::import(&store, m, std::slice::from_ref(&renamed), false).unwrap();
    assert_eq!(again[0].how, "already present");
    let other = wrn_data::import::import(&store, m, &[kaggle.zip()], false).unwrap();
    assert_eq!(other[0].how, "hard link");
    assert_eq!(store.status(m).state, State::Prepared, "the same layout digest: still prepared");

    // With the tars there too, they are what is prepared from.
    wrn_data::import::import(&store_tars, &tars.manifest, &[kaggle.zip()], false).unwrap();
    assert_eq!(store_tars.status(&tars.manifest).via, None);
    let kept = wrn_data::ops::prepare_with(&store_tars, &tars.manifest, &small_shards()).unwrap();
    assert!(kept.iter().all(|r| r.notes.iter().any(|n| n.contains("already prepared"))));

    // Once prepared, the zip may go: the data stays prepared.
    std::fs::remove_file(store.alternative_path(m, &m.alternatives["kaggle"])).unwrap();
    assert_eq!(store.status(m).state, State::Prepared);
    let kept = wrn_data::ops::prepare_with(&store, m, &small_shards()).unwrap();
    assert!(kept.iter().all(|r| r.notes.iter().any(|n| n.contains("already prepared"))));
}

fn read_member(zip: &Path, name: &str) -> String {
    let mut archive = zip::ZipArchive::new(std::fs::File::open(zip).unwrap()).unwrap();
    let mut text = String::new();
    archive.by_name(name).unwrap().read_to_string(&mut text).unwrap();
    text
}

fn import_and_prepare(synth: &Synth, zip: &Path) -> (tempfile::TempDir, Store) {
    let data = tempfile::tempdir().unwrap();
    let store = Store::new(data.path());
    wrn_data::import::import(&store, &synth.manifest, &[zip.to_path_buf()], false).unwrap();
    wrn_data::ops::prepare(&store, &synth.manifest).unwrap();
    (data, store)
}

#[test]
fn a_val_label_is_the_sorted_position_of_the_first_wnid_of_its_prediction_string() {
    let kaggle = Synth::new(100, 11, ImagenetForm::KaggleZip);
    let (_data, store) = import_and_prepare(&kaggle, &kaggle.zip());
    let val = store.open_encoded(&kaggle.manifest, "val").unwrap();
    let mut sorted: Vec<&str> = IMAGENET_SYNSETS.iter().map(|s| s.0).collect();
    sorted.sort_unstable();

    let csv = read_member(&kaggle.zip(), "LOC_val_solution.csv");
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("ImageId,PredictionString"));
    let rows: Vec<(&str, Vec<&str>)> = lines
        .map(|l| {
            let (id, prediction) = l.split_once(',').unwrap();
            (id, prediction.split_whitespace().collect())
        })
        .collect();
    assert_eq!(rows.len(), val.len());
    assert!(rows.windows(2).any(|w| w[0].0 > w[1].0), "rows are not in name order");
    assert!(rows.iter().any(|(_, p)| p.len() >= 10), "some images have several boxes");
    for (id, prediction) in &rows {
        assert_eq!(prediction.len() % 5, 0, "{id}: WNID x1 y1 x2 y2, repeated");
        let i = (0..val.len()).find(|&i| val.name(i) == format!("{id}.JPEG")).expect("every row's image is prepared");
        assert_eq!(sorted[usize::from(val.label(i))], prediction[0], "{id}");
        assert_eq!(usize::from(val.label(i)), sorted.binary_search(&prediction[0]).unwrap());
    }
    assert_eq!(val.name(0), "ILSVRC2012_val_00000001.JPEG");
    assert_eq!(val.label(0), 2, "val image 1 -> n01751748 -> its sorted position");
    // The class list is in sorted order with the words, as Kaggle's.
    let mapping = read_member(&kaggle.zip(), "LOC_synset_mapping.txt");
    assert_eq!(mapping.lines().next(), Some("n01440764 tench, Tinca tinca"));
    assert_eq!(mapping.lines().map(|l| &l[..9]).collect::<Vec<_>>(), sorted);
}

/// Rewrites `src` into `dst`, passing each file member through `edit` (`None` drops it), then adding
/// `extra` members.
fn rewrite(
    src: &Path,
    dst: &Path,
    mut edit: impl FnMut(&str, Vec<u8>) -> Option<(String, Vec<u8>)>,
    extra: &[(&str, &[u8])],
) {
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    let mut archive = zip::ZipArchive::new(std::fs::File::open(src).unwrap()).unwrap();
    let mut w = zip::ZipWriter::new(std::fs::File::create(dst).unwrap());
    for i in 0..archive.len() {
        let mut f = archive.by_index(i).unwrap();
        let name = f.name().to_string();
        if f.is_dir() {
            w.add_directory(name, opts).unwrap();
            continue;
        }
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).unwrap();
        if let Some((name, bytes)) = edit(&name, bytes) {
            w.start_file(name, opts).unwrap();
            w.write_all(&bytes).unwrap();
        }
    }
    for (name, bytes) in extra {
        w.start_file(*name, opts).unwrap();
        w.write_all(bytes).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn layout_problems_are_refused_naming_the_zip_and_what_is_wrong() {
    let kaggle = Synth::new(60, 5, ImagenetForm::KaggleZip);
    let m = &kaggle.manifest;
    let val = "ILSVRC/Data/CLS-LOC/val/";
    let keep = |name: &str, bytes: Vec<u8>| Some((name.to_string(), bytes));
    type Edit = Box<dyn FnMut(&str, Vec<u8>) -> Option<(String, Vec<u8>)>>;
    type Extra = Vec<(&'static str, &'static [u8])>;
    let cases: Vec<(&str, Edit, Extra, Vec<&str>)> = vec![
        (
            "no_mapping",
            Box::new(move |n: &str, b: Vec<u8>| (n != "LOC_synset_mapping.txt").then(|| keep(n, b)).flatten()),
            vec![],
            vec!["missing LOC_synset_mapping.txt"],
        ),
        (
            "no_csv_row",
            Box::new(move |n: &str, b: Vec<u8>| {
                let text = String::from_utf8(b.clone()).unwrap_or_default();
                match n {
                    "LOC_val_solution.csv" => keep(
                        n,
                        text.lines()
                            .filter(|l| !l.starts_with("ILSVRC2012_val_00000005,"))
                            .map(|l| format!("{l}\n"))
                            .collect::<String>()
                            .into_bytes(),
                    ),
                    _ => keep(n, b),
                }
            }),
            vec![],
            vec!["val image ILSVRC2012_val_00000005.JPEG has no row in LOC_val_solution.csv"],
        ),
        (
            "stray_folder",
            Box::new(move |n: &str, b: Vec<u8>| keep(&n.replace("train/n01440764/", "train/n09999999/"), b)),
            vec![],
            vec![
                "train folder n09999999 not in LOC_synset_mapping.txt",
                "class n01440764 of LOC_synset_mapping.txt has no train images",
            ],
        ),
        (
            "short_val",
            Box::new(move |n: &str, b: Vec<u8>| {
                (n != format!("{val}ILSVRC2012_val_00000007.JPEG")).then(|| keep(n, b)).flatten()
            }),
            vec![],
            vec![
                "val has 19 images, expected 20",
                "rows for 1 images the zip does not hold (first: ILSVRC2012_val_00000007)",
            ],
        ),
        (
            "extra_train",
            Box::new(keep),
            vec![("ILSVRC/Data/CLS-LOC/train/n01440764/n01440764_99999.JPEG", b"\xff\xd8\xff\xd9")],
            vec!["train has 61 images, expected 60"],
        ),
        (
            "nine_classes",
            Box::new(move |n: &str, b: Vec<u8>| match n {
                "LOC_synset_mapping.txt" => keep(n, b[b.iter().position(|&c| c == b'\n').unwrap() + 1..].to_vec()),
                _ => keep(n, b),
            }),
            vec![],
            vec!["LOC_synset_mapping.txt lists 9 classes, expected 10"],
        ),
        (
            "escaping",
            Box::new(keep),
            vec![("../ILSVRC/Data/CLS-LOC/val/evil.JPEG", b"x")],
            vec!["member `../ILSVRC/Data/CLS-LOC/val/evil.JPEG` leaves the archive's folder"],
        ),
        (
            "nested_train",
            Box::new(keep),
            vec![("ILSVRC/Data/CLS-LOC/train/n01440764/deeper/n01440764_1.JPEG", b"x")],
            vec!["unexpected member `ILSVRC/Data/CLS-LOC/train/n01440764/deeper/n01440764_1.JPEG`"],
        ),
    ];
    for (label, edit, extra, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join(format!("{label}.zip"));
        rewrite(&kaggle.zip(), &bad, edit, &extra);
        let data = tempfile::tempdir().unwrap();
        let store = Store::new(data.path());
        let err = wrn_data::import::import(&store, m, std::slice::from_ref(&bad), false).unwrap_err().to_string();
        assert!(err.contains(&format!("{label}.zip")), "{label}: the zip is named: {err}");
        for e in expected {
            assert!(err.contains(e), "{label}: `{e}` in: {err}");
        }
        let dest = store.alternative_path(m, &m.alternatives["kaggle"]);
        assert!(!dest.exists(), "{label}: nothing placed");
        assert_eq!(store.status(m).state, State::Missing, "{label}");
        // Found in a folder, a zip of this layout with problems is an error too.
        let err = wrn_data::import::import(&store, m, &[dir.path().to_path_buf()], false).unwrap_err().to_string();
        assert!(err.contains(&format!("{label}.zip")), "{label}: {err}");
    }

    // A zip of another layout: refused when named, passed over in a folder.
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("photos.zip");
    rewrite(&kaggle.zip(), &other, |_, _| None, &[("holiday/beach.jpg", b"\xff\xd8")]);
    let store = Store::new(dir.path().join("data"));
    let err = wrn_data::import::import(&store, m, std::slice::from_ref(&other), false).unwrap_err().to_string();
    assert!(err.contains("photos.zip") && err.contains("not imagenet-object-localization-challenge.zip"), "{err}");
    let err = wrn_data::import::import(&store, m, &[dir.path().to_path_buf()], false).unwrap_err().to_string();
    assert!(err.contains("none of the given paths") && err.contains(ZIP), "{err}");
}

#[test]
fn a_corrupt_jpeg_in_the_zip_is_left_out_and_reported_and_a_damaged_member_is_an_error() {
    let kaggle = Synth::new(60, 8, ImagenetForm::KaggleZip);
    let dir = tempfile::tempdir().unwrap();
    // Val image 9 cut short after its frame header (as the train set's corrupt file).
    let cut = dir.path().join("cut").join(ZIP);
    std::fs::create_dir_all(cut.parent().unwrap()).unwrap();
    let victim = "ILSVRC2012_val_00000009.JPEG";
    rewrite(
        &kaggle.zip(),
        &cut,
        |n, mut b| {
            if n.ends_with(victim) {
                b.truncate(120);
            }
            Some((n.to_string(), b))
        },
        &[],
    );
    let (_data, store) = import_and_prepare(&kaggle, &cut);
    let val = store.open_encoded(&kaggle.manifest, "val").unwrap();
    assert_eq!(val.len(), 19, "20 images less the corrupt one");
    assert_eq!(val.meta.skipped.len(), 1);
    assert_eq!(val.meta.skipped[0].name, victim);
    assert!(val.meta.skipped[0].reason.starts_with("corrupt JPEG"), "{:?}", val.meta.skipped);
    assert!((0..val.len()).all(|i| val.name(i) != victim));

    // A flipped byte inside a stored member: its CRC-32 fails on reading; the split is not written.
    let damaged = dir.path().join("damaged.zip");
    let mut bytes = std::fs::read(kaggle.zip()).unwrap();
    let mut archive = zip::ZipArchive::new(std::fs::File::open(kaggle.zip()).unwrap()).unwrap();
    let member = "ILSVRC/Data/CLS-LOC/val/ILSVRC2012_val_00000004.JPEG";
    let (start, size) = {
        let f = archive.by_name(member).unwrap();
        assert_eq!(f.compression(), zip::CompressionMethod::Stored);
        (f.data_start() as usize, f.size() as usize)
    };
    bytes[start + size / 2] ^= 0x55;
    std::fs::write(&damaged, &bytes).unwrap();
    let data = tempfile::tempdir().unwrap();
    let store = Store::new(data.path());
    wrn_data::import::import(&store, &kaggle.manifest, &[damaged], false).unwrap();
    let err = wrn_data::ops::prepare(&store, &kaggle.manifest).unwrap_err().to_string();
    assert!(err.contains(ZIP) && err.contains("ILSVRC2012_val_00000004.JPEG") && err.contains("damaged"), "{err}");
    assert!(!store.prepared_dir(&kaggle.manifest).join("val.wrni").exists());
    let leftovers: Vec<String> = std::fs::read_dir(store.prepared_dir(&kaggle.manifest))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("val"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn verify_rechecks_the_layout_and_a_broken_zip_loses_its_stamp() {
    let kaggle = Synth::new(40, 9, ImagenetForm::KaggleZip);
    let m = &kaggle.manifest;
    let data = tempfile::tempdir().unwrap();
    let store = Store::new(data.path());
    wrn_data::import::import(&store, m, &[kaggle.zip()], true).unwrap();
    assert_eq!(store.status(m).state, State::Verified);
    let dest = store.alternative_path(m, &m.alternatives["kaggle"]);
    // The copy in the data folder loses a val image.
    let tmp = data.path().join("broken.zip");
    rewrite(&dest, &tmp, |n, b| (!n.ends_with("ILSVRC2012_val_00000003.JPEG")).then(|| (n.to_string(), b)), &[]);
    std::fs::rename(&tmp, &dest).unwrap();
    let lines = wrn_data::ops::verify_all(&store, std::slice::from_ref(m));
    let line = lines.iter().find(|l| l.item == ZIP).unwrap();
    let err = line.result.as_ref().unwrap().as_ref().unwrap_err().to_string();
    assert!(err.contains(ZIP) && err.contains("val has 19 images, expected 20"), "{err}");
    assert_eq!(store.status(m).state, State::Partial, "present, no longer checked");
    assert!(wrn_data::ops::prepare(&store, m).is_err());
}

#[test]
fn missing_imagenet_says_which_files_where_to_get_them_and_the_command() {
    let data = tempfile::tempdir().unwrap();
    let store = Store::new(data.path());
    let m = Manifest::builtin("imagenet").unwrap();
    let kaggle = &m.alternatives["kaggle"];
    assert_eq!(kaggle.file, ZIP);
    assert_eq!(kaggle.url, "https://www.kaggle.com/competitions/imagenet-object-localization-challenge/data");
    for err in [
        wrn_data::ops::prepare(&store, &m).unwrap_err().to_string(),
        wrn_data::fetch::fetch_dataset(&store, &m, &Default::default()).unwrap_err().to_string(),
    ] {
        for f in &m.files {
            assert!(err.contains(&f.name) && err.contains(&f.url), "{err}");
        }
        assert!(err.contains("wrn data import imagenet <the downloaded files"), "{err}");
        assert!(err.contains(ZIP) && err.contains(&kaggle.url), "{err}");
        assert!(err.contains(&format!("wrn data import imagenet {ZIP}")), "{err}");
    }
}

#[test]
fn an_interrupted_prepare_from_the_zip_continues_into_the_same_index_and_shards() {
    let kaggle = Synth::new(200, 6, ImagenetForm::KaggleZip);
    let m = &kaggle.manifest;
    let opts = PrepareOptions { shard_bytes: 16 << 10, ..PrepareOptions::default() };
    let prepared = |stop: Option<usize>| {
        let data = tempfile::tempdir().unwrap();
        let store = Store::new(data.path());
        wrn_data::import::import(&store, m, &[kaggle.zip()], false).unwrap();
        if let Some(n) = stop {
            let stopped = PrepareOptions { stop_after_shards: Some(n), ..opts.clone() };
            let err = wrn_data::ops::prepare_with(&store, m, &stopped).unwrap_err().to_string();
            assert!(err.contains(&format!("preparing imagenet train: stopped after {n} shard(s)")), "{err}");
            assert!(store.open_encoded(m, "train").is_err());
        }
        let reports = wrn_data::ops::prepare_with(&store, m, &opts).unwrap();
        (prepared_files(&store.prepared_dir(m)), reports, data)
    };
    let (expected, _, _keep) = prepared(None);
    assert!(expected.keys().filter(|f| f.starts_with("train-")).count() >= 5, "{:?}", expected.keys());
    let (resumed, reports, _keep) = prepared(Some(3));
    assert!(reports[0].notes.iter().any(|n| n.starts_with("resumed: ") && n.ends_with(" images in 3 shards kept")));
    assert!(resumed == expected, "the same index and shards, byte for byte, and no journal left");
}

#[test]
fn a_member_stored_twice_in_the_zip_is_refused_naming_the_zip_and_the_member() {
    let kaggle = Synth::new(60, 5, ImagenetForm::KaggleZip);
    let dir = tempfile::tempdir().unwrap();
    let staged = dir.path().join("staged.zip");
    let member = "ILSVRC/Data/CLS-LOC/val/ILSVRC2012_val_00000005.JPEG";
    let stand_in = "ILSVRC/Data/CLS-LOC/val/ILSVRC2012_val_0000000X.JPEG";
    rewrite(&kaggle.zip(), &staged, |n, b| Some((n.to_string(), b)), &[(stand_in, b"\xff\xd8\xff\xd9")]);
    // The stand-in's name, in its local header and its central-directory entry, becomes the member's.
    let mut bytes = std::fs::read(&staged).unwrap();
    let mut renamed = 0;
    while let Some(at) = bytes.windows(stand_in.len()).position(|w| w == stand_in.as_bytes()) {
        bytes[at..at + stand_in.len()].copy_from_slice(member.as_bytes());
        renamed += 1;
    }
    assert_eq!(renamed, 2);
    let twice = dir.path().join("twice.zip");
    std::fs::write(&twice, &bytes).unwrap();
    let data = tempfile::tempdir().unwrap();
    let store = Store::new(data.path());
    let m = &kaggle.manifest;
    let err = wrn_data::import::import(&store, m, std::slice::from_ref(&twice), false).unwrap_err().to_string();
    assert!(err.contains("twice.zip") && err.contains(&format!("member `{member}` appears twice")), "{err}");
    assert!(!store.alternative_path(m, &m.alternatives["kaggle"]).exists());
}
