//! ImageNet-shaped preparation throughput: writes a synthetic ImageNet of N training images into a
//! temporary folder, as the official files (train tar of per-class tars, val tar, devkit) or with
//! `--kaggle` as Kaggle's zip, imports it and prepares it, printing the prepare report with images/s.
//! `cargo run --release -p wrn-data --example prepare_imagenet -- [N] [MAX_SIDE] [--kaggle]`.

use wrn_data::synth::ImagenetForm;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let form = if args.iter().any(|a| a == "--kaggle") { ImagenetForm::KaggleZip } else { ImagenetForm::Tars };
    let mut numbers = args.iter().filter(|a| *a != "--kaggle");
    let n: u64 = numbers.next().map_or(Ok(4000), |a| a.parse())?;
    let max_side: Option<u32> = numbers.next().map(|a| a.parse()).transpose()?;
    let root = tempfile::tempdir()?;
    let (m, _) = wrn_data::synth::synth_imagenet_as(&root.path().join("synth"), n, 0, form)?;
    let store = wrn_data::store::Store::new(root.path().join("data"));
    let started = std::time::Instant::now();
    for i in wrn_data::import::import(&store, &m, &[root.path().join("synth")], false)? {
        println!("imported {} ({})", i.file, i.checked);
    }
    println!("import: {:.2} s", started.elapsed().as_secs_f64());
    let opts = wrn_data::imagenet::PrepareOptions { max_side, ..Default::default() };
    println!("{form:?}, {} threads, max side {max_side:?}", rayon::current_num_threads());
    for r in wrn_data::ops::prepare_with(&store, &m, &opts)? {
        println!("{} {} images: {}", r.split, r.images, r.notes.last().map_or("", String::as_str));
    }
    Ok(())
}
