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

fn wrn_with_gpus(driver: &std::path::Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wrn"));
    crate::common::with_stub_driver(&mut cmd, driver, 1).args(args).output().expect("wrn runs")
}

#[test]
fn where_the_driver_sees_gpus_nothing_falls_back_to_the_cpu_silently() {
    let dir = tempfile::tempdir().unwrap();
    let path = crate::common::stub_driver(dir.path());

    // doctor names the GPU, why CUDA cannot be used, and fails.
    let out = wrn_with_gpus(&path, &["doctor", "--json"]);
    assert!(!out.status.success());
    let env: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(env["cuda"]["driver"]["devices"][0]["name"], "Stub GPU 0", "{env}");
    assert_eq!(env["cuda"]["driver"]["devices"][0]["uuid"], "GPU-10111213-1415-1617-1819-1a1b1c1d1e00", "{env}");
    assert_eq!(env["cuda"]["driver"]["cuda_version"], "13.0");
    let problems = env["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    let problem = problems[0].as_str().unwrap();
    assert!(problem.starts_with("the NVIDIA driver sees 1 GPU(s) but CUDA cannot be used: cannot load "), "{problem}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("problem: the NVIDIA driver sees 1 GPU(s)"));

    // Commands that compute refuse `auto` (the default) with the reason and the way to ask for the CPU.
    for args in [
        &["bench", "train", "--arch", "wrn-10-1", "--batch", "2", "--steps", "1"][..],
        &["doctor", "--check", "--arch", "wrn-10-1", "--batch", "2", "--steps", "1"],
        &["train", "--set", "arch=wrn-10-1", "--out", dir.path().join("run").to_str().unwrap()],
    ] {
        let out = wrn_with_gpus(&path, args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("the NVIDIA driver sees 1 GPU (Stub GPU 0) but CUDA cannot be used: cannot load ")
                && err.contains(
                    "Refusing to train on the CPU instead: run `wrn doctor` for the cause, or ask for the CPU"
                ),
            "{args:?}: {err}"
        );
    }
    // Asked for explicitly, the CPU is used.
    let out = wrn_with_gpus(
        &path,
        &["bench", "train", "--device", "cpu", "--arch", "wrn-10-1", "--batch", "2", "--steps", "1", "--json"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bench: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(bench["device"], "cpu");
    // An explicit GPU says why it cannot be had.
    let out = wrn_with_gpus(&path, &["doctor", "--check", "--device", "cuda:0"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("device cuda:0 requested but CUDA is unavailable: cannot load ")
    );
}

#[test]
fn a_cuda_backend_that_cannot_load_is_explained() {
    let out = Command::new(env!("CARGO_BIN_EXE_wrn"))
        .env("WRN_LIBTORCH_CUDA", "/nonexistent/libtorch_cuda.so")
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    let env: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(env["cuda"]["available"], false);
    let reason = env["cuda"]["reason"].as_str().unwrap();
    assert!(reason.contains("/nonexistent/libtorch_cuda.so"), "{reason}");
    assert_eq!(env["cuda"]["backend_library"], Value::Null);
}

#[test]
fn doctor_parity_on_the_cpu_passes_every_check() {
    let env = json(&wrn(&["doctor", "--json", "--parity", "--device", "cpu"]));
    let parity = env["parity"].as_array().unwrap();
    let names: Vec<&str> = parity.iter().map(|p| p["name"].as_str().unwrap()).collect();
    // DDP's Reducer over one Gloo rank is among them; the CUDA-graph check is for CUDA only.
    assert!(names.contains(&"data_parallel_gradients_vs_local"), "{names:?}");
    assert!(!names.contains(&"cuda_graph_steps_vs_eager"), "{names:?}");
    assert_eq!(names.len(), 8, "{names:?}");
    assert!(parity.iter().all(|p| p["pass"] == true), "{parity:?}");
    assert!(env["settings"]["tf32_convolutions"].is_boolean(), "{env}");
    assert_eq!(env["libtorch_copies"].as_array().unwrap().len(), 1);
}

#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    use std::os::unix::process::ExitStatusExt;
    // `wrn ... | head -0`: the pipe's reader is gone before wrn writes.
    let mut child = Command::new(env!("CARGO_BIN_EXE_wrn"))
        .args(["model", "summary", "wrn-28-10"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}: {stderr}", out.status);
}

#[test]
fn bench_train_beside_the_matrix_product_reports_its_share_and_the_200_epoch_projection() {
    let args = ["bench", "train", "--device", "cpu", "--arch", "wrn-10-1", "--batch", "4", "--steps", "2"];
    let r = json(&wrn(&[&args[..], &["--reference", "--rounds", "1", "--json"]].concat()));
    let rate = r["train"]["images_per_second"].as_f64().unwrap();
    assert!(rate > 0.0 && r["train"]["peak_allocated_bytes"].is_null(), "{r}");
    let hours = r["projected_cifar_200_epochs_hours"].as_f64().unwrap();
    assert!((hours - 200.0 * 50_000.0 / rate / 3600.0).abs() <= 1e-9 * hours, "{r}");
    let (share, flops) =
        (r["ratio_to_reference"].as_f64().unwrap(), r["reference"]["flops_per_second"].as_f64().unwrap());
    let mult_adds = r["train"]["mult_adds_per_image"].as_f64().unwrap();
    assert!((share - rate * 6.0 * mult_adds / flops).abs() <= 1e-9 * share, "{r}");

    // CUDA graphs are for GPUs: on the CPU the benchmark says so instead of timing something else.
    let out = wrn(&[&args[..], &["--cuda-graphs"]].concat());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CUDA graphs on cpu: they replay steps on a GPU; measure with --device cuda"), "{err}");
}
