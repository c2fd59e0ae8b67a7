//! Keeps the architecture invariants of ARCHITECTURE.md true:
//! - the file, run-folder, data, augmentation, tables, sweep and report crates never depend on libtorch
//!   (`tch`, `torch-sys`), directly or through any other crate;
//! - stage crates depend on one another only along the one-way flow data -> augment -> train -> report,
//!   and on `wrn-fs` and `wrn-run` below them;
//! - every crate has a paragraph in ARCHITECTURE.md and every source file starts with a `//!` module doc;
//! - no two modules of one crate reference each other, directly or around a longer cycle;
//! - libraries report, the binary renders: only `wrn` (and the benches) depend on `indicatif`, and no
//!   library prints.

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
    for name in
        ["wrn-fs", "wrn-progress", "wrn-run", "wrn-data", "wrn-augment", "wrn-tables", "wrn-sweep", "wrn-report"]
    {
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
    // wrn-fs, wrn-progress and wrn-run sit below the stages: wrn-fs and wrn-progress use no workspace
    // crate, wrn-run only wrn-fs.
    let allowed: BTreeMap<&str, &[&str]> = BTreeMap::from([
        ("wrn-fs", &[][..]),
        ("wrn-progress", &[][..]),
        ("wrn-run", &["wrn-fs"][..]),
        ("wrn-data", &["wrn-fs", "wrn-progress"][..]),
        ("wrn-augment", &["wrn-fs", "wrn-progress", "wrn-data"][..]),
        ("wrn-nets", &["wrn-fs"][..]),
        ("wrn-torch-ext", &[][..]),
        (
            "wrn-train",
            &["wrn-fs", "wrn-progress", "wrn-run", "wrn-data", "wrn-augment", "wrn-nets", "wrn-torch-ext"][..],
        ),
        ("wrn-tables", &[][..]),
        ("wrn-sweep", &["wrn-fs", "wrn-progress", "wrn-run", "wrn-tables"][..]),
        ("wrn-report", &["wrn-fs", "wrn-progress", "wrn-run", "wrn-tables"][..]),
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
fn only_the_binary_draws_or_prints() {
    let graph = Graph::load();
    let root = workspace_root();
    let mut libraries = 0;
    for id in &graph.members {
        let name = graph.names[id].as_str();
        if ["wrn", "wrn-benches"].contains(&name) {
            continue;
        }
        libraries += 1;
        for dep in &graph.deps[id] {
            assert_ne!(
                graph.names[dep], "indicatif",
                "{name} draws progress bars: report through wrn-progress instead"
            );
        }
        let mut stack = vec![root.join("crates").join(name).join("src")];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let code = without_tests(code_only(&std::fs::read_to_string(&path).unwrap()));
                let code = String::from_utf8_lossy(&code);
                for (n, line) in code.lines().enumerate() {
                    for mac in ["println!", "eprintln!", "print!", "eprint!", "dbg!"] {
                        let hit = line.match_indices(mac).any(|(at, _)| at == 0 || !is_ident(line.as_bytes()[at - 1]));
                        assert!(
                            !hit,
                            "{}:{}: a library prints ({mac}); return the text or report through wrn-progress",
                            path.display(),
                            n + 1
                        );
                    }
                }
            }
        }
    }
    assert!(libraries >= 10, "found only {libraries} library crates");
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

/// `text` with comments, string and character literals blanked out (newlines kept, so positions keep
/// their line numbers).
fn code_only(text: &str) -> Vec<u8> {
    let s = text.as_bytes();
    let mut out = s.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for b in &mut out[from..to.min(s.len())] {
            if *b != b'\n' {
                *b = b' ';
            }
        }
    };
    let mut i = 0;
    while i < s.len() {
        let rest = &s[i..];
        let end = if rest.starts_with(b"//") {
            rest.iter().position(|&b| b == b'\n').map_or(s.len(), |n| i + n)
        } else if rest.starts_with(b"/*") {
            let (mut depth, mut j) = (0, i);
            while j < s.len() {
                if s[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if s[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            j
        } else if let Some(hashes) = raw_string_hashes(s, i) {
            let close: Vec<u8> = std::iter::once(b'"').chain(std::iter::repeat_n(b'#', hashes)).collect();
            let open = i + 1 + hashes + 1;
            s[open..].windows(close.len()).position(|w| w == close).map_or(s.len(), |n| open + n + close.len())
        } else if rest[0] == b'"' {
            let mut j = i + 1;
            while j < s.len() && s[j] != b'"' {
                j += if s[j] == b'\\' { 2 } else { 1 };
            }
            j + 1
        } else if rest[0] == b'\'' && (rest.get(2) == Some(&b'\'') || rest.get(1) == Some(&b'\\')) {
            // A character literal (a lifetime has no closing quote).
            let mut j = if rest[1] == b'\\' { i + 3 } else { i + 2 };
            while j < s.len() && s[j] != b'\'' {
                j += 1;
            }
            j + 1
        } else {
            i += 1;
            continue;
        };
        blank(&mut out, i, end);
        i = end;
    }
    out
}

/// The number of `#`s of a raw string literal starting at `i` (`r"`, `r#"`, `br"`), if one does.
fn raw_string_hashes(s: &[u8], i: usize) -> Option<usize> {
    if s[i] != b'r' {
        return None;
    }
    let before = if i > 0 && s[i - 1] == b'b' { i.checked_sub(2) } else { i.checked_sub(1) };
    if before.is_some_and(|b| is_ident(s[b])) {
        return None;
    }
    let hashes = s[i + 1..].iter().take_while(|&&b| b == b'#').count();
    (s.get(i + 1 + hashes) == Some(&b'"')).then_some(hashes)
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The byte just after the `}` matching the `{` at `open`.
fn matching_brace(s: &[u8], open: usize) -> usize {
    let mut depth = 0;
    for (j, &b) in s.iter().enumerate().skip(open) {
        match b {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
    }
    s.len()
}

/// Blanks out every item under `#[cfg(test)]`: tests may reach anywhere.
fn without_tests(mut s: Vec<u8>) -> Vec<u8> {
    const ATTR: &[u8] = b"#[cfg(test)]";
    while let Some(at) = s.windows(ATTR.len()).position(|w| w == ATTR) {
        let item = at + ATTR.len();
        let end = match s[item..].iter().position(|&b| b == b'{' || b == b';') {
            Some(n) if s[item + n] == b'{' => matching_brace(&s, item + n),
            Some(n) => item + n + 1,
            None => s.len(),
        };
        for b in &mut s[at..end] {
            if *b != b'\n' {
                *b = b' ';
            }
        }
    }
    s
}

fn skip_ws(s: &[u8], i: &mut usize) {
    while *i < s.len() && s[*i].is_ascii_whitespace() {
        *i += 1;
    }
}

fn ident(s: &[u8], i: &mut usize) -> Option<String> {
    let start = *i;
    while *i < s.len() && is_ident(s[*i]) {
        *i += 1;
    }
    (*i > start).then(|| String::from_utf8_lossy(&s[start..*i]).into_owned())
}

/// Reads a path or a `use` tree at `i` (`a::b`, `a::{b, c::{d}}`), adding every path it names.
fn use_tree(s: &[u8], i: &mut usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    skip_ws(s, i);
    if s.get(*i) == Some(&b'{') {
        *i += 1;
        loop {
            skip_ws(s, i);
            match s.get(*i) {
                None => return,
                Some(b'}') => {
                    *i += 1;
                    return;
                }
                Some(b',') => *i += 1,
                Some(_) => {
                    let before = *i;
                    use_tree(s, i, prefix.clone(), out);
                    if *i == before {
                        *i += 1;
                    }
                }
            }
        }
    }
    let Some(id) = ident(s, i) else {
        out.push(prefix);
        return;
    };
    let mut path = prefix;
    path.push(id);
    skip_ws(s, i);
    if s[*i..].starts_with(b"::") {
        *i += 2;
        use_tree(s, i, path, out);
    } else {
        out.push(path);
    }
}

/// One crate's source files as modules: `a/b.rs` and `a/b/mod.rs` are `a::b`; `lib.rs` and `main.rs`
/// are the root, `""`.
fn crate_modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut modules = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path != src.join("bin") {
                    stack.push(path);
                }
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            if parts.last().is_some_and(|p| p == "mod") || parts == ["lib"] || parts == ["main"] {
                parts.pop();
            }
            modules.insert(parts.join("::"), path);
        }
    }
    modules
}

/// The module a path used in module `from` names: the longest prefix that is a module of the crate,
/// else the module the path starts from.
fn resolve(path: &[String], from: &[String], modules: &BTreeMap<String, PathBuf>) -> Option<String> {
    let (mut base, mut rest) = match path.first()?.as_str() {
        "crate" => (vec![], &path[1..]),
        "self" => (from.to_vec(), &path[1..]),
        "super" => (from[..from.len().checked_sub(1)?].to_vec(), &path[1..]),
        _ => (from.to_vec(), path),
    };
    while rest.first().is_some_and(|p| p == "super") {
        base.pop()?;
        rest = &rest[1..];
    }
    let mut found = base.join("::");
    for segment in rest {
        base.push(segment.clone());
        if modules.contains_key(&base.join("::")) {
            found = base.join("::");
        }
    }
    Some(found)
}

/// The module references of one crate: (from, to) -> the first place seen, as `file:line`. Only
/// paths that start at `crate::`, `super::`, `self::` or a child module count; the crate root is left
/// out (it declares the modules and re-exports their items).
fn module_edges(src: &Path) -> BTreeMap<(String, String), String> {
    let modules = crate_modules(src);
    let mut edges = BTreeMap::new();
    for (module, file) in &modules {
        let s = without_tests(code_only(&std::fs::read_to_string(file).unwrap()));
        let file_module: Vec<String> = module.split("::").filter(|p| !p.is_empty()).map(String::from).collect();
        // Inline `mod name { .. }` blocks: a path inside one starts from there.
        let mut inline: Vec<(usize, usize, String)> = Vec::new();
        let mut search = 0;
        while let Some(n) = s[search..].windows(4).position(|w| w == b"mod ") {
            let at = search + n;
            search = at + 4;
            if at > 0 && is_ident(s[at - 1]) {
                continue;
            }
            let mut j = at + 4;
            skip_ws(&s, &mut j);
            let Some(name) = ident(&s, &mut j) else { continue };
            skip_ws(&s, &mut j);
            if s.get(j) == Some(&b'{') {
                inline.push((j, matching_brace(&s, j), name));
            }
        }
        let mut i = 0;
        while i < s.len() {
            let starts = is_ident(s[i]) && (i == 0 || !(is_ident(s[i - 1]) || s[i - 1] == b':' || s[i - 1] == b'$'));
            if !starts {
                i += 1;
                continue;
            }
            let at = i;
            let mut paths = Vec::new();
            let mut j = i;
            let head = ident(&s, &mut j).unwrap();
            skip_ws(&s, &mut j);
            if !s[j..].starts_with(b"::") {
                i = j;
                continue;
            }
            let mut k = at;
            use_tree(&s, &mut k, vec![], &mut paths);
            i = k.max(at + 1);
            let mut from = file_module.clone();
            from.extend(inline.iter().filter(|(a, b, _)| (*a..*b).contains(&at)).map(|(_, _, n)| n.clone()));
            let child = modules.contains_key(&from.iter().chain([&head]).cloned().collect::<Vec<_>>().join("::"));
            if !(["crate", "self", "super"].contains(&head.as_str()) || child) {
                continue;
            }
            for path in paths {
                let Some(to) = resolve(&path, &from, &modules) else { continue };
                if to.is_empty() || module.is_empty() || to == *module {
                    continue;
                }
                let line = s[..at].iter().filter(|&&b| b == b'\n').count() + 1;
                let place = format!("{}:{line}", file.strip_prefix(src.parent().unwrap()).unwrap().display());
                edges.entry((module.clone(), to)).or_insert(place);
            }
        }
    }
    edges
}

/// Module cycles that are known and tolerated for now: "crate: a <-> b" (sorted module names).
const KNOWN_MODULE_CYCLES: &[&str] = &[];

#[test]
fn modules_of_a_crate_do_not_reference_each_other_in_a_cycle() {
    let root = workspace_root();
    let mut crates: Vec<PathBuf> = std::fs::read_dir(root.join("crates")).unwrap().map(|e| e.unwrap().path()).collect();
    crates.push(root.join("benches"));
    crates.sort();
    let mut found = Vec::new();
    let mut checked = 0;
    for dir in crates.iter().filter(|d| d.join("src").is_dir()) {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let edges = module_edges(&dir.join("src"));
        checked += edges.len();
        let nodes: BTreeSet<&String> = edges.keys().flat_map(|(a, b)| [a, b]).collect();
        let reaches = |from: &String| -> BTreeSet<String> {
            let mut seen = BTreeSet::new();
            let mut stack = vec![from.clone()];
            while let Some(m) = stack.pop() {
                for ((a, b), _) in edges.range((m.clone(), String::new())..) {
                    if *a != m {
                        break;
                    }
                    if seen.insert(b.clone()) {
                        stack.push(b.clone());
                    }
                }
            }
            seen
        };
        let mut reported = BTreeSet::new();
        for a in &nodes {
            let from_a = reaches(a);
            // The strongly connected component of `a`: the modules it reaches that reach it back.
            let component: BTreeSet<String> =
                from_a.iter().filter(|b| *b != *a && reaches(b).contains(*a)).cloned().chain([(*a).clone()]).collect();
            if component.len() < 2 || !reported.insert(component.clone()) {
                continue;
            }
            let names: Vec<&str> = component.iter().map(String::as_str).collect();
            let key = format!("{name}: {}", names.join(" <-> "));
            if KNOWN_MODULE_CYCLES.contains(&key.as_str()) {
                continue;
            }
            let witnesses: Vec<String> = edges
                .iter()
                .filter(|((x, y), _)| component.contains(x) && component.contains(y))
                .map(|((x, y), at)| format!("{x} -> {y} at {at}"))
                .collect();
            found.push(format!("{key} ({})", witnesses.join("; ")));
        }
    }
    assert!(checked > 20, "found only {checked} module references");
    assert!(found.is_empty(), "module cycles (a module may use another only one way):\n{}", found.join("\n"));
}
