//! Makes a report without the `wrn` binary (and so without libtorch): the same library call and
//! options as `wrn report`. Used by `ci/test-browser.sh` on the fixture run folders.
//!
//! ```sh
//! cargo run -p wrn-report --example report -- --runs DIR --tables reports/tables --out DIR [--readme README.md]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut options = wrn_report::Options {
        runs: "runs".into(),
        tables: wrn_tables::default_dir(),
        only: Vec::new(),
        out: Some("reports/generated".into()),
        readme: None,
        results: "reports/results".into(),
        check: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--check" {
            options.check = true;
            continue;
        }
        let Some(value) = args.next() else {
            eprintln!("error: {flag} needs a value");
            return ExitCode::FAILURE;
        };
        match flag.as_str() {
            "--runs" => options.runs = value.into(),
            "--tables" => options.tables = value.into(),
            "--table" => options.only.push(value),
            "--out" => options.out = Some(PathBuf::from(value)),
            "--readme" => options.readme = Some(value.into()),
            "--results" => options.results = value.into(),
            other => {
                eprintln!(
                    "error: unknown option {other} (--runs, --tables, --table, --out, --readme, --results, --check)"
                );
                return ExitCode::FAILURE;
            }
        }
    }
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
