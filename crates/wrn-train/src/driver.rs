//! The NVIDIA driver as it is, independent of libtorch: its version, the CUDA version it supports and
//! the GPUs it sees (names, memory, compute capability). Read through the driver API (`libcuda.so.1`,
//! loaded at run time) and `/proc/driver/nvidia/version`, since libtorch's C API exposes none of it.
//! Knowing what the driver sees apart from what libtorch can use is what lets wrn refuse to fall back to
//! the CPU on a machine that has GPUs, and name why CUDA does not work there.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// One GPU as the NVIDIA driver describes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Gpu {
    pub index: usize,
    pub name: String,
    pub total_memory_bytes: u64,
    /// `major.minor`, e.g. `9.0` for an H100/H200.
    pub compute_capability: String,
    /// The GPU's UUID (`GPU-…`, as `nvidia-smi -L` prints it; a MIG instance's own, which nvidia-smi
    /// prints as `MIG-…`), when the driver says: the same GPU seen by two processes under different
    /// indices has one UUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
}

impl Gpu {
    /// The compute capability as numbers, e.g. (9, 0).
    pub fn capability(&self) -> Option<(u32, u32)> {
        parse_major_minor(&self.compute_capability)
    }
}

/// What the NVIDIA driver reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Driver {
    /// CUDA version the driver supports, e.g. `13.0`.
    pub cuda_version: String,
    /// The kernel module's version, e.g. `580.65.06` (from `/proc/driver/nvidia/version`), when readable.
    #[serde(default)]
    pub version: Option<String>,
    pub devices: Vec<Gpu>,
}

impl Driver {
    /// The CUDA version the driver supports as numbers, e.g. (13, 0).
    pub fn cuda(&self) -> Option<(u32, u32)> {
        parse_major_minor(&self.cuda_version)
    }
}

/// `"13.0"` → (13, 0).
pub fn parse_major_minor(s: &str) -> Option<(u32, u32)> {
    let (major, minor) = s.trim().split_once('.')?;
    Some((major.parse().ok()?, minor.split('.').next()?.parse().ok()?))
}

/// The kernel module's version from `/proc/driver/nvidia/version`
/// (`NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.65.06  Sun Jul 27 ...`).
pub fn kernel_module_version() -> Option<String> {
    let text = std::fs::read_to_string("/proc/driver/nvidia/version").ok()?;
    let line = text.lines().find(|l| l.starts_with("NVRM version"))?;
    let after = line.split("Kernel Module").nth(1).unwrap_or(line);
    after
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()) && w.contains('.'))
        .map(str::to_string)
}

type CuMemGetInfo = unsafe extern "C" fn(*mut usize, *mut usize) -> i32;

/// Device memory in use (total − free) on the current CUDA context, as the driver reports it; the
/// runtime makes the selected GPU current (`runtime::select_device`).
pub fn cuda_memory_in_use(device: usize) -> Option<u64> {
    tch::Cuda::synchronize(device as i64);
    let lib = driver_library()?;
    // SAFETY: cuMemGetInfo_v2 takes two out-pointers to locals and reads the current context, which
    // libtorch created on this thread for the device it computed on.
    unsafe {
        let info = lib.get::<CuMemGetInfo>(b"cuMemGetInfo_v2\0").ok()?;
        let (mut free, mut total) = (0usize, 0usize);
        (info(&mut free, &mut total) == 0).then(|| (total - free) as u64)
    }
}

/// `libcuda.so.1`, opened once and never closed: unloading a driver library that has been initialised is
/// a known cause of crashes at exit.
fn driver_library() -> Option<&'static libloading::Library> {
    static LIBRARY: OnceLock<Option<libloading::Library>> = OnceLock::new();
    LIBRARY
        .get_or_init(|| {
            // SAFETY: libcuda.so.1 is the NVIDIA driver library; loading it has no side effects until cuInit.
            unsafe { libloading::Library::new("libcuda.so.1") }.ok()
        })
        .as_ref()
}

type CuInit = unsafe extern "C" fn(u32) -> i32;
type CuDriverGetVersion = unsafe extern "C" fn(*mut i32) -> i32;
type CuDeviceGetCount = unsafe extern "C" fn(*mut i32) -> i32;
type CuDeviceGet = unsafe extern "C" fn(*mut i32, i32) -> i32;
type CuDeviceGetName = unsafe extern "C" fn(*mut libc::c_char, i32, i32) -> i32;
type CuDeviceTotalMem = unsafe extern "C" fn(*mut usize, i32) -> i32;
type CuDeviceGetAttribute = unsafe extern "C" fn(*mut i32, i32, i32) -> i32;
type CuDeviceGetUuid = unsafe extern "C" fn(*mut [u8; 16], i32) -> i32;

const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: i32 = 75;
const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: i32 = 76;
const CUDA_ERROR_NO_DEVICE: i32 = 100;

/// Why the NVIDIA driver cannot say what it sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    #[error("no NVIDIA driver: libcuda.so.1 cannot be loaded")]
    NotInstalled,
    #[error("the NVIDIA driver finds no CUDA-capable device")]
    NoDevice,
    #[error("libcuda.so.1 lacks {0}")]
    MissingSymbol(&'static str),
    #[error("NVIDIA driver call {call} failed with CUresult {code}")]
    Call { call: &'static str, code: i32 },
}

/// Asks the NVIDIA driver (`libcuda.so.1`) for its CUDA version and GPUs, or says why it cannot. Asked
/// once per process.
pub fn cuda_driver() -> Result<Driver, DriverError> {
    static DRIVER: OnceLock<Result<Driver, DriverError>> = OnceLock::new();
    DRIVER.get_or_init(query).clone()
}

/// GPU `index` (among the GPUs this process sees) as the driver describes it, when the driver
/// can be asked and has it.
pub fn gpu(index: usize) -> Option<Gpu> {
    cuda_driver().ok()?.devices.into_iter().find(|g| g.index == index)
}

fn query() -> Result<Driver, DriverError> {
    let lib = driver_library().ok_or(DriverError::NotInstalled)?;
    let call = |call: &'static str, code: i32| -> Result<(), DriverError> {
        match code {
            0 => Ok(()),
            CUDA_ERROR_NO_DEVICE => Err(DriverError::NoDevice),
            code => Err(DriverError::Call { call, code }),
        }
    };
    // SAFETY: the signatures below are those of the CUDA driver API (cuda.h), stable since CUDA 3.2;
    // every out-pointer refers to a live local of the right type.
    unsafe {
        let symbol = DriverError::MissingSymbol;
        let init = lib.get::<CuInit>(b"cuInit\0").map_err(|_| symbol("cuInit"))?;
        let version =
            lib.get::<CuDriverGetVersion>(b"cuDriverGetVersion\0").map_err(|_| symbol("cuDriverGetVersion"))?;
        let count = lib.get::<CuDeviceGetCount>(b"cuDeviceGetCount\0").map_err(|_| symbol("cuDeviceGetCount"))?;
        let get = lib.get::<CuDeviceGet>(b"cuDeviceGet\0").map_err(|_| symbol("cuDeviceGet"))?;
        let name = lib.get::<CuDeviceGetName>(b"cuDeviceGetName\0").map_err(|_| symbol("cuDeviceGetName"))?;
        let memory =
            lib.get::<CuDeviceTotalMem>(b"cuDeviceTotalMem_v2\0").map_err(|_| symbol("cuDeviceTotalMem_v2"))?;
        let attribute =
            lib.get::<CuDeviceGetAttribute>(b"cuDeviceGetAttribute\0").map_err(|_| symbol("cuDeviceGetAttribute"))?;
        // Optional: a driver without it (or a stand-in) still describes its GPUs.
        let uuid_of = lib.get::<CuDeviceGetUuid>(b"cuDeviceGetUuid_v2\0").ok();
        call("cuInit", init(0))?;
        let mut driver_version = 0;
        call("cuDriverGetVersion", version(&mut driver_version))?;
        let mut n = 0;
        call("cuDeviceGetCount", count(&mut n))?;
        let mut devices = Vec::new();
        for index in 0..n {
            let mut device = 0;
            call("cuDeviceGet", get(&mut device, index))?;
            let mut buffer = [0 as libc::c_char; 256];
            call("cuDeviceGetName", name(buffer.as_mut_ptr(), buffer.len() as i32, device))?;
            let mut bytes = 0usize;
            call("cuDeviceTotalMem_v2", memory(&mut bytes, device))?;
            let (mut major, mut minor) = (0, 0);
            call("cuDeviceGetAttribute", attribute(&mut major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device))?;
            call("cuDeviceGetAttribute", attribute(&mut minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device))?;
            let mut uuid = [0u8; 16];
            let uuid = uuid_of.as_ref().filter(|f| f(&mut uuid, device) == 0).map(|_| uuid_text(&uuid));
            devices.push(Gpu {
                index: index as usize,
                name: std::ffi::CStr::from_ptr(buffer.as_ptr()).to_string_lossy().into_owned(),
                total_memory_bytes: bytes as u64,
                compute_capability: format!("{major}.{minor}"),
                uuid,
            });
        }
        Ok(Driver {
            cuda_version: format!("{}.{}", driver_version / 1000, driver_version % 1000 / 10),
            version: kernel_module_version(),
            devices,
        })
    }
}

/// A `CUuuid` as `nvidia-smi` writes it: `GPU-` and 8-4-4-4-12 hexadecimal digits.
fn uuid_text(bytes: &[u8; 16]) -> String {
    let hex = |range: std::ops::Range<usize>| bytes[range].iter().map(|b| format!("{b:02x}")).collect::<String>();
    format!("GPU-{}-{}-{}-{}-{}", hex(0..4), hex(4..6), hex(6..8), hex(8..10), hex(10..16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uuid_reads_as_nvidia_smi_writes_it() {
        let bytes = [0x5b, 0x1e, 0x4a, 0x2c, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc];
        assert_eq!(uuid_text(&bytes), "GPU-5b1e4a2c-1122-3344-5566-778899aabbcc");
    }

    #[test]
    fn versions_parse_as_numbers() {
        assert_eq!(parse_major_minor("13.0"), Some((13, 0)));
        assert_eq!(parse_major_minor("12.8"), Some((12, 8)));
        assert_eq!(parse_major_minor("7.5"), Some((7, 5)));
        assert_eq!(parse_major_minor("580.65.06"), Some((580, 65)));
        assert_eq!(parse_major_minor("13"), None);
        assert_eq!(parse_major_minor("x.y"), None);
    }
}
