//! `wrn doctor`: prints the environment (human-readable or `--json`), optionally times a
//! forward+backward pass on the chosen device (`--check`) and compares the device with the CPU
//! (`--parity`); exits non-zero on any problem, including GPUs that the driver sees and CUDA cannot use.

use std::process::ExitCode;

use anyhow::Result;
use wrn_train::check::{self, CheckOptions, DeviceCheck};
use wrn_train::environment::Environment;
use wrn_train::runtime::{self, DeviceChoice, ThreadPlan};

#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Device for --check: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// Also time a forward+backward pass of a WRN on random input on the device.
    #[arg(long)]
    check: bool,
    /// Architecture for --check.
    #[arg(long, default_value = "wrn-16-4")]
    arch: String,
    /// Batch size for --check.
    #[arg(long, default_value_t = 64)]
    batch: i64,
    /// Timed steps for --check (after one warm-up step).
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// --check in bfloat16 (bf16 compute on f32 master weights, as bf16 training does).
    #[arg(long)]
    bf16: bool,
    /// --check with channels-last (NHWC-strided) weights and inputs.
    #[arg(long)]
    channels_last: bool,
    /// Compare the device with the CPU on training's code paths (fp32, bf16, channels-last, u8
    /// normalisation, checkpoints); non-zero exit when one differs beyond its tolerance.
    #[arg(long)]
    parity: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    // The environment is reported whatever the device: a device that cannot be used is a problem to
    // show, not a reason to show nothing.
    let selected = if args.check || args.parity { Some(runtime::select_device(args.device)?) } else { None };
    let device = selected.as_ref().map_or(tch::Device::Cpu, |s| s.device);
    if let Some(reason) = selected.as_ref().and_then(|s| s.fallback_reason.as_ref()) {
        tracing::info!("no usable GPU on this machine, checking on the CPU: {reason}");
    }
    let threads = ThreadPlan::from_env(device)?.apply();
    let env = Environment::collect(env!("CARGO_PKG_VERSION"), env!("WRN_GIT_SHA"), threads);
    let check = if args.check {
        let options = CheckOptions { bf16: args.bf16, channels_last: args.channels_last, ..CheckOptions::default() };
        Some(check::forward_backward(&args.arch.parse()?, device, args.batch, args.steps, options)?)
    } else {
        None
    };
    let parity = if args.parity { Some(wrn_train::parity::parity(&"wrn-16-2".parse()?, device, 16)?) } else { None };
    let mut problems = env.problems();
    if args.json {
        let mut value = serde_json::to_value(&env)?;
        value["problems"] = serde_json::to_value(&problems)?;
        if let Some(check) = &check {
            value["check"] = serde_json::to_value(check)?;
        }
        if let Some(parity) = &parity {
            value["parity"] = serde_json::to_value(parity)?;
        }
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print_text(&env, check.as_ref());
        for p in parity.iter().flatten() {
            println!(
                "parity     {} {}: {:.3e} ({}, tolerance {:.0e})",
                if p.pass { "PASS" } else { "FAIL" },
                p.name,
                p.value,
                p.what,
                p.tolerance
            );
        }
    }
    problems.extend(parity.iter().flatten().filter(|p| !p.pass).map(|p| {
        format!(
            "parity {} on {device:?}: {:.3e} exceeds the tolerance {:.0e} ({})",
            p.name, p.value, p.tolerance, p.what
        )
    }));
    for problem in &problems {
        note!("problem: {problem}");
    }
    Ok(if problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn print_text(env: &Environment, check: Option<&DeviceCheck>) {
    let unknown = || "unknown".to_string();
    println!("wrn        {} (git {})", env.wrn_version, env.git_sha);
    println!("tch        {}", env.tch_version);
    println!(
        "libtorch   {} from {}",
        env.libtorch_version.clone().unwrap_or_else(unknown),
        env.libtorch_dir.as_ref().map_or_else(unknown, |d| d.display().to_string())
    );
    let cuda = &env.cuda;
    if cuda.available {
        println!("CUDA       available: {} device(s), cuDNN {}", cuda.device_count, cuda.cudnn_version.unwrap_or(0));
    } else {
        println!("CUDA       unavailable: {}", cuda.reason.clone().unwrap_or_else(unknown));
    }
    if let Some(lib) = &cuda.backend_library {
        println!("           backend {}", lib.display());
    }
    if let Some(error) = &cuda.driver_error {
        println!("           driver: {error}");
    }
    if let Some(driver) = &cuda.driver {
        println!(
            "           NVIDIA driver {}for CUDA {}",
            driver.version.as_ref().map_or(String::new(), |v| format!("{v} ")),
            driver.cuda_version
        );
        for gpu in &driver.devices {
            println!(
                "           gpu {}: {}, {:.1} GiB, compute capability {}",
                gpu.index,
                gpu.name,
                gpu.total_memory_bytes as f64 / (1u64 << 30) as f64,
                gpu.compute_capability
            );
        }
    }
    let t = &env.threads;
    println!(
        "threads    {} cores: libtorch {} intra-op + {} inter-op, data pipeline {}",
        t.cores, t.torch_intra_op, t.torch_inter_op, t.data_workers
    );
    if let Some(s) = &env.settings {
        println!(
            "numerics   cuDNN benchmark {}, deterministic {}; TF32 for convolutions {}, for matrix products {}",
            s.cudnn_benchmark, s.cudnn_deterministic, s.tf32_convolutions, s.tf32_matmul
        );
    }
    println!("cache      {}", env.cache_dir.display());
    println!("data       {}", env.data_dir.display());
    if let Some(c) = check {
        println!(
            "check      {} on {} ({}{}) at batch {}: {:.1} images/s forward+backward ({} steps, loss {:.3}, {:.1} M parameters)",
            c.arch,
            c.device,
            c.precision,
            if c.channels_last { ", channels-last" } else { "" },
            c.batch,
            c.images_per_second,
            c.steps,
            c.loss,
            c.parameters as f64 / 1e6
        );
    }
}
