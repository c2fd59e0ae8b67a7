//! SVHN end to end on synthetic `.mat` files in the real layout: fetched through `file://` URLs,
//! verified, prepared with the 10 -> 0 label mapping and the column-major to NHWC conversion.

use wrn_data::fetch::FetchOptions;
use wrn_data::store::{State, Store};
use wrn_data::synth;

#[test]
fn synthetic_svhn_goes_from_nothing_to_prepared() {
    let src = tempfile::tempdir().unwrap();
    let (m, path) = synth::synth_svhn(src.path(), 400, 9).unwrap();
    assert_eq!(wrn_data::manifest::Manifest::load(&path).unwrap(), m);
    assert_eq!((m.splits["train"], m.splits["test"], m.splits["extra"]), (400, 80, 200));
    let data = tempfile::tempdir().unwrap();
    let store = Store::new(data.path());
    let opts = FetchOptions { proxy_from_env: false, ..FetchOptions::default() };
    let (fetched, prepared) = wrn_data::ops::fetch_and_prepare(&store, &m, &opts, false).unwrap();
    assert_eq!(fetched.len(), 3);
    assert_eq!(prepared.len(), 3);
    assert_eq!(store.status(&m).state, State::Prepared);

    let train = store.open_split(&m, "train").unwrap();
    train.verify().unwrap();
    assert_eq!(train.meta.classes[0], "0");
    // Image 7 is the generator's image 7 of stream 0, converted to HWC.
    let label = train.label(7) as usize;
    let planes = synth::image_planes(9, 0, 7, label, 10);
    let mut hwc = vec![0u8; 3072];
    wrn_data::cifar::planes_to_hwc(&planes, &mut hwc);
    assert_eq!(train.image(7), &hwc[..]);
    let mut seen = [0usize; 10];
    (0..train.len()).for_each(|i| seen[train.label(i) as usize] += 1);
    assert!(seen.iter().all(|&c| c > 10), "every digit, 0 included, occurs: {seen:?}");
}

/// Copies the synthetic files into a store the way fetch would leave them.
fn install(store: &Store, m: &wrn_data::manifest::Manifest) {
    for f in &m.files {
        let dest = store.file_path(m, f);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(f.url.strip_prefix("file://").unwrap(), &dest).unwrap();
    }
}

#[test]
fn bit_rot_in_a_mat_file_under_a_valid_stamp_is_named_and_nothing_is_prepared_from_it() {
    let src = tempfile::tempdir().unwrap();
    let (m, _) = synth::synth_svhn(src.path(), 100, 3).unwrap();
    let data = tempfile::tempdir().unwrap();
    let store = Store::new(data.path());
    install(&store, &m);
    let reports = wrn_data::ops::prepare(&store, &m).unwrap();
    let entry = m.files.iter().find(|f| f.split.as_deref() == Some("test")).unwrap();
    let path = store.file_path(&m, entry);
    assert!(wrn_data::verify::is_stamped(&path, entry), "preparing stamps each file it hashed");
    let test = store.open_split(&m, "test").unwrap();
    assert_eq!(test.meta.sources[0].sha256, wrn_data::verify::sha256_file(&path, None).unwrap());
    drop(test);
    assert_eq!(reports.len(), 3);
    std::fs::remove_dir_all(store.prepared_dir(&m)).unwrap();

    // One bit flips in the header's descriptive text, which readers ignore; size and mtime stay.
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[60] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    std::fs::File::options().write(true).open(&path).unwrap().set_modified(mtime).unwrap();
    assert!(wrn_data::verify::is_stamped(&path, entry));
    let actual = wrn_data::verify::sha256_file(&path, None).unwrap();
    let err = wrn_data::ops::prepare(&store, &m).unwrap_err().to_string();
    for part in [path.to_str().unwrap(), &entry.sha256, &actual, "wrn data fetch svhn", "wrn data import svhn"] {
        assert!(err.contains(part), "`{part}` not in: {err}");
    }
    assert!(!store.prepared_dir(&m).join("test.wrnc").exists());
    assert!(!wrn_data::verify::is_stamped(&path, entry));
}

#[test]
fn a_format_that_matches_none_of_the_files_is_an_error_naming_them() {
    let src = tempfile::tempdir().unwrap();
    let (mut m, _) = synth::synth_svhn(src.path(), 100, 4).unwrap();
    let data = tempfile::tempdir().unwrap();
    let store = Store::new(data.path());
    install(&store, &m);
    // The files lose their splits: an SVHN manifest then gives the reader nothing to prepare.
    m.files.iter_mut().for_each(|f| f.split = None);
    let err = wrn_data::ops::prepare(&store, &m).unwrap_err().to_string();
    for part in [
        "svhn",
        "format `svhn-mat`",
        "train_32x32.mat (no split)",
        "extra_32x32.mat (no split)",
        "[extra, test, train]",
    ] {
        assert!(err.contains(part), "`{part}` not in: {err}");
    }
    assert!(!store.prepared_dir(&m).exists() || std::fs::read_dir(store.prepared_dir(&m)).unwrap().next().is_none());
}
