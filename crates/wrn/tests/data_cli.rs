//! `wrn data` for ImageNet as a user runs it with the Kaggle zip: synthesised with `--kaggle`, imported
//! (layout checked, then prepared), listed, verified; and, with nothing there, the message saying what
//! to bring.

use std::path::Path;
use std::process::{Command, Output};

fn wrn(args: &[&str], data: &Path, manifest: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wrn"));
    cmd.arg("data").arg("--data-dir").arg(data);
    if let Some(m) = manifest {
        cmd.arg("--manifest").arg(m);
    }
    cmd.args(args).output().expect("wrn runs")
}

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn the_kaggle_zip_is_imported_prepared_listed_and_verified() {
    let dir = tempfile::tempdir().unwrap();
    let (synth, data) = (dir.path().join("synth"), dir.path().join("data"));
    let text =
        stdout(&wrn(&["synth", "imagenet", "--kaggle", "--n", "40", "--out", synth.to_str().unwrap()], &data, None));
    let zip = synth.join("imagenet-object-localization-challenge.zip");
    assert!(zip.is_file() && !synth.join("ILSVRC2012_img_train.tar").exists(), "{text}");
    let manifest = synth.join("imagenet.toml");

    let text = stdout(&wrn(&["import", "imagenet", zip.to_str().unwrap()], &data, Some(&manifest)));
    assert!(text.contains("imagenet-object-localization-challenge.zip: ") && text.contains("layout checked"), "{text}");
    assert!(text.contains("prepared train") && text.contains("prepared val") && text.contains("left out"), "{text}");

    let text = stdout(&wrn(&["list"], &data, Some(&manifest)));
    assert!(text.contains("imagenet  prepared"), "{text}");
    assert!(text.contains("kaggle zip") && text.contains("layout checked, no published checksum; in use"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&wrn(&["list", "--json"], &data, Some(&manifest)))).unwrap();
    assert_eq!(json[0]["via"], "kaggle");
    assert_eq!(json[0]["alternatives"][0]["state"], "verified");

    let text = stdout(&wrn(&["verify", "imagenet"], &data, Some(&manifest)));
    let line = text.lines().find(|l| l.contains("imagenet-object-localization-challenge.zip")).unwrap();
    assert!(line.ends_with(" ok"), "{text}");

    // Nothing there: which files, where to get them, the commands.
    let out = wrn(&["prepare", "imagenet"], &dir.path().join("empty"), None);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    for wanted in [
        "ILSVRC2012_img_train.tar",
        "ILSVRC2012_devkit_t12.tar.gz",
        "https://www.kaggle.com/competitions/imagenet-object-localization-challenge/data",
        "wrn data import imagenet imagenet-object-localization-challenge.zip",
    ] {
        assert!(err.contains(wanted), "{wanted}: {err}");
    }
}
