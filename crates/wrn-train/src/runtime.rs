//! Run-time set-up of libtorch: the CUDA backend, the device and the thread pools.
//!
//! The binary links the CPU part of libtorch only (`libtorch_cpu.so`). CUDA support is a second library,
//! `libtorch_cuda.so`, which registers itself with libtorch when it is loaded. [`load_cuda`] loads it
//! with `dlopen(RTLD_NOW | RTLD_GLOBAL)` before anything asks libtorch about CUDA, from
//! `$WRN_LIBTORCH_CUDA` when set, otherwise from the directory the running `libtorch_cpu.so` was loaded
//! from. So the one binary trains on CPU on a machine without a GPU and on CUDA where a PyTorch 2.11
//! installation provides the CUDA libraries (run it with `LD_LIBRARY_PATH` at that PyTorch's `lib/`).

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::OnceLock;

use tch::Device;

/// Names `libtorch_cuda.so` explicitly, overriding the search beside `libtorch_cpu.so`.
pub const CUDA_LIBRARY_ENV: &str = "WRN_LIBTORCH_CUDA";
/// Overrides the number of libtorch intra-op threads.
pub const TORCH_THREADS_ENV: &str = "WRN_TORCH_THREADS";
/// Overrides the number of rayon workers of the data pipeline.
pub const DATA_THREADS_ENV: &str = "WRN_DATA_THREADS";

/// Errors of the run-time set-up.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("invalid device '{0}': expected auto, cpu, cuda or cuda:N")]
    DeviceSyntax(String),
    #[error("device {requested} requested but CUDA is unavailable: {reason}")]
    CudaUnavailable { requested: String, reason: String },
    #[error("device cuda:{index} requested but only {count} CUDA device(s) are visible")]
    NoSuchGpu { index: usize, count: usize },
    #[error("invalid {var}='{value}': expected a positive integer")]
    ThreadsEnv { var: &'static str, value: String },
}

/// What the user asked for: `auto | cpu | cuda | cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    /// CUDA device 0 when CUDA works, otherwise the CPU (with a one-line reason).
    Auto,
    Cpu,
    /// `cuda` (device 0) or `cuda:N`; an error when CUDA cannot be used.
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = RuntimeError;
    fn from_str(s: &str) -> Result<Self, RuntimeError> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| RuntimeError::DeviceSyntax(s.to_string())),
        }
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceChoice::Auto => write!(f, "auto"),
            DeviceChoice::Cpu => write!(f, "cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// The device chosen, and why CUDA was not when `auto` fell back to the CPU.
#[derive(Debug, Clone)]
pub struct SelectedDevice {
    pub device: Device,
    pub fallback_reason: Option<String>,
}

/// Resolves a [`DeviceChoice`], loading the CUDA backend first when CUDA may be used.
pub fn select_device(choice: DeviceChoice) -> Result<SelectedDevice, RuntimeError> {
    match choice {
        DeviceChoice::Cpu => Ok(SelectedDevice { device: Device::Cpu, fallback_reason: None }),
        DeviceChoice::Auto => Ok(match cuda_status() {
            Ok(_) => SelectedDevice { device: Device::Cuda(0), fallback_reason: None },
            Err(reason) => SelectedDevice { device: Device::Cpu, fallback_reason: Some(reason) },
        }),
        DeviceChoice::Cuda(index) => {
            let count = cuda_status()
                .map_err(|reason| RuntimeError::CudaUnavailable { requested: choice.to_string(), reason })?;
            if index >= count {
                return Err(RuntimeError::NoSuchGpu { index, count });
            }
            Ok(SelectedDevice { device: Device::Cuda(index), fallback_reason: None })
        }
    }
}

/// Loads the CUDA backend (once) and returns the number of usable CUDA devices, or why there are none.
pub fn cuda_status() -> Result<usize, String> {
    load_cuda().map_err(str::to_string)?;
    if !tch::Cuda::is_available() {
        return Err(match crate::environment::cuda_driver() {
            Err(reason) => reason,
            Ok(driver) if driver.devices.is_empty() => "the NVIDIA driver reports no GPU".to_string(),
            Ok(_) => "libtorch reports CUDA unavailable although the driver sees GPUs".to_string(),
        });
    }
    Ok(tch::Cuda::device_count().max(0) as usize)
}

/// Loads `libtorch_cuda.so` with `RTLD_NOW | RTLD_GLOBAL`, once per process; returns its path, or why it
/// could not be loaded. Must run before the first CUDA query to libtorch.
pub fn load_cuda() -> Result<&'static Path, &'static str> {
    static LOADED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let path = match std::env::var_os(CUDA_LIBRARY_ENV) {
                Some(path) => PathBuf::from(path),
                None => {
                    let dir = libtorch_dir().ok_or("libtorch_cpu.so is not mapped in this process")?;
                    let path = dir.join("libtorch_cuda.so");
                    if !path.exists() {
                        return Err(format!(
                            "no libtorch_cuda.so beside {} (a CPU-only libtorch); run with LD_LIBRARY_PATH \
                             at a CUDA PyTorch 2.11's torch/lib, or set {CUDA_LIBRARY_ENV}",
                            dir.join("libtorch_cpu.so").display()
                        ));
                    }
                    path
                }
            };
            let flags = libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL;
            // SAFETY: loading libtorch_cuda runs its static initialisers, which register the CUDA backend
            // with the libtorch already in this process; that is the purpose of the call.
            let library = unsafe { libloading::os::unix::Library::open(Some(&path), flags) }
                .map_err(|e| format!("cannot load {}: {e}", path.display()))?;
            // The backend must stay registered for the life of the process.
            std::mem::forget(library);
            Ok(path)
        })
        .as_ref()
        .map(PathBuf::as_path)
        .map_err(String::as_str)
}

/// The directory holding the `libtorch_cpu.so` this process runs against.
pub fn libtorch_dir() -> Option<PathBuf> {
    mapped_library("libtorch_cpu.so").and_then(|p| p.parent().map(Path::to_path_buf))
}

/// The path of a shared library mapped into this process, read from `/proc/self/maps`.
pub fn mapped_library(file_name: &str) -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .map(Path::new)
        .find(|path| path.file_name().is_some_and(|n| n == file_name))
        .map(Path::to_path_buf)
}

/// How many threads libtorch and the data pipeline get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ThreadPlan {
    /// Cores this process may use (`std::thread::available_parallelism`, which honours CPU affinity).
    pub cores: usize,
    /// libtorch intra-op threads (`at::set_num_threads`).
    pub torch_intra_op: usize,
    /// libtorch inter-op threads; the runner issues one op at a time, so one is enough.
    pub torch_inter_op: usize,
    /// rayon workers decoding and augmenting batches.
    pub data_workers: usize,
}

impl ThreadPlan {
    /// The default split for a device on `cores` cores.
    ///
    /// - CPU training: compute dominates by orders of magnitude (a WRN step costs milliseconds per image,
    ///   CIFAR augmentation microseconds), so libtorch gets every core and the data pipeline a quarter of
    ///   them; its workers sleep on a full prefetch queue most of the time.
    /// - CUDA training: the host only launches kernels (two libtorch threads are plenty) and the data
    ///   pipeline, which must keep the GPU fed (JPEG decoding for ImageNet), gets the other cores.
    pub fn for_device(device: Device, cores: usize) -> ThreadPlan {
        let cores = cores.max(1);
        let (torch_intra_op, data_workers) = match device {
            Device::Cpu => (cores, (cores / 4).max(1)),
            _ => (cores.min(2), cores.saturating_sub(2).max(1)),
        };
        ThreadPlan { cores, torch_intra_op, torch_inter_op: 1, data_workers }
    }

    /// [`ThreadPlan::for_device`] on this machine's cores, with `WRN_TORCH_THREADS` / `WRN_DATA_THREADS`
    /// overriding each side.
    pub fn from_env(device: Device) -> Result<ThreadPlan, RuntimeError> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut plan = ThreadPlan::for_device(device, cores);
        if let Some(n) = threads_env(TORCH_THREADS_ENV)? {
            plan.torch_intra_op = n;
        }
        if let Some(n) = threads_env(DATA_THREADS_ENV)? {
            plan.data_workers = n;
        }
        Ok(plan)
    }

    /// Applies the plan to libtorch and to rayon's global pool. The first call wins; later calls return
    /// the plan in force, since neither libtorch's inter-op pool nor rayon's global pool can be resized.
    pub fn apply(self) -> ThreadPlan {
        static APPLIED: OnceLock<ThreadPlan> = OnceLock::new();
        *APPLIED.get_or_init(|| {
            tch::set_num_threads(self.torch_intra_op as i32);
            tch::set_num_interop_threads(self.torch_inter_op as i32);
            let data_workers = match rayon::ThreadPoolBuilder::new().num_threads(self.data_workers).build_global() {
                Ok(()) => self.data_workers,
                Err(_) => rayon::current_num_threads(),
            };
            ThreadPlan { torch_intra_op: tch::get_num_threads().max(1) as usize, data_workers, ..self }
        })
    }
}

fn threads_env(var: &'static str) -> Result<Option<usize>, RuntimeError> {
    match std::env::var(var) {
        Err(_) => Ok(None),
        Ok(value) => match value.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => Err(RuntimeError::ThreadsEnv { var, value }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_choices_parse_and_print_back() {
        for s in ["auto", "cpu", "cuda:0", "cuda:3"] {
            assert_eq!(s.parse::<DeviceChoice>().unwrap().to_string(), s);
        }
        assert_eq!("cuda".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cuda(0));
        for bad in ["gpu", "cuda:", "cuda:x", "CPU", ""] {
            let err = bad.parse::<DeviceChoice>().unwrap_err().to_string();
            assert!(err.contains("expected auto, cpu, cuda or cuda:N"), "{err}");
        }
    }

    #[test]
    fn thread_plans_leave_no_core_idle_and_never_zero() {
        assert_eq!(
            ThreadPlan::for_device(Device::Cpu, 2),
            ThreadPlan { cores: 2, torch_intra_op: 2, torch_inter_op: 1, data_workers: 1 }
        );
        assert_eq!(ThreadPlan::for_device(Device::Cpu, 16).data_workers, 4);
        let gpu = ThreadPlan::for_device(Device::Cuda(0), 16);
        assert_eq!((gpu.torch_intra_op, gpu.data_workers), (2, 14));
        let tiny = ThreadPlan::for_device(Device::Cuda(0), 1);
        assert_eq!((tiny.torch_intra_op, tiny.data_workers), (1, 1));
    }

    #[test]
    fn libtorch_is_found_in_this_process() {
        // Any tensor op makes sure libtorch is loaded and initialised.
        let _ = tch::Tensor::from(1.0f32) + 1.0;
        let dir = libtorch_dir().expect("libtorch_cpu.so mapped");
        assert!(dir.join("libtorch_cpu.so").exists(), "{}", dir.display());
    }

    #[test]
    fn cuda_on_a_machine_without_it_is_an_explained_error() {
        // This test runs on the CPU-only CI machine; on a GPU machine it checks the opposite.
        match cuda_status() {
            Ok(count) => {
                assert!(count > 0);
                assert!(select_device(DeviceChoice::Cuda(count)).is_err());
            }
            Err(reason) => {
                assert!(!reason.is_empty());
                let auto = select_device(DeviceChoice::Auto).unwrap();
                assert_eq!(auto.device, Device::Cpu);
                assert_eq!(auto.fallback_reason.as_deref(), Some(reason.as_str()));
                let err = select_device(DeviceChoice::Cuda(0)).unwrap_err().to_string();
                assert!(err.starts_with("device cuda:0 requested but CUDA is unavailable: "), "{err}");
            }
        }
    }
}
