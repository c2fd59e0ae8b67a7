# wrn: every target that builds or tests depends on `libtorch`, which makes the pinned libtorch available
# (ci/libtorch.sh; fast when cached; the CUDA one on a machine with an NVIDIA driver, WRN_CUDA=0|1 decides
# otherwise) and writes the environment cargo needs to $(TORCH_ENV).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

TORCH_ENV := target/libtorch.env
CARGO := . ./$(TORCH_ENV) && cargo
WRN := . ./$(TORCH_ENV) && ./target/release/wrn

.PHONY: help libtorch libtorch-cuda test-libtorch-cuda build test test-rust test-bootstrap test-slurm lint fmt doctor demo bench bench-peers gpu-check \
	clean reproduce-cifar reproduce-imagenet nightly results test-torchrun report test-browser test-user rehearse-gpu-acceptance \
	test-gpu-acceptance $(TABLES)

# Reproduction settings, passed through to `wrn sweep`: SCALE=full|smoke|0.1, GPUS=0,1 (or none),
# SEEDS=N (default: each table's), DATA_DIR=/data (default: data/ or $$WRN_DATA_DIR), RUNS=folder.
SCALE ?= full
GPUS ?=
SEEDS ?=
DATA_DIR ?=
RUNS ?= runs/$(SCALE)
TABLES := t2 t3 t4 t5 t6 t7 t8 t9
SWEEP_FLAGS = --scale $(SCALE) --runs $(RUNS) $(if $(GPUS),--gpus $(GPUS)) $(if $(SEEDS),--seeds $(SEEDS)) \
	$(if $(DATA_DIR),--set data.dir='$(DATA_DIR)')
DATA_FLAGS = $(if $(DATA_DIR),--data-dir '$(DATA_DIR)')
CIFAR_DATASETS := --dataset cifar10 --dataset cifar100 --dataset svhn

help: ## List the targets
	@grep -E '^([a-z-]+|\$$\(TABLES\)):.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/; s/^\$$(TABLES)/t2 ... t9/' | expand -t 20

libtorch: ## Fetch, verify and unpack libtorch 2.11.0 into ~/.cache/wrn (once): CUDA with an NVIDIA driver, else CPU
	@mkdir -p target
	@ci/libtorch.sh > $(TORCH_ENV).tmp && mv $(TORCH_ENV).tmp $(TORCH_ENV)

libtorch-cuda: ## The CUDA libtorch even without a driver (WRN_CUDA=1; ~2.5 GB); `make build WRN_CUDA=1` builds on it
	@mkdir -p target
	@WRN_CUDA=1 ci/libtorch.sh > $(TORCH_ENV).tmp && mv $(TORCH_ENV).tmp $(TORCH_ENV)

test-libtorch-cuda: ## Download the CUDA libtorch, build against it, check it loads up to the driver (~2.5 GB, ~20 min; not in `test`)
	ci/test-libtorch-cuda.sh

build: libtorch ## Build the release binary target/release/wrn
	$(CARGO) build --release -p wrn

test: lint test-rust test-bootstrap test-slurm test-torchrun test-browser test-gpu-acceptance rehearse-gpu-acceptance test-user ## Everything CI checks: formatting, clippy, all tests

test-rust: libtorch ## The workspace's Rust tests (unit, integration, doc)
	$(CARGO) test --workspace --all-targets

test-bootstrap: ## ci/libtorch.sh's failure paths, on wheels made here in the real format (no network)
	ci/test-libtorch.sh

test-slurm: build ## wrn sweep --slurm against a real single-node Slurm (installs slurm-wlm when missing)
	ci/test-slurm.sh target/release/wrn

test-torchrun: build ## wrn train's ranks started by PyTorch's torchrun (static and standalone rendezvous; the peer venv)
	ci/test-torchrun.sh target/release/wrn

test-browser: ## The HTML report rendered in headless Chromium (installs Debian's chromium when missing)
	ci/test-browser.sh

lint: libtorch ## cargo fmt --check and clippy with warnings as errors
	cargo fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## Format the code
	cargo fmt --all

doctor: build ## Show versions, libtorch, CUDA devices, threads and directories
	$(WRN) doctor

DEMO := runs/demo
DEMO_DATA := --set data.dir='$(DEMO)/data' --set data.manifest='$(DEMO)/synth/cifar10.toml'
demo: build ## The main job at smoke scale on CPU: synthetic CIFAR-10 -> fetch -> widening sweep -> report
	@echo "demo: a widening study (WRN-10-1/2/4, 5 epochs, 1 seed) on synthetic CIFAR-10-format data, on the CPU."
	@echo "demo: smoke scale on synthetic data: it shows the pipeline learns; its numbers are not the paper's."
	$(WRN) data synth cifar10 --out $(DEMO)/synth --n 2000 --seed 0
	$(WRN) data --data-dir $(DEMO)/data --manifest $(DEMO)/synth/cifar10.toml fetch cifar10
	$(WRN) sweep --table demo --gpus none --runs $(DEMO)/runs $(DEMO_DATA)
	$(WRN) report --runs $(DEMO)/runs --table demo --out $(DEMO)/report
	@echo "demo: report in $(DEMO)/report (report.md, report.html, report.csv, plots/)"

reproduce-cifar: build ## Tables 2-6 and 9 on CIFAR-10/100 and SVHN: fetch+verify -> sweep -> report
	$(WRN) sweep --all $(CIFAR_DATASETS) $(SWEEP_FLAGS) --dry-run
	for d in cifar10 cifar100 svhn; do $(WRN) data $(DATA_FLAGS) fetch $$d; done
	$(WRN) sweep --all $(CIFAR_DATASETS) $(SWEEP_FLAGS)
	$(WRN) report --runs $(RUNS) --out reports/generated/$(SCALE)

reproduce-imagenet: build ## Tables 7-9 on ImageNet (bring the ILSVRC2012 files: wrn data import imagenet ...)
	$(WRN) sweep --all --dataset imagenet $(SWEEP_FLAGS) --dry-run
	$(WRN) data $(DATA_FLAGS) fetch imagenet
	$(WRN) sweep --all --dataset imagenet $(SWEEP_FLAGS)
	$(WRN) report --runs $(RUNS) --out reports/generated/$(SCALE)

$(TABLES): build ## One paper table (make t4 SCALE=smoke GPUS=0,1): sweep -> report
	$(WRN) sweep --table $@ $(SWEEP_FLAGS)
	$(WRN) report --runs $(RUNS) --table $@ --out reports/generated/$(SCALE)

report: build ## Report on $(RUNS) into reports/generated/; README results section from reports/results/
	$(WRN) report --runs $(RUNS) --out reports/generated --readme README.md

results: build ## Copy the finished full-scale runs of $(RUNS) into reports/results/ (small files only), then report
	$(WRN) report collect --runs $(RUNS)
	$(MAKE) report

nightly: build ## Regression check: demo table + benchmarks vs reports/baselines -> reports/nightly/<date>/
	. ./$(TORCH_ENV) && WRN_BIN=target/release/wrn ci/nightly.sh

bench: libtorch ## Criterion benchmarks (target/criterion/)
	$(CARGO) bench -p wrn-benches

bench-peers: build ## wrn vs PyTorch on this CPU, same run: training steps (eager), CIFAR and ImageNet pipelines (torchvision)
	benches/peers/compare.sh

gpu-check: ## Stage the GPU acceptance bundle in dist/gpu-check (run gpu-acceptance.sh run OUT on a GPU machine)
	ci/gpu-acceptance.sh stage

test-user: build ## `make demo` in a fresh clone as a new unprivileged user, wrn-user (run as root: it creates the user)
	ci/test-user.sh

rehearse-gpu-acceptance: build ## Every gate of the GPU acceptance script on this CPU at toy sizes (checks the script; installs PyTorch like bench-peers)
	rm -rf target/gpu-rehearsal
	PYTHON=$$(benches/peers/venv.sh) WRN_BIN=target/release/wrn GPU_ACCEPTANCE_WORK=target/gpu-rehearsal/work \
	  ci/gpu-acceptance.sh rehearse target/gpu-rehearsal

test-gpu-acceptance: ## ci/gpu-acceptance.sh without a GPU: stops at preflight with the reason (fake nvidia-smi, ldd)
	ci/test-gpu-acceptance.sh

clean: ## Remove build outputs (the libtorch cache stays; remove ~/.cache/wrn/libtorch to rebuild it)
	cargo clean
	rm -rf dist
