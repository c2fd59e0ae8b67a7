#!/usr/bin/env bash
# The project's one GPU check, in two halves.
#
#   ci/gpu-check.sh        (here, no GPU needed) build the release binary and stage a bundle in
#                          dist/gpu-check/: the `wrn` binary and this script. Under 64 MiB.
#   ci/gpu-check.sh run    (on a GPU machine with PyTorch 2.11 installed as `python3`'s torch) find that
#                          PyTorch's lib directory, run `wrn doctor`, and time a CUDA forward+backward of
#                          WRNs, printing everything it sees. Exits non-zero when CUDA does not work.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

if [ "${1:-stage}" = stage ]; then
  root=$(cd "$here/.." && pwd)
  make -C "$root" --no-print-directory build
  bundle=$root/dist/gpu-check
  rm -rf "$bundle" && mkdir -p "$bundle"
  cp "$root/target/release/wrn" "$bundle/wrn"
  strip --strip-debug "$bundle/wrn"
  cp "${BASH_SOURCE[0]}" "$bundle/gpu-check.sh"
  size=$(du -sb "$bundle" | cut -f1)
  [ "$size" -lt $((64 << 20)) ] || { echo "gpu-check: bundle is $size bytes, over 64 MiB" >&2; exit 1; }
  echo "gpu-check: staged $bundle ($((size >> 20)) MiB). On the GPU machine: bash dist/gpu-check/gpu-check.sh run"
  exit 0
fi

[ "$1" = run ] || { echo "usage: $0 [stage|run]" >&2; exit 2; }
# The binary: beside this script in a bundle, or dist/gpu-check/wrn from the repository root.
wrn=$here/wrn
[ -x "$wrn" ] || wrn=$here/../dist/gpu-check/wrn
[ -x "$wrn" ] || { echo "gpu-check: no staged binary; run ci/gpu-check.sh first" >&2; exit 1; }

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || echo "nvidia-smi unavailable"
nproc
torch_lib=$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__) + "/lib")')
echo "PyTorch $(python3 -c 'import torch; print(torch.__version__)') lib: $torch_lib"
export LD_LIBRARY_PATH=$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

echo "== wrn doctor"
"$wrn" doctor
echo "== wrn doctor --json"
"$wrn" doctor --json

echo "== forward+backward on CUDA (fp32; bf16; bf16 + channels-last)"
status=0
for spec in "wrn-16-4 128" "wrn-28-10 128" "resnet-50-w2 64"; do
  set -- $spec
  for options in "" "--bf16" "--bf16 --channels-last"; do
    "$wrn" doctor --check --device cuda --arch "$1" --batch "$2" --steps 20 $options | grep '^check' || status=1
  done
done
echo "== training steps (forward, backward, SGD) of WRN-28-10 on CUDA, batch 128: fp32, bf16"
for precision in fp32 bf16; do
  "$wrn" bench train --device cuda --arch wrn-28-10 --batch 128 --steps 20 --precision "$precision" || status=1
  "$wrn" bench train --device cuda --arch wrn-28-10 --batch 128 --steps 20 --precision "$precision" --channels-last || status=1
done
echo "== the same on the CPU, for comparison"
"$wrn" doctor --check --device cpu --arch wrn-16-4 --batch 64 --steps 2 | grep '^check' || status=1
echo "== explicit cuda:N beyond the last GPU is an error"
if "$wrn" doctor --check --device cuda:99 >/dev/null 2>&1; then echo "unexpected success"; status=1; else echo "refused as expected"; fi
exit $status
