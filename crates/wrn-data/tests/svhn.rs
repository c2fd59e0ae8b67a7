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
    let opts = FetchOptions { progress: false, proxy_from_env: false, ..FetchOptions::default() };
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
