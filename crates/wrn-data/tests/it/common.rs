//! Helpers shared by the ImageNet preparation tests.

use std::collections::BTreeMap;
use std::path::Path;

/// Every file in a prepared folder, by name.
pub fn prepared_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap())
        })
        .collect()
}
