//! The `wrn` binary as a user runs it: `doctor` and `model summary`, their JSON, exit codes and errors.

use std::process::{Command, Output};

use serde_json::Value;

fn wrn(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wrn")).args(args).output().expect("wrn runs")
}

fn json(out: &Output) -> Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn doctor_reports_the_pinned_libtorch_and_why_cuda_is_unavailable() {
    let env = json(&wrn(&["doctor", "--json"]));
    assert!(env["libtorch_version"].as_str().unwrap().starts_with("2.11.0"), "{env}");
    assert_eq!(env["tch_version"], "0.24.0");
    assert!(env["libtorch_dir"].as_str().unwrap().ends_with("lib"));
    assert_eq!(env["problems"].as_array().unwrap().len(), 0);
    assert!(env["threads"]["torch_intra_op"].as_u64().unwrap() >= 1);
    if env["cuda"]["available"] == false {
        // This machine has no GPU: the reason must be given.
        assert!(!env["cuda"]["reason"].as_str().unwrap().is_empty());
        let text = String::from_utf8(wrn(&["doctor"]).stdout).unwrap();
        assert!(text.lines().any(|l| l.starts_with("CUDA       unavailable: ")), "{text}");
    }
}

#[test]
fn an_explicit_cuda_device_that_cannot_work_is_an_error() {
    let out = wrn(&["doctor", "--check", "--device", "cuda:7"]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("device cuda:7 requested but"), "{err}");
    let out = wrn(&["doctor", "--device", "gpu"]);
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr).unwrap().contains("expected auto, cpu, cuda or cuda:N"));
}

#[test]
fn doctor_check_times_a_forward_backward_on_the_cpu() {
    let env = json(&wrn(&["doctor", "--json", "--check", "--device", "cpu", "--arch", "wrn-10-1", "--batch", "4"]));
    let check = &env["check"];
    assert_eq!(check["device"], "cpu");
    assert_eq!(check["parameters"], 77_850);
    assert!(check["images_per_second"].as_f64().unwrap() > 0.0);
}

#[test]
fn model_summary_gives_the_papers_figures() {
    let s = json(&wrn(&["model", "summary", "wrn-28-10", "--json"]));
    assert_eq!(s["parameters"], 36_479_194);
    assert_eq!(s["input"], serde_json::json!([3, 32, 32]));
    assert_eq!(s["stages"].as_array().unwrap().len(), 5);
    let s = json(&wrn(&["model", "summary", "wrn-28-10", "--dataset", "cifar100", "--json"]));
    assert_eq!(s["classes"], 100);
    assert_eq!(s["parameters"], 36_479_194 + 640 * 90 + 90);
    let s = json(&wrn(&["model", "summary", "wrn-50-2-bottleneck", "--json"]));
    assert_eq!(s["parameters"], 68_883_240);
    let text = String::from_utf8(wrn(&["model", "summary", "wrn-40-4"]).stdout).unwrap();
    assert!(text.contains("parameters 8,949,210 (8.9M)"), "{text}");
}

#[test]
fn an_unknown_architecture_lists_the_valid_ones() {
    let out = wrn(&["model", "summary", "vgg-16"]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("unknown architecture 'vgg-16'; valid architectures: wrn-<n>-<k>"), "{err}");
}
