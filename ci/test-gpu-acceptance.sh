#!/usr/bin/env bash
# What of ci/gpu-acceptance.sh can be checked without a GPU: its syntax (and shellcheck where installed),
# that `run` stops at preflight with exit status 2, a reason and a valid gpu-acceptance.json when there is
# no NVIDIA driver, when a (fake) nvidia-smi reports a driver older than 580 or a GPU older than sm_75,
# when the system's glibc is older than the binary needs (a fake ldd), and when there is no python3; and
# that the PyTorch peer script compiles. `make test-gpu-acceptance`; uses target/release/wrn when built.
set -u
self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
cd "$(dirname "$0")/.." || exit 1
script=ci/gpu-acceptance.sh
pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok: $*"; }
bad() { fail=$((fail + 1)); echo "FAILED: $*"; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
binary=
[ -x target/release/wrn ] && binary=$PWD/target/release/wrn

# PATH without any nvidia-smi, plus a folder for fakes put first.
clean_path=
IFS=: read -ra dirs <<<"$PATH"
for d in "${dirs[@]}"; do
  [ -n "$d" ] && [ ! -e "$d/nvidia-smi" ] && clean_path=${clean_path:+$clean_path:}$d
done
mkdir -p "$tmp/fake"

# run_case NAME [VAR=VALUE ...]: the script's run mode with that environment; its exit status in $rc.
run_case() {
  local name=$1
  shift
  env "$@" GPU_ACCEPTANCE_WORK="$tmp/$name.work" bash "$script" run "$tmp/$name" >"$tmp/$name.log" 2>&1
  rc=$?
}

# expect_stop NAME PATTERN: exit 2, the JSON says preflight failed for a reason matching PATTERN, the other
# gates are skipped, and the last lines are one per gate.
expect_stop() {
  local name=$1 pattern=$2 json=$tmp/$1/gpu-acceptance.json
  if [ "$rc" -ne 2 ]; then
    bad "$name: exit status $rc, expected 2"; sed 's/^/    /' "$tmp/$name.log"; return
  fi
  if ! python3 - "$json" "$pattern" <<'PY'; then
import json, re, sys
doc = json.load(open(sys.argv[1]))
pre = doc["gates"][0]
assert doc["exit_code"] == 2 and doc["result"] == "preflight-failed", doc
assert pre["name"] == "preflight" and pre["status"] == "fail", pre
assert re.search(sys.argv[2], pre["summary"]), pre["summary"]
names = [g["name"] for g in doc["gates"]]
assert names == ["preflight", "environment", "parity", "speed", "train", "graphs", "pipeline", "sweep", "negative"], names
assert all(g["status"] == "skipped" for g in doc["gates"][1:]), doc["gates"]
PY
    bad "$name: gpu-acceptance.json"; return
  fi
  if ! grep -qE "^FAIL preflight: .*($pattern)" "$tmp/$name.log"; then
    bad "$name: no 'FAIL preflight: ...' line matching '$pattern'"; sed 's/^/    /' "$tmp/$name.log"; return
  fi
  if [ "$(tail -n 9 "$tmp/$name.log" | grep -cE '^(PASS|FAIL|SKIP) [a-z]+: ')" -ne 9 ]; then
    bad "$name: the last 9 lines are not one per gate"; return
  fi
  ok "$name: stops at preflight ($(grep -m1 -oE "$pattern" "$tmp/$name/gpu-acceptance.json"))"
}

if bash -n "$script" && bash -n "$self"; then ok "bash -n"; else bad "bash -n"; fi
if command -v shellcheck >/dev/null 2>&1; then
  if shellcheck "$script" "$self"; then ok "shellcheck"; else bad "shellcheck"; fi
fi
if python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read())' benches/peers/pytorch_train_step.py; then
  ok "pytorch_train_step.py parses"
else
  bad "pytorch_train_step.py does not parse"
fi

if [ -r /proc/driver/nvidia/version ]; then
  echo "skipped: no-driver case (this machine has an NVIDIA driver)"
else
  run_case no-driver PATH="$clean_path" ${binary:+WRN_BIN=$binary}
  expect_stop no-driver 'no NVIDIA driver \(nvidia-smi not found / /proc/driver/nvidia/version missing\)'
fi

fake_smi() { # fake_smi DRIVER CAPABILITY
  cat >"$tmp/fake/nvidia-smi" <<EOF
#!/bin/sh
echo "0, NVIDIA H200, $1, 143771, $2"
EOF
  chmod +x "$tmp/fake/nvidia-smi"
}
fake_smi 550.54.14 9.0
run_case old-driver PATH="$tmp/fake:$clean_path" ${binary:+WRN_BIN=$binary}
expect_stop old-driver 'NVIDIA driver 550\.54\.14 is older than 580'

fake_smi 580.95.05 7.0
run_case old-gpu PATH="$tmp/fake:$clean_path" ${binary:+WRN_BIN=$binary}
expect_stop old-gpu 'compute capability 7\.0'
if grep -q 'older than 580' "$tmp/old-gpu/gpu-acceptance.json"; then bad "old-gpu: driver 580 refused"; fi

if [ -n "$binary" ]; then
  printf '#!/bin/sh\necho "ldd (GNU libc) 2.17"\n' >"$tmp/fake/ldd" && chmod +x "$tmp/fake/ldd"
  run_case old-glibc PATH="$tmp/fake:$clean_path" WRN_BIN="$binary"
  expect_stop old-glibc 'glibc 2\.17 here, the wrn binary needs 2\.[0-9]+'
  rm -f "$tmp/fake/ldd"
else
  echo "skipped: old-glibc case (no target/release/wrn; make build first)"
fi

run_case no-python PATH="$clean_path" PYTHON=/nonexistent/python3
expect_stop no-python 'no /nonexistent/python3 on PATH'

# The speed gate's judge on hand-written outputs: when the gate's budget runs out, an ungated configuration
# left unmeasured is a note and the gate still passes on its gated one; the gated one unmeasured, or a wrn
# failure that is not the budget's, fails it.
# shellcheck source=ci/gpu-acceptance.sh
(source "$script" && write_judge "$tmp/judge.py")
speed_case() { # speed_case NAME TIMED_OUT(0/1) GATED_WRN_RC UNGATED_WRN_RC EXPECT(pass/fail) PATTERN
  local d=$tmp/speed-$1 r side
  mkdir -p "$d"
  printf '%s\n' "a|WRN-28-10 gated|wrn-28-10|128|bf16|1|40|0.8|" "b|WRN-16-4 ungated|wrn-16-4|128|bf16|1|100|" \
    >"$d/configs.txt"
  for r in 1 2; do
    for side in wrn torch; do
      echo '{"images_per_second": 1000.0, "parameters": 36479194}' >"$d/a.$side.$r.out"; echo 0 >"$d/a.$side.$r.rc"
      echo '{"images_per_second": 5000.0, "parameters": 2748890}' >"$d/b.$side.$r.out"; echo 0 >"$d/b.$side.$r.rc"
    done
    : >"$d/a.wrn.$r.err"; : >"$d/b.wrn.$r.err"
  done
  if [ "$3" != 0 ]; then : >"$d/a.wrn.2.out"; echo "$3" >"$d/a.wrn.2.rc"; : >"$d/a.wrn.1.out"; echo "$3" >"$d/a.wrn.1.rc"; fi
  if [ "$4" != 0 ]; then
    : >"$d/b.wrn.2.out"; echo "$4" >"$d/b.wrn.2.rc"; echo "error: boom" >"$d/b.wrn.2.err"
    : >"$d/b.torch.2.out"; echo "$4" >"$d/b.torch.2.rc"
    : >"$d/b.wrn.1.out"; echo "$4" >"$d/b.wrn.1.rc"; echo "error: boom" >"$d/b.wrn.1.err"
  fi
  if [ "$2" = 1 ]; then echo 150 >"$d/timed_out"; fi
  GA_BUDGET=150 GA_SECONDS=151 GA_DEVICE=cuda python3 "$tmp/judge.py" gate speed "$d" "$d/rec.json" 2>"$d/judge.err"
  if python3 - "$d/rec.json" "$5" "$6" <<'PY'; then ok "speed judge, $1: $5"; else bad "speed judge, $1"; cat "$d/judge.err"; fi
import json, re, sys
r = json.load(open(sys.argv[1]))
assert r["status"] == sys.argv[2], r
assert re.search(sys.argv[3], r["summary"]), r["summary"]
assert r["figures"]["wrn_warmup_steps"] == 3, r["figures"]
PY
}
speed_case ungated-out-of-budget 1 0 124 pass 'WRN-16-4 ungated: wrn not measured, the gate.s 150 s ran out'
speed_case gated-out-of-budget 1 124 0 fail 'WRN-28-10 gated: no wrn/PyTorch ratio'
speed_case ungated-failed 0 0 1 fail 'WRN-16-4 ungated: wrn failed: error: boom'
speed_case ungated-killed-not-budget 0 0 124 fail 'WRN-16-4 ungated: wrn failed'

echo "gpu-acceptance: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
