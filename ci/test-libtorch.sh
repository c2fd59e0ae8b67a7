#!/usr/bin/env bash
# Tests of ci/libtorch.sh's failure paths, against small wheels made here in the real wheel format and
# offered to pip through a local --find-links directory (pip's real download path; no network).
# Ends with the line "libtorch-bootstrap: N passed, N failed".
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
script=$here/libtorch.sh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
unset LIBTORCH LIBTORCH_USE_PYTORCH PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_FIND_LINKS PIP_NO_INDEX
passed=0 failed=0

pass() { passed=$((passed + 1)); echo "ok   $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $1"; sed 's/^/     | /' "$work/out" "$work/err" 2>/dev/null | tail -n 15; }
check() { local name=$1; shift; if "$@"; then pass "$name"; else fail "$name"; fi; }

# Fake wheels with the members the script unpacks and the metadata pip reads.
wheels=$work/index
mkdir -p "$wheels"
python3 - "$wheels" <<'PY'
import sys, zipfile, os
out = sys.argv[1]
def wheel(file, name, version, members):
    dist = f"{name.replace('-', '_')}-{version}.dist-info"
    with zipfile.ZipFile(os.path.join(out, file), "w") as z:
        for path, data in members.items():
            z.writestr(path, data)
        z.writestr(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        z.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\n")
        z.writestr(f"{dist}/RECORD", "")
wheel("torch-2.11.0-cp311-cp311-manylinux_2_28_x86_64.whl", "torch", "2.11.0", {
    "torch/include/torch/torch.h": "// header\n",
    "torch/include/ATen/ATen.h": "// header\n",
    "torch/lib/libtorch_cpu.so": "cpu" * 1000,
    "torch/lib/libtorch_cuda.so": "must not be unpacked",
    "torch/lib/libtorch.so": "torch",
    "torch/lib/libc10.so": "c10" * 100,
    "torch/lib/libgomp.so.1": "gomp",
    "torch/version.py": "from typing import Optional\n__version__ = '2.11.0+cu130'\n",
})
wheel("nvidia_cuda_runtime-13.0.96-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
      "nvidia-cuda-runtime", "13.0.96", {"nvidia/cu13/lib/libcudart.so.13": "cudart"})
wheel("nvidia_cuda_cupti-13.0.85-py3-none-manylinux_2_25_x86_64.whl",
      "nvidia-cuda-cupti", "13.0.85", {"nvidia/cu13/lib/libcupti.so.13": "cupti"})
PY
lock=$work/libtorch.lock
# The real lock's lines, with the hashes of the fake wheels.
while read -r name version platform sha file; do
  case "$name" in ''|'#'*) continue ;; esac
  echo "$name $version $platform $(sha256sum "$wheels/$file" | cut -d' ' -f1) $file"
done < "$here/libtorch.lock" > "$lock"

run() { # runs the script with the test cache and the local wheels; output in $work/out, $work/err
  env WRN_CACHE_DIR="$work/cache" WRN_LIBTORCH_LOCK="${LOCK:-$lock}" PIP_NO_INDEX=1 PIP_FIND_LINKS="$wheels" \
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$@" "$script" ${ARGS:-} >"$work/out" 2>"$work/err"
}
tree() { sed -n "s/^export LIBTORCH='\(.*\)'$/\1/p" "$work/out"; }

# 1. A cold cache is built from the wheels; only the CPU part is unpacked.
run; rc=$?
t=$(tree)
check "cold cache is built and exported" test "$rc" = 0 -a -n "$t" -a -f "$t/.manifest"
check "exports LD_LIBRARY_PATH at the tree's lib/" grep -q "^export LD_LIBRARY_PATH='$t/lib'" "$work/out"
check "unpacks headers and CPU libraries" test -f "$t/include/torch/torch.h" -a -f "$t/lib/libtorch_cpu.so" \
  -a -f "$t/lib/libcudart.so.13" -a -f "$t/lib/libcupti.so.13" -a -L "$t/lib/libgomp.so"
check "leaves libtorch_cuda.so out" test ! -e "$t/lib/libtorch_cuda.so"
check "records build-version" grep -qx '2.11.0+cu130' "$t/build-version"

# 2. A warm cache is reused, quickly and without pip.
start=$(date +%s%N)
PIP_FIND_LINKS=/nonexistent run; rc=$?
ms=$(( ($(date +%s%N) - start) / 1000000 ))
check "warm cache reused (${ms} ms)" test "$rc" = 0 -a "$(tree)" = "$t" -a "$ms" -lt 1000
check "warm run prints nothing but the exports" test ! -s "$work/err"

# 3. A partial cache (a library missing) is detected and rebuilt.
rm "$t/lib/libc10.so"
run; rc=$?
check "missing library detected and rebuilt" test "$rc" = 0 -a -f "$t/lib/libc10.so"
check "rebuild is announced" grep -q "incomplete or damaged; rebuilding" "$work/err"

# 4. A truncated file is detected and rebuilt.
: > "$t/lib/libtorch_cpu.so"
run; rc=$?
check "truncated library detected and rebuilt" test "$rc" = 0 -a "$(stat -c %s "$t/lib/libtorch_cpu.so")" = 3000

# 5. An interrupted unpack (no manifest yet) is rebuilt.
rm "$t/.manifest"
run; rc=$?
check "tree without manifest rebuilt" test "$rc" = 0 -a -f "$t/.manifest"

# 6. Same-size corruption is caught by --verify.
printf 'X' | dd of="$t/lib/libtorch.so" bs=1 seek=0 conv=notrunc status=none
ARGS=--verify run; rc=$?
check "--verify finds same-size corruption and rebuilds" test "$rc" = 0 -a "$(head -c 5 "$t/lib/libtorch.so")" = torch

# 7. A wheel whose SHA-256 differs from the pin is rejected, deleted, and nothing is installed.
bad=$work/bad.lock
sed 's/^\(torch *[^ ]* *[^ ]* *\)[0-9a-f]\{64\}/\10000000000000000000000000000000000000000000000000000000000000000/' "$lock" > "$bad"
rm -rf "$work/cache"
LOCK=$bad run; rc=$?
check "wrong hash exits non-zero" test "$rc" != 0
check "wrong hash names file, expected and actual" grep -q "SHA-256 mismatch for torch-2.11.0-cp311-cp311-manylinux_2_28_x86_64.whl: expected 0000000000000000000000000000000000000000000000000000000000000000, got [0-9a-f]\{64\}" "$work/err"
check "wrong hash leaves no wheel, download or tree" test -z "$(find "$work/cache" -name '*.whl' -o -name '.download.*' -o -name .manifest)"
check "wrong hash prints no exports" test ! -s "$work/out"

# 8. A corrupted wheel left in the wheel cache is downloaded again.
run >/dev/null; cached=$work/cache/wheels/torch-2.11.0-cp311-cp311-manylinux_2_28_x86_64.whl
echo garbage > "$cached"; rm -rf "$work/cache/libtorch"
run; rc=$?
check "corrupt cached wheel replaced" test "$rc" = 0 -a "$(sha256sum "$cached" | cut -d' ' -f1)" = "$(sha256sum "$wheels/$(basename "$cached")" | cut -d' ' -f1)"

# 9. An unreachable registry gives a clear message.
rm -rf "$work/cache"
WRN_CACHE_DIR=$work/cache WRN_LIBTORCH_LOCK=$lock PIP_INDEX_URL=http://127.0.0.1:9/simple PIP_RETRIES=0 PIP_TIMEOUT=2 \
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$script" >"$work/out" 2>"$work/err"; rc=$?
check "unreachable registry exits non-zero" test "$rc" != 0
check "unreachable registry explains itself" grep -q "could not download torch==2.11.0 from the package index (http://127.0.0.1:9/simple)" "$work/err"

# 10. A user's own LIBTORCH is respected, and a wrong one is refused.
mkdir -p "$work/mine/lib" "$work/mine/include" && touch "$work/mine/lib/libtorch_cpu.so"
LIBTORCH=$work/mine run; rc=$?
check "user's LIBTORCH used as is" test "$rc" = 0 -a "$(tree)" = "$work/mine"
LIBTORCH=$work/nowhere run; rc=$?
check "wrong LIBTORCH refused with reason" eval 'test "$rc" != 0 && grep -q "has no lib/libtorch_cpu.so" "$work/err"'

# 11. LIBTORCH_USE_PYTORCH without an importable torch is refused with a reason.
mkdir -p "$work/bin" && printf '#!/bin/sh\nexit 1\n' > "$work/bin/python3" && chmod +x "$work/bin/python3"
LIBTORCH_USE_PYTORCH=1 run env PATH="$work/bin:$PATH"; rc=$?
check "LIBTORCH_USE_PYTORCH without torch refused" eval 'test "$rc" != 0 && grep -q "import torch" "$work/err"'

echo "libtorch-bootstrap: $passed passed, $failed failed"
[ "$failed" = 0 ]
