//! Where wrn keeps its files.
//!
//! - cache: `$WRN_CACHE_DIR`, else `$XDG_CACHE_HOME/wrn`, else `~/.cache/wrn` (libtorch and wheels).
//!   `ci/libtorch.sh` follows the same rule.
//! - data: `$WRN_DATA_DIR` (or `--data-dir`), else `data/` at the repository root (the nearest ancestor
//!   of the current directory that holds `Cargo.toml` and `datasets/`, else the checkout the binary
//!   was built from), else `<cache>/data`. Downloaded archives and prepared datasets; large.

use std::path::{Path, PathBuf};

pub const CACHE_DIR_ENV: &str = "WRN_CACHE_DIR";
pub const DATA_DIR_ENV: &str = "WRN_DATA_DIR";

fn non_empty(var: &str) -> Option<PathBuf> {
    std::env::var_os(var).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// The per-user cache directory.
pub fn cache_dir() -> PathBuf {
    non_empty(CACHE_DIR_ENV)
        .or_else(|| non_empty("XDG_CACHE_HOME").map(|d| d.join("wrn")))
        .or_else(|| non_empty("HOME").map(|d| d.join(".cache").join("wrn")))
        .unwrap_or_else(|| PathBuf::from(".cache").join("wrn"))
}

fn is_repo_root(dir: &Path) -> bool {
    dir.join("Cargo.toml").is_file() && dir.join("datasets").is_dir()
}

/// The repository root: from the current directory upwards, else the checkout this crate was built in.
pub fn repo_root() -> Option<PathBuf> {
    let from_cwd =
        std::env::current_dir().ok().and_then(|cwd| cwd.ancestors().find(|d| is_repo_root(d)).map(PathBuf::from));
    from_cwd.or_else(|| {
        let built = Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2)?;
        is_repo_root(built).then(|| built.to_path_buf())
    })
}

/// The directory for datasets.
pub fn data_dir() -> PathBuf {
    non_empty(DATA_DIR_ENV).or_else(|| repo_root().map(|r| r.join("data"))).unwrap_or_else(|| cache_dir().join("data"))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The only test in this crate that touches these variables, so it cannot race with another.
    #[test]
    fn directories_follow_the_documented_precedence() {
        std::env::set_var(CACHE_DIR_ENV, "/c");
        std::env::set_var(DATA_DIR_ENV, "");
        assert_eq!(cache_dir(), PathBuf::from("/c"));
        // Tests run inside the checkout, so the default is its `data/`.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).unwrap().canonicalize().unwrap();
        assert_eq!(data_dir().canonicalize().unwrap_or(data_dir()), root.join("data"));
        std::env::set_var(DATA_DIR_ENV, "/d");
        assert_eq!(data_dir(), PathBuf::from("/d"));
        std::env::remove_var(CACHE_DIR_ENV);
        std::env::set_var("XDG_CACHE_HOME", "/x");
        assert_eq!(cache_dir(), PathBuf::from("/x/wrn"));
        std::env::remove_var("XDG_CACHE_HOME");
        std::env::set_var("HOME", "/h");
        assert_eq!(cache_dir(), PathBuf::from("/h/.cache/wrn"));
        std::env::remove_var(DATA_DIR_ENV);
    }

    #[test]
    fn the_repository_root_holds_the_manifests() {
        let root = repo_root().expect("tests run inside the checkout");
        assert!(root.join("datasets").join("cifar10.toml").is_file());
    }
}
