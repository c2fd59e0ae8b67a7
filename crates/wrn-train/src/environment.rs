//! What this process runs on: wrn and libtorch versions, where libtorch was loaded from, the CUDA
//! driver, GPUs and cuDNN (or why CUDA is unavailable), libtorch's numerics settings (cuDNN benchmark,
//! TF32), the host, the thread plan and the directories in use; for a run over several processes, their
//! number, collective backend and hosts.
//!
//! `wrn doctor` prints an [`Environment`] and exits non-zero on its [`Environment::problems`]; the training
//! runner writes one into every run folder, and writes it again when a run resumes on another device or
//! host (the earlier ones kept in `previous`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::driver::{self, Driver};
use crate::runtime::{self, ThreadPlan, TorchSettings};

/// CUDA as seen by this process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cuda {
    pub available: bool,
    /// Why CUDA cannot be used, when it cannot.
    pub reason: Option<String>,
    /// The `libtorch_cuda.so` that was loaded, when one was.
    pub backend_library: Option<PathBuf>,
    pub driver: Option<Driver>,
    /// Why the NVIDIA driver could not be asked, when it could not.
    pub driver_error: Option<String>,
    /// cuDNN version as libtorch reports it (e.g. 91002 for 9.10.2), when CUDA is available.
    pub cudnn_version: Option<i64>,
    pub device_count: usize,
    /// The CUDA part of wrn's libtorch extension (NCCL, for one run over several GPUs), where it was
    /// loaded from, or why it was not.
    #[serde(default)]
    pub extension: Option<PathBuf>,
    #[serde(default)]
    pub extension_error: Option<String>,
}

/// The processes of a run trained data parallel, as rank 0 records them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ranks {
    /// How many processes share each batch.
    pub size: usize,
    /// c10d's collective backend (`gloo`).
    pub backend: String,
    /// Each rank's host name, in rank order.
    pub hosts: Vec<String>,
}

/// Versions, libraries, devices, threads and directories of this process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Environment {
    pub wrn_version: String,
    pub git_sha: String,
    pub tch_version: String,
    /// The version libtorch records beside itself (`build-version` or PyTorch's `version.py`).
    pub libtorch_version: Option<String>,
    /// Directory of the `libtorch_cpu.so` this process runs against.
    pub libtorch_dir: Option<PathBuf>,
    /// Every path a `libtorch_cpu.so` is mapped from; more than one is two libtorch copies in one process.
    #[serde(default)]
    pub libtorch_copies: Vec<PathBuf>,
    pub cuda: Cuda,
    /// The device this process computes on (`cpu`, `cuda:0`), when it has chosen one.
    #[serde(default)]
    pub device: Option<String>,
    /// libtorch's cuDNN and TF32 settings, read from libtorch.
    #[serde(default)]
    pub settings: Option<TorchSettings>,
    /// The machine's host name.
    #[serde(default)]
    pub host: Option<String>,
    /// The processes a run trains over, when more than one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranks: Option<Ranks>,
    pub threads: ThreadPlan,
    pub cache_dir: PathBuf,
    pub data_dir: PathBuf,
    /// Where a resumed run ran before, oldest first (see the module doc).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous: Vec<Environment>,
}

impl Environment {
    /// Collects the environment. Loads the CUDA backend when present (see [`runtime::load_cuda`]).
    pub fn collect(wrn_version: &str, git_sha: &str, threads: ThreadPlan) -> Environment {
        // A tensor op first, so libtorch is initialised before it is queried.
        let _ = tch::Tensor::from(0.0f32) + 1.0;
        let libtorch_dir = runtime::libtorch_dir();
        let backend_library = runtime::load_cuda().ok().map(std::path::Path::to_path_buf);
        let extension = match &backend_library {
            Some(_) => runtime::cuda_extension().map(|ext| ext.path().to_path_buf()),
            None if wrn_torch_ext::cuda::embedded() => Err("libtorch_cuda.so is not loaded".to_string()),
            None => Err(wrn_torch_ext::cuda::CudaExtError::NotBuilt.to_string()),
        };
        let status = runtime::cuda_status();
        let available = status.is_ok();
        let driver = driver::cuda_driver();
        let cuda = Cuda {
            available,
            reason: status.as_ref().err().map(ToString::to_string),
            backend_library,
            driver_error: driver.as_ref().err().map(ToString::to_string),
            driver: driver.ok(),
            cudnn_version: available.then(tch::utils::version_cudnn),
            device_count: status.unwrap_or(0),
            extension: extension.as_ref().ok().cloned(),
            extension_error: extension.err(),
        };
        Environment {
            wrn_version: wrn_version.to_string(),
            git_sha: git_sha.to_string(),
            tch_version: crate::TCH_VERSION.to_string(),
            libtorch_version: libtorch_dir.as_deref().and_then(runtime::libtorch_version),
            libtorch_dir,
            libtorch_copies: runtime::mapped_libraries("libtorch_cpu.so"),
            cuda,
            device: None,
            settings: runtime::torch_settings(),
            host: host_name(),
            ranks: None,
            threads,
            cache_dir: wrn_data::dirs::cache_dir(),
            data_dir: wrn_data::dirs::data_dir(),
            previous: Vec::new(),
        }
    }

    /// The same environment, recording the device computed on.
    pub fn on_device(mut self, device: tch::Device) -> Environment {
        self.device = Some(device_name(device));
        self
    }

    /// The same environment, recording the processes it trains over.
    pub fn over(mut self, ranks: Option<Ranks>) -> Environment {
        self.ranks = ranks;
        self
    }

    /// Whether a run recorded in `self` and resumed in `now` moved to another device, host or set of
    /// processes.
    pub fn moved(&self, now: &Environment) -> bool {
        self.device != now.device || self.host != now.host || self.ranks != now.ranks
    }

    /// Problems that make this environment unusable for training; empty when all is well. On a machine
    /// whose NVIDIA driver sees GPUs, CUDA not working is a problem (it would otherwise train on the CPU).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match &self.libtorch_version {
            None => problems.push(format!(
                "cannot tell the libtorch version: no build-version or ../version.py beside {}",
                self.libtorch_dir.as_deref().map_or("<libtorch not found>".into(), |d| d.display().to_string())
            )),
            Some(v) if v.split('+').next() != Some(crate::LIBTORCH_VERSION) => problems.push(format!(
                "libtorch {v} loaded, but tch {} needs libtorch {}",
                self.tch_version,
                crate::LIBTORCH_VERSION
            )),
            Some(_) => {}
        }
        if self.libtorch_copies.len() > 1 {
            problems.push(format!(
                "two copies of libtorch are loaded: {}; run with one libtorch on LD_LIBRARY_PATH",
                self.libtorch_copies.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" and ")
            ));
        }
        let gpus = self.cuda.driver.as_ref().map_or(0, |d| d.devices.len());
        if gpus > 0 && !self.cuda.available {
            problems.push(format!(
                "the NVIDIA driver sees {gpus} GPU(s) but CUDA cannot be used: {}",
                self.cuda.reason.as_deref().unwrap_or("unknown reason")
            ));
        }
        if let (true, Some(driver), Some(version)) = (self.cuda.available, &self.cuda.driver, &self.libtorch_version) {
            problems.extend(driver.devices.iter().filter_map(|gpu| runtime::gpu_support_problem(gpu, version)));
        }
        problems
    }
}

/// `cpu`, `cuda:0`.
pub fn device_name(device: tch::Device) -> String {
    match device {
        tch::Device::Cuda(n) => format!("cuda:{n}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// This machine's host name (`/proc/sys/kernel/hostname`, else `$HOSTNAME`).
pub fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_version_of_a_libtorch_tree_and_of_a_pytorch_install() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("libtorch");
        std::fs::create_dir_all(tree.join("lib")).unwrap();
        assert_eq!(runtime::libtorch_version(&tree.join("lib")), None);
        std::fs::write(tree.join("build-version"), "2.11.0+cu130\n").unwrap();
        assert_eq!(runtime::libtorch_version(&tree.join("lib")).as_deref(), Some("2.11.0+cu130"));

        let torch = dir.path().join("site-packages/torch");
        std::fs::create_dir_all(torch.join("lib")).unwrap();
        std::fs::write(torch.join("version.py"), "from typing import Optional\n__version__ = '2.11.0+cu130'\n")
            .unwrap();
        assert_eq!(runtime::libtorch_version(&torch.join("lib")).as_deref(), Some("2.11.0+cu130"));
    }

    #[test]
    fn this_process_runs_the_pinned_libtorch() {
        let env = Environment::collect("0.0.0", "test", ThreadPlan::for_device(tch::Device::Cpu, 1));
        assert_eq!(env.tch_version, crate::TCH_VERSION);
        let version = env.libtorch_version.as_deref().expect("libtorch version recorded beside lib/");
        assert!(version.starts_with("2.11.0"), "{version}");
        assert!(env.problems().is_empty(), "{:?}", env.problems());
        if !env.cuda.available {
            assert!(env.cuda.reason.is_some());
            assert_eq!(env.cuda.device_count, 0);
        }
    }

    #[test]
    fn a_wrong_libtorch_version_is_a_problem() {
        let mut env = Environment::collect("0.0.0", "test", ThreadPlan::for_device(tch::Device::Cpu, 1));
        env.libtorch_version = Some("2.10.0+cpu".into());
        let problems = env.problems();
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].contains("libtorch 2.10.0+cpu loaded, but tch 0.24.0 needs libtorch 2.11.0"),
            "{problems:?}"
        );
    }
}
