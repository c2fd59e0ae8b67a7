//! `wrn data ...`: fetch, verify, prepare, list and locate datasets, and write synthetic ones. Parses
//! arguments and prints; the work is done by `wrn_data`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use wrn_data::fetch::{FetchOptions, MIRROR_ENV};
use wrn_data::manifest::{self, Manifest};
use wrn_data::prepare::PrepareOptions;
use wrn_data::store::{human_bytes, State, Store};
use wrn_data::synth::{self, CifarKind, ImagenetForm};
use wrn_data::{dirs, ops};

#[derive(clap::Args)]
pub struct Args {
    /// Data directory [default: $WRN_DATA_DIR, else data/ at the repository root].
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Use this manifest instead of the built-in one (for example the one `wrn data synth` writes).
    #[arg(long, global = true)]
    manifest: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Download a dataset's files (verified by size and SHA-256, resumable), then prepare it.
    Fetch {
        /// cifar10, cifar100, svhn or imagenet (optional with --manifest).
        dataset: Option<String>,
        /// Mirror base URL tried before the manifest's URLs (repeatable; or comma-separated in the env var).
        #[arg(long = "mirror", env = MIRROR_ENV, value_delimiter = ',')]
        mirrors: Vec<String>,
        /// Download and verify only.
        #[arg(long)]
        no_prepare: bool,
        /// Attempts per URL on connection errors, stalls and 5xx.
        #[arg(long, default_value_t = 4)]
        attempts: u32,
        /// Seconds to wait for a connection or for the next bytes.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Register files you already have (the only way in for ImageNet), recognised by size and SHA-256
    /// whatever their names, or ImageNet's Kaggle zip by its layout; placed as hard or symbolic links
    /// unless --copy.
    Import {
        dataset: String,
        /// Files or folders (searched three levels deep); for ImageNet, the three ILSVRC2012 files or
        /// imagenet-object-localization-challenge.zip.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Copy the files instead of linking them.
        #[arg(long)]
        copy: bool,
        /// Register only; do not prepare once every file is verified.
        #[arg(long)]
        no_prepare: bool,
    },
    /// Prepare a dataset whose files are present into the training-ready cache (ImageNet: JPEG shards
    /// and an index, from the tars or read in place from the Kaggle zip; odd files converted to RGB JPEG
    /// and corrupt ones left out, both reported).
    Prepare {
        dataset: Option<String>,
        /// ImageNet: re-encode images whose longer side exceeds N pixels to fit it (cheaper decoding later).
        #[arg(long, value_name = "N")]
        max_side: Option<u32>,
    },
    /// Re-hash every file on disk and every prepared split (all datasets, or one); the Kaggle zip, which
    /// has no published checksum, has its layout checked again.
    Verify { dataset: Option<String> },
    /// Show every dataset as missing / partial / verified / prepared, with sizes and paths.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the folder of a dataset.
    Path { dataset: Option<String> },
    /// Write a synthetic dataset in the real archive format, and its manifest, into --out.
    Synth {
        #[arg(value_enum)]
        dataset: SynthDataset,
        #[arg(long)]
        out: PathBuf,
        /// Training images (the test split gets n/5; ImageNet: over 10 classes, val max(n/5, 20)).
        #[arg(long, default_value_t = 10_000)]
        n: u64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// ImageNet: write the images as Kaggle's imagenet-object-localization-challenge.zip instead of
        /// the three ILSVRC2012 files.
        #[arg(long)]
        kaggle: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum SynthDataset {
    Cifar10,
    Cifar100,
    Svhn,
    Imagenet,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let store = Store::new(args.data_dir.clone().unwrap_or_else(dirs::data_dir));
    let one = |dataset: Option<&str>| -> Result<Manifest> {
        if dataset.is_none() && args.manifest.is_none() {
            anyhow::bail!("name a dataset ({}) or pass --manifest FILE", wrn_data::manifest::builtin_names());
        }
        Ok(manifest::resolve(dataset, args.manifest.as_deref())?)
    };
    match &args.command {
        Command::Fetch { dataset, mirrors, no_prepare, attempts, timeout } => {
            let m = one(dataset.as_deref())?;
            let _lock = store.lock(&m, "wrn data fetch")?;
            let bars = crate::bars::progress();
            let opts = FetchOptions {
                mirrors: mirrors.clone(),
                attempts: *attempts,
                timeout: Duration::from_secs(*timeout),
                progress: &bars,
                ..FetchOptions::default()
            };
            let (fetched, prepared) = ops::fetch_and_prepare(&store, &m, &opts, *no_prepare)
                .with_context(|| format!("fetching {} into {}", m.name, store.dataset_dir(&m).display()))?;
            for f in fetched {
                match f.url {
                    Some(url) => println!("{}: verified, {} from {url}", f.file, human_bytes(f.bytes_transferred)),
                    None => println!("{}: already verified", f.file),
                }
            }
            print_prepared(&prepared);
        }
        Command::Import { dataset, paths, copy, no_prepare } => {
            let m = one(Some(dataset))?;
            let _lock = store.lock(&m, "wrn data import")?;
            for i in wrn_data::import::import_with(&store, &m, paths, *copy, &crate::bars::progress())? {
                println!("{}: {} ({}; {}) -> {}", i.file, i.source.display(), i.how, i.checked, i.dest.display());
            }
            if !*no_prepare && store.status(&m).state == State::Verified {
                let bars = crate::bars::progress();
                let opts = PrepareOptions { progress: &bars, ..Default::default() };
                print_prepared(&ops::prepare_with(&store, &m, &opts)?);
            }
        }
        Command::Prepare { dataset, max_side } => {
            let m = one(dataset.as_deref())?;
            let _lock = store.lock(&m, "wrn data prepare")?;
            let bars = crate::bars::progress();
            let opts = PrepareOptions { max_side: *max_side, progress: &bars, ..Default::default() };
            print_prepared(&ops::prepare_with(&store, &m, &opts)?);
        }
        Command::Verify { dataset } => {
            let manifests = ops::manifests(dataset.as_deref(), args.manifest.as_deref())?;
            return Ok(verify(&store, &manifests, &args));
        }
        Command::List { json } => {
            let manifests = ops::manifests(None, args.manifest.as_deref())?;
            list(&store, &manifests, *json, &args)?;
        }
        Command::Path { dataset } => {
            let m = one(dataset.as_deref())?;
            println!("{}", store.dataset_dir(&m).display());
        }
        Command::Synth { dataset, out, n, seed, kaggle } => write_synthetic(*dataset, out, *n, *seed, *kaggle)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `wrn data synth`: writes a synthetic dataset and its manifest, and says where.
fn write_synthetic(dataset: SynthDataset, out: &std::path::Path, n: u64, seed: u64, kaggle: bool) -> Result<()> {
    if kaggle && !matches!(dataset, SynthDataset::Imagenet) {
        anyhow::bail!("--kaggle writes ImageNet as the Kaggle zip; it applies to imagenet only");
    }
    let (m, path) = match dataset {
        SynthDataset::Cifar10 => synth::synth_cifar(CifarKind::Cifar10, out, n, seed)?,
        SynthDataset::Cifar100 => synth::synth_cifar(CifarKind::Cifar100, out, n, seed)?,
        SynthDataset::Svhn => synth::synth_svhn(out, n, seed)?,
        SynthDataset::Imagenet if kaggle => synth::synth_imagenet_as(out, n, seed, ImagenetForm::KaggleZip)?,
        SynthDataset::Imagenet => synth::synth_imagenet(out, n, seed)?,
    };
    for f in m.files.iter().filter(|f| !f.manual) {
        println!("{}: {} bytes, SHA-256 {}", f.url.trim_start_matches("file://"), f.size, f.sha256);
    }
    for a in m.alternatives.values().filter(|a| a.url.starts_with("file://")) {
        println!("{}: {} (register it with wrn data import)", a.url.trim_start_matches("file://"), a.title);
    }
    println!("manifest: {}", path.display());
    Ok(())
}

/// What a damaged prepared split's message says to run, completed: each `wrn data VERB DATASET` it
/// names gets the `--data-dir` and `--manifest` this command was given, and a message naming no
/// `wrn data prepare` gets one, to prepare the split again.
fn prepare_hint(text: &str, dataset: &str, args: &Args) -> String {
    let mut flags = String::new();
    if let Some(dir) = &args.data_dir {
        flags.push_str(&format!(" --data-dir {}", dir.display()));
    }
    if let Some(path) = &args.manifest {
        flags.push_str(&format!(" --manifest {}", path.display()));
    }
    let mut out = text.to_string();
    for verb in ["prepare", "verify", "fetch"] {
        out = out.replace(&format!("`wrn data {verb} {dataset}`"), &format!("`wrn data {verb} {dataset}{flags}`"));
    }
    if !text.contains(&format!("`wrn data prepare {dataset}`")) {
        out.push_str(&format!("; run `wrn data prepare {dataset}{flags}` to prepare it again"));
    }
    out
}

/// `wrn data verify`: one line per file and prepared split; a failure says what to run.
fn verify(store: &Store, manifests: &[Manifest], args: &Args) -> ExitCode {
    let mut bad = 0;
    for line in ops::verify_all(store, manifests) {
        let prepared =
            store.split_paths(manifests.iter().find(|m| m.name == line.dataset).expect("verified from these"));
        let verdict = match &line.result {
            None => "absent".to_string(),
            Some(Ok(())) => "ok".to_string(),
            Some(Err(e)) => {
                bad += 1;
                match prepared.iter().any(|(_, path)| *path == line.path) {
                    true => format!("FAILED: {}", prepare_hint(&e.to_string(), &line.dataset, args)),
                    false => format!("FAILED: {e}"),
                }
            }
        };
        println!("{:<9} {:<32} {verdict}", line.dataset, line.item);
    }
    if bad > 0 {
        note!("error: {bad} file(s) failed verification");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// `wrn data list`: each dataset's state, its alternatives, and its prepared splits, damaged ones
/// included with why and what to run.
fn list(store: &Store, manifests: &[Manifest], json: bool, args: &Args) -> Result<()> {
    let statuses: Vec<_> = manifests.iter().map(|m| store.status(m)).collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&statuses)?);
        return Ok(());
    }
    println!("data directory: {}", store.root.display());
    for (m, s) in manifests.iter().zip(&statuses) {
        let on_disk: u64 = s.files.iter().map(|f| f.size_on_disk).sum();
        println!(
            "{:<9} {:<9} {:>10} of {:>10}  {}",
            s.name,
            s.state.to_string(),
            human_bytes(on_disk),
            human_bytes(m.total_size()),
            s.dir.display()
        );
        for a in s.alternatives.iter().filter(|a| a.state != State::Missing) {
            let how = match a.state {
                State::Verified => "layout checked, no published checksum",
                _ => "layout not checked: run wrn data verify",
            };
            let used = if s.via.as_deref() == Some(a.name.as_str()) { "; in use" } else { "" };
            println!("          {} zip {:>10}  {} ({how}{used})", a.name, human_bytes(a.size_on_disk), a.file);
        }
        for p in &s.prepared {
            match (&p.damaged, p.images) {
                (Some(why), _) => {
                    println!("          prepared {:<6} DAMAGED: {}", p.split, prepare_hint(why, &s.name, args))
                }
                (None, Some(images)) => println!(
                    "          prepared {:<6} {:>8} images {:>10}  {}",
                    p.split,
                    images,
                    human_bytes(p.size_on_disk),
                    p.path.display()
                ),
                (None, None) => {}
            }
        }
    }
    Ok(())
}

fn print_prepared(prepared: &[wrn_data::prepare::PreparedReport]) {
    for p in prepared {
        println!("prepared {:<6} {:>8} images  {}  (SHA-256 {})", p.split, p.images, p.path.display(), p.sha256);
        for note in &p.notes {
            println!("         {:<6} {note}", p.split);
        }
    }
}
