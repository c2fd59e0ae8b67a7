//! Devices of a sweep: what a slot trains on, which GPUs `--gpus` (or the GPUs found) name, and how a
//! GPU of the sweep becomes the `CUDA_VISIBLE_DEVICES` of its child.
//!
//! GPU indices are the sweep's own: `--gpus 0,1` and the GPUs found (0..n) count the GPUs the sweep
//! process itself sees. When the sweep runs under a `CUDA_VISIBLE_DEVICES` of its own (set by Slurm, or
//! by the user: `CUDA_VISIBLE_DEVICES=4,5 wrn sweep`), GPU i of the sweep is the i-th entry of that list,
//! an index, a `GPU-…` UUID or a `MIG-…` instance, and the child of a slot on it gets that entry. Indices
//! are read in `CUDA_DEVICE_ORDER`: the sweep's own when set, otherwise `PCI_BUS_ID`, the order of
//! `nvidia-smi` and of Slurm (CUDA's default, `FASTEST_FIRST`, may differ on a node of mixed GPUs).
//! Nothing here asks CUDA: the binary queries libtorch and the driver and passes their answers in.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::plan::SweepError;

/// The variable that restricts the GPUs a CUDA process sees.
pub const VISIBLE_DEVICES_ENV: &str = "CUDA_VISIBLE_DEVICES";
/// The variable that orders the GPUs CUDA enumerates.
pub const DEVICE_ORDER_ENV: &str = "CUDA_DEVICE_ORDER";
/// The order of `nvidia-smi`, of Slurm, and of a sweep whose caller set none.
pub const PCI_BUS_ID: &str = "PCI_BUS_ID";

/// What a run trains on: `wrn train`'s `device` (a GPU is picked by the child's `CUDA_VISIBLE_DEVICES`,
/// so a resumed run may move GPUs). Serialised as `"cpu"` and `"cuda"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    Cpu,
    Cuda,
}

impl Device {
    /// The value of `wrn train`'s `device` setting and `--device` flag.
    pub fn as_str(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Device {
    type Err = SweepError;
    fn from_str(s: &str) -> Result<Device, SweepError> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda),
            _ => Err(SweepError::Invalid(format!("unknown device '{s}': expected cpu or cuda"))),
        }
    }
}

/// `--gpus`: the CPU, given GPU indices, or (without the flag) every GPU found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuRequest {
    /// Every GPU libtorch can use; the CPU only where there is no NVIDIA GPU.
    Auto,
    /// `none` or `cpu`.
    Cpu,
    /// `0,1,…`: indices among the GPUs the sweep sees.
    Indices(Vec<u32>),
}

impl FromStr for GpuRequest {
    type Err = SweepError;
    fn from_str(s: &str) -> Result<GpuRequest, SweepError> {
        match s.trim() {
            "none" | "cpu" => Ok(GpuRequest::Cpu),
            "auto" => Ok(GpuRequest::Auto),
            list => {
                let mut ids: Vec<u32> = Vec::new();
                for g in list.split(',').map(str::trim) {
                    let id = g.parse().map_err(|_| {
                        SweepError::Invalid(format!(
                            "--gpus {list}: '{g}' is not a GPU index (expected indices such as 0,1, or none)"
                        ))
                    })?;
                    if ids.contains(&id) {
                        return Err(SweepError::Invalid(format!("--gpus {list}: GPU {id} is named twice")));
                    }
                    ids.push(id);
                }
                Ok(GpuRequest::Indices(ids))
            }
        }
    }
}

/// Why libtorch can use no CUDA device here (libtorch's or the driver's words).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct NoCuda {
    pub reason: String,
}

/// Why the NVIDIA driver cannot be asked for its GPUs (no driver, or its words).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct NoDriver {
    pub reason: String,
}

/// What the sweep's process found when asked for its GPUs: libtorch's count of usable CUDA devices, or
/// why there are none.
pub type CudaStatus = Result<usize, NoCuda>;

/// What the sweep trains on when `--gpus` is not given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AutoChoice {
    /// GPUs 0..n of the sweep.
    Gpus(Vec<u32>),
    /// No NVIDIA GPU on this machine: the CPU, for this reason (a one-line note).
    Cpu { reason: String },
}

/// The GPUs of a sweep without `--gpus`: every GPU libtorch can use (`cuda`). When libtorch can use none,
/// `driver_gpus` (how many GPUs the NVIDIA driver reports, or why it cannot be asked; only called then)
/// decides: GPUs the driver sees but CUDA cannot use are an error, never a silent CPU sweep; without a
/// driver or a GPU the sweep trains on the CPU.
pub fn auto_gpus(
    cuda: CudaStatus,
    driver_gpus: impl FnOnce() -> Result<usize, NoDriver>,
) -> Result<AutoChoice, SweepError> {
    let reason = match cuda {
        Ok(n) if n > 0 => return Ok(AutoChoice::Gpus((0..n as u32).collect())),
        Ok(_) => "libtorch finds no CUDA device".to_string(),
        Err(NoCuda { reason }) => reason,
    };
    match driver_gpus() {
        Ok(gpus) if gpus > 0 => Err(SweepError::CudaUnusable { gpus, reason }),
        _ => Ok(AutoChoice::Cpu { reason }),
    }
}

/// GPUs named by `--gpus` (`ids`), checked against what libtorch finds (`status`): CUDA must be usable
/// and every index below the number of GPUs the sweep sees, so a wrong list stops the sweep before any
/// run starts.
pub fn check_gpus(ids: &[u32], status: CudaStatus) -> Result<(), SweepError> {
    let list = || ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let count = match status {
        Ok(0) => return Err(SweepError::GpusUnusable { gpus: list(), reason: "libtorch finds no CUDA device".into() }),
        Ok(n) => n,
        Err(NoCuda { reason }) => return Err(SweepError::GpusUnusable { gpus: list(), reason }),
    };
    match ids.iter().find(|&&i| i as usize >= count) {
        Some(&index) => Err(SweepError::NoSuchGpu { index, count }),
        None => Ok(()),
    }
}

/// A Slurm task whose task file asks for `cuda` (`status`: libtorch's count of usable CUDA devices, or
/// why there are none): an error with the reason when CUDA cannot be used, never a run on the CPU.
pub fn require_cuda(status: CudaStatus) -> Result<(), SweepError> {
    match status {
        Ok(n) if n > 0 => Ok(()),
        Ok(_) => Err(SweepError::CudaRequired("libtorch finds no CUDA device".into())),
        Err(NoCuda { reason }) => Err(SweepError::CudaRequired(reason)),
    }
}

/// Where a run executes: a device for `wrn train`, the environment that pins it, and the number of
/// processes the run trains over (one per GPU of the slot; `wrn train --nproc` when more than one).
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    pub device: Device,
    pub env: Vec<(String, String)>,
    pub name: String,
    pub ranks: usize,
}

impl Slot {
    /// `jobs` slots per GPU of `gpus`, or `jobs` CPU slots sharing `cores` when `gpus` is empty. `gpus` are
    /// indices among the GPUs the sweep sees: each maps through the sweep's `CUDA_VISIBLE_DEVICES` (`cuda`)
    /// to the child's, and GPU children enumerate in the sweep's `CUDA_DEVICE_ORDER` (`PCI_BUS_ID` unless
    /// the caller chose another), so they train on the GPU the sweep means.
    pub fn layout(gpus: &[u32], jobs: usize, cores: usize, cuda: &CudaEnv) -> Result<Vec<Slot>, SweepError> {
        let jobs = jobs.max(1);
        if gpus.is_empty() {
            let threads = (cores / jobs).max(1).to_string();
            return Ok((0..jobs)
                .map(|j| Slot {
                    device: Device::Cpu,
                    env: vec![("WRN_TORCH_THREADS".into(), threads.clone()), (VISIBLE_DEVICES_ENV.into(), "".into())],
                    name: format!("cpu#{j}"),
                    ranks: 1,
                })
                .collect());
        }
        let visible = cuda.children_visible(gpus)?;
        // Each GPU run feeds its GPU from a fair share of the cores.
        let data_threads = (cores / (gpus.len() * jobs)).max(1).to_string();
        let mut slots = Vec::new();
        for (&g, entry) in gpus.iter().zip(&visible) {
            // The sweep's index, and the GPU it stands for when the sweep runs under a list of its own.
            let gpu = if *entry == g.to_string() { format!("gpu{g}") } else { format!("gpu{g}({entry})") };
            for j in 0..jobs {
                slots.push(Slot {
                    device: Device::Cuda,
                    env: vec![
                        (VISIBLE_DEVICES_ENV.into(), entry.clone()),
                        (DEVICE_ORDER_ENV.into(), cuda.order().into()),
                        ("WRN_DATA_THREADS".into(), data_threads.clone()),
                    ],
                    name: if jobs == 1 { gpu.clone() } else { format!("{gpu}#{j}") },
                    ranks: 1,
                });
            }
        }
        Ok(slots)
    }

    /// The GPU slots of [`Slot::layout`] with each run over `per_run` GPUs: consecutive GPUs of `gpus`
    /// make one slot (`jobs` runs at once on it), whose child sees exactly them and starts one rank on
    /// each (`wrn train --nproc`). `gpus` must split evenly.
    pub fn layout_runs(
        gpus: &[u32],
        per_run: usize,
        jobs: usize,
        cores: usize,
        cuda: &CudaEnv,
    ) -> Result<Vec<Slot>, SweepError> {
        if per_run <= 1 {
            return Slot::layout(gpus, jobs, cores, cuda);
        }
        if gpus.is_empty() {
            return Err(SweepError::Invalid(format!(
                "--gpus-per-run {per_run}: the sweep trains on the CPU (no GPU found, or --gpus none); one run over \
                 several GPUs needs GPUs"
            )));
        }
        if !gpus.len().is_multiple_of(per_run) {
            return Err(SweepError::Invalid(format!(
                "--gpus-per-run {per_run}: the sweep has {} GPUs, which do not split into runs of {per_run}: name a \
                 multiple of {per_run} with --gpus",
                gpus.len()
            )));
        }
        let jobs = jobs.max(1);
        let visible = cuda.children_visible(gpus)?;
        let data_threads = (cores / (gpus.len() * jobs)).max(1).to_string();
        let mut slots = Vec::new();
        for (ids, entries) in gpus.chunks(per_run).zip(visible.chunks(per_run)) {
            let list = entries.join(",");
            let own = ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
            let gpu = if list == own { format!("gpus{own}") } else { format!("gpus{own}({list})") };
            for j in 0..jobs {
                slots.push(Slot {
                    device: Device::Cuda,
                    env: vec![
                        (VISIBLE_DEVICES_ENV.into(), list.clone()),
                        (DEVICE_ORDER_ENV.into(), cuda.order().into()),
                        ("WRN_DATA_THREADS".into(), data_threads.clone()),
                    ],
                    name: if jobs == 1 { gpu.clone() } else { format!("{gpu}#{j}") },
                    ranks: per_run,
                });
            }
        }
        Ok(slots)
    }
}

/// Where the runs of a local sweep train: its slots, the sweep's GPUs they use (none: the CPU), how
/// many GPUs each run trains over, and why the sweep trains on the CPU when it fell back to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    pub slots: Vec<Slot>,
    pub gpus: Vec<u32>,
    pub per_run: usize,
    pub cpu_reason: Option<String>,
}

impl Placement {
    /// Where the sweep's pace is measured: the first of its GPUs (which `--gpus 2,3` makes GPU 2, not
    /// GPU 0), or the CPU.
    pub fn pace_on(&self) -> PaceOn {
        self.gpus.first().map_or(PaceOn::Cpu, |&g| PaceOn::Gpu(g))
    }

    /// What the runs train on.
    pub fn device(&self) -> Device {
        if self.gpus.is_empty() {
            Device::Cpu
        } else {
            Device::Cuda
        }
    }
}

/// The device whose training pace prices a sweep: the CPU, or GPU `i` among those the sweep sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaceOn {
    Cpu,
    Gpu(u32),
}

/// The placement of a sweep from `--gpus` (`gpus`), `--gpus-per-run` (`per_run`) and `--jobs` (`jobs`,
/// over `cores` on the CPU): named GPUs are mapped through `env` and checked against `cuda` (libtorch's
/// answer, asked only when GPUs are named or sought); without `--gpus`, [`auto_gpus`] decides, asking
/// `driver_gpus` only when libtorch finds none.
pub fn place(
    gpus: GpuRequest,
    per_run: usize,
    jobs: usize,
    cuda: impl FnOnce() -> CudaStatus,
    driver_gpus: impl FnOnce() -> Result<usize, NoDriver>,
    cores: usize,
    env: &CudaEnv,
) -> Result<Placement, SweepError> {
    let (ids, cpu_reason): (Vec<u32>, Option<String>) = match gpus {
        GpuRequest::Cpu => (vec![], None),
        GpuRequest::Indices(ids) => {
            // The mapping first: its error names the caller's CUDA_VISIBLE_DEVICES.
            env.children_visible(&ids)?;
            check_gpus(&ids, cuda())?;
            (ids, None)
        }
        GpuRequest::Auto => match auto_gpus(cuda(), driver_gpus)? {
            AutoChoice::Gpus(ids) => (ids, None),
            AutoChoice::Cpu { reason } => (vec![], Some(reason)),
        },
    };
    let slots = Slot::layout_runs(&ids, per_run, jobs, cores, env)?;
    Ok(Placement { slots, gpus: ids, per_run: per_run.max(1), cpu_reason })
}

/// Where a sweep of Slurm tasks on `device` is priced from this machine (the one that writes the
/// script): a CPU task at the CPU's pace; a GPU task at this machine's GPU 0 when libtorch finds one
/// (`cuda`, asked only then), else at no measured pace (`None`: the paper's), never at the CPU's.
pub fn slurm_pace_on(device: Device, cuda: impl FnOnce() -> CudaStatus) -> Option<PaceOn> {
    match device {
        Device::Cpu => Some(PaceOn::Cpu),
        Device::Cuda => match cuda() {
            Ok(n) if n > 0 => Some(PaceOn::Gpu(0)),
            _ => None,
        },
    }
}

/// Whether the pace must be measured now: when asked (`calibrate`), or on a GPU without a recorded pace
/// (a CPU without one is priced at the paper's pace instead).
pub fn must_measure(calibrate: bool, recorded: bool, on: PaceOn) -> bool {
    calibrate || (!recorded && on != PaceOn::Cpu)
}

/// The CUDA variables the sweep runs under (its caller's, or what the sweep set for itself).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CudaEnv {
    /// `CUDA_VISIBLE_DEVICES`, when set (possibly empty: no GPU).
    pub visible_devices: Option<String>,
    /// `CUDA_DEVICE_ORDER`, when set.
    pub device_order: Option<String>,
}

impl CudaEnv {
    /// This process's `CUDA_VISIBLE_DEVICES` and `CUDA_DEVICE_ORDER`.
    pub fn from_env() -> CudaEnv {
        CudaEnv {
            visible_devices: std::env::var(VISIBLE_DEVICES_ENV).ok(),
            device_order: std::env::var(DEVICE_ORDER_ENV).ok(),
        }
    }

    /// The `CUDA_DEVICE_ORDER` of the sweep and of its GPU children: the caller's when set (the indices
    /// of its `CUDA_VISIBLE_DEVICES` are in that order), otherwise `PCI_BUS_ID`.
    pub fn order(&self) -> &str {
        match self.device_order.as_deref().map(str::trim) {
            Some(order) if !order.is_empty() => order,
            _ => PCI_BUS_ID,
        }
    }

    /// The `CUDA_VISIBLE_DEVICES` entry of each of `gpus` (indices among the GPUs the sweep sees): the
    /// caller's i-th entry under a `CUDA_VISIBLE_DEVICES` of its own, the index itself without one.
    pub fn children_visible(&self, gpus: &[u32]) -> Result<Vec<String>, SweepError> {
        let Some(parent) = &self.visible_devices else {
            return Ok(gpus.iter().map(u32::to_string).collect());
        };
        let entries = visible_entries(parent);
        gpus.iter()
            .map(|&i| {
                entries.get(i as usize).map(|e| e.to_string()).ok_or_else(|| SweepError::GpuBeyondVisible {
                    index: i,
                    visible: parent.clone(),
                    count: entries.len(),
                })
            })
            .collect()
    }
}

/// The GPUs a `CUDA_VISIBLE_DEVICES` value makes visible, in the order it gives them: its entries up to
/// the first one that is not an index, a `GPU-…` UUID or a `MIG-…` instance (CUDA ignores that one and
/// every later one). Empty, or `""`: none.
pub fn visible_entries(value: &str) -> Vec<&str> {
    value
        .split(',')
        .map(str::trim)
        .take_while(|e| e.parse::<u32>().is_ok() || e.starts_with("GPU-") || e.starts_with("MIG-"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(visible: Option<&str>, order: Option<&str>) -> CudaEnv {
        CudaEnv { visible_devices: visible.map(Into::into), device_order: order.map(Into::into) }
    }

    fn env_of(slot: &Slot, key: &str) -> Option<String> {
        slot.env.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }

    #[test]
    fn runs_over_several_gpus_take_consecutive_gpus_of_the_sweep() {
        let cuda = env(Some("GPU-a,GPU-b,GPU-c,GPU-d,GPU-e,GPU-f"), None);
        let slots = Slot::layout_runs(&[0, 1, 2, 3], 2, 2, 16, &cuda).unwrap();
        let names: Vec<&str> = slots.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["gpus0,1(GPU-a,GPU-b)#0", "gpus0,1(GPU-a,GPU-b)#1", "gpus2,3(GPU-c,GPU-d)#0", "gpus2,3(GPU-c,GPU-d)#1"]
        );
        assert!(slots.iter().all(|s| s.ranks == 2 && s.device == Device::Cuda));
        let visible = |s: &Slot| s.env.iter().find(|(k, _)| k == VISIBLE_DEVICES_ENV).unwrap().1.clone();
        assert_eq!(visible(&slots[2]), "GPU-c,GPU-d");
        // 16 cores over 4 GPUs and 2 jobs each: 2 loader threads per rank.
        assert!(slots[0].env.contains(&("WRN_DATA_THREADS".into(), "2".into())));
        // One GPU per run is the plain layout.
        assert_eq!(Slot::layout_runs(&[0, 1], 1, 1, 8, &cuda).unwrap(), Slot::layout(&[0, 1], 1, 8, &cuda).unwrap());
        let err = Slot::layout_runs(&[0, 1, 2], 2, 1, 8, &cuda).unwrap_err().to_string();
        assert!(err.contains("3 GPUs, which do not split into runs of 2"), "{err}");
        let err = Slot::layout_runs(&[], 2, 1, 8, &cuda).unwrap_err().to_string();
        assert!(err.contains("needs GPUs"), "{err}");
    }

    #[test]
    fn slots_spread_gpus_and_cores() {
        let cpu = Slot::layout(&[], 2, 16, &CudaEnv::default()).unwrap();
        assert_eq!(cpu.len(), 2);
        assert_eq!(cpu[0].device, Device::Cpu);
        assert_eq!(env_of(&cpu[0], "WRN_TORCH_THREADS").as_deref(), Some("8"));
        assert_eq!(env_of(&cpu[0], "CUDA_VISIBLE_DEVICES").as_deref(), Some(""));
        let gpu = Slot::layout(&[0, 3], 2, 16, &CudaEnv::default()).unwrap();
        assert_eq!(gpu.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["gpu0#0", "gpu0#1", "gpu3#0", "gpu3#1"]);
        assert!(gpu.iter().all(|s| s.device == Device::Cuda));
        assert_eq!(env_of(&gpu[2], "CUDA_VISIBLE_DEVICES").as_deref(), Some("3"));
        assert_eq!(env_of(&gpu[2], "WRN_DATA_THREADS").as_deref(), Some("4"));
        assert_eq!(Slot::layout(&[1], 1, 4, &CudaEnv::default()).unwrap()[0].name, "gpu1");
    }

    #[test]
    fn gpu_slots_pin_their_gpu_through_the_sweeps_list_in_pci_order() {
        let slots = Slot::layout(&[0, 1], 1, 8, &env(Some("4,5"), None)).unwrap();
        assert_eq!(slots.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["gpu0(4)", "gpu1(5)"]);
        for (slot, physical) in slots.iter().zip(["4", "5"]) {
            assert_eq!(
                slot.env,
                [
                    ("CUDA_VISIBLE_DEVICES".to_string(), physical.to_string()),
                    ("CUDA_DEVICE_ORDER".to_string(), "PCI_BUS_ID".to_string()),
                    ("WRN_DATA_THREADS".to_string(), "4".to_string()),
                ]
            );
        }
        // Without a list of the sweep's own, index i is GPU i, still in PCI order.
        let plain = Slot::layout(&[2], 1, 8, &CudaEnv::default()).unwrap();
        assert_eq!(env_of(&plain[0], "CUDA_VISIBLE_DEVICES").as_deref(), Some("2"));
        assert_eq!(env_of(&plain[0], "CUDA_DEVICE_ORDER").as_deref(), Some("PCI_BUS_ID"));
        assert_eq!(env_of(&plain[0], "WRN_DATA_THREADS").as_deref(), Some("8"));
        // A caller's own order is kept, since its list's indices are in that order.
        let fastest = Slot::layout(&[0], 2, 8, &env(Some("GPU-aa,GPU-bb"), Some("FASTEST_FIRST"))).unwrap();
        assert_eq!(fastest.len(), 2);
        assert_eq!(env_of(&fastest[1], "CUDA_VISIBLE_DEVICES").as_deref(), Some("GPU-aa"));
        assert_eq!(env_of(&fastest[1], "CUDA_DEVICE_ORDER").as_deref(), Some("FASTEST_FIRST"));
        assert_eq!(env_of(&fastest[1], "WRN_DATA_THREADS").as_deref(), Some("4"));
        // An index beyond the list is an error, and so is any GPU under an empty list.
        let err = Slot::layout(&[0, 2], 1, 8, &env(Some("4,5"), None)).unwrap_err().to_string();
        assert!(err.contains("GPU 2 of the sweep") && err.contains("CUDA_VISIBLE_DEVICES='4,5'"), "{err}");
        assert!(Slot::layout(&[0], 1, 8, &env(Some(""), None)).is_err());
        // CPU slots need no GPU, whatever the list.
        assert_eq!(Slot::layout(&[], 1, 8, &env(Some(""), None)).unwrap()[0].device, Device::Cpu);
    }

    #[test]
    fn devices_read_and_print_as_wrn_train_names_them() {
        assert_eq!("cuda".parse::<Device>().unwrap(), Device::Cuda);
        assert_eq!(Device::Cpu.to_string(), "cpu");
        assert_eq!(serde_json::to_string(&Device::Cuda).unwrap(), "\"cuda\"");
        assert_eq!(serde_json::from_str::<Device>("\"cpu\"").unwrap(), Device::Cpu);
        assert!("cuda:1".parse::<Device>().unwrap_err().to_string().contains("expected cpu or cuda"));
    }

    #[test]
    fn gpus_flag_parses() {
        assert_eq!("none".parse::<GpuRequest>().unwrap(), GpuRequest::Cpu);
        assert_eq!("cpu".parse::<GpuRequest>().unwrap(), GpuRequest::Cpu);
        assert_eq!("0, 3".parse::<GpuRequest>().unwrap(), GpuRequest::Indices(vec![0, 3]));
        let err = "0,x".parse::<GpuRequest>().unwrap_err().to_string();
        assert!(err.contains("'x' is not a GPU index"), "{err}");
        let err = "1,1".parse::<GpuRequest>().unwrap_err().to_string();
        assert!(err.contains("GPU 1 is named twice"), "{err}");
    }

    #[test]
    fn without_a_parent_list_the_index_is_the_gpu() {
        assert_eq!(env(None, None).children_visible(&[0, 2]).unwrap(), ["0", "2"]);
    }

    #[test]
    fn indices_map_through_the_parents_indices() {
        let cuda = env(Some("4,5"), None);
        assert_eq!(cuda.children_visible(&[0, 1]).unwrap(), ["4", "5"]);
        assert_eq!(cuda.children_visible(&[1]).unwrap(), ["5"]);
        // The parent's order is kept: its first entry is the sweep's GPU 0.
        assert_eq!(env(Some("7, 2"), None).children_visible(&[0, 1]).unwrap(), ["7", "2"]);
    }

    #[test]
    fn indices_map_through_uuids_and_mig_instances() {
        let uuids = "GPU-8f3e2a10-1b2c-4d5e-8f90-0123456789ab,GPU-11111111-2222-3333-4444-555555555555";
        assert_eq!(
            env(Some(uuids), None).children_visible(&[1, 0]).unwrap(),
            ["GPU-11111111-2222-3333-4444-555555555555", "GPU-8f3e2a10-1b2c-4d5e-8f90-0123456789ab"]
        );
        let mig = "MIG-9e0f5b7a-0d5c-5e64-9a1f-3c2b1a000000";
        assert_eq!(env(Some(mig), None).children_visible(&[0]).unwrap(), [mig]);
    }

    #[test]
    fn an_index_beyond_the_parents_list_names_both() {
        let err = env(Some("4,5"), None).children_visible(&[0, 2]).unwrap_err().to_string();
        assert!(err.contains("GPU 2 of the sweep"), "{err}");
        assert!(err.contains("CUDA_VISIBLE_DEVICES='4,5'"), "{err}");
        assert!(err.contains("2 GPU(s)"), "{err}");
    }

    #[test]
    fn an_empty_parent_list_means_no_gpu() {
        assert!(visible_entries("").is_empty());
        let err = env(Some(""), None).children_visible(&[0]).unwrap_err().to_string();
        assert!(err.contains("CUDA_VISIBLE_DEVICES=''") && err.contains("0 GPU(s)"), "{err}");
        // No GPU asked for, nothing to map.
        assert!(env(Some(""), None).children_visible(&[]).unwrap().is_empty());
    }

    #[test]
    fn cuda_stops_reading_the_list_at_an_invalid_entry() {
        assert_eq!(visible_entries("0,1,-1,2"), ["0", "1"]);
        assert_eq!(visible_entries("GPU-ab, 3 ,x"), ["GPU-ab", "3"]);
        let err = env(Some("0,-1,2"), None).children_visible(&[1]).unwrap_err().to_string();
        assert!(err.contains("1 GPU(s)"), "{err}");
    }

    #[test]
    fn children_use_pci_order_unless_the_caller_chose_one() {
        assert_eq!(env(None, None).order(), "PCI_BUS_ID");
        assert_eq!(env(None, Some("")).order(), "PCI_BUS_ID");
        assert_eq!(env(None, Some("FASTEST_FIRST")).order(), "FASTEST_FIRST");
    }

    #[test]
    fn found_gpus_are_used_and_unusable_ones_stop_the_sweep() {
        let never = || -> Result<usize, NoDriver> { panic!("the driver is asked only when libtorch finds no GPU") };
        let no_cuda = |reason: &str| Err(NoCuda { reason: reason.into() });
        assert_eq!(auto_gpus(Ok(2), never).unwrap(), AutoChoice::Gpus(vec![0, 1]));
        // The driver sees GPUs that CUDA cannot use: an error with the reason and the way out.
        let err = auto_gpus(no_cuda("libtorch reports CUDA unavailable"), || Ok(8)).unwrap_err().to_string();
        assert!(err.contains("8 GPU(s)") && err.contains("libtorch reports CUDA unavailable"), "{err}");
        assert!(err.contains("run `wrn doctor` for the cause, or pass --gpus none to train on the CPU"), "{err}");
        // No driver, or a driver without a GPU: the CPU, with the reason.
        let no_driver = || Err(NoDriver { reason: "no NVIDIA driver: libcuda.so.1 cannot be loaded".into() });
        assert_eq!(
            auto_gpus(no_cuda("no libtorch_cuda.so"), no_driver).unwrap(),
            AutoChoice::Cpu { reason: "no libtorch_cuda.so".into() }
        );
        assert!(matches!(auto_gpus(no_cuda("x"), || Ok(0)).unwrap(), AutoChoice::Cpu { .. }));
    }

    #[test]
    fn named_gpus_must_exist_and_work() {
        assert!(check_gpus(&[0, 1], Ok(2)).is_ok());
        let err = check_gpus(&[0, 2], Ok(2)).unwrap_err().to_string();
        assert!(err.contains("GPU 2, but the sweep sees 2 GPU(s)"), "{err}");
        let err =
            check_gpus(&[0, 1], Err(NoCuda { reason: "no libtorch_cuda.so beside x".into() })).unwrap_err().to_string();
        assert!(err.starts_with("--gpus 0,1: CUDA cannot be used: no libtorch_cuda.so beside x"), "{err}");
        assert!(err.contains("or pass --gpus none to train on the CPU"), "{err}");
        assert!(check_gpus(&[0], Ok(0)).is_err());
    }

    #[test]
    fn slots_follow_the_request_and_fall_back_to_the_cpu_only_without_a_gpu() {
        let none = || -> CudaStatus { panic!("libtorch is not asked for a CPU sweep") };
        let no_driver = || -> Result<usize, NoDriver> { panic!("the driver is not asked") };
        let env = CudaEnv::default();
        let cpu = place(GpuRequest::Cpu, 1, 2, none, no_driver, 8, &env).unwrap();
        assert_eq!((cpu.slots.len(), cpu.slots[0].device, cpu.cpu_reason), (2, Device::Cpu, None));
        let gpus = place(GpuRequest::Indices(vec![1]), 1, 1, || Ok(2), no_driver, 8, &env).unwrap();
        assert_eq!((gpus.slots[0].name.as_str(), gpus.slots[0].device), ("gpu1", Device::Cuda));
        let err = place(GpuRequest::Indices(vec![3]), 1, 1, || Ok(2), no_driver, 8, &env).unwrap_err();
        assert!(err.to_string().contains("GPU 3, but the sweep sees 2"), "{err}");
        let auto = place(GpuRequest::Auto, 1, 1, || Ok(2), no_driver, 8, &env).unwrap();
        assert_eq!(auto.slots.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["gpu0", "gpu1"]);
        let no_gpu = || Err(NoDriver { reason: "no driver".into() });
        let cuda = || Err(NoCuda { reason: "no libtorch_cuda.so".into() });
        let cpu = place(GpuRequest::Auto, 1, 1, cuda, no_gpu, 8, &env).unwrap();
        assert_eq!((cpu.slots[0].device, cpu.cpu_reason.as_deref()), (Device::Cpu, Some("no libtorch_cuda.so")));
    }

    #[test]
    fn the_pace_is_measured_where_the_sweep_trains() {
        let never = || -> CudaStatus { panic!("not asked") };
        let no_driver = || -> Result<usize, NoDriver> { panic!("the driver is not asked") };
        let env = CudaEnv::default();
        // The first GPU the sweep trains on, not GPU 0; the CPU where it trains on the CPU.
        let two = place(GpuRequest::Indices(vec![2, 3]), 1, 3, || Ok(4), no_driver, 8, &env).unwrap();
        assert_eq!(
            (two.pace_on(), two.device(), two.gpus.len(), two.slots.len()),
            (PaceOn::Gpu(2), Device::Cuda, 2, 6)
        );
        let cpu = place(GpuRequest::Cpu, 1, 3, never, no_driver, 8, &env).unwrap();
        assert_eq!((cpu.pace_on(), cpu.device()), (PaceOn::Cpu, Device::Cpu));
        let found = place(GpuRequest::Auto, 2, 1, || Ok(4), no_driver, 8, &env).unwrap();
        assert_eq!((found.pace_on(), found.per_run, found.slots.len()), (PaceOn::Gpu(0), 2, 2));
        // Slurm GPU tasks are priced at this machine's GPU, or the paper's pace where it has none; never the CPU's.
        assert_eq!(slurm_pace_on(Device::Cpu, never), Some(PaceOn::Cpu));
        assert_eq!(slurm_pace_on(Device::Cuda, || Ok(1)), Some(PaceOn::Gpu(0)));
        assert_eq!(slurm_pace_on(Device::Cuda, || Err(NoCuda { reason: "none".into() })), None);
        assert!(must_measure(true, true, PaceOn::Cpu));
        assert!(must_measure(false, false, PaceOn::Gpu(1)));
        assert!(!must_measure(false, true, PaceOn::Gpu(0)) && !must_measure(false, false, PaceOn::Cpu));
    }

    #[test]
    fn a_cuda_task_without_cuda_fails_with_the_reason() {
        assert!(require_cuda(Ok(1)).is_ok());
        let err =
            require_cuda(Err(NoCuda { reason: "the NVIDIA driver finds no CUDA-capable device".into() })).unwrap_err();
        let err = err.to_string();
        assert!(err.contains("asks for cuda") && err.contains("finds no CUDA-capable device"), "{err}");
        assert!(require_cuda(Ok(0)).is_err());
    }
}
