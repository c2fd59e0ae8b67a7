//! `wrn report`: our figures beside the paper's for every table (Markdown, HTML, CSV, plots), and the
//! README's results section; `wrn report collect`: the small files of finished full-scale runs copied into
//! the committed results; `wrn report nightly`: tonight's figures against the committed baselines.
//! Parses the arguments and calls `wrn_report`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Sub>,
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

#[derive(clap::Subcommand)]
enum Sub {
    /// Copy result.json, metrics.csv, config.toml and environment.json of every finished full-scale run
    /// of the recipe from --runs into --results (the committed results the README section is made
    /// from), under the same run key and seed; other runs are left, each with the reason. Then run
    /// `make report` and commit both.
    Collect(CollectArgs),
    /// The nightly regression check: the demo table's final test errors (from --runs) and the ratios of
    /// `wrn bench ... --json` outputs (--bench) against reports/baselines/*.json; writes report.md,
    /// report.json and measurements.json to --out and exits non-zero naming each regression.
    Nightly(NightlyArgs),
}

#[derive(clap::Args)]
struct CollectArgs {
    /// The runs folder to collect from (as `wrn train` and `wrn sweep` write it).
    #[arg(long, default_value = "runs")]
    runs: PathBuf,
    /// The paper's tables (default: reports/tables).
    #[arg(long)]
    tables: Option<PathBuf>,
    /// The committed results to copy into.
    #[arg(long, default_value = "reports/results")]
    results: PathBuf,
}

fn collect(args: CollectArgs) -> Result<ExitCode> {
    let tables = wrn_tables::load_dir(&args.tables.unwrap_or_else(wrn_tables::default_dir))?;
    let done = wrn_report::collect::collect(&tables, &args.runs, &args.results)?;
    for (dir, why) in &done.left {
        println!("left {}: {why}", dir.display());
    }
    println!(
        "{} run(s) copied into {}, {} already there, {} left; now run `make report` and commit {} with README.md",
        done.written.len(),
        args.results.display(),
        done.unchanged.len(),
        done.left.len(),
        args.results.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
struct NightlyArgs {
    /// Run folders of the smoke-scale sweep to read test errors from.
    #[arg(long, required_unless_present = "current")]
    runs: Option<PathBuf>,
    /// The table whose rows are read from --runs.
    #[arg(long, default_value = "demo")]
    table: String,
    /// The paper's tables (default: reports/tables).
    #[arg(long)]
    tables: Option<PathBuf>,
    /// Output of `wrn bench pipeline --json` or `wrn bench train --reference --json`; repeatable.
    #[arg(long = "bench", value_name = "FILE")]
    benches: Vec<PathBuf>,
    /// Tonight's figures from a measurements.json instead of --runs and --bench.
    #[arg(long, conflicts_with_all = ["runs", "benches"])]
    current: Option<PathBuf>,
    /// Where and how tonight's figures were measured (stored with them).
    #[arg(long, default_value = "")]
    note: String,
    /// The baseline files (every *.json in it).
    #[arg(long, default_value = "reports/baselines")]
    baselines: PathBuf,
    /// Where report.md, report.json and measurements.json go (default: reports/nightly/<date>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The night's date (default: today, UTC).
    #[arg(long)]
    date: Option<String>,
    /// Record tonight's figures as the baselines in --baselines (one <group>.json per group) before
    /// comparing.
    #[arg(long)]
    record: bool,
}

fn nightly(args: NightlyArgs) -> Result<ExitCode> {
    use wrn_report::nightly;
    let current = match &args.current {
        Some(path) => nightly::Measurements::load(path)?,
        None => {
            let Some(runs) = &args.runs else { bail!("give --runs (with --bench) or --current") };
            let tables = args.tables.clone().unwrap_or_else(wrn_tables::default_dir);
            nightly::collect(&tables, &args.table, runs, &args.benches, &args.note)?
        }
    };
    let date = args.date.unwrap_or_else(|| nightly::utc_date(std::time::SystemTime::now()));
    let options = nightly::Options {
        current,
        out: args.out.unwrap_or_else(|| PathBuf::from("reports/nightly").join(&date)),
        baselines: args.baselines.clone(),
        date,
        record: args.record.then(|| args.baselines.clone()),
    };
    let result = nightly::run(&options)?;
    if args.record {
        println!("recorded the baselines in {}", args.baselines.display());
    }
    for line in result.regression_lines() {
        note!("{line}");
    }
    println!(
        "nightly {}: {} figures, {} regression(s); report in {}",
        result.date,
        result.verdicts.len(),
        result.regressions.len(),
        options.out.join("report.md").display()
    );
    Ok(if result.passed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Every row of the tables in `dir` that has runs to show is one `wrn train` accepts: a row it would refuse
/// (an unknown setting, a value out of range) is an error naming it, never a row shown as merely missing
/// its runs.
fn every_row_trains(dir: &std::path::Path) -> Result<()> {
    for table in wrn_tables::load_dir(dir)? {
        for row in table.trainable() {
            wrn_train::config::Experiment::resolve(None, &row.sets()).with_context(|| {
                format!("{}: row '{}' cannot be trained", dir.join(format!("{}.toml", table.id)).display(), row.id)
            })?;
        }
    }
    Ok(())
}

pub fn run(args: Args) -> Result<ExitCode> {
    match args.command {
        Some(Sub::Nightly(nightly_args)) => return nightly(nightly_args),
        Some(Sub::Collect(collect_args)) => return collect(collect_args),
        None => {}
    }
    let tables = args.tables.unwrap_or_else(wrn_tables::default_dir);
    every_row_trains(&tables)?;
    let options = wrn_report::Options {
        runs: args.runs,
        tables,
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
    Ok(ExitCode::SUCCESS)
}
