//! `wrn report`: our figures beside the paper's for every table (Markdown, HTML, CSV, plots), and the
//! README's results section. Parses the arguments and calls `wrn_report`.

use std::path::PathBuf;

use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {
    /// The runs folder to report on (as `wrn train` and `wrn sweep` write it).
    #[arg(long, default_value = "runs")]
    runs: PathBuf,
    /// The paper's tables (default: reports/tables).
    #[arg(long)]
    tables: Option<PathBuf>,
    /// Report only these tables (t4 or t4_width; repeatable). Default: every paper table; the demo
    /// table only when named.
    #[arg(long = "table")]
    table: Vec<String>,
    /// Where report.md, report.html, report.csv and plots/ go.
    #[arg(long, default_value = "reports/generated")]
    out: PathBuf,
    /// Also rewrite the results section of this README (between <!-- results:start/end -->) from the
    /// committed results in --results.
    #[arg(long)]
    readme: Option<PathBuf>,
    /// The committed results the README section is made from.
    #[arg(long, default_value = "reports/results")]
    results: PathBuf,
    /// With --readme: write nothing, fail when the README's section is stale.
    #[arg(long, requires = "readme")]
    check: bool,
}

pub fn run(args: Args) -> Result<()> {
    let options = wrn_report::Options {
        runs: args.runs,
        tables: args.tables.unwrap_or_else(wrn_tables::default_dir),
        only: args.table,
        out: (!args.check).then_some(args.out),
        readme: args.readme.clone(),
        results: args.results,
        check: args.check,
    };
    let outcome = wrn_report::run(&options)?;
    if let Some(w) = &outcome.written {
        for (table, rows, agree, differ) in &outcome.summary {
            println!("{table}: {rows} rows with results, {agree} agree, {differ} differ");
        }
        println!(
            "wrote {}, {}, {} and {} plot files",
            w.markdown.display(),
            w.html.display(),
            w.csv.display(),
            w.plots.len()
        );
    }
    if let (Some(readme), Some(changed)) = (&args.readme, outcome.readme_changed) {
        let state = if args.check {
            "is current"
        } else if changed {
            "rewritten"
        } else {
            "already current"
        };
        println!("{}: results section {state}", readme.display());
    }
    Ok(())
}
