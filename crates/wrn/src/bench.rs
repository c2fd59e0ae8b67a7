//! `wrn bench train`: training throughput (forward, backward and the SGD update) of one architecture on
//! one device, with the projected time of a paper-length CIFAR run.

use anyhow::Result;
use wrn_nets::Arch;
use wrn_train::check::{self, CheckOptions};
use wrn_train::runtime::{self, DeviceChoice, ThreadPlan};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Images/s of full training steps on random input.
    Train(TrainArgs),
}

#[derive(clap::Args)]
pub struct TrainArgs {
    #[arg(long, default_value = "wrn-28-10")]
    arch: Arch,
    #[arg(long, default_value_t = 128)]
    batch: i64,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// fp32, or bf16 (weights and activations cast; measures the bf16 compute speed).
    #[arg(long, default_value = "fp32", value_parser = ["fp32", "bf16"])]
    precision: String,
    /// Channels-last (NHWC-strided) weights and inputs.
    #[arg(long)]
    channels_last: bool,
    /// Timed steps (after one warm-up step).
    #[arg(long, default_value_t = 10)]
    steps: usize,
    #[arg(long)]
    json: bool,
}

pub fn run(command: Command) -> Result<()> {
    let Command::Train(args) = command;
    let selected = runtime::select_device(args.device)?;
    if let Some(reason) = &selected.fallback_reason {
        tracing::info!("CUDA unavailable, measuring the CPU: {reason}");
    }
    if selected.device.is_cuda() {
        tch::Cuda::cudnn_set_benchmark(true);
    }
    ThreadPlan::from_env(selected.device)?.apply();
    let options = CheckOptions {
        bf16: args.precision == "bf16",
        channels_last: args.channels_last,
        optimizer_step: true,
        input_side: None,
    };
    let result = check::forward_backward(&args.arch, selected.device, args.batch, args.steps, options)?;
    // 200 epochs of the 50,000 CIFAR training images, the paper's schedule.
    let hours_200_epochs = 200.0 * 50_000.0 / result.images_per_second / 3600.0;
    if args.json {
        let mut value = serde_json::to_value(&result)?;
        value["projected_cifar_200_epochs_hours"] = serde_json::json!(hours_200_epochs);
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!(
            "{} on {} ({}{}), batch {}: {:.1} images/s per training step; 200 CIFAR epochs ≈ {:.1} h{}",
            result.arch,
            result.device,
            result.precision,
            if result.channels_last { ", channels-last" } else { "" },
            result.batch,
            result.images_per_second,
            hours_200_epochs,
            result
                .device_memory_in_use_bytes
                .map_or(String::new(), |b| format!("; device memory in use {:.1} GiB", b as f64 / (1u64 << 30) as f64))
        );
    }
    Ok(())
}
