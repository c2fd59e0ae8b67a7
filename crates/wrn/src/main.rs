//! `wrn`: the command line of the Wide Residual Networks reproduction. It parses arguments and calls
//! the stage crates; it holds no logic of its own.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// `eprintln!` that never panics: where stderr has closed (the `tee` of a long run died), the line is lost,
/// not the run in progress.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// `println!` that never panics on a closed stdout (`wrn bench ... | head`, where SIGPIPE is ignored).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod bars;
mod bench;
mod data;
mod doctor;
mod eval;
mod model;
mod report;
mod sweep;
mod train;

#[derive(Parser)]
#[command(name = "wrn", version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("WRN_GIT_SHA"), ")"))]
#[command(about = "Reproduce every table of Wide Residual Networks (Zagoruyko & Komodakis, 2016)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show versions, where libtorch was loaded from, CUDA devices (or why there are none), threads and
    /// directories. Exits non-zero when libtorch is unusable.
    Doctor(doctor::Args),
    /// Datasets: fetch, verify, prepare, list, locate, and write synthetic ones.
    Data(data::Args),
    /// Train one experiment (a paper row, a TOML file, or the recipe with --set overrides) into a run
    /// folder; --resume continues an interrupted run bit for bit.
    Train(train::Args),
    /// Reproduce the paper's tables: train every row × seed (skipping finished runs, resuming
    /// interrupted ones) on the GPUs or the CPU, or write a Slurm array script.
    Sweep(Box<sweep::Args>),
    /// Evaluate weights (a run's checkpoint, a torchvision or official-port state dict, the authors'
    /// exported WRN-50-2) on a prepared test/val split; with --row, shown beside the paper by `wrn report`,
    /// never as a trained run.
    Eval(Box<eval::Args>),
    /// Measure training and input-pipeline throughput.
    #[command(subcommand)]
    Bench(bench::Command),
    /// Inspect the networks of the paper.
    #[command(subcommand)]
    Model(model::Command),
    /// Our figures beside the paper's for every table: Markdown, a self-contained HTML page and CSV with
    /// plots (SVG, PNG); --readme rewrites the README's results section from the committed results;
    /// `nightly` checks tonight's figures against the baselines.
    Report(Box<report::Args>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Like other command-line tools, end quietly when the reader of stdout goes away (`wrn ... | head`)
    // instead of panicking on the broken pipe: the default action of SIGPIPE, which Rust's runtime ignores.
    // Not where a rank of a distributed run may live (training, benchmarks): Gloo writes to its peers with
    // writev, which raises SIGPIPE when a peer has died, and that must be an error the rank reports, not
    // its silent end.
    if !matches!(cli.command, Command::Train(_) | Command::Bench(_)) {
        // SAFETY: called before any thread of this program exists; SIG_DFL is a valid disposition.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("WRN_LOG").unwrap_or_else(|_| "info".into()))
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        // A closed stderr loses the log line; tracing's own report of that would panic writing to it.
        .log_internal_errors(false)
        .init();
    if !matches!(cli.command, Command::Data(_) | Command::Report(_)) {
        // The CUDA backend registers itself with libtorch when loaded, and libtorch caches its answer to
        // the first CUDA query: load it before any code of a command that computes can ask (where it
        // cannot load, the reason is kept and reported where CUDA is wanted).
        let _ = wrn_train::runtime::load_cuda();
        wrn_train::runtime::quiet_cpp_backtraces();
    }
    let result: Result<ExitCode> = match cli.command {
        Command::Doctor(args) => doctor::run(args),
        Command::Data(args) => data::run(args),
        Command::Train(args) => train::run(args),
        Command::Sweep(args) => sweep::run(*args),
        Command::Eval(args) => eval::run(*args).map(|()| ExitCode::SUCCESS),
        Command::Bench(command) => bench::run(command).map(|()| ExitCode::SUCCESS),
        Command::Model(command) => model::run(command).map(|()| ExitCode::SUCCESS),
        Command::Report(args) => report::run(*args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            note!("error: {}", message(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes joined by `: ` as anyhow's `{:#}` does, each said once: a cause the text
/// already ends with (an error that shows its source and also returns it) is not repeated.
fn message(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain().map(|c| c.to_string()) {
        if text.ends_with(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}
