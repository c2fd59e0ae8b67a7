//! Records the git commit in the binary, and lets the binary find the libtorch it was linked against
//! without `LD_LIBRARY_PATH` (an `LD_LIBRARY_PATH` set at run time still takes precedence).
use std::process::Command;

fn main() {
    let sha = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .is_some_and(|o| o.status.success() && !o.stdout.is_empty());
    println!("cargo:rustc-env=WRN_GIT_SHA={sha}{}", if dirty { "-dirty" } else { "" });
    for path in ["../../.git/HEAD", "../../.git/index"] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=WRN_LIBTORCH_RUNTIME");
    // The directory the binary loads libtorch from: `WRN_LIBTORCH_RUNTIME` when set (ci/libtorch.sh sets it
    // to the CUDA tree's torch/lib, whose libtorch_cuda.so the binary loads beside libtorch_cpu.so, while
    // LIBTORCH is a link/ directory holding the CPU libraries only), otherwise `$LIBTORCH/lib`.
    let runtime = std::env::var("WRN_LIBTORCH_RUNTIME")
        .ok()
        .filter(|dir| !dir.is_empty())
        .or_else(|| std::env::var("LIBTORCH").ok().map(|libtorch| format!("{libtorch}/lib")));
    if let Some(dir) = runtime {
        // RUNPATH (the linker's default new dtags), searched after LD_LIBRARY_PATH.
        println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{dir}");
    }
}
