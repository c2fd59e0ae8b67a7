//! Where wrn keeps its files outside the repository.
//!
//! - cache: `$WRN_CACHE_DIR`, else `$XDG_CACHE_HOME/wrn`, else `~/.cache/wrn` (libtorch, wheels, and
//!   by default the data). `ci/libtorch.sh` follows the same rule.
//! - data: `$WRN_DATA_DIR`, else `<cache>/data` (downloaded archives and prepared datasets; large).

use std::path::PathBuf;

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

/// The directory for datasets.
pub fn data_dir() -> PathBuf {
    non_empty(DATA_DIR_ENV).unwrap_or_else(|| cache_dir().join("data"))
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
        assert_eq!(data_dir(), PathBuf::from("/c/data"));
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
}
