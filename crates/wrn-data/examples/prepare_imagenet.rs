//! ImageNet-shaped preparation throughput: writes a synthetic ImageNet of N training images into a
//! temporary folder, as the official files (train tar of per-class tars, val tar, devkit) or with
//! `--kaggle` as Kaggle's zip, imports it and prepares it, printing the prepare report with images/s.
//! With `--interrupt K` (1 MiB shards), it also prepares a second copy stopped after K shards and then
//! resumed, and prints how long the resumed run took beside the uninterrupted one.
//! `cargo run --release -p wrn-data --example prepare_imagenet -- [N] [MAX_SIDE] [--kaggle] [--interrupt K]`.

use std::time::Instant;

use wrn_data::prepare::PrepareOptions;
use wrn_data::synth::ImagenetForm;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let interrupt: Option<usize> = match args.iter().position(|a| a == "--interrupt") {
        Some(i) => {
            let k = args.get(i + 1).ok_or("--interrupt takes a number of shards")?.parse()?;
            args.drain(i..i + 2);
            Some(k)
        }
        None => None,
    };
    let form = if args.iter().any(|a| a == "--kaggle") { ImagenetForm::KaggleZip } else { ImagenetForm::Tars };
    let mut numbers = args.iter().filter(|a| *a != "--kaggle");
    let n: u64 = numbers.next().map_or(Ok(4000), |a| a.parse())?;
    let max_side: Option<u32> = numbers.next().map(|a| a.parse()).transpose()?;
    let root = tempfile::tempdir()?;
    let (m, _) = wrn_data::synth::synth_imagenet_as(&root.path().join("synth"), n, 0, form)?;
    let store = wrn_data::store::Store::new(root.path().join("data"));
    let started = Instant::now();
    for i in wrn_data::import::import(&store, &m, &[root.path().join("synth")], false)? {
        println!("imported {} ({})", i.file, i.checked);
    }
    println!("import: {:.2} s", started.elapsed().as_secs_f64());
    let mut opts = PrepareOptions { max_side, ..Default::default() };
    if interrupt.is_some() {
        opts.shard_bytes = 1 << 20;
    }
    println!("{form:?}, {} threads, max side {max_side:?}", rayon::current_num_threads());
    let started = Instant::now();
    let full = wrn_data::ops::prepare_with(&store, &m, &opts)?;
    let full_s = started.elapsed().as_secs_f64();
    for r in &full {
        println!("{} {} images: {}", r.split, r.images, r.notes.last().map_or("", String::as_str));
    }
    let Some(k) = interrupt else { return Ok(()) };
    println!("uninterrupted: {full_s:.2} s");
    let resumed = wrn_data::store::Store::new(root.path().join("resumed"));
    wrn_data::import::import(&resumed, &m, &[root.path().join("synth")], false)?;
    let stop = PrepareOptions { stop_after_shards: Some(k), ..opts.clone() };
    // Stops after K shards of train (or, when train has no more, of val).
    let started = Instant::now();
    match wrn_data::ops::prepare_with(&resumed, &m, &stop) {
        Err(e @ wrn_data::error::Error::Stopped { .. }) => println!("{e}"),
        Err(e) => return Err(e.into()),
        Ok(_) => println!("not stopped: fewer than {k} more shards"),
    }
    let stopped_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let reports = wrn_data::ops::prepare_with(&resumed, &m, &opts)?;
    let resumed_s = started.elapsed().as_secs_f64();
    for r in &reports {
        println!("{} {} images: {}", r.split, r.images, r.notes[r.notes.len().saturating_sub(2)..].join("; "));
        let full_r = full.iter().find(|f| f.split == r.split).expect("the same splits");
        println!(
            "  index SHA-256 {} the uninterrupted one",
            if r.sha256 == full_r.sha256 { "equals" } else { "DIFFERS from" }
        );
    }
    println!("stopped run: {stopped_s:.2} s, resumed run: {resumed_s:.2} s, uninterrupted: {full_s:.2} s");
    Ok(())
}
