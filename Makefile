# wrn: every target that builds or tests depends on `libtorch`, which makes the pinned CPU libtorch
# available (ci/libtorch.sh; fast when cached) and writes the environment cargo needs to $(TORCH_ENV).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

TORCH_ENV := target/libtorch.env
CARGO := . ./$(TORCH_ENV) && cargo
WRN := . ./$(TORCH_ENV) && ./target/release/wrn

.PHONY: help libtorch build test test-rust test-bootstrap lint fmt doctor demo bench bench-peers gpu-check clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 18

libtorch: ## Fetch, verify and unpack libtorch 2.11.0 (CPU) into ~/.cache/wrn (once)
	@mkdir -p target
	@ci/libtorch.sh > $(TORCH_ENV).tmp && mv $(TORCH_ENV).tmp $(TORCH_ENV)

build: libtorch ## Build the release binary target/release/wrn
	$(CARGO) build --release -p wrn

test: lint test-rust test-bootstrap test-browser ## Everything CI checks: formatting, clippy, all tests

test-rust: libtorch fonts
	$(CARGO) test --workspace --all-targets

test-bootstrap:
	ci/test-libtorch.sh

test-browser: fonts ## The HTML report rendered in headless Chromium (installs Debian's chromium when missing)
	ci/test-browser.sh

lint: libtorch ## cargo fmt --check and clippy with warnings as errors
	cargo fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## Format the code
	cargo fmt --all

doctor: build ## Show versions, libtorch, CUDA devices, threads and directories
	$(WRN) doctor

DEMO := runs/demo
demo: build ## The main job at small scale on CPU: synthetic CIFAR-10 -> verified fetch -> prepare -> train
	$(WRN) data synth cifar10 --out $(DEMO)/synth --n 2000 --seed 0
	$(WRN) data --data-dir $(DEMO)/data --manifest $(DEMO)/synth/cifar10.toml fetch cifar10
	rm -rf $(DEMO)/train
	$(WRN) train --out $(DEMO)/train --set arch=wrn-16-2 --set scale.epochs=0.01 --set batch_size=64 \
	  --set data.dir=$(DEMO)/data --set data.manifest=$(DEMO)/synth/cifar10.toml
	@echo "demo: run folder $(DEMO)/train (config.toml, metrics.csv, result.json, checkpoint, log)."
	@echo "demo: the paper's tables, sweeps and reports are not built yet; this ran one configuration."

.PHONY: fonts report test-browser
FONT := /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
fonts: ## DejaVu Sans for the plots' text (Debian's fonts-dejavu-core), installed when missing
	@test -n "$${WRN_FONT:-}" || test -f $(FONT) || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-dejavu-core; }

RUNS ?= runs
report: build fonts ## Report on $(RUNS) into reports/generated/; README results section from reports/results/
	$(WRN) report --runs $(RUNS) --out reports/generated --readme README.md

bench: libtorch ## Criterion benchmarks (target/criterion/)
	$(CARGO) bench -p wrn-benches

PEERS_VENV := target/peers-venv
bench-peers: build ## wrn vs PyTorch eager training steps on this CPU, same run (installs torch 2.11 in a venv)
	test -x $(PEERS_VENV)/bin/python || (python3 -m venv $(PEERS_VENV) && $(PEERS_VENV)/bin/pip install -q torch==2.11.0)
	@for i in 1 2; do \
	  $(WRN) bench train --device cpu --arch wrn-16-4 --batch 64 --steps 5 --json | python3 -c 'import json,sys; print("wrn     ", round(json.load(sys.stdin)["images_per_second"], 1), "images/s")'; \
	  $(PEERS_VENV)/bin/python benches/peers/pytorch_train_step.py --arch wrn-16-4 --batch 64 --steps 5 --threads $$(nproc) | python3 -c 'import json,sys; print("pytorch ", round(json.load(sys.stdin)["images_per_second"], 1), "images/s")'; \
	done

gpu-check: ## Stage the GPU check bundle in dist/gpu-check (run its run.sh on a GPU machine)
	ci/gpu-check.sh

clean: ## Remove build outputs (the libtorch cache stays; remove ~/.cache/wrn/libtorch to rebuild it)
	cargo clean
	rm -rf dist
