#!/usr/bin/env bash
# Tests of ci/libtorch.sh's failure paths, against small wheels made here in the real wheel format and
# offered to pip through a local --find-links directory (pip's real download path; no network). The CUDA
# tree's tests use tiny real ELF libraries (gcc) with the DT_NEEDED of the real ones, a fake driver version
# file and a stub `ldconfig`/`nvidia-smi`, so they give the same result on machines with and without a GPU.
# Ends with the line "libtorch-bootstrap: N passed, N failed".
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
script=$here/libtorch.sh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
unset LIBTORCH LIBTORCH_USE_PYTORCH PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_FIND_LINKS PIP_NO_INDEX
unset WRN_CUDA WRN_CUDA_MIN_FREE_MB WRN_NVIDIA_VERSION_FILE WRN_LIBTORCH_CUDA_LOCK WRN_LIBTORCH_RUNTIME
passed=0 failed=0

pass() { passed=$((passed + 1)); echo "ok   $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $1"; sed 's/^/     | /' "$work/out" "$work/err" 2>/dev/null | tail -n 15; }
check() { local name=$1; shift; if "$@"; then pass "$name"; else fail "$name"; fi; }

# Fake wheels with the members the script unpacks and the metadata pip reads. The CUDA libraries are tiny
# real ELF shared libraries whose DT_NEEDED are those of the real ones (a subset), so the closure check
# reads real dynamic sections.
wheels=$work/index
mkdir -p "$wheels" "$work/index-broken"
python3 - "$wheels" "$work/index-broken" "$here/libtorch-cuda.lock" "$work/elf" <<'PY' || { echo "FAIL cannot make the fake wheels"; exit 1; }
import os, subprocess, sys, zipfile
out, broken, cuda_lock, elf_dir = sys.argv[1:]
os.makedirs(os.path.join(elf_dir, "stubs"))
empty = os.path.join(elf_dir, "empty.o")
subprocess.run(["gcc", "-c", "-fPIC", "-x", "c", "-o", empty, "-"], input=b"int wrn_fake;\n", check=True)

def so(path, needed):
    """A shared library whose SONAME is its file name and whose DT_NEEDED are exactly `needed`."""
    stubs = []
    for n in needed:  # a library of that SONAME to link against, so that the linker records it
        stub = os.path.join(elf_dir, "stubs", n)
        if not os.path.exists(stub):
            subprocess.run(["gcc", "-shared", "-nostdlib", "-o", stub, empty, f"-Wl,-soname,{n}"], check=True)
        stubs.append(stub)
    target = os.path.join(elf_dir, path.replace("/", "_"))
    subprocess.run(["gcc", "-shared", "-nostdlib", "-o", target, empty, f"-Wl,-soname,{os.path.basename(path)}",
                    "-Wl,--no-as-needed", *stubs], check=True)
    with open(target, "rb") as f:
        return f.read()

def wheel(directory, file, name, version, members):
    dist = f"{name.replace('-', '_')}-{version}.dist-info"
    with zipfile.ZipFile(os.path.join(directory, file), "w") as z:
        for path, data in members.items():
            z.writestr(path, data)
        z.writestr(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        z.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\n")
        z.writestr(f"{dist}/RECORD", "")

cuda_deps = ["libtorch_nvshmem.so", "libc10_cuda.so", "libcudart.so.13", "libcusparse.so.12", "libcufft.so.12",
             "libcufile.so.0", "libcusparseLt.so.0", "libnccl.so.2", "libcurand.so.10", "libcublas.so.13",
             "libcublasLt.so.13", "libcudnn.so.9", "libc10.so", "libtorch_cpu.so", "libstdc++.so.6", "libc.so.6",
             "ld-linux-x86-64.so.2"]
wheel(out, "torch-2.11.0-cp311-cp311-manylinux_2_28_x86_64.whl", "torch", "2.11.0", {
    "torch/include/torch/torch.h": "// header\n",
    "torch/include/ATen/ATen.h": "// header\n",
    "torch/lib/libtorch_cpu.so": "cpu" * 1000,
    "torch/lib/libtorch_cuda.so": so("torch/lib/libtorch_cuda.so", cuda_deps),
    "torch/lib/libc10_cuda.so": so("torch/lib/libc10_cuda.so", ["libc10.so", "libcudart.so.13", "libc.so.6"]),
    "torch/lib/libtorch_nvshmem.so": so("torch/lib/libtorch_nvshmem.so",
                                        ["libtorch_cpu.so", "libnvshmem_host.so.3", "libgomp.so.1"]),
    "torch/lib/libcaffe2_nvrtc.so": so("torch/lib/libcaffe2_nvrtc.so", ["libnvrtc.so.13", "libcuda.so.1"]),
    "torch/lib/libtorch_cuda_linalg.so": so("torch/lib/libtorch_cuda_linalg.so",
                                            ["libtorch_cuda.so", "libcusolver.so.12", "libcublas.so.13"]),
    "torch/lib/libtorch_python.so": so("torch/lib/libtorch_python.so", ["libtorch_cuda.so", "libpython3.11.so.1.0"]),
    "torch/lib/libtorch_global_deps.so": "python only",
    "torch/lib/libtorch.so": "torch",
    "torch/lib/libc10.so": "c10" * 100,
    "torch/lib/libgomp.so.1": "gomp",
    "torch/version.py": "from typing import Optional\n__version__ = '2.11.0+cu130'\n",
})
wheel(out, "nvidia_cuda_runtime-13.0.96-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
      "nvidia-cuda-runtime", "13.0.96", {"nvidia/cu13/lib/libcudart.so.13": "cudart",
                                         "nvidia/cu13/include/cuda_runtime_api.h": "// header\n"})
wheel(out, "nvidia_cuda_cupti-13.0.85-py3-none-manylinux_2_25_x86_64.whl",
      "nvidia-cuda-cupti", "13.0.85", {"nvidia/cu13/lib/libcupti.so.13": "cupti"})

# The CUDA wheels of the real lock, holding what its `#provides` lines promise, plus members that must be
# unpacked (another shared library), left out by `#omit` (plugins needing MPI or RDMA), or skipped
# (headers, static archives).
provides = {}
for line in open(cuda_lock):
    words = line.split()
    if words and words[0] in ("#provides", "#headers") and words[1] != "nvidia-cuda-runtime":
        provides.setdefault(words[1], []).extend(words[2:])
deps = {"libcublas.so.13": ["libcublasLt.so.13"], "libcusparse.so.12": ["libnvJitLink.so.13"],
        "libcusolver.so.12": ["libnvJitLink.so.13", "libcusparse.so.12", "libcublas.so.13", "libcublasLt.so.13"],
        "libcudnn_graph.so.9": ["libz.so.1", "libc.so.6"], "libcufftw.so.12": ["libcufft.so.12"],
        "nvshmem_bootstrap_mpi.so.3": ["libmpi.so.40"], "libcufile_rdma.so.1": ["libibverbs.so.1", "libcufile.so.0"]}
extra = {"nvidia-cufft": ["nvidia/cu13/lib/libcufftw.so.12", "nvidia/cu13/include/cufft.h"],
         "nvidia-cufile": ["nvidia/cu13/lib/libcufile_rdma.so.1"],
         "nvidia-nvshmem-cu13": ["nvidia/nvshmem/lib/nvshmem_bootstrap_mpi.so.3",
                                 "nvidia/nvshmem/lib/nvshmem_bootstrap_uid.so.3",
                                 "nvidia/nvshmem/lib/libnvshmem_device.a"]}
for line in open(cuda_lock):
    words = line.split()
    if not words or words[0].startswith("#"):
        continue
    name, version, _platform, _sha, file = words
    members = {}
    for m in provides.get(name, []) + extra.get(name, []):
        base = os.path.basename(m)
        if ".so" not in base:
            members[m] = "not a library"
        else:
            default = ["libcudnn_graph.so.9"] if base.startswith("libcudnn_") else ["libc.so.6"]
            members[m] = so(m, deps.get(base, default))
    wheel(out, file, name, version, members)
    # The same wheel without libcublasLt.so.13, for the failures of the closure check and of the unpack.
    if name == "nvidia-cublas":
        members.pop("nvidia/cu13/lib/libcublasLt.so.13")
        wheel(broken, file, name, version, members)
PY
lock=$work/libtorch.lock
# The real lock's lines, with the hashes of the fake wheels.
while read -r name version platform sha file; do
  case "$name" in ''|'#'*) continue ;; esac
  echo "$name $version $platform $(sha256sum "$wheels/$file" | cut -d' ' -f1) $file"
done < "$here/libtorch.lock" > "$lock"
relock() { # a lock file, a wheel directory: the lock with the hashes of that directory's wheels
  while IFS= read -r line; do
    read -r name version platform _ file <<<"$line"
    case "$name" in ''|'#'*) echo "$line"; continue ;; esac
    echo "$name $version $platform $(sha256sum "$2/$file" | cut -d' ' -f1) $file"
  done < "$1"
}
# The real CUDA lock with the hashes of the fake wheels (its `#provides` and `#omit` lines as they are).
mkdir -p "$work/cuda"
cuda_lock=$work/cuda/libtorch-cuda.lock
relock "$here/libtorch-cuda.lock" "$wheels" > "$cuda_lock"

# The machine as the script sees it: no NVIDIA driver unless a test says otherwise, whatever this machine
# has (a stub `ldconfig`, and a version file that does not exist).
mkdir -p "$work/sys-none" "$work/sys-libcuda"
printf '#!/bin/sh\nexit 0\n' > "$work/sys-none/ldconfig"
printf '#!/bin/sh\nprintf "\\tlibcuda.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so.1\\n"\n' \
  > "$work/sys-libcuda/ldconfig"
printf '#!/bin/sh\necho 535.54.03\n' > "$work/sys-libcuda/nvidia-smi"
chmod +x "$work"/sys-*/*
driver() { # writes a /proc/driver/nvidia/version of that driver version; prints its path
  printf 'NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  %s  Release Build  (dvs-builder@U16-I3-B03-4-3)  Thu Oct 16 00:00:00 UTC 2025\nGCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n' \
    "$1" > "$work/driver-$1"
  echo "$work/driver-$1"
}

run() { # runs the script with the test cache and the local wheels; output in $work/out, $work/err
  env WRN_CACHE_DIR="${CACHE:-$work/cache}" WRN_LIBTORCH_LOCK="${LOCK:-$lock}" \
    WRN_LIBTORCH_CUDA_LOCK="${CUDA_LOCK:-$cuda_lock}" WRN_NVIDIA_VERSION_FILE="${DRIVER:-$work/no-driver}" \
    PATH="${SYS:-$work/sys-none}:$PATH" PIP_NO_INDEX=1 PIP_FIND_LINKS="${INDEX:-$wheels}" \
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
check "CPU tree's name unchanged (<version>-<digest of the lock and layout=1>)" \
  test "$t" = "$work/cache/libtorch/2.11.0-$( (cat "$lock"; echo "layout=1") | sha256sum | cut -c1-12)"
check "CPU mode prints LIBTORCH and LD_LIBRARY_PATH only" test "$(wc -l < "$work/out")" = 2

# 2. A warm cache is reused, quickly and without pip.
start=$(date +%s%N)
PIP_FIND_LINKS=/nonexistent run; rc=$?
ms=$(( ($(date +%s%N) - start) / 1000000 ))
check "warm cache reused (${ms} ms)" test "$rc" = 0 -a "$(tree)" = "$t" -a "$ms" -lt 1000
check "warm run prints nothing but the exports" test ! -s "$work/err"
rm -f "$work/cache/.libtorch.lock"
run
check "warm run writes nothing (no lock file: a ready cache can be shared read-only)" test ! -e "$work/cache/.libtorch.lock"
check "tree's mode follows the umask (readable by others under 022), not mktemp's 700" \
  test "$(stat -c %a "$t")" = "$(printf '%o' $(( 0777 & ~$(umask) )))"

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


# 12. The CUDA tree (WRN_CUDA=1 on a machine without a driver): pip's layout, link/ for cargo, the exports.
# The wheel cache starts with every wheel but one of the CUDA lock's (pip's download path is the CPU
# tree's, tested above; one pip call per wheel would make this test slow).
export CACHE=$work/cuda-cache
mkdir -p "$CACHE/wheels" && cp "$wheels"/*.whl "$CACHE/wheels/" && rm "$CACHE/wheels/nvidia_cublas-"*.whl
WRN_CUDA=1 run; rc=$?
t=$(tree); t=${t%/link}
check "WRN_CUDA=1 without a driver builds the CUDA tree" test "$rc" = 0 -a -f "$t/.manifest"
check "the missing CUDA wheel is downloaded with pip" grep -q "^libtorch: downloading nvidia-cublas==13.1.0.3" "$work/err"
check "CUDA tree is named <version>+cu130-<digest>" eval '[[ "$t" =~ ^$CACHE/libtorch/2\.11\.0\+cu130-[0-9a-f]{12}$ ]]'
check "no driver: the driver check is skipped with a note" grep -q "no NVIDIA driver on this machine (WRN_CUDA=1): skipping the driver check" "$work/err"
check "closure check passes, with libcuda.so.1 and zlib from the system" \
  grep -q "^closure: .* all inside the tree or from the system (.*libcuda.so.1.*libz.so.1)" "$work/err"
printf "export LIBTORCH='%s/link'\nexport WRN_LIBTORCH_RUNTIME='%s/torch/lib'\nexport LD_LIBRARY_PATH='%s/torch/lib'%s\n" \
  "$t" "$t" "$t" '${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}' > "$work/want"
check "exports LIBTORCH=<tree>/link, WRN_LIBTORCH_RUNTIME and LD_LIBRARY_PATH=<tree>/torch/lib" cmp -s "$work/out" "$work/want"
missing=
for f in torch/lib/libtorch_cpu.so torch/lib/libtorch.so torch/lib/libc10.so torch/lib/libgomp.so.1 \
         torch/lib/libtorch_cuda.so torch/lib/libc10_cuda.so torch/lib/libtorch_nvshmem.so torch/lib/libcaffe2_nvrtc.so \
         torch/lib/libtorch_cuda_linalg.so torch/include/torch/torch.h torch/include/ATen/ATen.h \
         nvidia/cu13/lib/libcudart.so.13 nvidia/cu13/lib/libcupti.so.13 nvidia/cu13/lib/libcublas.so.13 \
         nvidia/cu13/lib/libcublasLt.so.13 nvidia/cu13/lib/libcusolver.so.12 nvidia/cu13/lib/libcufftw.so.12 \
         nvidia/cu13/lib/libnvrtc.so.13 nvidia/cudnn/lib/libcudnn.so.9 nvidia/cudnn/lib/libcudnn_graph.so.9 \
         nvidia/cudnn/lib/libcudnn_engines_precompiled.so.9 nvidia/nccl/lib/libnccl.so.2 \
         nvidia/cusparselt/lib/libcusparseLt.so.0 nvidia/nvshmem/lib/libnvshmem_host.so.3 \
         nvidia/nvshmem/lib/nvshmem_bootstrap_uid.so.3; do
  [ -f "$t/$f" ] || missing="$missing $f"
done
check "pip's layout: torch/lib, torch/include, nvidia/*/lib${missing:+ (missing:$missing)}" test -z "$missing"
check "torch/lib/libgomp.so links to libgomp.so.1" test "$(readlink "$t/torch/lib/libgomp.so")" = libgomp.so.1
check "torch/build-version is the wheel's version" grep -qx '2.11.0+cu130' "$t/torch/build-version"
check "Python's libraries, omitted plugins and archives of nvidia wheels left out" \
  test ! -e "$t/torch/lib/libtorch_python.so" -a ! -e "$t/torch/lib/libtorch_global_deps.so" \
  -a ! -e "$t/nvidia/nvshmem/lib/nvshmem_bootstrap_mpi.so.3" -a ! -e "$t/nvidia/cu13/lib/libcufile_rdma.so.1" \
  -a ! -e "$t/nvidia/nvshmem/lib/libnvshmem_device.a"
check "the nvidia wheels' headers unpacked (the CUDA extension's: runtime, crt, cccl, nccl; and the rest)" \
  test -f "$t/nvidia/cu13/include/cuda_runtime_api.h" -a -f "$t/nvidia/cu13/include/crt/host_config.h" \
  -a -f "$t/nvidia/cu13/include/nv/target" -a -f "$t/nvidia/nccl/include/nccl.h" -a -f "$t/nvidia/cu13/include/cufft.h"
check "link/include is torch/include, link/build-version is there" \
  test "$(readlink "$t/link/include")" = ../torch/include -a -f "$t/link/include/torch/torch.h" -a -f "$t/link/build-version"
check "link/lib holds the CPU libraries, all resolving, and no libtorch_cuda.so" eval \
  'test "$(ls "$t/link/lib" | tr "\n" " ")" = "libc10.so libcudart.so.13 libcupti.so.13 libgomp.so libgomp.so.1 libtorch.so libtorch_cpu.so " &&
   test -z "$(find -L "$t/link/lib" -type l)"'

# 13. A warm CUDA tree is reused, silently; a driver that is new enough (auto) picks the same tree.
start=$(date +%s%N)
WRN_CUDA=1 INDEX=/nonexistent run; rc=$?
ms=$(( ($(date +%s%N) - start) / 1000000 ))
check "warm CUDA tree reused (${ms} ms), nothing on stderr" test "$rc" = 0 -a ! -s "$work/err" -a "$ms" -lt 1000 \
  -a "$(tree)" = "$t/link"
DRIVER=$(driver 580.95.05) run; rc=$?
check "WRN_CUDA=auto with driver 580.95.05 uses the CUDA tree" test "$rc" = 0 -a "$(tree)" = "$t/link"
DRIVER=$(driver 580.95.05) run env WRN_CUDA=0; rc=$?
check "WRN_CUDA=0 with a driver keeps the CPU tree" test "$rc" = 0 -a "$(tree)" = "$CACHE/libtorch/2.11.0-$( (cat "$lock"; echo "layout=1") | sha256sum | cut -c1-12)"

# 14. A damaged CUDA tree is rebuilt; --verify catches same-size corruption.
rm "$t/nvidia/cudnn/lib/libcudnn_ops.so.9"
WRN_CUDA=1 run; rc=$?
check "missing cuDNN library detected and the tree rebuilt" test "$rc" = 0 -a -f "$t/nvidia/cudnn/lib/libcudnn_ops.so.9"
printf 'X' | dd of="$t/nvidia/cu13/lib/libcublasLt.so.13" bs=1 seek=100 conv=notrunc status=none
WRN_CUDA=1 ARGS=--verify run; rc=$?
check "--verify finds same-size corruption in the CUDA tree and rebuilds" \
  eval 'test "$rc" = 0 && grep -q corrupt "$work/err" && (cd "$t" && sha256sum --quiet --check .sha256)'

# 15. A driver too old for CUDA 13.0 is refused before anything is downloaded, forced or not.
export CACHE=$work/old-driver-cache
DRIVER=$(driver 550.54.14) run; rc=$?
check "auto with driver 550.54.14 refused" test "$rc" != 0 -a ! -s "$work/out"
check "old driver: says which driver is needed and what to do" eval \
  'grep -q "the NVIDIA driver is 550.54.14, but the pinned torch 2.11.0 wheels are built for CUDA 13.0, which needs driver 580 or newer" "$work/err" &&
   grep -q "Upgrade the NVIDIA driver to 580 or newer" "$work/err" && grep -q "point LIBTORCH at a libtorch 2.11.0" "$work/err" &&
   grep -q "WRN_CUDA=0" "$work/err"'
DRIVER=$(driver 550.54.14) run env WRN_CUDA=1; rc=$?
check "WRN_CUDA=1 with driver 550.54.14 refused too" eval 'test "$rc" != 0 && grep -q "needs driver 580 or newer" "$work/err"'
SYS=$work/sys-libcuda run; rc=$?
check "driver found by ldconfig, version by nvidia-smi (535.54.03): refused" \
  eval 'test "$rc" != 0 && grep -q "the NVIDIA driver is 535.54.03" "$work/err"'
check "old driver: nothing downloaded" test -z "$(find "$CACHE" -name '*.whl' 2>/dev/null)"

# 16. Too little free space is refused before anything is downloaded.
export CACHE=$work/full-disk-cache
WRN_CUDA=1 WRN_CUDA_MIN_FREE_MB=999999999 run; rc=$?
check "too little disk space refused" test "$rc" != 0 -a ! -s "$work/out"
check "too little disk: says how much, where, and what to do" eval \
  'grep -q "the CUDA libtorch needs about 999999999 MB free in $CACHE .*, but only [0-9]* MB are free there" "$work/err" &&
   grep -q "set WRN_CACHE_DIR to a directory on a disk with room" "$work/err"'
check "too little disk: nothing downloaded" test -z "$(find "$CACHE" -name '*.whl' 2>/dev/null)"

# 17. A library that nothing provides fails the closure check, which names it; nothing is installed.
export CACHE=$work/broken-cache
mkdir -p "$CACHE" && cp -r "$work/cuda-cache/wheels" "$CACHE/"
for f in "$wheels"/*.whl; do [ -e "$work/index-broken/$(basename "$f")" ] || cp "$f" "$work/index-broken/"; done
mkdir -p "$work/broken" "$work/broken-unpromised"
relock "$cuda_lock" "$work/index-broken" > "$work/broken/libtorch-cuda.lock"
sed 's|^#provides nvidia-cublas .*|#provides nvidia-cublas nvidia/cu13/lib/libcublas.so.13|' "$work/broken/libtorch-cuda.lock" \
  > "$work/broken-unpromised/libtorch-cuda.lock"
INDEX=$work/index-broken CUDA_LOCK=$work/broken-unpromised/libtorch-cuda.lock run env WRN_CUDA=1; rc=$?
check "missing SONAME: the closure check fails" test "$rc" != 0 -a ! -s "$work/out"
check "missing SONAME: names the library and what it needs" eval \
  'grep -q "^closure: nvidia/cu13/lib/libcublas.so.13 needs libcublasLt.so.13, which no file of the tree provides" "$work/err" &&
   grep -q "^closure: torch/lib/libtorch_cuda.so needs libcublasLt.so.13" "$work/err" &&
   grep -q "not self-contained" "$work/err"'
check "missing SONAME: no tree and no leftovers" test -z "$(find "$CACHE/libtorch" -mindepth 1 -maxdepth 1 2>/dev/null)"
# The same wheel, with the lock still promising the library: the unpack says which wheel lacks it.
INDEX=$work/index-broken CUDA_LOCK=$work/broken/libtorch-cuda.lock run env WRN_CUDA=1; rc=$?
check "a wheel without a library its #provides line promises is refused, naming both" eval \
  'test "$rc" != 0 && grep -q "nvidia_cublas-13.1.0.3-py3-none-manylinux_2_27_x86_64.whl lacks nvidia/cu13/lib/libcublasLt.so.13 (libtorch-cuda.lock says nvidia-cublas provides it)" "$work/err"'

# 18. WRN_CUDA is checked; a user's own LIBTORCH still wins.
unset CACHE
WRN_CUDA=yes run; rc=$?
check "WRN_CUDA=yes refused" eval 'test "$rc" != 0 && grep -q "WRN_CUDA='"'"'yes'"'"': expected auto" "$work/err"'
LIBTORCH=$work/mine WRN_CUDA=1 run; rc=$?
check "user's LIBTORCH wins over WRN_CUDA=1" \
  eval 'test "$rc" = 0 && test "$(tree)" = "$work/mine" && ! grep -q WRN_LIBTORCH_RUNTIME "$work/out"'

# 19. The real torch wheel's CUDA libraries need nothing the locks do not provide (read from the cached
# wheel, when `make build` has downloaded it; no download here).
real_cache=${WRN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/wrn}
torch_wheel=$real_cache/wheels/$(awk '$1 == "torch" { print $5 }' "$here/libtorch.lock")
if [ -f "$torch_wheel" ]; then
  python3 "$here/libtorch-elf.py" needed "$torch_wheel" torch/lib/libtorch_cuda.so torch/lib/libc10_cuda.so \
    torch/lib/libtorch_nvshmem.so torch/lib/libcaffe2_nvrtc.so torch/lib/libtorch_cuda_linalg.so > "$work/needed" 2>&1
  python3 - "$work/needed" "$here/libtorch.lock" "$here/libtorch-cuda.lock" > "$work/coverage" 2>&1 <<'PY'; rc=$?
import os, re, sys
needed_file, cpu_lock, cuda_lock = sys.argv[1:]
system = re.compile(r"^(libc\.so\.6|libm\.so\.6|libdl\.so\.2|libpthread\.so\.0|librt\.so\.1|libutil\.so\.1"
                    r"|libgcc_s\.so\.1|libstdc\+\+\.so\.6|ld-linux[-\w.]*\.so\.\d+|libcuda\.so\.1)$")
pinned = {l.split()[0] for f in (cpu_lock, cuda_lock) for l in open(f) if l.strip() and not l.startswith("#")}
provided = {}
for line in open(cuda_lock):
    words = line.split()
    if words and words[0] == "#provides":
        if words[1] not in pinned:
            print(f"#provides names {words[1]}, which neither lock pins")
            sys.exit(1)
        provided.update((os.path.basename(m), words[1]) for m in words[2:])
# What the CUDA tree takes from the torch wheel itself.
provided.update((lib, "torch") for lib in ["libtorch_cpu.so", "libtorch.so", "libc10.so", "libgomp.so.1",
                "libtorch_cuda.so", "libc10_cuda.so", "libtorch_nvshmem.so", "libcaffe2_nvrtc.so", "libtorch_cuda_linalg.so"])
bad, count = [], 0
for line in open(needed_file):
    lib, needed = line.rstrip("\n").split("\t")
    count += 1
    if needed not in provided and not system.match(needed):
        bad.append(f"{lib} needs {needed}, which no wheel of the locks provides")
print("\n".join(bad) or f"{count} DT_NEEDED entries, each from a wheel of the locks or the system")
sys.exit(1 if bad or count == 0 else 0)
PY
  check "every DT_NEEDED of the real libtorch_cuda.so, libc10_cuda.so, libtorch_nvshmem.so... is in a locked wheel ($(tail -n 1 "$work/coverage"))" \
    test "$rc" = 0
  [ "$rc" = 0 ] || sed 's/^/     | /' "$work/needed" "$work/coverage" | tail -n 20
else
  echo "skip every DT_NEEDED of the real CUDA libraries is in a locked wheel (skipped: no cached torch wheel at $torch_wheel)"
fi

# 12. No pip (or no Python) for the wheels: the message says what to install, and nothing is half-built.
rm -rf "$work/cache"
mkdir -p "$work/nopip" && printf '#!/bin/sh\n[ "$1" = -m ] && exit 1\nexec %s "$@"\n' "$(command -v python3)" > "$work/nopip/python3" \
  && chmod +x "$work/nopip/python3"
run env PATH="$work/nopip:$PATH"; rc=$?
check "python3 without pip refused" test "$rc" != 0
check "python3 without pip says what to install" grep -q "python3 with pip is needed to download and unpack the pinned libtorch wheels, and 'python3 -m pip' does not run. Install Python 3.8 or newer with pip" "$work/err"
check "python3 without pip leaves no tree" test -z "$(find "$work/cache" -name .manifest 2>/dev/null)"

echo "libtorch-bootstrap: $passed passed, $failed failed"
[ "$failed" = 0 ]
