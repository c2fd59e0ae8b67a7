//! Makes a report without the `wrn` binary (and so without libtorch): the same library call and
//! options as `wrn report`. Used by `ci/test-browser.sh` on the fixture run folders.
//!
//! ```sh
//! cargo run -p wrn-report --example report -- --runs DIR --tables reports/tables --out DIR [--readme README.md]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// The options of `wrn report` that the library takes.
#[derive(Parser)]
struct Args {
    /// The runs folder.
    #[arg(long, default_value = "runs")]
    runs: PathBuf,
    /// The paper's tables.
    #[arg(long, default_value_os_t = wrn_tables::default_dir())]
    tables: PathBuf,
    /// Only these tables; repeatable.
    #[arg(long = "table")]
    only: Vec<String>,
    /// Where the report goes.
    #[arg(long, default_value = "reports/generated")]
    out: PathBuf,
    /// A README whose results section is rewritten.
    #[arg(long)]
    readme: Option<PathBuf>,
    /// The committed results the README's section is made from.
    #[arg(long, default_value = "reports/results")]
    results: PathBuf,
    /// Check that the README's section is current; write nothing.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let options = wrn_report::Options {
        runs: args.runs,
        tables: args.tables,
        only: args.only,
        out: (!args.check).then_some(args.out),
        readme: args.readme,
        results: args.results,
        check: args.check,
    };
    match wrn_report::run(&options) {
        Ok(outcome) => {
            if let Some(w) = outcome.written {
                println!(
                    "{}\n{}\n{}\n{} plot files",
                    w.markdown.display(),
                    w.html.display(),
                    w.csv.display(),
                    w.plots.len()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
