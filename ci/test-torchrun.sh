#!/usr/bin/env bash
# `wrn train` launched by PyTorch's own torchrun (from the peer venv, benches/peers/venv.sh), as the README's
# torchrun command does: two ranks on this machine's CPU over Gloo, with the static rendezvous (a store on
# MASTER_PORT served by torchrun's agent) and with --standalone (c10d rendezvous on a free port). Each must
# finish one short epoch as one run of two ranks, without a store error in its log.
# `make test-torchrun`; usage: ci/test-torchrun.sh [WRN_BIN]
set -u
cd "$(dirname "$0")/.." || exit 1
wrn=$(cd "$(dirname "${1:-target/release/wrn}")" && pwd)/$(basename "${1:-target/release/wrn}")
python=$(benches/peers/venv.sh) || exit 1
torchrun=$(dirname "$python")/torchrun
pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok   $*"; }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
[ -f target/libtorch.env ] && . ./target/libtorch.env

"$wrn" data synth cifar10 --out "$work/synth" --n 512 --seed 0 >/dev/null 2>&1 &&
  "$wrn" data --data-dir "$work/data" --manifest "$work/synth/cifar10.toml" fetch cifar10 >/dev/null 2>&1 ||
  { echo "torchrun: cannot make the synthetic CIFAR-10"; exit 1; }
port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

# check NAME TORCHRUN-OPTIONS...: torchrun starts two ranks of one run; it must finish as one run.
check() {
  local name=$1 run=$work/$1
  shift
  if timeout 300 "$torchrun" --nnodes 1 --nproc-per-node 2 "$@" --no-python "$wrn" train \
      --set arch=wrn-10-1 --set dropout=0 --set scale.epochs=0.005 --set scale.train_subset=256 \
      --set scale.test_subset=64 --set device=cpu --set "data.dir='$work/data'" \
      --set "data.manifest='$work/synth/cifar10.toml'" --out "$run" >"$work/$name.log" 2>&1; then
    ok "$name: torchrun and both ranks exit 0"
  else
    bad "$name: torchrun failed"; tail -n 30 "$work/$name.log"; return
  fi
  if "$python" - "$run" <<'PY'; then ok "$name: one run of 2 ranks finished"; else bad "$name: the run"; fi
import json, sys
run = sys.argv[1]
result = json.load(open(run + "/result.json"))
env = json.load(open(run + "/environment.json"))
assert result["status"] == "finished" and "2 ranks" in result["device"], result
assert env["ranks"]["size"] == 2 and env["ranks"]["backend"] == "gloo", env["ranks"]
PY
  if grep -qE 'failed to bind|EADDRINUSE|Traceback' "$work/$name.log"; then
    bad "$name: a store error in the log"; grep -E 'failed to bind|EADDRINUSE|Traceback' "$work/$name.log" | head -3
  else
    ok "$name: no store error in the log"
  fi
}

check static --rdzv-backend static --master-addr 127.0.0.1 --master-port "$port" --node-rank 0
check standalone --standalone

echo "torchrun: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
