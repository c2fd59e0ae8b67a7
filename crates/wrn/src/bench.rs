//! `wrn bench train`: training throughput (forward, backward and the SGD update) of one architecture on
//! one device, with the projected time of a paper-length CIFAR run, and with `--reference` beside a
//! matrix-product workload measured in the same process. `wrn bench pipeline`: images/s of an input
//! pipeline over a prepared split beside a copy bound measured in the same process, or of the ImageNet
//! pipelines over prepared shards (`--split <split>.wrni`) or a folder of JPEGs in torchvision's
//! `ImageFolder` layout (`--images DIR`, the files `make bench-peers` gives both sides).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use wrn_augment::{ImageType, Preset};
use wrn_nets::Arch;
use wrn_train::check::{self, CheckOptions};
use wrn_train::runtime::{self, DeviceChoice, ThreadPlan};
use wrn_train::sgd::Update;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Images/s of full training steps on random input.
    Train(TrainArgs),
    /// Images/s of an input pipeline over a prepared split (beside a copy of the same output bytes) or
    /// over JPEGs.
    Pipeline(PipelineArgs),
    /// Torch's bicubic resampling (the paper's) beside the fast one over a folder of JPEGs: time per
    /// sample and how far the val crops differ; --write-val dumps the crops for a peer to compare with.
    Resampling(ResamplingArgs),
}

#[derive(clap::Args)]
pub struct ResamplingArgs {
    /// A folder of JPEGs in `ImageFolder` layout (<DIR>/<class>/<image>.jpg).
    #[arg(long)]
    images: PathBuf,
    /// Alternating timed passes of each resampling; the best is kept.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Also write the val crops, 224×224×3 little-endian f32 (HWC, 0–255) per image in the folder's
    /// order, as <DIR>/val-torch.f32 and <DIR>/val-fast.f32.
    #[arg(long, value_name = "DIR")]
    write_val: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct PipelineArgs {
    /// The prepared split: pixels (data/cifar10/prepared/train.wrnc, see `wrn data path cifar10`) or
    /// ImageNet's JPEG shards (data/imagenet/prepared/train.wrni).
    #[arg(long, required_unless_present = "images", conflicts_with = "images")]
    split: Option<PathBuf>,
    /// A folder of JPEGs in `ImageFolder` layout (<DIR>/<class>/<image>.jpg), read into memory.
    #[arg(long)]
    images: Option<PathBuf>,
    /// The pipeline measured (default: cifar-train over pixels, imagenet-train over JPEGs).
    #[arg(long)]
    preset: Option<Preset>,
    /// Its unaugmented counterpart, measured beside it (`none` to skip; default: cifar-test over pixels,
    /// imagenet-val over JPEGs).
    #[arg(long)]
    plain: Option<String>,
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Loader workers (1: the ratio to the one-thread copy bound does not depend on the core count).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Alternating measurements of each side; the best is kept.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Deliver u8 batches (the pixels before the value step, as the runner copies them to a GPU), beside
    /// a byte copy.
    #[arg(long)]
    u8: bool,
    #[arg(long)]
    json: bool,
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
    /// fp32, or bf16 (bf16 compute on f32 master weights, as `precision = "bf16"` trains).
    #[arg(long, default_value = "fp32", value_parser = ["fp32", "bf16"])]
    precision: String,
    /// Channels-last (NHWC-strided) weights and inputs.
    #[arg(long)]
    channels_last: bool,
    /// How the SGD update runs (default: flat on a GPU, fused on the CPU): flat (whole-buffer
    /// operations), per-parameter (op by op on each parameter) or fused (libtorch's fused kernel).
    #[arg(long, value_parser = ["flat", "per-parameter", "fused"])]
    sgd: Option<String>,
    /// Replay each step (forward, backward, update) from a CUDA graph, as `cuda_graphs = true` trains.
    #[arg(long)]
    cuda_graphs: bool,
    /// Timed steps (after one warm-up step).
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Also time a fixed matrix-product workload in alternation with the training steps (best of
    /// --rounds each) and report their ratio, which compares across machines.
    #[arg(long)]
    reference: bool,
    /// With --reference: alternating measurements of each side.
    #[arg(long, default_value_t = 3, requires = "reference")]
    rounds: usize,
    /// Also time the all-reduce of this network's gradient (f32) over N ranks of Gloo on this machine,
    /// as `wrn train --nproc N` runs it after every step: bytes per step, time, bus bandwidth.
    #[arg(long, value_name = "N")]
    ranks: Option<usize>,
    #[arg(long)]
    json: bool,
}

pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Train(args) => train(args),
        Command::Pipeline(args) => pipeline(args),
        Command::Resampling(args) => resampling(args),
    }
}

fn resampling(args: ResamplingArgs) -> Result<()> {
    use wrn_augment::throughput::{compare_resampling, val_crops};
    use wrn_augment::Resampling;
    let (images, _) = wrn_augment::EncodedImages::from_folder(&args.images)?;
    let c = compare_resampling(&images, args.rounds)?;
    if let Some(dir) = &args.write_val {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for r in [Resampling::Torch, Resampling::Fast] {
            let bytes: Vec<u8> = val_crops(&images, r)?.iter().flat_map(|v| v.to_le_bytes()).collect();
            wrn_fs::atomic_write(&dir.join(format!("val-{r}.f32")), &bytes)?;
        }
    }
    if args.json {
        let value = serde_json::json!({
            "images": c.images,
            "val_ms_torch": c.val_ms_torch,
            "val_ms_fast": c.val_ms_fast,
            "train_ms_torch": c.train_ms_torch,
            "train_ms_fast": c.train_ms_fast,
            "val_mean_abs_difference": c.val_mean_abs_difference,
            "val_max_image_difference": c.val_max_image_difference,
        });
        say!("{value}");
    } else {
        say!(
            "{} images, one thread: val {:.2} ms torch / {:.2} ms fast ({:.2}x), train {:.2} ms / {:.2} ms \
             ({:.2}x); val crops differ by {:.2} grey levels on average (worst image {:.2})",
            c.images,
            c.val_ms_torch,
            c.val_ms_fast,
            c.val_ms_torch / c.val_ms_fast,
            c.train_ms_torch,
            c.train_ms_fast,
            c.train_ms_torch / c.train_ms_fast,
            c.val_mean_abs_difference,
            c.val_max_image_difference
        );
    }
    Ok(())
}

fn pipeline(args: PipelineArgs) -> Result<()> {
    use wrn_augment::throughput::{measure, measure_encoded, Options};
    let source = args.images.as_ref().or(args.split.as_ref()).expect("clap requires --split or --images");
    let encoded = args.images.is_some() || source.extension().is_some_and(|e| e == "wrni");
    let (preset, plain) = if encoded { ("imagenet-train", "imagenet-val") } else { ("cifar-train", "cifar-test") };
    let plain = args.plain.as_deref().unwrap_or(plain);
    let options = Options {
        preset: args.preset.unwrap_or(preset.parse()?),
        plain: if plain == "none" { None } else { Some(plain.parse()?) },
        batch_size: args.batch,
        workers: args.workers,
        rounds: args.rounds,
        image_type: if args.u8 { ImageType::U8 } else { ImageType::F32 },
        ..Default::default()
    };
    let t = if let Some(dir) = &args.images {
        let (images, _) = wrn_augment::EncodedImages::from_folder(dir)?;
        measure_encoded(Arc::new(images), &options)?
    } else if encoded {
        let split = wrn_data::encoded::EncodedSplit::open(source)
            .with_context(|| format!("opening the prepared shards {}", source.display()))?;
        measure_encoded(Arc::new(split), &options)?
    } else {
        let split = wrn_data::cache::PreparedSplit::open(source)
            .with_context(|| format!("opening the prepared split {}", source.display()))?;
        measure(Arc::new(split), &options)?
    };
    if args.json {
        let value = serde_json::json!({
            "benchmark": "pipeline",
            "split": source,
            "preset": t.preset,
            "plain_preset": t.plain_preset,
            "images": t.images,
            "batch": t.batch_size,
            "workers": t.workers,
            "rounds": t.rounds,
            "image_type": if t.image_type == ImageType::U8 { "u8" } else { "f32" },
            "images_per_second": t.images_per_second,
            "copy_images_per_second": t.copy_images_per_second,
            "plain_images_per_second": t.plain_images_per_second,
            "ratio_to_copy": t.ratio_to_copy,
            "ratio_to_plain": t.ratio_to_plain,
        });
        say!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        say!(
            "{}{} over {} images, batch {}, {} worker(s): {:.0} images/s{}{}",
            t.preset,
            if t.image_type == ImageType::U8 { " (u8)" } else { "" },
            t.images,
            t.batch_size,
            t.workers,
            t.images_per_second,
            match (t.ratio_to_copy, t.copy_images_per_second) {
                (Some(r), Some(c)) => format!(" = {:.1}% of the one-thread copy bound ({c:.0} images/s)", 100.0 * r),
                _ => String::new(),
            },
            match (&t.plain_preset, t.plain_images_per_second) {
                (Some(p), Some(r)) => format!("; {p}: {r:.0} images/s"),
                _ => String::new(),
            }
        );
    }
    Ok(())
}

fn train(args: TrainArgs) -> Result<()> {
    let selected = runtime::select_device(args.device)?;
    if let Some(reason) = &selected.fallback_reason {
        tracing::info!("no usable GPU on this machine, measuring the CPU: {reason}");
    }
    ThreadPlan::from_env(selected.device)?.apply();
    let options = CheckOptions {
        bf16: args.precision == "bf16",
        channels_last: args.channels_last,
        optimizer_step: true,
        input_side: None,
        update: args.sgd.as_deref().map(|s| match s {
            "flat" => Update::Flat,
            "per-parameter" => Update::PerParameter,
            _ => Update::Fused,
        }),
        cuda_graphs: args.cuda_graphs,
    };
    // 200 epochs of the 50,000 CIFAR training images, the paper's schedule.
    let hours_200_epochs = |images_per_second: f64| 200.0 * 50_000.0 / images_per_second / 3600.0;
    if args.reference {
        let r = check::against_reference(&args.arch, selected.device, args.batch, args.steps, args.rounds, options)?;
        if args.json {
            let mut value = serde_json::to_value(&r)?;
            value["benchmark"] = serde_json::json!("train");
            value["projected_cifar_200_epochs_hours"] = serde_json::json!(hours_200_epochs(r.train.images_per_second));
            say!("{}", serde_json::to_string_pretty(&value)?);
        } else {
            say!(
                "{} on {}, batch {}: {:.1} images/s; {}: {:.1} GFLOP/s; training reaches {:.1}% of it (best of {})",
                r.train.arch,
                r.train.device,
                r.train.batch,
                r.train.images_per_second,
                r.reference.workload,
                r.reference.flops_per_second / 1e9,
                100.0 * r.ratio_to_reference,
                r.rounds
            );
        }
        return Ok(());
    }
    let result = check::forward_backward(&args.arch, selected.device, args.batch, args.steps, options)?;
    let hours_200_epochs = hours_200_epochs(result.images_per_second);
    let all_reduce = match args.ranks {
        Some(n) if n >= 2 => Some(wrn_train::world::time_all_reduce(result.parameters, n, args.steps)?),
        Some(n) => anyhow::bail!("--ranks {n}: an all-reduce needs at least 2 ranks"),
        None => None,
    };
    if args.json {
        let mut value = serde_json::to_value(&result)?;
        value["projected_cifar_200_epochs_hours"] = serde_json::json!(hours_200_epochs);
        if let Some(a) = &all_reduce {
            value["all_reduce"] = serde_json::to_value(a)?;
        }
        say!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        say!(
            "{} on {} ({}{}{}), batch {}: {:.1} images/s per training step; 200 CIFAR epochs ≈ {:.1} h{}",
            result.arch,
            result.device,
            result.precision,
            if result.channels_last { ", channels-last" } else { "" },
            if result.cuda_graphs { ", CUDA graphs" } else { "" },
            result.batch,
            result.images_per_second,
            hours_200_epochs,
            memory_line(&result)
        );
        if let Some(a) = &all_reduce {
            let step_ms = 1e3 * result.batch as f64 / result.images_per_second;
            say!(
                "gradient all-reduce over {} Gloo ranks here: {:.1} MB per step in {:.1} ms (median of {}; fastest {:.1} ms), \
                 bus bandwidth {:.2} GB/s; {:.0}% of this step's {:.1} ms if not overlapped",
                a.ranks,
                a.bytes_per_step as f64 / 1e6,
                a.median_ms,
                a.rounds,
                a.min_ms,
                a.bus_gb_per_second,
                100.0 * a.median_ms / step_ms,
                step_ms
            );
        }
    }
    Ok(())
}

/// The device memory a CUDA benchmark used: the caching allocator's peak for this process and what the
/// driver reports in use (all processes).
fn memory_line(result: &wrn_train::check::DeviceCheck) -> String {
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let mut out = String::new();
    if let Some(b) = result.peak_allocated_bytes {
        out += &format!("; peak allocated {:.2} GiB", gib(b));
    }
    if let Some(b) = result.device_memory_in_use_bytes {
        out += &format!("; device memory in use {:.1} GiB", gib(b));
    }
    out
}
