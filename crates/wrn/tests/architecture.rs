//! Keeps the architecture invariants of ARCHITECTURE.md true:
//! - the data, augmentation and report crates never depend on libtorch (`tch`, `torch-sys`), directly or
//!   through any other crate;
//! - stage crates depend on one another only along the one-way flow data -> augment -> train -> report;
//! - every crate has a paragraph in ARCHITECTURE.md and every source file starts with a `//!` module doc.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).unwrap().to_path_buf()
}

fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1"])
        .current_dir(workspace_root())
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The workspace's dependency graph: package names by id, and each package's non-dev dependencies
/// (normal and build) by id.
struct Graph {
    names: BTreeMap<String, String>,
    deps: BTreeMap<String, Vec<String>>,
    members: Vec<String>,
}

impl Graph {
    fn load() -> Graph {
        let meta = metadata();
        let names = meta["packages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["id"].as_str().unwrap().to_string(), p["name"].as_str().unwrap().to_string()))
            .collect();
        let mut deps = BTreeMap::new();
        for node in meta["resolve"]["nodes"].as_array().unwrap() {
            let edges = node["deps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["dep_kinds"].as_array().unwrap().iter().any(|k| k["kind"].as_str() != Some("dev")))
                .map(|d| d["pkg"].as_str().unwrap().to_string())
                .collect();
            deps.insert(node["id"].as_str().unwrap().to_string(), edges);
        }
        let members =
            meta["workspace_members"].as_array().unwrap().iter().map(|id| id.as_str().unwrap().to_string()).collect();
        Graph { names, deps, members }
    }

    fn member(&self, name: &str) -> &str {
        self.members.iter().find(|id| self.names[*id] == name).unwrap_or_else(|| panic!("no crate {name}"))
    }
}

#[test]
fn data_augment_tables_sweep_and_report_never_reach_libtorch() {
    let graph = Graph::load();
    for name in ["wrn-data", "wrn-augment", "wrn-tables", "wrn-sweep", "wrn-report"] {
        let mut seen = BTreeSet::new();
        let mut stack = vec![(graph.member(name).to_string(), vec![name.to_string()])];
        while let Some((pkg, path)) = stack.pop() {
            if !seen.insert(pkg.clone()) {
                continue;
            }
            for dep in &graph.deps[&pkg] {
                let dep_name = &graph.names[dep];
                let mut path = path.clone();
                path.push(dep_name.clone());
                assert!(
                    !["tch", "torch-sys"].contains(&dep_name.as_str()),
                    "{name} must not depend on libtorch, but: {}",
                    path.join(" -> ")
                );
                stack.push((dep.clone(), path));
            }
        }
    }
}

#[test]
fn stage_crates_depend_one_way() {
    // The workspace crates each stage crate may use (ARCHITECTURE.md, "Invariants").
    let allowed: BTreeMap<&str, &[&str]> = BTreeMap::from([
        ("wrn-data", &[][..]),
        ("wrn-augment", &["wrn-data"][..]),
        ("wrn-nets", &[][..]),
        ("wrn-train", &["wrn-data", "wrn-augment", "wrn-nets"][..]),
        ("wrn-tables", &[][..]),
        ("wrn-sweep", &["wrn-tables"][..]),
        ("wrn-report", &["wrn-tables"][..]),
    ]);
    let graph = Graph::load();
    let member_names: BTreeSet<&str> = graph.members.iter().map(|id| graph.names[id].as_str()).collect();
    for id in &graph.members {
        let name = graph.names[id].as_str();
        let Some(ok) = allowed.get(name) else {
            // The binary and the benches sit on top and may use every stage.
            assert!(["wrn", "wrn-benches"].contains(&name), "new crate {name}: add it to ARCHITECTURE.md and here");
            continue;
        };
        for dep in &graph.deps[id] {
            let dep = graph.names[dep].as_str();
            if member_names.contains(dep) {
                assert!(ok.contains(&dep), "{name} depends on {dep}, which the one-way flow forbids");
            }
        }
    }
}

#[test]
fn every_crate_is_documented() {
    let root = workspace_root();
    let architecture = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let graph = Graph::load();
    for id in &graph.members {
        let name = &graph.names[id];
        assert!(architecture.contains(&format!("`{name}`")), "ARCHITECTURE.md has no paragraph on `{name}`");
    }
    let mut stack = vec![root.join("crates"), root.join("benches")];
    let mut files = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files += 1;
                let text = std::fs::read_to_string(&path).unwrap();
                assert!(text.starts_with("//!"), "{} does not start with a //! module doc", path.display());
            }
        }
    }
    assert!(files > 10, "found only {files} source files");
}
