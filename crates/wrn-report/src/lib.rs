//! Reports: reads the paper's tables (`reports/tables/*.toml`) and finished run folders, and writes each
//! table with our figures beside the published ones as Markdown, HTML and CSV, with plots.
//!
//! Architecture invariant: this crate does not depend on libtorch nor on the training crates; it reads
//! run folders as files (`metrics.csv`, `result.json`), so a report can be made on any machine.
//!
//! The report generator lands with the reporting work; this crate fixes its place in the dependency
//! graph: it depends on no other stage.
