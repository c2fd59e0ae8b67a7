#!/usr/bin/env bash
# The nightly regression check (`make nightly`): trains the demo table at smoke scale on synthetic
# CIFAR-10 on the CPU, runs the input-pipeline and training benchmarks (each as a ratio to a reference
# measured in the same process), and compares everything with reports/baselines/*.json through
# `wrn report nightly`, which writes reports/nightly/<date>/report.{md,json} and exits non-zero naming
# each regression. Tolerances and their reasons: crates/wrn-report/src/nightly.rs.
#
# Usage: ci/nightly.sh [--wrn BIN] [--baselines DIR] [--out DIR] [--date YYYY-MM-DD] [--record NOTE]
#   --wrn        the wrn binary (default: $WRN_BIN or target/release/wrn)
#   --baselines  the baseline files (default: reports/baselines)
#   --out        where the night's files go (default: reports/nightly/<date>)
#   --record     record tonight's figures as the baselines, with NOTE saying where and how
# Exit status: 0 no regression, 1 regressions (named on stderr and in report.md), 2 the check could not run.
set -euo pipefail
cd "$(dirname "$0")/.."

wrn=${WRN_BIN:-target/release/wrn}
baselines=reports/baselines
date=$(date -u +%F)
out=
record=
while [ $# -gt 0 ]; do
  case $1 in
    --wrn) wrn=$2; shift 2 ;;
    --baselines) baselines=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --date) date=$2; shift 2 ;;
    --record) record=$2; shift 2 ;;
    *) echo "nightly: unknown argument $1" >&2; exit 2 ;;
  esac
done
out=${out:-reports/nightly/$date}
[ -x "$wrn" ] || { echo "nightly: no wrn binary at $wrn (make build)" >&2; exit 2; }

# A fresh night: the runs are trained again, not skipped as finished.
rm -rf "$out"
mkdir -p "$out"
work=$out/work
started=$(date +%s)
log() { echo "nightly: [$(($(date +%s) - started)) s] $*" >&2; }

log "synthetic CIFAR-10 (2000 images, seed 0), fetched and prepared through the verified path"
"$wrn" data synth cifar10 --out "$work/synth" --n 2000 --seed 0 >&2
"$wrn" data --data-dir "$work/data" --manifest "$work/synth/cifar10.toml" fetch cifar10 >&2

# A failed run is not fatal here: its row is then missing, which the comparison names as a regression.
log "the demo table at smoke scale on the CPU"
"$wrn" sweep --table demo --gpus none --runs "$out/runs" \
  --set data.dir="$work/data" --set data.manifest="$work/synth/cifar10.toml" >&2 \
  || log "the sweep failed; its unfinished rows will be reported missing"

log "input pipeline: cifar-train against the copy bound"
benches=()
if "$wrn" bench pipeline --split "$work/data/cifar10/prepared/train.wrnc" --rounds 10 --json \
  > "$out/bench-pipeline.json"; then
  benches+=(--bench "$out/bench-pipeline.json")
else
  log "the pipeline benchmark failed; its figure will be reported missing"
fi
# One libtorch thread: the ratio then depends neither on the core count nor on another process taking a
# core (with two threads on a loaded two-core machine it halved; with one it stayed within ±10%).
log "training steps against the matrix-product reference"
if WRN_TORCH_THREADS=1 WRN_LOG=warn "$wrn" bench train --device cpu --arch wrn-16-2 --batch 32 --steps 3 --reference --rounds 3 \
  --json > "$out/bench-train.json"; then
  benches+=(--bench "$out/bench-train.json")
else
  log "the training benchmark failed; its figure will be reported missing"
fi

note="$(date -u +%FT%TZ), $(uname -n), $(nproc) cores, $(git rev-parse --short HEAD 2>/dev/null || echo unknown commit): ci/nightly.sh"
compare=(report nightly --runs "$out/runs" --table demo "${benches[@]}" --baselines "$baselines" --out "$out" --date "$date")
if [ -n "$record" ]; then
  compare+=(--record --note "$note; $record")
else
  compare+=(--note "$note")
fi
log "comparing with $baselines"
rm -rf "$work"
status=0
"$wrn" "${compare[@]}" || status=$?
log "done: $out/report.md"
exit "$status"
