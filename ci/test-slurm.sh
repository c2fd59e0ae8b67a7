#!/usr/bin/env bash
# `wrn sweep --slurm` against a real single-node Slurm: installs Debian's slurm-wlm when missing, starts
# slurmctld and slurmd on this machine (no munge, ports of their own, state in a temporary folder),
# submits the array script the sweep writes for the demo table at smoke scale, and checks that every task
# trained its run, that a task resumes a run left with a checkpoint, that a second sweep has nothing
# left to submit, and that runs trained over two ranks (an srun step of two tasks, data parallel over
# Gloo) finish. CPU only: `--gres gpu:1` cannot be scheduled here.
# Usage: ci/test-slurm.sh [path/to/wrn]. Ends with "slurm: N passed, N failed".
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
wrn=$(realpath "${1:-$root/target/release/wrn}")
work=$(mktemp -d)
passed=0 failed=0
pass() { passed=$((passed + 1)); echo "ok   $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $1"; }
check() { local name=$1; shift; if "$@"; then pass "$name"; else fail "$name"; fi; }

stop_daemons() {
  for pid in "$work"/slurmctld.pid "$work"/slurmd.pid; do
    [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null
  done
  sleep 1
  rm -rf "$work"
}
trap stop_daemons EXIT

if ! command -v slurmctld >/dev/null || ! command -v sbatch >/dev/null; then
  if [ "$(id -u)" != 0 ]; then
    echo "slurm: slurm-wlm is not installed and installing it needs root: apt-get install -y slurm-wlm" >&2
    exit 1
  fi
  echo "slurm: installing Debian's slurm-wlm"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm >/dev/null) || {
    echo "slurm: apt-get install slurm-wlm failed" >&2
    exit 1
  }
fi

host=$(hostname -s)
cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) - 1024 ))
mkdir -p "$work"/{state,spool,log}
export SLURM_CONF=$work/slurm.conf
cat > "$SLURM_CONF" <<CONF
ClusterName=wrn-test
SlurmctldHost=$host
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/none
CredType=cred/none
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/log/slurmctld.log
SlurmdLogFile=$work/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
MpiDefault=none
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=main Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
slurmctld -c -f "$SLURM_CONF" || { echo "slurm: slurmctld did not start" >&2; exit 1; }
slurmd -f "$SLURM_CONF" || { echo "slurm: slurmd did not start" >&2; exit 1; }
for _ in $(seq 60); do
  sinfo -h -o %t 2>/dev/null | grep -q idle && break
  sleep 0.5
done
check "the node comes up idle" sh -c 'sinfo -h -o %t | grep -q idle'

# Synthetic CIFAR-10, fetched and prepared like the real one.
"$wrn" data synth cifar10 --out "$work/synth" --n 300 --seed 0 >/dev/null 2>&1
"$wrn" data --data-dir "$work/data" --manifest "$work/synth/cifar10.toml" fetch cifar10 >/dev/null 2>&1
sweep_into() {
  local runs=$1; shift
  "$wrn" sweep --table demo --scale smoke --runs "$runs" \
    --set "data.dir='$work/data'" --set "data.manifest='$work/synth/cifar10.toml'" "$@"
}
sweep() { sweep_into "$work/runs" "$@"; }

# One run left half-done, as a preempted task leaves it: the task must resume it.
first=$(sweep --dry-run --slurm --cpus-per-task 1 | sed -n 's/^wrote //p')
check "the sweep writes an array script" test -f "$first"
half=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["runs"][0]["dir"])' "${first%.sbatch}.tasks.json")
python3 - "${first%.sbatch}.tasks.json" > "$work/half.args" <<'PY'
import json, sys
run = json.load(open(sys.argv[1]))["runs"][0]
for s in run["sets"]:
    print("--set"); print(s)
PY
mapfile -t half_args < "$work/half.args"
"$wrn" train "${half_args[@]}" --set device=cpu --set checkpoint_steps=1 --out "$half" --max-steps 2 >/dev/null 2>&1
check "a half-done run has a checkpoint" test -f "$half/checkpoint.safetensors"

script=$(sweep --slurm --cpus-per-task 1 --time 00:10:00 | sed -n 's/^wrote //p')
check "sbatch accepts the script (--test-only)" sbatch --test-only "$script"
if sbatch --wait "$script" > "$work/sbatch.out" 2>&1; then pass "every array task succeeds"; else fail "every array task succeeds"; cat "$work/sbatch.out" "$work"/runs/slurm/*.out 2>/dev/null | tail -20; fi
n=$(grep -l '"status": "finished"' "$work"/runs/cifar10/*/seed1/result.json 2>/dev/null | wc -l)
check "all 3 demo runs finished through Slurm ($n)" test "$n" = 3
check "the half-done run was resumed, not restarted" grep -q "resumed at epoch" "$half/train.log"
check "task output is in the runs folder" sh -c "ls '$work'/runs/slurm/*.out >/dev/null"
again=$(sweep --slurm --cpus-per-task 1)
check "a second sweep has nothing to submit" grep -q "nothing to submit: every run is finished" <<<"$again"

# One run over two ranks: the array task is an srun step of two tasks, each a rank of the run's c10d group.
# The runs folder's name holds a space: the script's --output path must stay one argument to sbatch.
multi=$(sweep_into "$work/two ranks" --slurm --cpus-per-task 1 --nodes 1 --tasks-per-node 2 --time 00:10:00 | sed -n 's/^wrote //p')
check "a run over ranks asks for a node and two tasks on it" grep -q -- "--ntasks-per-node=2" "$multi"
if sbatch --wait "$multi" > "$work/sbatch-ranks.out" 2>&1; then pass "every two-rank task succeeds"; else fail "every two-rank task succeeds"; cat "$work/sbatch-ranks.out" "$work"/two\ ranks/slurm/*.out "$work"/two\ ranks/cifar10/*/seed1/sweep.log 2>/dev/null | tail -30; fi
n=$(grep -l '"status": "finished"' "$work"/two\ ranks/cifar10/*/seed1/result.json 2>/dev/null | wc -l)
check "all 3 demo runs finished over two ranks ($n)" test "$n" = 3
n=$(ls "$work"/two\ ranks/slurm/*.out 2>/dev/null | wc -l)
check "their task output is in the runs folder whose name has a space ($n)" test "$n" = 3
n=$(grep -l "data parallel over 2 ranks" "$work"/two\ ranks/cifar10/*/seed1/train.log 2>/dev/null | wc -l)
check "each run says it trained over two ranks ($n)" test "$n" = 3

# A GPU script for a cluster: Slurm parses its options.
gpu=$(sweep_into "$work/gpu-runs" --slurm --gres gpu:1 --partition main --time 1-00:00:00 | sed -n 's/^wrote //p')
check "a --gres gpu:1 script asks for a GPU per task" grep -q -- "--gres=gpu:1" "$gpu"
check "its tasks train on cuda" grep -q '"device": "cuda"' "${gpu%.sbatch}.tasks.json"
spelled=$(sweep_into "$work/gpu-spelled" --slurm --sbatch=--gpus-per-task=1 --partition main | sed -n 's/^wrote //p')
check "a GPU asked for with --sbatch=--gpus-per-task=1 makes cuda tasks" grep -q '"device": "cuda"' "${spelled%.sbatch}.tasks.json"
nodes=$(sweep_into "$work/gpu-nodes" --slurm --nodes 2 --gpus-per-node 4 --partition main --time 1-00:00:00 | sed -n 's/^wrote //p')
check "a two-node script asks for 4 GPUs and 4 ranks per node" sh -c "grep -q -- '--gres=gpu:4' '$nodes' && grep -q -- '--ntasks-per-node=4' '$nodes' && grep -q -- '--nodes=2' '$nodes'"

echo "slurm: $passed passed, $failed failed"
[ "$failed" = 0 ]
