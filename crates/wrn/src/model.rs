//! `wrn model summary`: parameters, multiply-adds, activation memory and a per-stage table for any
//! architecture of the paper.

use anyhow::Result;
use tch::nn;
use wrn_nets::{tally::group_digits, Arch};
use wrn_train::datasets::Dataset;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Parameters, forward multiply-adds at the dataset's input size, activation memory per image, and a
    /// per-stage table.
    Summary(SummaryArgs),
}

#[derive(clap::Args)]
pub struct SummaryArgs {
    /// Architecture, e.g. wrn-28-10, wrn-40-2-b131, wrn-40-2-l4, resnet-34-w2, wrn-50-2-bottleneck.
    arch: Arch,
    /// Dataset that sets the number of classes and the input size (default: the architecture's own,
    /// cifar10 for WRN-n-k and imagenet for the ResNets).
    #[arg(long)]
    dataset: Option<Dataset>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Summary(args) => summary(args),
    }
}

fn summary(args: SummaryArgs) -> Result<()> {
    let dataset = args.dataset.unwrap_or(match args.arch {
        Arch::Cifar(_) => Dataset::Cifar10,
        Arch::ImageNet(_) => Dataset::ImageNet,
    });
    let arch = args.arch.with_classes(dataset.classes());
    let vs = nn::VarStore::new(tch::Device::Cpu);
    let net = arch.build_for_input(&vs.root(), dataset.input_shape());
    let tally = net.tally();
    let total = tally.total();
    if args.json {
        let value = serde_json::json!({
            "arch": arch.to_string(),
            "dataset": dataset.to_string(),
            "classes": dataset.classes(),
            "input": dataset.input_shape(),
            "parameters": total.parameters,
            "mult_adds": total.mult_adds,
            "activation_bytes_per_image": total.activation_bytes,
            "stages": tally.stages(),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        let [c, h, w] = dataset.input_shape();
        println!("{arch} on {dataset} ({} classes, input {c}×{h}×{w})", dataset.classes());
        println!(
            "parameters {} ({:.1}M)   mult-adds {} ({:.2} G)   activations {:.2} MiB per image (fp32, training)\n",
            group_digits(total.parameters),
            total.parameters as f64 / 1e6,
            group_digits(total.mult_adds),
            total.mult_adds as f64 / 1e9,
            total.activation_bytes as f64 / (1u64 << 20) as f64
        );
        print!("{}", tally.render());
    }
    Ok(())
}
