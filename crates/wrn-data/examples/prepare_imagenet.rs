//! ImageNet-shaped preparation throughput: writes a synthetic ImageNet (train tar of per-class tars, val
//! tar, devkit) of N training images into a temporary folder, imports it and prepares it, printing the
//! prepare report with images/s. `cargo run --release -p wrn-data --example prepare_imagenet -- [N] [MAX_SIDE]`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().map_or(Ok(4000), |a| a.parse())?;
    let max_side: Option<u32> = args.next().map(|a| a.parse()).transpose()?;
    let root = tempfile::tempdir()?;
    let (m, _) = wrn_data::synth::synth_imagenet(&root.path().join("synth"), n, 0)?;
    let store = wrn_data::store::Store::new(root.path().join("data"));
    wrn_data::import::import(&store, &m, &[root.path().join("synth")], false)?;
    let opts = wrn_data::imagenet::PrepareOptions { max_side, ..Default::default() };
    println!("{} threads, max side {max_side:?}", rayon::current_num_threads());
    for r in wrn_data::ops::prepare_with(&store, &m, &opts)? {
        println!("{} {} images: {}", r.split, r.images, r.notes.last().map_or("", String::as_str));
    }
    Ok(())
}
