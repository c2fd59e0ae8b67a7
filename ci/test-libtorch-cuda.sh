#!/usr/bin/env bash
# The CUDA libtorch from PyPI, for real (`make test-libtorch-cuda`; not part of `make test`): lays it out with
# `WRN_CUDA=1 ci/libtorch.sh` (about 2.5 GB of wheels the first time, into the usual cache, so the tree
# stays for `make build`), builds wrn against it once in target/cuda (as `make gpu-check` does), and checks, on a machine with or
# without an NVIDIA driver:
#   - the tree is built, self-contained (closure check), verified, and a second run is a no-op;
#   - link/ (the LIBTORCH cargo sees) holds the CPU libraries only;
#   - the binary NEEDs libtorch_cpu, libc10 and system libraries only, with RUNPATH = <tree>/torch/lib;
#   - without LD_LIBRARY_PATH, `wrn doctor --json` runs against the tree's torch/lib, loads its
#     libtorch_cuda.so (so its whole closure loaded) and the CUDA part of wrn's extension (NCCL), built
#     against the tree's headers, and says why CUDA is unavailable, or that it is;
#   - under LD_DEBUG, every library comes from the tree or the system's C/C++ runtime (and libcuda.so.1),
#     and libtorch_cpu.so is mapped once.
#
#   ci/test-libtorch-cuda.sh            use (and fill) ${WRN_CACHE_DIR:-~/.cache/wrn}
#   ci/test-libtorch-cuda.sh --fresh    a temporary cache, removed afterwards: always the full download
# Ends with the line "libtorch-cuda: N passed, N failed".
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
unset LIBTORCH LIBTORCH_USE_PYTORCH WRN_LIBTORCH_RUNTIME WRN_LIBTORCH_CUDA
case "${1:-}" in
  --fresh) export WRN_CACHE_DIR=$work/cache ;;
  '') ;;
  *) echo "usage: $0 [--fresh]" >&2; exit 2 ;;
esac
cache=${WRN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/wrn}
target=$root/target/cuda
passed=0 failed=0

pass() { passed=$((passed + 1)); echo "ok   $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $1"; [ -z "${2:-}" ] || sed 's/^/     | /' "$2" | tail -n 20; }
check() { local name=$1 log=$2; shift 2; if "$@"; then pass "$name"; else fail "$name" "$log"; fi; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
finish() { echo "libtorch-cuda: $passed passed, $failed failed"; [ "$failed" = 0 ]; exit; }

# 1. The tree, built (or found ready) by the bootstrap.
wheels_before=$(find "$cache/wheels" -name '*.whl' 2>/dev/null | wc -l)
start=$(now)
WRN_CUDA=1 "$here/libtorch.sh" >"$work/env" 2>"$work/err"; rc=$?
took=$(since "$start")
sed 's/^/     libtorch.sh: /' "$work/err"
tree=$(sed -n "s/^export LIBTORCH='\(.*\)\/link'$/\1/p" "$work/env")
check "WRN_CUDA=1 ci/libtorch.sh builds or finds the CUDA tree (${took} s)" "$work/err" \
  test "$rc" = 0 -a -n "$tree" -a -f "$tree/.manifest"
[ -n "$tree" ] && [ -d "$tree" ] || finish
check "tree is named <version>+cu<N>-<digest>" /dev/null eval '[[ "$(basename "$tree")" =~ ^2\.11\.0\+cu130-[0-9a-f]{12}$ ]]'
printf "export LIBTORCH='%s/link'\nexport WRN_LIBTORCH_RUNTIME='%s/torch/lib'\nexport LD_LIBRARY_PATH='%s/torch/lib'%s\n" \
  "$tree" "$tree" "$tree" '${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}' >"$work/env.want"
check "exports LIBTORCH=<tree>/link, WRN_LIBTORCH_RUNTIME and LD_LIBRARY_PATH at <tree>/torch/lib" "$work/env" \
  cmp -s "$work/env" "$work/env.want"
downloaded=$(grep -c '^libtorch: downloading ' "$work/err")
# The wheels of both locks, as they lie in the cache.
wheel_bytes=0
while read -r name _ _ _ file _; do
  case "$name" in ''|'#'*) continue ;; esac
  [ ! -f "$cache/wheels/$file" ] || wheel_bytes=$((wheel_bytes + $(stat -c %s "$cache/wheels/$file")))
done < <(cat "$here/libtorch.lock" "$here/libtorch-cuda.lock")
tree_bytes=$(du -sb "$tree" | cut -f1)
echo "     wheels: $(awk -v b="$wheel_bytes" 'BEGIN { printf "%.2f GB", b / 1e9 }') in $(cat "$here/libtorch.lock" "$here/libtorch-cuda.lock" | grep -cv '^\(#\|$\)') files ($downloaded downloaded now, $wheels_before wheels cached before); tree: $(awk -v b="$tree_bytes" 'BEGIN { printf "%.2f GB", b / 1e9 }'), $(find "$tree" -type f | wc -l) files"
if grep -q '^closure: ' "$work/err"; then
  check "closure check of the build passed" "$work/err" grep -q '^closure: .* all inside the tree' "$work/err"
fi

# 2. A second run is a no-op.
start=$(now)
WRN_CUDA=1 "$here/libtorch.sh" >"$work/env2" 2>"$work/err2"; rc=$?
took=$(since "$start")
check "second run is a no-op (${took} s, same exports, silent)" "$work/err2" \
  eval 'test "$rc" = 0 && cmp -s "$work/env" "$work/env2" && test ! -s "$work/err2" &&
        awk -v t="$took" "BEGIN { exit !(t < 2) }"'

# 3. Every file matches the checksums recorded at build time; the closure holds.
start=$(now)
WRN_CUDA=1 "$here/libtorch.sh" --verify >/dev/null 2>"$work/err3"; rc=$?
check "--verify re-hashes the tree and finds it intact ($(since "$start") s)" "$work/err3" \
  eval 'test "$rc" = 0 && ! grep -q corrupt "$work/err3"'
python3 "$here/libtorch-elf.py" closure "$tree" 2>"$work/closure"; rc=$?
sed 's/^/     /' "$work/closure"
check "every DT_NEEDED of every library resolves inside the tree or is a system library" "$work/closure" test "$rc" = 0

# 4. Layout: pip's, with the CPU libraries alone in link/lib.
missing=
for f in torch/lib/libtorch_cpu.so torch/lib/libtorch.so torch/lib/libc10.so torch/lib/libgomp.so.1 \
         torch/lib/libgomp.so torch/lib/libtorch_cuda.so torch/lib/libc10_cuda.so torch/lib/libtorch_nvshmem.so \
         torch/lib/libcaffe2_nvrtc.so torch/lib/libtorch_cuda_linalg.so torch/include/ATen/ATen.h \
         torch/build-version nvidia/cu13/lib/libcudart.so.13 nvidia/cu13/lib/libcublasLt.so.13 \
         nvidia/cudnn/lib/libcudnn.so.9 nvidia/cudnn/lib/libcudnn_engines_precompiled.so.9 \
         nvidia/nccl/lib/libnccl.so.2 nvidia/cusparselt/lib/libcusparseLt.so.0 \
         nvidia/nvshmem/lib/libnvshmem_host.so.3 link/include/torch/csrc/api/include/torch/torch.h link/build-version \
         link/lib/libtorch_cpu.so link/lib/libc10.so link/lib/libcudart.so.13 link/lib/libcupti.so.13; do
  [ -e "$tree/$f" ] || missing="$missing $f"
done
check "pip's layout: torch/lib, torch/include, nvidia/*/lib, link/${missing:+ (missing:$missing)}" /dev/null test -z "$missing"
check "link/lib holds the CPU libraries only (no libtorch_cuda.so)" /dev/null \
  eval 'test -z "$(ls "$tree/link/lib" | grep -v -x -e libtorch_cpu.so -e libtorch.so -e libc10.so -e libgomp.so.1 \
                  -e libgomp.so -e libcudart.so.13 -e libcupti.so.13)"'
check "build-version is 2.11.0+cu130" /dev/null grep -qx '2.11.0+cu130' "$tree/torch/build-version"

# 5. A binary built against it (once, in its own target directory).
echo "     building wrn against $tree/link in $target (the first time takes minutes)"
start=$(now)
(cd "$root" && . "$work/env" && CARGO_TARGET_DIR=$target cargo build --release -p wrn) >"$work/cargo" 2>&1; rc=$?
check "cargo build --release -p wrn against link/ ($(since "$start") s)" "$work/cargo" test "$rc" = 0
bin=$target/release/wrn
[ -x "$bin" ] || finish
readelf -d "$bin" >"$work/readelf"
needed=$(sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p' "$work/readelf" | tr '\n' ' ')
echo "     NEEDED: $needed"
check "the binary NEEDs libtorch_cpu, libc10 and system libraries only" "$work/readelf" \
  eval 'grep -q "\[libtorch_cpu.so\]" "$work/readelf" && test -z "$(echo "$needed" | tr " " "\n" | grep -v -x -E \
        "|libtorch_cpu\.so|libc10\.so|libstdc\+\+\.so\.6|libgcc_s\.so\.1|libm\.so\.6|libc\.so\.6|libdl\.so\.2|libpthread\.so\.0|librt\.so\.1|libutil\.so\.1|ld-linux-x86-64\.so\.2")"'
check "RUNPATH is <tree>/torch/lib (and no RPATH)" "$work/readelf" \
  eval 'grep -q "(RUNPATH).*\[$tree/torch/lib\]$" "$work/readelf" && ! grep -q "(RPATH)" "$work/readelf"'

# 6. It runs against the tree without LD_LIBRARY_PATH, and loads the CUDA backend up to the driver.
env -u LD_LIBRARY_PATH "$bin" doctor --json >"$work/doctor.json" 2>"$work/doctor.err"; rc=$?
python3 - "$work/doctor.json" "$tree" >"$work/doctor.check" 2>&1 <<'PY'; prc=$?
import json, sys
doc, tree = json.load(open(sys.argv[1])), sys.argv[2]
cuda, ok = doc["cuda"], True
def want(what, good):
    global ok
    print(("ok   " if good else "FAIL ") + what)
    ok &= good
want(f"libtorch_dir == {tree}/torch/lib", doc.get("libtorch_dir") == f"{tree}/torch/lib")
want(f"cuda.backend_library == {tree}/torch/lib/libtorch_cuda.so",
     cuda.get("backend_library") == f"{tree}/torch/lib/libtorch_cuda.so")
want("libtorch_version == 2.11.0+cu130", doc.get("libtorch_version") == "2.11.0+cu130")
if cuda.get("available"):
    want("cuda.available with a device", cuda.get("device_count", 0) > 0)
else:
    reason = cuda.get("reason") or ""
    want(f"cuda.available == false because of the driver ({reason!r})",
         "driver" in reason.lower() or "libcuda" in reason)
want("problems == []", doc.get("problems") == [])
ext = cuda.get("extension") or ""
want(f"the CUDA part of the extension (NCCL) is embedded and loaded ({ext or cuda.get('extension_error')!r})",
     "/extension/libwrn_torch_cuda-" in ext)
print("     doctor --json cuda: " + json.dumps(cuda))
sys.exit(0 if ok else 1)
PY
sed 's/^/     /' "$work/doctor.check"
check "env -u LD_LIBRARY_PATH wrn doctor --json (exit $rc) loads the tree's libtorch_cuda.so" "$work/doctor.err" \
  test "$prc" = 0

# 7. Where every library comes from.
env -u LD_LIBRARY_PATH LD_DEBUG=libs,files LD_DEBUG_OUTPUT="$work/ld" "$bin" doctor --json >/dev/null 2>&1
python3 - "$tree" "$work"/ld.* >"$work/ld.check" 2>&1 <<'PY'; rc=$?
import os, re, sys
tree, logs = sys.argv[1], sys.argv[2:]
system = re.compile(r"^(libc\.so\.6|libm\.so\.6|libdl\.so\.2|libpthread\.so\.0|librt\.so\.1|libutil\.so\.1"
                    r"|libgcc_s\.so\.1|libstdc\+\+\.so\.6|ld-linux[-\w.]*\.so\.\d+|libcuda\.so\.1|libz\.so\.1)$")
loaded, trying = [], None
for log in logs:
    for line in open(log, errors="replace"):
        m = re.search(r"trying file=(\S+)", line)
        if m:
            trying = m.group(1)
        m = re.search(r"file=(\S+) \[\d+\];\s+generating link map", line)
        if m:
            name = m.group(1)
            loaded.append(name if name.startswith("/") else trying)
tree = os.path.realpath(tree)
outside = [p for p in loaded
           if not os.path.realpath(p).startswith(tree + "/") and not system.match(os.path.basename(p))]
cpu = [p for p in loaded if os.path.basename(p) == "libtorch_cpu.so"]
inside = [p for p in loaded if os.path.realpath(p).startswith(tree + "/")]
print(f"{len(loaded)} libraries loaded, {len(inside)} from the tree; outside it: "
      + (", ".join(sorted(set(p for p in loaded if p not in inside))) or "none"))
for p in outside:
    print(f"not from the tree nor a system library: {p}")
print(f"libtorch_cpu.so mapped {len(cpu)} time(s): {cpu}")
sys.exit(0 if loaded and not outside and len(cpu) == 1 and any(p.endswith("/libtorch_cuda.so") for p in inside) else 1)
PY
sed 's/^/     /' "$work/ld.check"
check "LD_DEBUG: libraries from the tree or the system only, libtorch_cpu.so once, libtorch_cuda.so loaded" \
  "$work/ld.check" test "$rc" = 0

finish
