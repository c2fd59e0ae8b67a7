//! Prints the SHA-256 of each file given and the throughput, with the same streaming hasher
//! `wrn data verify` uses; compare with `sha256sum` on the same file.

fn main() {
    for arg in std::env::args().skip(1) {
        let path = std::path::Path::new(&arg);
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let start = std::time::Instant::now();
        match wrn_data::verify::sha256_file(path, None) {
            Ok(hash) => {
                let secs = start.elapsed().as_secs_f64();
                println!("{hash}  {arg}  ({:.0} MB/s)", size as f64 / secs / 1e6);
            }
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        }
    }
}
