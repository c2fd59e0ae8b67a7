//! What the ranks of one run check with each other before their first step: that they train the same
//! run, and that no two of them share a GPU. Ranks started with different settings (another seed, another
//! architecture, a prepared split of another size) would otherwise train as one run whose result is none
//! of theirs, and two ranks on one GPU would each train at a fraction of its speed. A difference stops
//! every rank, naming it.
//!
//! The run is its resolved configuration less what is each rank's own (its device, its data folder and
//! pipeline, the checkpoint intervals, which rank 0 leads, and the memory layout, which changes no
//! figure), plus the number of training images the rank opened.

use crate::config::Experiment;
use crate::world::{Dist, WorldError};

/// The settings each rank may hold its own value of.
const OWN: [&str; 5] = ["device", "data", "checkpoint_minutes", "checkpoint_steps", "channels_last"];

/// What every rank of a run must agree on, as `key = value` lines.
pub fn run_lines(exp: &Experiment, train_images: usize) -> Vec<String> {
    let mut table = match toml::Value::try_from(exp) {
        Ok(toml::Value::Table(table)) => table,
        _ => unreachable!("an experiment serialises to a table"),
    };
    let own = |key: &str| OWN.contains(&key);
    table.retain(|key, _| !own(key));
    let mut lines = Vec::new();
    flatten("", &toml::Value::Table(table), &mut lines);
    lines.push(format!("training images = {train_images}"));
    lines
}

fn flatten(prefix: &str, value: &toml::Value, lines: &mut Vec<String>) {
    match value {
        toml::Value::Table(table) => {
            for (key, value) in table {
                let key = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                flatten(&key, value, lines);
            }
        }
        value => lines.push(format!("{prefix} = {value}")),
    }
}

/// How `theirs` (rank `rank`'s lines) differs from rank 0's `first`: each key whose value differs, in
/// words.
pub fn differences(first: &[String], theirs: &[String], rank: usize) -> Vec<String> {
    let split = |line: &String| line.split_once(" = ").map(|(k, v)| (k.to_string(), v.to_string()));
    let a: std::collections::BTreeMap<String, String> = first.iter().filter_map(split).collect();
    let b: std::collections::BTreeMap<String, String> = theirs.iter().filter_map(split).collect();
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            let value = |m: &std::collections::BTreeMap<String, String>| m.get(k).cloned().unwrap_or("(unset)".into());
            format!("{k} is {} on rank {rank}, {} on rank 0", value(&b), value(&a))
        })
        .collect()
}

/// Every rank trains the run rank 0 trains, or every rank stops naming the differences.
pub fn same_run(dist: &Dist, exp: &Experiment, train_images: usize) -> Result<(), WorldError> {
    let mine = run_lines(exp, train_images).join("\n");
    let all = dist.gather("run", mine.as_bytes())?;
    let lines = |bytes: &Vec<u8>| String::from_utf8_lossy(bytes).lines().map(String::from).collect::<Vec<_>>();
    let first = lines(&all[0]);
    let found: Vec<String> =
        all.iter().enumerate().skip(1).flat_map(|(r, b)| differences(&first, &lines(b), r)).collect();
    if found.is_empty() {
        return Ok(());
    }
    Err(WorldError::Disagreement {
        rank: dist.rank(),
        size: dist.size(),
        what: format!(
            "the ranks were started with different runs, which would train as one: {}. Start every rank with the \
             same settings and the same prepared data",
            found.join("; ")
        ),
    })
}

/// The ranks that share a GPU: each rank's `host GPU` label, grouped when two or more are equal.
pub fn shared_gpus(labels: &[String]) -> Vec<(String, Vec<usize>)> {
    let mut by_label: std::collections::BTreeMap<&str, Vec<usize>> = std::collections::BTreeMap::new();
    for (rank, label) in labels.iter().enumerate() {
        by_label.entry(label).or_default().push(rank);
    }
    by_label.into_iter().filter(|(_, ranks)| ranks.len() > 1).map(|(l, r)| (l.to_string(), r)).collect()
}

/// No two ranks train on one GPU (`gpu`: the driver's UUID of this rank's), or every rank stops naming
/// them.
pub fn one_gpu_each(dist: &Dist, gpu: &str) -> Result<(), WorldError> {
    let host = crate::environment::host_name().unwrap_or_else(|| "unknown".into());
    let all = dist.gather("gpu", format!("{gpu} of {host}").as_bytes())?;
    let labels: Vec<String> = all.iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect();
    let shared = shared_gpus(&labels);
    if shared.is_empty() {
        return Ok(());
    }
    let words: Vec<String> = shared
        .iter()
        .map(|(label, ranks)| {
            let ranks: Vec<String> = ranks.iter().map(usize::to_string).collect();
            format!("ranks {} all train on {label}", ranks.join(", "))
        })
        .collect();
    Err(WorldError::Disagreement {
        rank: dist.rank(),
        size: dist.size(),
        what: format!(
            "{}: give each rank a GPU of its own (one rank per GPU of a machine, or each rank its own \
             CUDA_VISIBLE_DEVICES)",
            words.join("; ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasets::Dataset;

    #[test]
    fn ranks_agree_on_the_run_but_not_on_what_is_their_own() {
        let exp = Experiment::recipe(Dataset::Cifar10);
        let lines = run_lines(&exp, 50_000);
        for expected in [
            "seed = ",
            "arch = \"wrn-28-10\"",
            "optimizer.lr = 0.1",
            "schedule.milestones = [",
            "training images = 50000",
        ] {
            assert!(lines.iter().any(|l| l.starts_with(expected)), "{expected}: {lines:?}");
        }
        assert!(lines.iter().all(|l| !l.starts_with("device") && !l.starts_with("data.")), "{lines:?}");
        let mut own = exp.clone();
        own.device = crate::runtime::DeviceChoice::Cuda(1);
        own.data.dir = Some("/elsewhere".into());
        own.data.workers = Some(3);
        own.checkpoint_minutes = 5.0;
        own.channels_last = Some(true);
        assert_eq!(differences(&lines, &run_lines(&own, 50_000), 1), Vec::<String>::new());
        let mut other = exp.clone();
        other.seed = 2;
        other.optimizer.lr = 0.05;
        let found = differences(&lines, &run_lines(&other, 49_000), 2);
        assert_eq!(
            found,
            [
                "optimizer.lr is 0.05 on rank 2, 0.1 on rank 0",
                &format!("seed is 2 on rank 2, {} on rank 0", exp.seed),
                "training images is 49000 on rank 2, 50000 on rank 0",
            ]
        );
    }

    #[test]
    fn ranks_on_one_gpu_are_found_by_its_label() {
        let labels = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(shared_gpus(&labels(&["GPU-a of n1", "GPU-b of n1", "GPU-a of n2"])).is_empty());
        assert_eq!(
            shared_gpus(&labels(&["GPU-a of n1", "GPU-b of n1", "GPU-a of n1", "GPU-a of n1"])),
            [("GPU-a of n1".to_string(), vec![0, 2, 3])]
        );
    }
}
