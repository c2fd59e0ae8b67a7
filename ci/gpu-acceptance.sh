#!/usr/bin/env bash
# The GPU acceptance check, in two halves.
#
#   ci/gpu-acceptance.sh stage        (here, no GPU needed; `make gpu-check`) build the release binary and
#                                     stage dist/gpu-check/: the stripped `wrn`, this script, the PyTorch
#                                     peer script and the demo table. Under 64 MiB.
#   bash dist/gpu-check/gpu-acceptance.sh run OUTDIR
#   bash ci/gpu-acceptance.sh run OUTDIR
#   bash ci/gpu-acceptance.sh rehearse OUTDIR
#                                     (here, no GPU needed; `make rehearse-gpu-acceptance`) every gate on this
#                                     machine's CPU at toy sizes with longer budgets, against the PyTorch of
#                                     $PYTHON: the script's own commands, flags, records and judges exercised
#                                     before a GPU is lent. The gates that need CUDA fail with their reasons,
#                                     the driver and GPU checks of preflight are not made, and the JSON says
#                                     `"rehearsal": true`: never an acceptance.
#                                     (on a machine with one NVIDIA GPU, offline, with PyTorch 2.11.0+cu130
#                                     as `python3`'s torch) run the gates below, at most 7 minutes, and write
#                                     OUTDIR/gpu-acceptance.json (every gate with its status and figures),
#                                     OUTDIR/logs.txt (every step's output, long ones cut in the middle) and
#                                     OUTDIR/summary.txt. The last lines printed are one `PASS <gate>: ...` or
#                                     `FAIL <gate>: ...` per gate. From the repository root the bundle is
#                                     found as dist/gpu-check (carry that git-ignored folder by name).
#
# Gates, each with a time budget (a gate that overruns it is FAIL "timed out after N s", except speed, which
# names the ungated configurations its budget left unmeasured and fails only for the gated one; later gates
# still run; every command runs under `timeout`):
#   preflight    (50 s) NVIDIA driver >= 580, compute capability 7.5 to 12.x, glibc/libstdc++ versus what
#                       the binary needs, python3's torch 2.11.0 with CUDA 13.0 and a usable GPU, the binary
#                       starts against that torch's lib/ (put first on LD_LIBRARY_PATH). On any mismatch the
#                       script stops here with the reason and exit status 2, as it does on a machine without
#                       a GPU.
#   environment  (20 s) `wrn doctor --json`: CUDA available, libtorch and libtorch_cuda.so from torch's lib/,
#                       the CUDA part of wrn's extension (NCCL) loaded, no problems; a running wrn maps
#                       exactly one libtorch_cpu.so and one copy of each library.
#   parity       (25 s) `wrn doctor --parity --device cuda --json`: every entry within its tolerance, one of
#                       them DDP's Reducer over NCCL with a world of one rank.
#   speed       (150 s) wrn against PyTorch eager (benches/peers/pytorch_train_step.py) on the same GPU,
#                       alternating (wrn, PyTorch, PyTorch, wrn), best of two each: WRN-28-10 b128 bf16 +
#                       channels-last (gated: wrn/PyTorch >= 0.8), WRN-28-10 b128 fp32, WRN-16-4 b128 bf16 +
#                       channels-last, WRN-50-2 b64 224² bf16 + channels-last; the same parameter counts.
#   train        (65 s) synthetic CIFAR-10, WRN-28-10 bf16 on a subset: interrupted with --max-steps and
#                       resumed, against an uninterrupted run within tolerance; data-wait fraction < 5%;
#                       no warning lines.
#   graphs       (35 s) CUDA graphs (`cuda_graphs = true`): `wrn bench train --cuda-graphs` for WRN-16-4 b128
#                       bf16 + channels-last (best of two) beside the speed gate's eager wrn and PyTorch
#                       figures (the goal, 1.5x PyTorch eager, is reported, not gated), and the train gate's
#                       uninterrupted run again with cuda_graphs = true, within the same tolerance of it and
#                       with no warning lines. (`wrn doctor --parity` checks replayed steps with dropout.)
#   pipeline     (30 s) `wrn bench pipeline --u8` with nproc-2 workers on CIFAR and synthetic ImageNet
#                       against the GPU's images/s of the speed gate ("data-bound" where slower).
#   sweep        (35 s) the demo table with --gpus 0 --jobs 2, and CUDA_VISIBLE_DEVICES=0 without --gpus.
#   negative     (10 s) cuda:99 refused; a missing libtorch_cuda.so explained.
#
# Exit status: 0 when every gate passes, 1 when one fails, 2 when preflight stops the run.
# Environment: WRN_BIN (the binary), PYTHON (default python3), GPU_ACCEPTANCE_WORK (scratch folder for
# data and runs, default a new folder under $TMPDIR or /tmp; not removed, for inspection), WRN_CACHE_DIR
# (default the scratch folder's cache/).
set -u
set -o pipefail

# ---------------------------------------------------------------------------------------------------
# Settings. Each gate's budget in seconds; they add up to 7 minutes.
GATES=(preflight environment parity speed train graphs pipeline sweep negative)
# Preflight's cold start (the first `import torch` and CUDA context on a freshly started machine reads
# gigabytes of libraries) and the sweep's seven CUDA start-ups (its first parent measures the GPU's pace)
# get the widest margins, since preflight stopping the run loses every gate after it.
declare -A BUDGET=([preflight]=50 [environment]=20 [parity]=25 [speed]=150 [train]=65 [graphs]=35 [pipeline]=30
                   [sweep]=35 [negative]=10)
DEV=cuda
# speed: id|label|arch|batch|precision|channels-last(0/1)|timed steps|least wrn/PyTorch ratio (empty: not
# gated)|beside the bf16 matrix product (1: `--reference`, the share of its FLOP/s the step reaches)
SPEED_CONFIGS=(
  "wrn28-bf16-cl|WRN-28-10 b128 bf16+CL|wrn-28-10|128|bf16|1|40|0.8|1"
  "wrn28-fp32|WRN-28-10 b128 fp32|wrn-28-10|128|fp32|0|30|"
  "wrn16-bf16-cl|WRN-16-4 b128 bf16+CL|wrn-16-4|128|bf16|1|100|"
  "wrn50-bf16-cl|WRN-50-2 b64 224² bf16+CL|resnet-50-w2|64|bf16|1|40|"
)
SPEED_STEP_CAP=60   # seconds for one process of the speed gate
PEER_WARMUP=5       # PyTorch's untimed steps (wrn bench train takes three on CUDA, one on the CPU)
# train: synthetic CIFAR-10 images (n training, n/5 test), the subsets, and the step at which run A is
# interrupted: 7680 / 128 = 60 steps per epoch, so step 90 is in epoch 2 of 2.
TRAIN_ARCH='wrn-28-10'
TRAIN_PRECISION=bf16
TRAIN_N=10240
TRAIN_SUBSET=7680
TEST_SUBSET=2000
TRAIN_MAX_STEPS=90
TRAIN_EPOCH_SCALE=0.01   # 200 epochs x 0.01 = 2
IMAGENET_N=2000
DEMO_N=2000
SWEEP_GPUS=0   # the sweep's --gpus
# graphs: the network, batch and timed steps of `wrn bench train --cuda-graphs`.
GRAPHS_ARCH=wrn-16-4
GRAPHS_BATCH=128
GRAPHS_STEPS=100

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=${PYTHON:-python3}

log() { printf '%s\n' "$*"; }

# ---------------------------------------------------------------------------------------------------
# stage: build and bundle (run from the repository's ci/).
stage() {
  local root bundle size
  root=$(cd "$here/.." && pwd)
  if [ ! -f "$root/Cargo.toml" ] || [ ! -f "$root/benches/peers/pytorch_train_step.py" ]; then
    echo "gpu-acceptance: stage runs from the repository (ci/gpu-acceptance.sh), not from a bundle" >&2
    return 1
  fi
  # Against the CUDA libtorch (downloaded once, ~2.5 GB), in a target folder of its own: the bundle's
  # binary then carries the CUDA part of wrn's extension (NCCL), and this checkout's own build stays as it is.
  WRN_CUDA=1 "$root/ci/libtorch.sh" > "$root/target/libtorch-cuda.env" || return 1
  (cd "$root" && . ./target/libtorch-cuda.env && CARGO_TARGET_DIR=target/cuda cargo build --release -p wrn) || return 1
  if ! (. "$root/target/libtorch-cuda.env" && "$root/target/cuda/release/wrn" doctor --json 2>/dev/null) \
      | "$PY" -c 'import json, sys; sys.exit(0 if json.load(sys.stdin)["cuda"].get("extension") else 1)'; then
    echo "gpu-acceptance: the binary built against the CUDA libtorch does not load its CUDA extension (wrn doctor --json)" >&2
    return 1
  fi
  bundle=$root/dist/gpu-check
  rm -rf "$bundle" && mkdir -p "$bundle/tables" || return 1
  cp "$root/target/cuda/release/wrn" "$bundle/wrn" && strip --strip-debug "$bundle/wrn" || return 1
  cp "$root/ci/gpu-acceptance.sh" "$bundle/gpu-acceptance.sh" || return 1
  cp "$root/benches/peers/pytorch_train_step.py" "$bundle/" || return 1
  cp "$root/reports/tables/demo.toml" "$bundle/tables/" || return 1
  size=$(du -sb "$bundle" | cut -f1)
  if [ "$size" -ge $((64 << 20)) ]; then
    echo "gpu-acceptance: the bundle $bundle is $size bytes, over 64 MiB" >&2
    return 1
  fi
  echo "gpu-acceptance: staged $bundle ($size bytes: $(cd "$bundle" && find . -type f | sort | tr '\n' ' '))"
  echo "gpu-acceptance: on the GPU machine, from the repository root: bash dist/gpu-check/gpu-acceptance.sh run OUTDIR"
}

# ---------------------------------------------------------------------------------------------------
# Gate bookkeeping. Each gate writes its commands' outputs into $WORK/<gate>/ (NAME.out, NAME.err,
# NAME.rc); the judge (python, below) reads them and writes $WORK/records/<gate>.json.
gate_name='' gate_dir='' gate_deadline=0 gate_t0=''

begin_gate() {
  gate_name=$1
  gate_dir=$WORK/$1
  mkdir -p "$gate_dir"
  gate_t0=$(date +%s.%N)
  gate_deadline=$((SECONDS + BUDGET[$1]))
  log "== $1 (budget ${BUDGET[$1]} s)"
}

# step NAME CMD...: CMD under `timeout` (the gate's time left, at most $STEP_CAP when set), stdin from
# /dev/null, stdout and stderr to $gate_dir/NAME.out and NAME.err, exit status to NAME.rc.
step() {
  local name=$1 limit rc
  shift
  limit=$((gate_deadline - SECONDS))
  if [ -n "${STEP_CAP:-}" ] && [ "$STEP_CAP" -lt "$limit" ]; then limit=$STEP_CAP; fi
  if [ "$limit" -le 0 ]; then
    : >"$gate_dir/$name.out"
    echo "not started: the gate's ${BUDGET[$gate_name]} s were spent" >"$gate_dir/$name.err"
    echo 124 >"$gate_dir/$name.rc"
    echo "${BUDGET[$gate_name]}" >"$gate_dir/timed_out"
    return 124
  fi
  timeout -k 5 "$limit" "$@" >"$gate_dir/$name.out" 2>"$gate_dir/$name.err" </dev/null
  rc=$?
  echo "$rc" >"$gate_dir/$name.rc"
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "timed out after $limit s" >>"$gate_dir/$name.err"
    if [ $((SECONDS + 1)) -ge "$gate_deadline" ]; then echo "${BUDGET[$gate_name]}" >"$gate_dir/timed_out"; fi
  fi
  return "$rc"
}

# fact KEY VALUE: a figure the bash side measured, for the judge ($gate_dir/facts.txt).
fact() { printf '%s=%s\n' "$1" "$2" >>"$gate_dir/facts.txt"; }

# end_gate: judge the gate, print its line; returns 0 when it passed.
end_gate() {
  local seconds rec=$WORK/records/$gate_name.json
  seconds=$(awk -v a="$gate_t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  mkdir -p "$WORK/records"
  GA_SECONDS=$seconds GA_BUDGET=${BUDGET[$gate_name]} \
    "$PY" "$WORK/judge.py" gate "$gate_name" "$gate_dir" "$rec" 2>"$gate_dir/judge.err"
  if [ ! -s "$rec" ]; then
    write_record "$gate_name" fail "the judge failed: $(tail -n 1 "$gate_dir/judge.err")" "$seconds" "$rec"
  fi
  "$PY" "$WORK/judge.py" line "$rec" 2>/dev/null || echo "FAIL $gate_name: unreadable record"
  "$PY" "$WORK/judge.py" passed "$rec" 2>/dev/null
}

json_escape() {
  local s=$1
  s=${s//\\/\\\\}; s=${s//\"/\\\"}; s=${s//$'\n'/\\n}; s=${s//$'\t'/\\t}; s=${s//$'\r'/\\r}
  printf '%s' "$s"
}

# write_record GATE STATUS SUMMARY SECONDS FILE: a record written without python.
write_record() {
  printf '{"name": "%s", "status": "%s", "summary": "%s", "seconds": %s, "budget_seconds": %s, "figures": {}}\n' \
    "$1" "$2" "$(json_escape "$3")" "$4" "${BUDGET[$1]}" >"$5"
}

# ---------------------------------------------------------------------------------------------------
# The gates.

gate_preflight() {
  begin_gate preflight
  local d=$gate_dir need="" sys="" lib="" torch_lib=""
  fact cores "$(nproc 2>/dev/null || echo 0)"
  fact hostname "$(hostname 2>/dev/null || echo unknown)"
  if command -v nvidia-smi >/dev/null 2>&1; then
    fact nvidia_smi "$(command -v nvidia-smi)"
    step smi nvidia-smi --query-gpu=index,name,driver_version,memory.total,compute_cap --format=csv,noheader,nounits
    if [ "$(cat "$d/smi.rc")" != 0 ]; then
      # Drivers before compute_cap was a query field.
      step smi nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader,nounits
    fi
  else
    fact nvidia_smi missing
  fi
  if [ -r /proc/driver/nvidia/version ]; then
    cp /proc/driver/nvidia/version "$d/proc_driver_version.txt"
  fi
  # glibc and libstdc++: what the system has against the highest versions the binary's symbols need.
  fact glibc_system "$(ldd --version 2>&1 | head -n 1 | grep -oE '[0-9]+\.[0-9]+' | tail -n 1)"
  if [ -f "$wrn" ]; then
    if command -v objdump >/dev/null 2>&1; then
      need=$(objdump -T "$wrn" 2>/dev/null | grep -oE 'GLIBC_[0-9]+(\.[0-9]+)+' | sort -uV | tail -n 1)
      fact glibc_needed_from objdump
    elif command -v readelf >/dev/null 2>&1; then
      need=$(readelf -V "$wrn" 2>/dev/null | grep -oE 'GLIBC_[0-9]+(\.[0-9]+)+' | sort -uV | tail -n 1)
      fact glibc_needed_from readelf
    else
      need=$(grep -aoE 'GLIBC_[0-9]+(\.[0-9]+)+' "$wrn" | sort -uV | tail -n 1)
      fact glibc_needed_from strings
    fi
    fact glibc_needed "${need#GLIBC_}"
    fact glibcxx_needed "$(grep -aoE 'GLIBCXX_[0-9]+(\.[0-9]+)+' "$wrn" | sort -uV | tail -n 1 | sed 's/^GLIBCXX_//')"
  fi
  lib=$(ldconfig -p 2>/dev/null | awk '/libstdc\+\+\.so\.6 .*x86-64/ { print $NF; exit }')
  for f in /usr/lib/x86_64-linux-gnu/libstdc++.so.6 /usr/lib64/libstdc++.so.6; do
    if [ -z "$lib" ] && [ -e "$f" ]; then lib=$f; fi
  done
  if [ -n "$lib" ]; then
    fact libstdcxx "$lib"
    sys=$(grep -aoE 'GLIBCXX_[0-9]+(\.[0-9]+)+' "$(readlink -f "$lib")" | sort -uV | tail -n 1)
    fact glibcxx_system "${sys#GLIBCXX_}"
  fi
  # python3's torch.
  if command -v "$PY" >/dev/null 2>&1; then
    step torch "$PY" -c '
import json, os, sys
r = {"python": sys.version.split()[0], "executable": sys.executable}
try:
    import torch
except Exception as e:
    r["error"] = "%s: %s" % (type(e).__name__, e)
    print(json.dumps(r))
    sys.exit(0)
lib = os.path.join(os.path.dirname(torch.__file__), "lib")
r.update(version=torch.__version__, cuda=torch.version.cuda, lib=lib, lib_real=os.path.realpath(lib),
         cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)
try:
    r["cuda_available"] = torch.cuda.is_available()
    if r["cuda_available"]:
        r["device_count"] = torch.cuda.device_count()
        r["name"] = torch.cuda.get_device_name(0)
        r["capability"] = "%d.%d" % torch.cuda.get_device_capability(0)
        r["arch_list"] = torch.cuda.get_arch_list()
        r["total_memory_bytes"] = torch.cuda.get_device_properties(0).total_memory
except Exception as e:
    r["cuda_error"] = "%s: %s" % (type(e).__name__, e)
try:
    import torchvision
    r["torchvision"] = torchvision.__version__
except Exception as e:
    r["torchvision_error"] = "%s: %s" % (type(e).__name__, e)
print(json.dumps(r))
'
    torch_lib=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1])).get("lib", ""))' "$d/torch.out" 2>/dev/null)
  else
    fact python missing
  fi
  if [ -n "$torch_lib" ] && [ -d "$torch_lib" ]; then
    export LD_LIBRARY_PATH=$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    TORCH_LIB=$torch_lib
  fi
  fact ld_library_path "${LD_LIBRARY_PATH:-}"
  if [ -f "$wrn" ]; then
    step wrn_version "$wrn" --version
  fi
  end_gate
}

gate_environment() {
  begin_gate environment
  local d=$gate_dir pid t_end
  step doctor "$wrn" doctor --json
  # A short CUDA process: its /proc/<pid>/maps once cuDNN and cuBLAS are loaded (or when it ends).
  "$wrn" bench train --device "$DEV" --arch wrn-16-4 --batch 64 --steps 400 --json \
    >"$d/maps_probe.out" 2>"$d/maps_probe.err" </dev/null &
  pid=$!
  t_end=$((SECONDS + 10 < gate_deadline ? SECONDS + 10 : gate_deadline))
  while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$t_end" ]; do
    cp "/proc/$pid/maps" "$d/maps.tmp" 2>/dev/null && [ -s "$d/maps.tmp" ] && mv "$d/maps.tmp" "$d/maps.txt"
    if grep -q 'libcudnn' "$d/maps.txt" 2>/dev/null && grep -q 'libcublas' "$d/maps.txt" 2>/dev/null; then
      sleep 0.3
      cp "/proc/$pid/maps" "$d/maps.tmp" 2>/dev/null && [ -s "$d/maps.tmp" ] && mv "$d/maps.tmp" "$d/maps.txt"
      break
    fi
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null
    sleep 0.5
    kill -9 "$pid" 2>/dev/null
    fact maps_probe "stopped after sampling"
  else
    fact maps_probe "ended by itself"
  fi
  wait "$pid" 2>/dev/null
  echo $? >"$d/maps_probe.rc"
  end_gate
}

gate_parity() {
  begin_gate parity
  step parity "$wrn" doctor --parity --device "$DEV" --json
  end_gate
}

gate_speed() {
  begin_gate speed
  local c id label arch batch precision cl steps ref wrn_args py_args order side round
  printf '%s\n' "${SPEED_CONFIGS[@]}" >"$gate_dir/configs.txt"
  fact peer_warmup "$PEER_WARMUP"
  for c in "${SPEED_CONFIGS[@]}"; do
    IFS='|' read -r id label arch batch precision cl steps _ ref <<<"$c"
    wrn_args=(bench train --device "$DEV" --arch "$arch" --batch "$batch" --precision "$precision" --steps "$steps" --json)
    if [ "$ref" = 1 ]; then wrn_args+=(--reference --rounds 1); fi
    py_args=(--device "$DEV" --arch "$arch" --batch "$batch" --precision "$precision" --steps "$steps"
             --warmup "$PEER_WARMUP")
    if [ "$cl" = 1 ]; then wrn_args+=(--channels-last); py_args+=(--channels-last); fi
    # wrn, PyTorch, PyTorch, wrn: each side first once.
    for order in wrn.1 torch.1 torch.2 wrn.2; do
      side=${order%.*} round=${order#*.}
      if [ "$side" = wrn ]; then
        STEP_CAP=$SPEED_STEP_CAP step "$id.wrn.$round" "$wrn" "${wrn_args[@]}"
      else
        STEP_CAP=$SPEED_STEP_CAP step "$id.torch.$round" env PYTHONUNBUFFERED=1 "$PY" "$peer" "${py_args[@]}"
      fi
      log "   $label, $side round $round: $("$PY" "$WORK/judge.py" rate "$gate_dir/$id.$side.$round")"
    done
  done
  end_gate
}

# The synthetic CIFAR-10 of the train and pipeline gates, written and prepared once.
ensure_cifar() {
  if [ ! -f "$WORK/cifar-synth/cifar10.toml" ]; then
    step cifar_synth "$wrn" data synth cifar10 --out "$WORK/cifar-synth" --n "$TRAIN_N" --seed 0 || return 1
  fi
  if [ ! -d "$WORK/data/cifar10/prepared" ]; then
    step cifar_fetch "$wrn" data --data-dir "$WORK/data" --manifest "$WORK/cifar-synth/cifar10.toml" fetch cifar10 || return 1
  fi
}

# The settings of the train gate's runs (and of the graphs gate's).
train_sets() {
  TRAIN_SETS=(--set "device=$DEV" --set "arch=$TRAIN_ARCH" --set "precision=$TRAIN_PRECISION"
              --set "scale.epochs=$TRAIN_EPOCH_SCALE" --set "scale.train_subset=$TRAIN_SUBSET"
              --set "scale.test_subset=$TEST_SUBSET" --set "data.dir=$WORK/data"
              --set "data.manifest=$WORK/cifar-synth/cifar10.toml")
}

gate_train() {
  begin_gate train
  local d=$gate_dir smi_pid='' runs=$WORK/train-runs
  train_sets
  local sets=("${TRAIN_SETS[@]}")
  fact runs "$runs"
  fact max_steps "$TRAIN_MAX_STEPS"
  if ensure_cifar; then
    rm -rf "$runs"
    if [ "$DEV" != cpu ] && command -v nvidia-smi >/dev/null 2>&1; then
      nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 500 \
        >"$d/gpu_samples.csv" 2>/dev/null </dev/null &
      smi_pid=$!
    fi
    step run_a "$wrn" train "${sets[@]}" --out "$runs/a" --max-steps "$TRAIN_MAX_STEPS"
    cp "$runs/a/train.log" "$d/run_a.interrupted.train.log" 2>/dev/null
    if [ -f "$runs/a/checkpoint.safetensors" ]; then
      step resume "$wrn" train --resume "$runs/a" --device "$DEV"
      if [ "$(cat "$d/resume.rc")" != 0 ] && grep -q -- "unexpected argument '--device'" "$d/resume.err"; then
        # A build whose --resume takes no --device: resume on the run's own device to measure the rest.
        fact resume_device_flag unsupported
        step resume_plain "$wrn" train --resume "$runs/a"
      fi
    fi
    step run_b "$wrn" train "${sets[@]}" --out "$runs/b"
    if [ -n "$smi_pid" ]; then kill "$smi_pid" 2>/dev/null; wait "$smi_pid" 2>/dev/null; fi
    for r in a b; do
      for f in train.log metrics.csv result.json; do
        cp "$runs/$r/$f" "$d/run_$r.$f" 2>/dev/null
      done
      cp "$runs/$r/environment.json" "$d/run_$r.environment.json" 2>/dev/null
    done
  fi
  end_gate
}

gate_graphs() {
  begin_gate graphs
  local d=$gate_dir runs=$WORK/train-runs round
  for round in 1 2; do
    STEP_CAP=$SPEED_STEP_CAP step "bench.$round" "$wrn" bench train --device "$DEV" --arch "$GRAPHS_ARCH" \
      --batch "$GRAPHS_BATCH" --precision bf16 --channels-last --cuda-graphs --steps "$GRAPHS_STEPS" --json
    log "   $GRAPHS_ARCH b$GRAPHS_BATCH bf16+CL with CUDA graphs, round $round: $("$PY" "$WORK/judge.py" rate "$gate_dir/bench.$round")"
  done
  if ensure_cifar; then
    train_sets
    rm -rf "$runs/c"
    step run_c "$wrn" train "${TRAIN_SETS[@]}" --set cuda_graphs=true --out "$runs/c"
    for f in train.log metrics.csv result.json; do
      cp "$runs/c/$f" "$d/run_c.$f" 2>/dev/null
    done
  fi
  end_gate
}

gate_pipeline() {
  begin_gate pipeline
  local workers split
  workers=$(( $(nproc) - 2 ))
  [ "$workers" -ge 1 ] || workers=1
  fact workers "$workers"
  if ensure_cifar; then
    split=$WORK/data/cifar10/prepared/train.wrnc
    fact cifar_split "$split"
    step cifar "$wrn" bench pipeline --split "$split" --u8 --workers "$workers" --rounds 3 --json
  fi
  step imagenet_synth "$wrn" data synth imagenet --out "$WORK/imagenet-synth" --n "$IMAGENET_N" --seed 0 &&
    step imagenet_fetch "$wrn" data --data-dir "$WORK/data" --manifest "$WORK/imagenet-synth/imagenet.toml" fetch imagenet &&
    {
      fact imagenet_images "$IMAGENET_N"
      fact imagenet_train_tar_bytes "$(stat -c %s "$WORK/imagenet-synth/ILSVRC2012_img_train.tar" 2>/dev/null || echo 0)"
      split=$WORK/data/imagenet/prepared/train.wrni
      fact imagenet_split "$split"
      step imagenet "$wrn" bench pipeline --split "$split" --u8 --workers "$workers" --rounds 3 --json
      if [ "$(cat "$gate_dir/imagenet.rc")" != 0 ] && grep -q 'cannot deliver u8' "$gate_dir/imagenet.err"; then
        # imagenet-train's colour steps work on floats: the batches training copies are f32.
        step imagenet_f32 "$wrn" bench pipeline --split "$split" --workers "$workers" --rounds 3 --json
      fi
    }
  end_gate
}

gate_sweep() {
  begin_gate sweep
  local d=$gate_dir data=(--set "data.dir=$WORK/demo-data" --set "data.manifest=$WORK/demo-synth/cifar10.toml")
  fact runs "$WORK/sweep-runs"
  fact visible_runs "$WORK/sweep-visible"
  fact tables "$tables"
  rm -rf "$WORK/sweep-runs" "$WORK/sweep-visible"
  step demo_synth "$wrn" data synth cifar10 --out "$WORK/demo-synth" --n "$DEMO_N" --seed 0 &&
    step demo_fetch "$wrn" data --data-dir "$WORK/demo-data" --manifest "$WORK/demo-synth/cifar10.toml" fetch cifar10 &&
    {
      step sweep "$wrn" sweep --table demo --tables "$tables" --gpus "$SWEEP_GPUS" --jobs 2 --runs "$WORK/sweep-runs" "${data[@]}"
      # Without --gpus, under CUDA_VISIBLE_DEVICES=0: the sweep must find and use that GPU.
      step visible env CUDA_VISIBLE_DEVICES=0 "$wrn" sweep --table demo --tables "$tables" --row wrn-10-1 \
        --runs "$WORK/sweep-visible" "${data[@]}"
    }
  find "$WORK/sweep-runs" "$WORK/sweep-visible" -name sweep.log 2>/dev/null | sort | while read -r f; do
    printf '===== %s\n' "${f#"$WORK"/}"
    cat "$f"
  done >"$d/sweep_logs.txt"
  end_gate
}

gate_negative() {
  begin_gate negative
  step cuda99 "$wrn" doctor --check --device cuda:99
  step missing_cuda env WRN_LIBTORCH_CUDA=/nonexistent/libtorch_cuda.so "$wrn" doctor --json
  end_gate
}

# ---------------------------------------------------------------------------------------------------
# run OUTDIR
run() {
  local out=${1:-}
  if [ -z "$out" ]; then
    echo "usage: $0 run OUTDIR" >&2
    return 2
  fi
  mkdir -p "$out" || return 2
  OUT=$(cd "$out" && pwd)
  WORK=${GPU_ACCEPTANCE_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/gpu-acceptance.XXXXXX")}
  mkdir -p "$WORK" || return 2
  WORK=$(cd "$WORK" && pwd)
  rm -rf "$WORK/records"
  # wrn's cache (where the CUDA part of its extension is written to be loaded, and measured paces) in the
  # scratch folder: the check needs no writable home and leaves the user's cache alone.
  export WRN_CACHE_DIR=${WRN_CACHE_DIR:-$WORK/cache}
  STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  local t0=$SECONDS status=0 g

  # The binary, the PyTorch peer and the demo table: beside this script in a bundle, else in the
  # repository around ci/ with the bundle in dist/gpu-check.
  wrn=${WRN_BIN:-}
  for w in "$here/wrn" "$here/../dist/gpu-check/wrn" "$PWD/dist/gpu-check/wrn"; do
    # A copy to the GPU machine may drop the executable bit.
    if [ -z "$wrn" ] && [ -f "$w" ] && { [ -x "$w" ] || chmod +x "$w" 2>/dev/null; }; then
      wrn=$(cd "$(dirname "$w")" && pwd)/wrn
    fi
  done
  peer=
  for p in "$here/pytorch_train_step.py" "$here/../benches/peers/pytorch_train_step.py"; do
    if [ -z "$peer" ] && [ -f "$p" ]; then peer=$p; fi
  done
  tables=
  for t in "$here/tables" "$here/../reports/tables"; do
    if [ -z "$tables" ] && [ -f "$t/demo.toml" ]; then tables=$(cd "$t" && pwd); fi
  done
  TORCH_LIB=''
  found=$wrn
  log "gpu-acceptance: $STARTED; binary ${wrn:-<none>}; results in $OUT; scratch in $WORK"

  if ! command -v "$PY" >/dev/null 2>&1; then
    # No python for the judge: the record and the JSON written here.
    local reason="no $PY on PATH (the check needs python3 with PyTorch 2.11.0+cu130)" gates=''
    mkdir -p "$WORK/records"
    write_record preflight fail "$reason" 0 "$WORK/records/preflight.json"
    gates=$(cat "$WORK/records/preflight.json")
    echo "FAIL preflight: $reason" >"$OUT/summary.txt"
    for g in "${GATES[@]:1}"; do
      gates+=", {\"name\": \"$g\", \"status\": \"skipped\", \"summary\": \"not run: preflight failed\", \"figures\": {}}"
      echo "SKIP $g: not run: preflight failed" >>"$OUT/summary.txt"
    done
    printf '{"check": "ci/gpu-acceptance.sh", "started": "%s", "binary": "%s", "result": "preflight-failed", "exit_code": 2, "passed": 0, "failed": 1, "gates": [%s]}\n' \
      "$STARTED" "$(json_escape "$wrn")" "$gates" >"$OUT/gpu-acceptance.json"
    : >"$OUT/logs.txt"
    cat "$OUT/summary.txt"
    return 2
  fi
  write_judge "$WORK/judge.py"
  export GA_WORK=$WORK GA_DEVICE=$DEV

  rm -rf "$WORK/preflight"
  if [ -z "$wrn" ] || [ ! -x "$wrn" ] || [ -d "$wrn" ]; then
    mkdir -p "$WORK/preflight"
    echo "no wrn binary${wrn:+ at $wrn}: stage the bundle with \`make gpu-check\` and carry dist/gpu-check, or set WRN_BIN" \
      >"$WORK/preflight/no_binary"
    wrn=${wrn:-$here/wrn}
  fi
  gate_preflight
  if [ ! -s "$WORK/records/preflight.json" ] || ! "$PY" "$WORK/judge.py" passed "$WORK/records/preflight.json"; then
    status=2
  else
    export GA_TORCH_LIB=$TORCH_LIB
    for g in "${GATES[@]:1}"; do
      "gate_$g" || status=1
    done
  fi
  local wall=$((SECONDS - t0))
  "$PY" "$WORK/judge.py" logs "$WORK" "$OUT/logs.txt" "${GATES[@]}"
  "$PY" "$WORK/judge.py" final "$WORK/records" "$OUT/gpu-acceptance.json" "$status" "$STARTED" "$wall" \
    "$found" "${GATES[@]}" >"$OUT/summary.txt"
  echo "gpu-acceptance: ${wall} s; $OUT/gpu-acceptance.json, $OUT/logs.txt"
  cat "$OUT/summary.txt"
  return "$status"
}

# ---------------------------------------------------------------------------------------------------
# The judge: reads what a gate's commands left in $WORK/<gate>/ and decides.
write_judge() {
  cat >"$1" <<'PY'
import csv, glob, json, math, os, re, sys

WORK = os.environ.get("GA_WORK", "")
DEVICE = os.environ.get("GA_DEVICE", "cuda")
# A rehearsal on a machine without a GPU (`rehearse`): preflight does not ask for a driver, a GPU or CUDA.
REHEARSAL = os.environ.get("GA_REHEARSAL") == "1"


def read(path, default=""):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return default


def rc(d, name):
    t = read(os.path.join(d, name + ".rc")).strip()
    try:
        return int(t)
    except ValueError:
        return None


def facts(d):
    out = {}
    for line in read(os.path.join(d, "facts.txt")).splitlines():
        k, _, v = line.partition("=")
        out[k] = v
    return out


def parse_json(text):
    text = text.strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        pass
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                pass
    i = text.find("{")
    while i >= 0:
        try:
            return json.loads(text[i:])
        except ValueError:
            i = text.find("{", i + 1)
    return None


def out_json(d, name):
    return parse_json(read(os.path.join(d, name + ".out")))


def why(d, name):
    """One line saying why a step failed: its error line, else its last line."""
    if rc(d, name) in (124, 137):
        lines = read(os.path.join(d, name + ".err")).strip().splitlines()
        return lines[-1] if lines else "timed out"
    lines = [l.strip() for l in read(os.path.join(d, name + ".err")).splitlines() if l.strip()]
    for l in lines:
        if l.lower().startswith("error") or "Error:" in l or "Traceback" in l:
            return l[:400]
    if lines:
        return lines[-1][:400]
    code = rc(d, name)
    return "exit status %s, no output" % code if code is not None else "did not run"


def version_tuple(v):
    return tuple(int(x) for x in re.findall(r"\d+", v or ""))


def real(p):
    return os.path.realpath(p) if p else p


def fmt_rate(x):
    if not isinstance(x, (int, float)):
        return "-"
    return "%.0f" % x if x >= 10 else "%.2g" % x


def fmt_value(x):
    return "%.3g" % x if isinstance(x, float) else str(x)


def gib(b):
    return round(b / 2**30, 2) if isinstance(b, (int, float)) else None


# --------------------------------------------------------------------------------------- preflight
def judge_preflight(d):
    f = facts(d)
    reasons, fig = [], {"cores": int(f.get("cores") or 0), "hostname": f.get("hostname")}
    if os.path.exists(os.path.join(d, "no_binary")):
        reasons.append(read(os.path.join(d, "no_binary")).strip())
    driver, gpus = None, []
    smi_missing = f.get("nvidia_smi") == "missing"
    proc = read(os.path.join(d, "proc_driver_version.txt"))
    if not smi_missing:
        if rc(d, "smi") == 0:
            for row in csv.reader(read(os.path.join(d, "smi.out")).strip().splitlines()):
                row = [c.strip() for c in row]
                if len(row) >= 4:
                    gpus.append({"index": row[0], "name": row[1], "driver": row[2], "memory_total_mib": row[3],
                                 "compute_capability": row[4] if len(row) > 4 else None})
            if gpus:
                driver = gpus[0]["driver"]
            else:
                reasons.append("nvidia-smi lists no GPU")
        else:
            reasons.append("nvidia-smi failed: " + why(d, "smi"))
    if driver is None and proc:
        m = re.search(r"Kernel Module\s+(?:for \S+\s+)?([0-9]+\.[0-9.]+)", proc)
        driver = m.group(1) if m else None
    if smi_missing and not proc:
        reasons.insert(0, "no NVIDIA driver (nvidia-smi not found / /proc/driver/nvidia/version missing)")
    elif driver is None:
        if not reasons:
            reasons.append("cannot read the NVIDIA driver's version")
    elif version_tuple(driver)[:1] < (580,):
        reasons.insert(0, "NVIDIA driver %s is older than 580, the oldest that runs PyTorch 2.11's CUDA 13.0 "
                          "build: upgrade the driver to 580 or newer, or point LD_LIBRARY_PATH at a libtorch 2.11 "
                          "built for the CUDA this driver supports" % driver)
    fig.update(driver=driver, gpus=gpus)
    if gpus:
        fig.update(gpu=gpus[0]["name"], memory_total_mib=gpus[0]["memory_total_mib"])

    torch = out_json(d, "torch") or {}
    fig["torch"] = torch
    cap = gpus[0].get("compute_capability") if gpus else None
    if not cap or not re.match(r"^\d+\.\d+$", cap):
        cap = torch.get("capability")
    fig["compute_capability"] = cap
    if cap:
        c = version_tuple(cap)
        if c < (7, 5) or c[0] > 12:
            reasons.append("compute capability %s: PyTorch 2.11's CUDA 13.0 build has kernels for 7.5 to 12.x "
                           "only (a V100 is 7.0)" % cap)

    gs, gn = f.get("glibc_system"), f.get("glibc_needed")
    fig.update(glibc_system=gs, glibc_needed=gn, glibc_needed_from=f.get("glibc_needed_from"))
    if gs and gn and version_tuple(gs) < version_tuple(gn):
        reasons.append("glibc %s here, the wrn binary needs %s: build the bundle on a system with glibc %s or "
                       "older" % (gs, gn, gs))
    xs, xn = f.get("glibcxx_system"), f.get("glibcxx_needed")
    fig.update(glibcxx_system=xs, glibcxx_needed=xn, libstdcxx=f.get("libstdcxx"))
    if xs and xn and version_tuple(xs) < version_tuple(xn):
        reasons.append("libstdc++ here provides GLIBCXX_%s, the wrn binary needs GLIBCXX_%s" % (xs, xn))

    if f.get("python") == "missing":
        reasons.append("no python3 on PATH")
    elif rc(d, "torch") != 0 or not torch:
        reasons.append("python3 failed: " + why(d, "torch"))
    elif "error" in torch:
        reasons.append("python3 cannot import torch (%s): the check needs PyTorch 2.11.0+cu130" % torch["error"])
    else:
        if not str(torch.get("version", "")).startswith("2.11.0"):
            reasons.append("torch.__version__ is %s, not 2.11.0" % torch.get("version"))
        if torch.get("cuda") != "13.0":
            reasons.append("torch.version.cuda is %r, not '13.0'" % torch.get("cuda"))
        if not torch.get("cuda_available"):
            reasons.append("torch.cuda.is_available() is False%s" % (
                " (%s)" % torch["cuda_error"] if torch.get("cuda_error") else ""))
        lib = torch.get("lib", "")
        for name in ("libtorch_cpu.so", "libtorch_cuda.so"):
            if not os.path.exists(os.path.join(lib, name)):
                reasons.append("no %s in torch's lib directory %s" % (name, lib))
    fig["ld_library_path"] = f.get("ld_library_path")
    if rc(d, "wrn_version") is not None:
        fig["wrn_version"] = read(os.path.join(d, "wrn_version.out")).strip()
        if rc(d, "wrn_version") != 0:
            reasons.append("the wrn binary does not start with LD_LIBRARY_PATH at torch's lib: " + why(d, "wrn_version"))
    if REHEARSAL:
        gpu = ("no NVIDIA driver", "NVIDIA driver", "nvidia-smi", "cannot read the NVIDIA driver", "compute capability",
               "torch.cuda.is_available()")
        fig["not_checked_in_rehearsal"] = [r for r in reasons if r.startswith(gpu)]
        reasons = [r for r in reasons if not r.startswith(gpu)]
    if reasons:
        return False, "; ".join(reasons), fig
    return True, ("rehearsal on the CPU, no GPU checks: " if REHEARSAL else "") + "%s, driver %s, %s MiB, compute capability %s; glibc %s (binary needs %s), GLIBCXX %s (needs %s); " \
                 "torch %s (CUDA %s) at %s; %s cores" % (
        fig.get("gpu"), driver, fig.get("memory_total_mib"), cap, gs, gn, xs, xn, torch.get("version"),
        torch.get("cuda"), torch.get("lib"), fig["cores"]), fig


# -------------------------------------------------------------------------------------- environment
def judge_environment(d):
    torch_lib = real(os.environ.get("GA_TORCH_LIB", ""))
    problems, fig = [], {"torch_lib": torch_lib}
    doc = out_json(d, "doctor")
    if doc is None:
        problems.append("wrn doctor --json printed no JSON: " + why(d, "doctor"))
        doc = {}
    cuda = doc.get("cuda") or {}
    fig.update(doctor_exit=rc(d, "doctor"), libtorch_version=doc.get("libtorch_version"),
               libtorch_dir=doc.get("libtorch_dir"), cuda_available=cuda.get("available"),
               device_count=cuda.get("device_count"), cudnn_version=cuda.get("cudnn_version"),
               backend_library=cuda.get("backend_library"), reason=cuda.get("reason"),
               extension=cuda.get("extension"), extension_error=cuda.get("extension_error"),
               problems=doc.get("problems"))
    if doc:
        if cuda.get("available") is not True:
            problems.append("cuda.available is %s (%s)" % (cuda.get("available"), cuda.get("reason")))
        if not (cuda.get("device_count") or 0) >= 1:
            problems.append("cuda.device_count is %s" % cuda.get("device_count"))
        if real(doc.get("libtorch_dir")) != torch_lib:
            problems.append("libtorch_dir %s is not torch's lib %s" % (doc.get("libtorch_dir"), torch_lib))
        want = os.path.join(torch_lib, "libtorch_cuda.so")
        if real(cuda.get("backend_library")) != real(want):
            problems.append("cuda.backend_library %s is not %s" % (cuda.get("backend_library"), want))
        if not cuda.get("extension"):
            problems.append("the CUDA extension (NCCL) is not loaded: %s" % cuda.get("extension_error"))
        if doc.get("problems") != []:
            problems.append("problems: %s" % doc.get("problems"))
    # The mapped libraries of the probe process.
    maps = read(os.path.join(d, "maps.txt"))
    paths = {}
    for line in maps.splitlines():
        parts = line.split(None, 5)
        if len(parts) == 6 and parts[5].startswith("/"):
            p = parts[5].replace(" (deleted)", "")
            if ".so" in os.path.basename(p):
                paths.setdefault(os.path.basename(p), set()).add(p)
    fig["maps_probe"] = facts(d).get("maps_probe")
    fig["mapped_libraries"] = len(paths)
    if not paths:
        problems.append("could not read /proc/<pid>/maps of a running wrn (%s)" % why(d, "maps_probe"))
    else:
        cpu = sorted(paths.get("libtorch_cpu.so", []))
        fig["libtorch_cpu_mapped"] = cpu
        if len(cpu) != 1:
            problems.append("%d libtorch_cpu.so mapped: %s" % (len(cpu), cpu))
        elif real(cpu[0]) != real(os.path.join(torch_lib, "libtorch_cpu.so")):
            problems.append("libtorch_cpu.so mapped from %s, not torch's lib" % cpu[0])
        twice = {k: sorted(v) for k, v in paths.items() if len({real(p) for p in v}) > 1}
        if twice:
            problems.append("libraries mapped from two places: %s" % twice)
        cuda_libs = {k: sorted(v)[0] for k, v in paths.items()
                     if re.match(r"lib(torch_cuda|c10_cuda|cudnn|cublas|cudart|nccl|cufft|cusparse|curand|nvrtc|nvJitLink)", k)}
        fig["cuda_libraries"] = cuda_libs
        site = os.path.dirname(os.path.dirname(torch_lib)) if torch_lib else ""
        outside = sorted(p for p in cuda_libs.values() if site and not real(p).startswith(site))
        fig["cuda_libraries_outside_torch_site_packages"] = outside
        if not any(k.startswith("libcudnn") for k in paths):
            fig["note"] = "cuDNN was not yet mapped when the probe was sampled"
    if problems:
        return False, "; ".join(problems), fig
    return True, "libtorch %s from %s, CUDA backend %s, %s GPU(s), cuDNN %s; one libtorch_cpu.so mapped, " \
                 "no library mapped twice%s" % (
        fig["libtorch_version"], fig["libtorch_dir"], fig["backend_library"], fig["device_count"],
        fig["cudnn_version"], "; CUDA libraries outside torch's site-packages: %s" % outside if outside else ""), fig


# ------------------------------------------------------------------------------------------- parity
def judge_parity(d):
    j = out_json(d, "parity")
    code = rc(d, "parity")
    entries = None
    if isinstance(j, dict):
        entries = j.get("parity")
    elif isinstance(j, list):
        entries = j
    fig = {"exit": code, "parity": entries}
    if not isinstance(entries, list) or not entries:
        return False, "wrn doctor --parity gave no parity entries (exit %s): %s" % (code, why(d, "parity")), fig
    parts, bad = [], []
    for e in entries:
        ok = e.get("pass") is True
        parts.append("%s %s %s (tolerance %s)" % ("ok" if ok else "FAILED", e.get("name"), fmt_value(e.get("value")),
                                                 fmt_value(e.get("tolerance"))))
        if not ok:
            bad.append(e.get("name"))
    text = "; ".join(parts)
    if bad or code != 0:
        return False, "%d of %d outside tolerance, exit %s: %s" % (len(bad), len(entries), code, text), fig
    return True, "%d checks within tolerance: %s" % (len(entries), text), fig


# -------------------------------------------------------------------------------------------- speed
def speed_configs(d):
    out = []
    for line in read(os.path.join(d, "configs.txt")).splitlines():
        if line.strip():
            id_, label, arch, batch, precision, cl, steps, gated, ref = (line.split("|") + [""] * 9)[:9]
            out.append(dict(id=id_, label=label, arch=arch, batch=int(batch), precision=precision,
                            channels_last=cl == "1", steps=int(steps), gate=float(gated) if gated else None,
                            reference=ref == "1"))
    return out


def bench_json(d, name):
    """`wrn bench train --json`'s result, with `--reference` flattened: the training figures, plus the
    matrix product's FLOP/s and the share of them the step reaches."""
    j = out_json(d, name)
    if isinstance(j, dict) and isinstance(j.get("train"), dict):
        flat = dict(j["train"])
        flat["ratio_to_reference"] = j.get("ratio_to_reference")
        flat["reference_flops_per_second"] = (j.get("reference") or {}).get("flops_per_second")
        flat["reference_workload"] = (j.get("reference") or {}).get("workload")
        return flat
    return j


def judge_speed(d):
    problems, notes, rows = [], [], []
    # When the gate's budget runs out, the configurations after the gated ones are left unmeasured and said
    # so; the gate then fails only for what it gates (the first configuration runs first).
    out_of_budget = os.path.exists(os.path.join(d, "timed_out"))
    for c in speed_configs(d):
        row = dict(c)
        for side in ("wrn", "torch"):
            runs = []
            for r in (1, 2):
                name = "%s.%s.%d" % (c["id"], side, r)
                if rc(d, name) is None:
                    continue
                j = bench_json(d, name)
                ok = rc(d, name) == 0 and isinstance(j, dict) and isinstance(j.get("images_per_second"), (int, float))
                runs.append({"round": r, "exit": rc(d, name), "result": j if ok else None,
                             "error": None if ok else why(d, name)})
            row[side + "_runs"] = [{"round": x["round"], "exit": x["exit"],
                                    "images_per_second": x["result"]["images_per_second"] if x["result"] else None,
                                    "error": x["error"]} for x in runs]
            good = [x["result"] for x in runs if x["result"]]
            best = max(good, key=lambda j: j["images_per_second"]) if good else None
            row[side] = best
            errors = [x["error"] for x in runs if not x["result"]]
            unmeasured = out_of_budget and c["gate"] is None and any(x["exit"] in (124, 137) for x in runs)
            if errors and unmeasured:
                notes.append("%s: %s %s, the gate's %s s ran out" % (
                    c["label"], "wrn" if side == "wrn" else "PyTorch", "measured once" if good else "not measured",
                    os.environ.get("GA_BUDGET", "?")))
            elif errors and side == "wrn":
                problems.append("%s: wrn failed: %s" % (c["label"], errors[0]))
            elif errors:
                notes.append("%s: PyTorch failed: %s" % (c["label"], errors[0]))
        w, t = row["wrn"], row["torch"]
        row["wrn_images_per_second"] = w["images_per_second"] if w else None
        row["pytorch_images_per_second"] = t["images_per_second"] if t else None
        row["ratio"] = w["images_per_second"] / t["images_per_second"] if w and t else None
        row["wrn_parameters"] = w.get("parameters") if w else None
        row["pytorch_parameters"] = t.get("parameters") if t else None
        row["wrn_device_memory_in_use_gib"] = gib(w.get("device_memory_in_use_bytes")) if w else None
        row["wrn_peak_allocated_gib"] = gib(w.get("peak_allocated_bytes")) if w else None
        row["wrn_share_of_matmul_flops"] = w.get("ratio_to_reference") if w else None
        row["matmul_reference_tflops"] = (w.get("reference_flops_per_second") or 0) / 1e12 if w and \
            w.get("reference_flops_per_second") else None
        row["pytorch_max_memory_allocated_gib"] = gib(t.get("max_memory_allocated_bytes")) if t else None
        row["pytorch_device_memory_in_use_gib"] = gib(t.get("device_memory_in_use_bytes")) if t else None
        if w and t and row["wrn_parameters"] != row["pytorch_parameters"]:
            problems.append("%s: parameter counts differ (wrn %s, PyTorch %s): not the same network" % (
                c["label"], row["wrn_parameters"], row["pytorch_parameters"]))
        if c["gate"] is not None:
            if row["ratio"] is None:
                problems.append("%s: no wrn/PyTorch ratio (wrn %s, PyTorch %s)" % (
                    c["label"], fmt_rate(row["wrn_images_per_second"]), fmt_rate(row["pytorch_images_per_second"])))
            elif row["ratio"] < c["gate"]:
                problems.append("%s: wrn/PyTorch %.2f below %.2f" % (c["label"], row["ratio"], c["gate"]))
            elif row["ratio"] < c["gate"] + 0.1:
                notes.append("%s: ratio %.2f passes but is under %.2f" % (c["label"], row["ratio"], c["gate"] + 0.1))
        row.pop("wrn"), row.pop("torch")
        rows.append(row)
    parts = []
    for r in rows:
        s = "%s %s (wrn %s, PyTorch %s img/s" % (
            r["label"], "%.2fx" % r["ratio"] if r["ratio"] is not None else "no ratio",
            fmt_rate(r["wrn_images_per_second"]), fmt_rate(r["pytorch_images_per_second"]))
        if r["arch"] == "resnet-50-w2":
            s += "; parameters wrn %s, PyTorch %s" % (r["wrn_parameters"], r["pytorch_parameters"])
        if r["wrn_peak_allocated_gib"] is not None or r["pytorch_max_memory_allocated_gib"] is not None:
            s += "; peak allocated wrn %s GiB, PyTorch %s GiB" % (
                r["wrn_peak_allocated_gib"], r["pytorch_max_memory_allocated_gib"])
        if r["wrn_share_of_matmul_flops"] is not None:
            s += "; %.0f%% of the %.3g TFLOP/s of a bf16 matmul" % (
                100 * r["wrn_share_of_matmul_flops"], r["matmul_reference_tflops"] or 0)
        s += ")"
        if r["gate"] is not None:
            s += " [gated >= %.2f]" % r["gate"]
        parts.append(s)
    fig = {"configs": rows, "notes": notes, "peer_warmup_steps": int(facts(d).get("peer_warmup") or 0),
           "wrn_warmup_steps": 3 if os.environ.get("GA_DEVICE", "cuda").startswith("cuda") else 1,
           "budget_overrun_judged": True}
    text = "; ".join(parts + notes)
    if problems:
        return False, "; ".join(problems) + " | " + text, fig
    return True, text, fig


def rate_line(prefix):
    d, name = os.path.dirname(prefix), os.path.basename(prefix)
    j = bench_json(d, name)
    if rc(d, name) == 0 and isinstance(j, dict) and "images_per_second" in j:
        extra = ""
        if j.get("parameters"):
            extra = ", %s parameters" % j["parameters"]
        return "%.1f images/s%s" % (j["images_per_second"], extra)
    return "failed: " + why(d, name)


# -------------------------------------------------------------------------------------------- train
def metrics(path):
    try:
        with open(path) as f:
            return [{k: (float(v) if k != "epoch" else int(float(v))) for k, v in row.items() if v not in ("", None)}
                    for row in csv.DictReader(f)]
    except (OSError, ValueError):
        return []


WARNING = re.compile(r"warn|deprecated", re.I)


def warning_lines(paths):
    found = []
    for p in paths:
        for line in read(p).splitlines():
            if WARNING.search(line):
                found.append("%s: %s" % (os.path.basename(p), line.strip()[:200]))
    return found


def compare_runs(ma, mb):
    """The last epochs of two runs' metrics rows: the comparison's figures, and what is wrong (or None)."""
    la, lb = ma[-1], mb[-1]
    d_err, d_loss = abs(la["test_error"] - lb["test_error"]), abs(la["test_loss"] - lb["test_loss"])
    # Two processes differ on a GPU (not bit-exact) by as much as after epoch 1, where both ran
    # uninterrupted: the tolerance is twice that, at least 5 points of error and 0.1 + 10% of the loss.
    e1 = abs(ma[0]["test_error"] - mb[0]["test_error"]), abs(ma[0]["test_loss"] - mb[0]["test_loss"])
    tol_err = max(5.0, 2 * e1[0] + 1.0)
    tol_loss = max(0.1 + 0.1 * lb["test_loss"], 2 * e1[1] + 0.05)
    comparison = {"test_error_a": la["test_error"], "test_error_b": lb["test_error"],
                  "test_loss_a": la["test_loss"], "test_loss_b": lb["test_loss"],
                  "difference_error": d_err, "difference_loss": d_loss,
                  "epoch1_difference_error": e1[0], "epoch1_difference_loss": e1[1],
                  "tolerance_error": tol_err, "tolerance_loss": tol_loss}
    if not all(math.isfinite(x) for x in (la["test_loss"], lb["test_loss"], la["train_loss"], lb["train_loss"])):
        return comparison, "non-finite losses"
    if d_err > tol_err or d_loss > tol_loss:
        return comparison, "test error %.2f%% vs %.2f%% (tolerance %.1f), test loss %.4f vs %.4f (tolerance %.3f)" % (
            la["test_error"], lb["test_error"], tol_err, la["test_loss"], lb["test_loss"], tol_loss)
    return comparison, None


def judge_train(d):
    f = facts(d)
    problems, fig = [], {"max_steps": int(f.get("max_steps") or 0)}
    for s in ("cifar_synth", "cifar_fetch"):
        if rc(d, s) not in (None, 0):
            problems.append("%s failed: %s" % (s, why(d, s)))
    if problems:
        return False, "; ".join(problems), fig
    a_log = read(os.path.join(d, "run_a.interrupted.train.log"))
    fig["run_a_exit"] = rc(d, "run_a")
    if rc(d, "run_a") != 0:
        problems.append("the interrupted run failed: " + why(d, "run_a"))
    m = re.search(r"interrupted at epoch (\d+) step (\d+)", a_log)
    fig["interrupted_at"] = m.group(0) if m else None
    if not m and rc(d, "run_a") == 0:
        problems.append("run A's train.log does not say where it was interrupted")
    resume = "resume_plain" if rc(d, "resume_plain") is not None else "resume"
    fig["resume_exit"] = rc(d, resume)
    if f.get("resume_device_flag") == "unsupported":
        problems.append("wrn train --resume RUN --device %s is refused by this build (resumed without --device)" % DEVICE)
    if rc(d, resume) is None:
        problems.append("run A was not resumed (no checkpoint)")
    elif rc(d, resume) != 0:
        problems.append("the resume failed: " + why(d, resume))
    log_a = read(os.path.join(d, "run_a.train.log"))
    m2 = re.search(r"resumed at epoch (\d+) step (\d+)", log_a)
    fig["resumed_at"] = m2.group(0) if m2 else None
    if m and m2 and (m.group(1), m.group(2)) != (m2.group(1), m2.group(2)):
        problems.append("interrupted at epoch %s step %s but resumed at epoch %s step %s" % (
            m.group(1), m.group(2), m2.group(1), m2.group(2)))
    fig["run_b_exit"] = rc(d, "run_b")
    if rc(d, "run_b") != 0:
        problems.append("the uninterrupted run failed: " + why(d, "run_b"))
    runs = {}
    for r in ("a", "b"):
        res = parse_json(read(os.path.join(d, "run_%s.result.json" % r))) or {}
        rows = metrics(os.path.join(d, "run_%s.metrics.csv" % r))
        runs[r] = {"result": res, "metrics": rows}
        label = {"a": "the interrupted and resumed run", "b": "the uninterrupted run"}[r]
        if res.get("status") != "finished":
            problems.append("%s has no finished result.json (status %s)" % (label, res.get("status")))
        elif not str(res.get("device", "")).startswith(DEVICE):
            problems.append("%s trained on %s, not %s" % (label, res.get("device"), DEVICE))
        if res and rows and len(rows) != res.get("epochs_planned"):
            problems.append("%s: %d metrics rows for %s epochs" % (label, len(rows), res.get("epochs_planned")))
    fig["runs"] = {r: {"device": v["result"].get("device"), "status": v["result"].get("status"),
                       "final_test_error": v["result"].get("final_test_error"), "metrics": v["metrics"]}
                   for r, v in runs.items()}
    ma, mb = runs["a"]["metrics"], runs["b"]["metrics"]
    if ma and mb:
        la, lb = ma[-1], mb[-1]
        fig["comparison"], problem = compare_runs(ma, mb)
        if problem:
            problems.append("resumed vs uninterrupted: " + problem)
        # Chance is 90% error; on 2000 test images one standard deviation of chance is 0.7 points.
        if lb["test_error"] >= 85.0:
            problems.append("the uninterrupted run did not learn: test error %.1f%% (chance 90%%)" % lb["test_error"])
        fig["data_wait_fraction_b"] = lb.get("data_wait_fraction")
        fig["data_wait_fraction_a"] = la.get("data_wait_fraction")
        fig["images_per_second_b"] = lb.get("images_per_second")
        if not (lb.get("data_wait_fraction", 1.0) < 0.05):
            problems.append("data-wait fraction %.3f in the last epoch (>= 0.05)" % lb.get("data_wait_fraction", float("nan")))
        speed = gate_figures("speed")
        for c in (speed or {}).get("configs", []):
            if c.get("id") == "wrn28-bf16-cl" and c.get("wrn_images_per_second"):
                fig["images_per_second_vs_bench"] = lb.get("images_per_second", 0) / c["wrn_images_per_second"]
    logs = glob.glob(os.path.join(d, "run_?.train.log")) + glob.glob(os.path.join(d, "run_a.interrupted.train.log"))
    logs += [os.path.join(d, s + ".err") for s in ("run_a", "resume", "resume_plain", "run_b") if rc(d, s) is not None]
    warn = warning_lines(logs)
    fig["warning_lines"] = len(warn)
    fig["warning_examples"] = warn[:5]
    if warn:
        problems.append("%d warning lines in the logs, e.g. %s" % (len(warn), warn[0]))
    samples = []
    for row in csv.reader(read(os.path.join(d, "gpu_samples.csv")).splitlines()):
        try:
            samples.append((float(row[0]), float(row[1])))
        except (ValueError, IndexError):
            pass
    if samples:
        fig["gpu_utilization_mean_percent"] = sum(s[0] for s in samples) / len(samples)
        fig["gpu_memory_used_max_mib"] = max(s[1] for s in samples)
    if problems:
        return False, "; ".join(problems), fig
    c = fig.get("comparison", {})
    return True, "%s; resumed then finished on %s: test error %.2f%% vs uninterrupted %.2f%% (tolerance %.1f), " \
                 "test loss %.4f vs %.4f (tolerance %.3f); data wait %.1f%%; %.0f images/s; 0 warning lines" % (
        fig["interrupted_at"], runs["a"]["result"].get("device"), c["test_error_a"], c["test_error_b"],
        c["tolerance_error"], c["test_loss_a"], c["test_loss_b"], c["tolerance_loss"],
        100 * fig["data_wait_fraction_b"], fig.get("images_per_second_b") or 0), fig


def judge_graphs(d):
    problems, fig = [], {}
    benches = []
    for r in (1, 2):
        name = "bench.%d" % r
        j = bench_json(d, name)
        if rc(d, name) == 0 and isinstance(j, dict) and isinstance(j.get("images_per_second"), (int, float)):
            if j.get("cuda_graphs") is not True:
                problems.append("bench round %d did not replay a CUDA graph" % r)
            benches.append(j)
        elif rc(d, name) is not None:
            problems.append("wrn bench train --cuda-graphs failed: " + why(d, name))
    best = max(benches, key=lambda j: j["images_per_second"]) if benches else None
    fig["graphs_images_per_second"] = best["images_per_second"] if best else None
    fig["graphs_peak_allocated_gib"] = gib(best.get("peak_allocated_bytes")) if best else None
    eager = torch = None
    for c in gate_figures("speed").get("configs", []):
        if c.get("id") == "wrn16-bf16-cl":
            eager, torch = c.get("wrn_images_per_second"), c.get("pytorch_images_per_second")
    fig["eager_images_per_second"], fig["pytorch_images_per_second"] = eager, torch
    g = fig["graphs_images_per_second"]
    fig["ratio_to_eager"] = g / eager if g and eager else None
    fig["ratio_to_pytorch"] = g / torch if g and torch else None
    fig["goal_ratio_to_pytorch"] = 1.5
    if rc(d, "run_c") is None:
        data_step = "cifar_fetch" if rc(d, "cifar_fetch") is not None else "cifar_synth"
        problems.append("the run with cuda_graphs = true did not start: " + why(d, data_step))
    elif rc(d, "run_c") != 0:
        problems.append("the run with cuda_graphs = true failed: " + why(d, "run_c"))
    res = parse_json(read(os.path.join(d, "run_c.result.json"))) or {}
    mc = metrics(os.path.join(d, "run_c.metrics.csv"))
    mb = metrics(os.path.join(WORK, "train", "run_b.metrics.csv"))
    fig["run_c"] = {"device": res.get("device"), "status": res.get("status"), "metrics": mc}
    if rc(d, "run_c") == 0:
        if res.get("status") != "finished" or not str(res.get("device", "")).startswith(DEVICE):
            problems.append("the run with CUDA graphs: status %s on %s" % (res.get("status"), res.get("device")))
        said = read(os.path.join(d, "run_c.err")) + read(os.path.join(d, "run_c.train.log"))
        if "CUDA graphs: the training step is captured" not in said:
            problems.append("the run with cuda_graphs = true does not say it captured its step")
        if mc and mb:
            fig["comparison"], problem = compare_runs(mc, mb)
            if problem:
                problems.append("CUDA graphs vs eager (the train gate's run B): " + problem)
            fig["images_per_second_c"] = mc[-1].get("images_per_second")
            fig["images_per_second_b"] = mb[-1].get("images_per_second")
        elif not mb:
            problems.append("no eager run to compare with (the train gate's run B has no metrics)")
        warn = warning_lines([os.path.join(d, "run_c.train.log"), os.path.join(d, "run_c.err")])
        fig["warning_lines"] = len(warn)
        if warn:
            problems.append("%d warning lines, e.g. %s" % (len(warn), warn[0]))
    text = "WRN-16-4 b128 bf16+CL replayed %s img/s: %s eager wrn (%s), %s PyTorch eager (%s; goal 1.5x)" % (
        fmt_rate(g), "%.2fx" % fig["ratio_to_eager"] if fig["ratio_to_eager"] else "no ratio to", fmt_rate(eager),
        "%.2fx" % fig["ratio_to_pytorch"] if fig["ratio_to_pytorch"] else "no ratio to", fmt_rate(torch))
    c = fig.get("comparison")
    if c:
        text += "; trained with CUDA graphs: test error %.2f%% vs eager %.2f%% (tolerance %.1f), test loss %.4f vs " \
                "%.4f (tolerance %.3f), %s vs %s images/s" % (
                    c["test_error_a"], c["test_error_b"], c["tolerance_error"], c["test_loss_a"], c["test_loss_b"],
                    c["tolerance_loss"], fmt_rate(fig.get("images_per_second_c")), fmt_rate(fig.get("images_per_second_b")))
    if problems:
        return False, "; ".join(problems) + " | " + text, fig
    return True, text, fig


def gate_figures(name):
    rec = parse_json(read(os.path.join(WORK, "records", name + ".json"))) or {}
    return rec.get("figures") or {}


# ----------------------------------------------------------------------------------------- pipeline
def judge_pipeline(d):
    problems, parts, fig = [], [], {"workers": int(facts(d).get("workers") or 0)}
    gpu = {c.get("id"): c.get("wrn_images_per_second") for c in gate_figures("speed").get("configs", [])}
    fig["gpu_images_per_second"] = gpu
    checks = [("cifar", "CIFAR cifar-train (u8)", [("wrn28-bf16-cl", "WRN-28-10 bf16", True),
                                                   ("wrn16-bf16-cl", "WRN-16-4 bf16", False)]),
              ("imagenet", "ImageNet imagenet-train (u8)", [("wrn50-bf16-cl", "WRN-50-2 bf16", False)])]
    for s in ("cifar_synth", "cifar_fetch", "imagenet_synth", "imagenet_fetch"):
        if rc(d, s) not in (None, 0):
            problems.append("%s failed: %s" % (s, why(d, s)))
    if rc(d, "imagenet_f32") is not None:
        # This build's imagenet-train delivers f32 only; measured so.
        checks[1] = ("imagenet_f32", "ImageNet imagenet-train (f32; no u8 form in this build)", checks[1][2])
    for name, label, against in checks:
        j = out_json(d, name)
        if rc(d, name) is None:
            if not problems:
                problems.append("%s: not measured" % label)
            continue
        if rc(d, name) != 0 or not isinstance(j, dict):
            problems.append("%s: %s" % (label, why(d, name)))
            continue
        rate = j.get("images_per_second")
        fig[name] = j
        verdicts = []
        for cid, glabel, gated in against:
            g = gpu.get(cid)
            if not g:
                verdicts.append("%s: no GPU figure" % glabel)
                if gated:
                    problems.append("no GPU images/s of %s from the speed gate to compare with" % glabel)
                continue
            bound = rate < g
            fig.setdefault("verdicts", {})["%s vs %s" % (name, cid)] = {
                "pipeline": rate, "gpu": g, "ratio": rate / g, "data_bound": bound}
            verdicts.append("%.1fx %s's %s%s" % (rate / g, glabel, fmt_rate(g), " data-bound" if bound else ""))
            if bound and gated:
                problems.append("%s at %.0f images/s is slower than %s on the GPU (%.0f): data-bound" % (
                    label, rate, glabel, g))
        parts.append("%s %.0f images/s with %s workers (%s)" % (label, rate, j.get("workers"), ", ".join(verdicts)))
    f = facts(d)
    try:
        kib = int(f.get("imagenet_train_tar_bytes") or 0) / max(1, int(f.get("imagenet_images") or 1)) / 1024
    except ValueError:
        kib = 0
    if kib:
        fig["imagenet_synthetic_kib_per_image"] = round(kib, 1)
        parts.append("synthetic JPEGs of %.0f KiB on average (ImageNet's are about 110 KiB): an upper bound" % kib)
    text = "; ".join(parts)
    if problems:
        return False, "; ".join(problems) + (" | " + text if text else ""), fig
    return True, text, fig


# -------------------------------------------------------------------------------------------- sweep
def results_under(root):
    out = []
    for p in sorted(glob.glob(os.path.join(root, "**", "result.json"), recursive=True)):
        j = parse_json(read(p)) or {}
        out.append({"run": os.path.relpath(os.path.dirname(p), root), "status": j.get("status"),
                    "device": j.get("device"), "final_test_error": j.get("final_test_error")})
    return out


def demo_rows():
    try:
        import tomllib
    except ImportError:
        return None
    f = facts_of("sweep").get("tables")
    try:
        with open(os.path.join(f, "demo.toml"), "rb") as fh:
            return len(tomllib.load(fh).get("row", []))
    except (OSError, ValueError, TypeError):
        return None


def facts_of(gate):
    return facts(os.path.join(WORK, gate))


def judge_sweep(d):
    f = facts(d)
    problems, fig = [], {}
    for s in ("demo_synth", "demo_fetch"):
        if rc(d, s) not in (None, 0):
            problems.append("%s failed: %s" % (s, why(d, s)))
    if problems:
        return False, "; ".join(problems), fig
    want = demo_rows()
    for name, root, expect, label in (("sweep", f.get("runs"), want, "--gpus 0 --jobs 2"),
                                       ("visible", f.get("visible_runs"), 1, "CUDA_VISIBLE_DEVICES=0, no --gpus")):
        res = results_under(root) if root else []
        fig[name] = {"exit": rc(d, name), "runs": res,
                     "slots": [l for l in read(os.path.join(d, name + ".err")).splitlines() if "slot" in l][:2]}
        if rc(d, name) != 0:
            problems.append("sweep %s failed: %s" % (label, why(d, name)))
        if not res:
            problems.append("sweep %s: no finished run" % label)
        elif expect is not None and len(res) != expect:
            problems.append("sweep %s: %d finished runs, expected %s" % (label, len(res), expect))
        for r in res:
            if r["status"] != "finished" or not str(r["device"]).startswith(DEVICE):
                problems.append("sweep %s: run %s %s on %s" % (label, r["run"], r["status"], r["device"]))
    warn = warning_lines([os.path.join(d, "sweep_logs.txt"), os.path.join(d, "sweep.err"), os.path.join(d, "visible.err")]
                         + glob.glob(os.path.join(f.get("runs", "/nonexistent"), "**", "train.log"), recursive=True)
                         + glob.glob(os.path.join(f.get("visible_runs", "/nonexistent"), "**", "train.log"), recursive=True))
    fig["warning_lines"] = len(warn)
    fig["warning_examples"] = warn[:5]
    if warn:
        problems.append("%d warning lines in the sweep's logs, e.g. %s" % (len(warn), warn[0]))
    if problems:
        return False, "; ".join(problems), fig
    def row(run):  # <dataset>/<arch>,<settings>/seed<n> -> arch
        parts = run.split("/")
        return parts[1].split(",")[0] if len(parts) > 1 else run
    errs = ", ".join("%s %.1f%%" % (row(r["run"]), r["final_test_error"] or 0) for r in fig["sweep"]["runs"])
    return True, "%d demo runs finished on %s with --jobs 2 (test error %s); CUDA_VISIBLE_DEVICES=0 without --gpus " \
                 "trained on %s; 0 warning lines" % (len(fig["sweep"]["runs"]), fig["sweep"]["runs"][0]["device"], errs,
                                                    fig["visible"]["runs"][0]["device"]), fig


# ----------------------------------------------------------------------------------------- negative
def judge_negative(d):
    problems, fig = [], {}
    err99 = read(os.path.join(d, "cuda99.err")).strip()
    fig["cuda99"] = {"exit": rc(d, "cuda99"), "message": err99[-400:]}
    if rc(d, "cuda99") in (None, 0, 124, 137):
        problems.append("--device cuda:99 was not refused (exit %s)" % rc(d, "cuda99"))
    elif "99" not in err99:
        problems.append("--device cuda:99 refused without naming the device: %r" % err99[-200:])
    path = "/nonexistent/libtorch_cuda.so"
    j = out_json(d, "missing_cuda")
    err = read(os.path.join(d, "missing_cuda.err"))
    cuda = (j or {}).get("cuda") or {}
    fig["missing_cuda"] = {"exit": rc(d, "missing_cuda"), "available": cuda.get("available"),
                           "reason": cuda.get("reason"), "stderr": err.strip()[-400:]}
    if j is not None:
        if cuda.get("available") is not False:
            problems.append("with WRN_LIBTORCH_CUDA=%s doctor reports cuda.available %s" % (path, cuda.get("available")))
        elif path not in str(cuda.get("reason")):
            problems.append("the reason does not name %s: %r" % (path, cuda.get("reason")))
    elif rc(d, "missing_cuda") in (None, 0) or path not in err:
        problems.append("with WRN_LIBTORCH_CUDA=%s doctor printed no JSON and no error naming it: %s" % (
            path, why(d, "missing_cuda")))
    if problems:
        return False, "; ".join(problems), fig
    return True, "cuda:99 refused (%s); missing libtorch_cuda.so explained (%s)" % (
        err99.splitlines()[-1][:160] if err99 else "", (cuda.get("reason") or err.strip().splitlines()[-1])[:200]), fig


# --------------------------------------------------------------------------------------------- main
def cut(text, head=150, tail=250):
    lines = text.splitlines()
    if len(lines) <= head + tail + 20:
        return text
    return "\n".join(lines[:head] + ["... %d lines left out ..." % (len(lines) - head - tail)] + lines[-tail:]) + "\n"


def main():
    cmd = sys.argv[1]
    if cmd == "gate":
        name, d, rec = sys.argv[2], sys.argv[3], sys.argv[4]
        budget = int(os.environ.get("GA_BUDGET", "0"))
        ok, summary, fig = globals()["judge_" + name](d)
        if os.path.exists(os.path.join(d, "timed_out")) and not fig.get("budget_overrun_judged"):
            ok, summary = False, "timed out after %d s; %s" % (budget, summary)
        record = {"name": name, "status": "pass" if ok else "fail", "summary": summary,
                  "seconds": float(os.environ.get("GA_SECONDS", "0")), "budget_seconds": budget, "figures": fig}
        with open(rec, "w") as f:
            json.dump(record, f, indent=1, default=str)
    elif cmd == "line":
        r = json.load(open(sys.argv[2]))
        print("%s %s: %s" % ("PASS" if r["status"] == "pass" else "FAIL", r["name"], r["summary"]))
    elif cmd == "passed":
        sys.exit(0 if json.load(open(sys.argv[2])).get("status") == "pass" else 1)
    elif cmd == "rate":
        print(rate_line(sys.argv[2]))
    elif cmd == "logs":
        work, dest, gates = sys.argv[2], sys.argv[3], sys.argv[4:]
        with open(dest, "w") as out:
            for g in gates:
                d = os.path.join(work, g)
                if not os.path.isdir(d):
                    continue
                for p in sorted(glob.glob(os.path.join(d, "*"))):
                    if os.path.isfile(p):
                        out.write("===== %s/%s\n" % (g, os.path.basename(p)))
                        out.write(cut(read(p)))
                        out.write("\n")
    elif cmd == "rehearsal":
        doc = json.load(open(sys.argv[2]))
        gates = {g["name"]: g for g in doc["gates"]}
        # The gates a CPU must fail, and what their summaries must say (the reason is the CPU, not the script).
        cpu_fails = {"environment": "cuda.available is False", "graphs": "CUDA graphs on cpu"}
        wrong = []
        for n, g in gates.items():
            must = cpu_fails.get(n)
            if not (g["status"] == "fail" and must in g["summary"] if must else g["status"] == "pass"):
                wrong.append("%s %s: %s" % (g["status"], n, g["summary"][:300]))
        if wrong:
            print("rehearsal: the script misbehaves on the CPU:\n  " + "\n  ".join(wrong))
            sys.exit(1)
        print("rehearsal: every gate ran; %s failed as a CPU must and the other %d passed" % (
            " and ".join(sorted(cpu_fails)), len(gates) - len(cpu_fails)))
    elif cmd == "final":
        recs, dest, status, started, wall, binary, gates = (sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5],
                                                            int(sys.argv[6]), sys.argv[7], sys.argv[8:])
        records, lines = [], []
        for g in gates:
            r = parse_json(read(os.path.join(recs, g + ".json")))
            if r is None:
                r = {"name": g, "status": "skipped", "summary": "not run: preflight failed", "figures": {}}
            records.append(r)
            word = {"pass": "PASS", "fail": "FAIL"}.get(r["status"], "SKIP")
            lines.append("%s %s: %s" % (word, g, r["summary"]))
        import datetime
        doc = {"check": "ci/gpu-acceptance.sh", "rehearsal": REHEARSAL, "started": started,
               "finished": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
               "wall_seconds": wall, "binary": binary,
               "result": {0: "pass", 1: "fail", 2: "preflight-failed"}.get(status, "fail"), "exit_code": status,
               "passed": sum(r["status"] == "pass" for r in records),
               "failed": sum(r["status"] == "fail" for r in records), "gates": records}
        with open(dest, "w") as f:
            json.dump(doc, f, indent=1, default=str)
            f.write("\n")
        print("\n".join(lines))


if __name__ == "__main__":
    main()
PY
}

# ---------------------------------------------------------------------------------------------------
# rehearse OUTDIR: `run` on this machine's CPU at toy sizes (see the top of this file).
rehearse() {
  DEV=cpu SWEEP_GPUS=none
  export GA_REHEARSAL=1
  SPEED_CONFIGS=(
    "wrn28-bf16-cl|WRN-10-1 b16 bf16+CL (rehearsal)|wrn-10-1|16|bf16|1|3|0.01|1"
    "wrn28-fp32|WRN-10-1 b16 fp32 (rehearsal)|wrn-10-1|16|fp32|0|3|"
    "wrn16-bf16-cl|WRN-10-2 b16 bf16+CL (rehearsal)|wrn-10-2|16|bf16|1|3|"
    "wrn50-bf16-cl|WRN-50-2 b2 224² bf16+CL (rehearsal)|resnet-50-w2|2|bf16|1|1|"
  )
  PEER_WARMUP=1 SPEED_STEP_CAP=240
  GRAPHS_ARCH=wrn-10-1 GRAPHS_BATCH=16 GRAPHS_STEPS=3
  # 2048 / 128 = 16 steps per epoch, 2 epochs; interrupted in the second.
  TRAIN_ARCH=wrn-10-1 TRAIN_N=2560 TRAIN_SUBSET=2048 TEST_SUBSET=512 TRAIN_MAX_STEPS=24
  IMAGENET_N=64 DEMO_N=500
  local g
  for g in "${GATES[@]}"; do BUDGET[$g]=$((BUDGET[$g] * 4 + 60)); done
  run "$@"
  local status=$?
  [ "$status" -ne 2 ] || return 2
  # What a CPU explains: environment (no CUDA) and graphs (refused on the CPU) fail; every other gate passes.
  "$PY" "$WORK/judge.py" rehearsal "$OUT/gpu-acceptance.json"
}

main() {
  case "${1:-}" in
    stage) stage ;;
    run) shift; run "$@" ;;
    rehearse) shift; rehearse "$@" ;;
    *) echo "usage: $0 stage | run OUTDIR | rehearse OUTDIR" >&2; return 2 ;;
  esac
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  main "$@"
  exit $?
fi
