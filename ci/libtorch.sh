#!/usr/bin/env bash
# libtorch bootstrap: makes the libtorch that `tch` links against available, and prints the environment
# cargo needs (`export LIBTORCH=...` and `export LD_LIBRARY_PATH=...`) on stdout.
#
#   ci/libtorch.sh            ensure the cache is ready (fast when it is), print the exports
#   ci/libtorch.sh --verify   also re-hash every cached file against the checksums recorded at build time
#
# Where libtorch comes from, in order:
#   1. LIBTORCH set by the user: used as is (must hold lib/libtorch_cpu.so and include/).
#   2. LIBTORCH_USE_PYTORCH=1: the libtorch of the `python3` on PATH (tch's own mechanism).
#   3. Otherwise the pinned PyPI wheels of ci/libtorch.lock are downloaded with `pip download`, each checked
#      against its SHA-256, and only what a CPU build needs is unpacked into
#      ${WRN_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/wrn}/libtorch/<version>-<lock digest>/.
#      The unpacked tree is complete only once its `.manifest` exists; a tree whose files do not match the
#      manifest (partial unpack, deleted or truncated file) is rebuilt. pip's own variables (PIP_INDEX_URL,
#      PIP_FIND_LINKS, proxies...) are honoured.
#   3'. With CUDA, the wheels of ci/libtorch-cuda.lock too (about 2.5 GB in all), unpacked in pip's layout
#      (torch/lib beside nvidia/*/lib, so the wheels' own $ORIGIN/../../nvidia RPATHs work) into
#      .../libtorch/<version>+cu<N>-<digest>/, checked to be self-contained (every DT_NEEDED inside the tree
#      or a C library / libcuda.so.1), with a `link/` directory for cargo holding the CPU libraries only (so
#      the binary links libtorch_cpu and loads libtorch_cuda.so at run time). LIBTORCH is then `link/`, and
#      WRN_LIBTORCH_RUNTIME (the binary's RUNPATH) and LD_LIBRARY_PATH are its `torch/lib`.
#      WRN_CUDA=auto (default): CUDA when an NVIDIA driver is present (/proc/driver/nvidia/version, or
#      libcuda.so.1 known to ldconfig); WRN_CUDA=1: always (the driver check is skipped without a driver);
#      WRN_CUDA=0: never. The driver must be new enough for the wheels' CUDA (580 for CUDA 13.0) and the
#      cache's disk must have room (WRN_CUDA_MIN_FREE_MB overrides the estimate); otherwise nothing is
#      downloaded and the error says what to do. WRN_NVIDIA_VERSION_FILE replaces /proc/driver/nvidia/version.
# Messages go to stderr; nothing but the exports goes to stdout.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
lock=${WRN_LIBTORCH_LOCK:-$here/libtorch.lock}
cuda_lock=${WRN_LIBTORCH_CUDA_LOCK:-$here/libtorch-cuda.lock}
cache=${WRN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/wrn}
verify=0

say() { echo "libtorch: $*" >&2; }
die() { echo "libtorch: error: $*" >&2; exit 1; }

for arg in "$@"; do
  case "$arg" in
    --verify) verify=1 ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}" >&2; exit 0 ;;
    *) die "unknown argument '$arg' (try --help)" ;;
  esac
done

print_env() { # libtorch dir, lib dir
  printf "export LIBTORCH='%s'\n" "$1"
  printf "export LD_LIBRARY_PATH='%s'\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}\n" "$2"
}

# 1. The user's own libtorch.
if [ -n "${LIBTORCH:-}" ]; then
  [ -f "$LIBTORCH/lib/libtorch_cpu.so" ] || die "LIBTORCH=$LIBTORCH has no lib/libtorch_cpu.so; unset LIBTORCH to use the pinned wheels"
  [ -d "$LIBTORCH/include" ] || die "LIBTORCH=$LIBTORCH has no include/ directory"
  say "using LIBTORCH=$LIBTORCH (set by you)"
  print_env "$LIBTORCH" "$LIBTORCH/lib"
  exit 0
fi

# 2. The libtorch of an installed PyTorch.
if [ -n "${LIBTORCH_USE_PYTORCH:-}" ]; then
  torch_lib=$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__) + "/lib")' 2>/dev/null) \
    || die "LIBTORCH_USE_PYTORCH is set but 'python3 -c \"import torch\"' fails; install torch or unset it"
  say "using PyTorch's libtorch at $torch_lib (LIBTORCH_USE_PYTORCH is set)"
  printf "export LIBTORCH_USE_PYTORCH='%s'\n" "$LIBTORCH_USE_PYTORCH"
  printf "export LD_LIBRARY_PATH='%s'\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}\n" "$torch_lib"
  exit 0
fi

# 3. The pinned wheels.
cuda_mode=${WRN_CUDA:-auto}
case "$cuda_mode" in
  auto|1|0) ;;
  *) die "WRN_CUDA='$cuda_mode': expected auto (CUDA when an NVIDIA driver is present), 1 or 0" ;;
esac

# The NVIDIA driver: present when its kernel module reports a version, or the loader knows libcuda.so.1.
driver_file=${WRN_NVIDIA_VERSION_FILE:-/proc/driver/nvidia/version}
driver_present=0 driver_version=''
if [ -e "$driver_file" ]; then
  driver_present=1
  # "NVRM version: NVIDIA UNIX [Open ]Kernel Module [for x86_64]  580.95.05  Release Build ..."
  driver_version=$(head -n 1 "$driver_file" 2>/dev/null | grep -oE '[[:space:]][0-9]+\.[0-9]+(\.[0-9]+)?([[:space:]]|$)' \
    | head -n 1 | tr -d '[:space:]' || true)
elif "$(command -v ldconfig || echo /sbin/ldconfig)" -p 2>/dev/null | grep -q '[[:space:]]libcuda\.so\.1[[:space:]]'; then
  driver_present=1
fi
if [ "$driver_present" = 1 ] && [ -z "$driver_version" ] && command -v nvidia-smi >/dev/null 2>&1; then
  driver_version=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1 | tr -d '[:space:]' || true)
fi
[[ "$driver_version" =~ ^[0-9]+(\.[0-9]+)*$ ]] || driver_version=
use_cuda=0
case "$cuda_mode" in
  1) use_cuda=1 ;;
  auto) use_cuda=$driver_present ;;
esac

names=() versions=() platforms=() hashes=() files=()
read_lock() { # appends the pins of a lock file to the arrays above
  local name version platform sha file rest
  [ -f "$1" ] || die "lock file $1 not found"
  while read -r name version platform sha file rest; do
    case "$name" in ''|'#'*) continue ;; esac
    [ -n "$file" ] && [ -z "$rest" ] || die "$1: malformed line for '$name' (want: name version platform sha256 file)"
    [[ "$sha" =~ ^[0-9a-f]{64}$ ]] || die "$1: '$sha' is not a SHA-256 for $name"
    for n in "${names[@]}"; do [ "$n" != "$name" ] || die "$1: $name is pinned twice"; done
    names+=("$name") versions+=("$version") platforms+=("$platform") hashes+=("$sha") files+=("$file")
  done < "$1"
}
read_lock "$lock"
[ "${#names[@]}" -gt 0 ] || die "$lock lists no wheels"
torch_version='' cudart_version=''
for i in "${!names[@]}"; do
  case "${names[$i]}" in
    torch) torch_version=${versions[$i]} ;;
    nvidia-cuda-runtime) cudart_version=${versions[$i]} ;;
  esac
done
[ -n "$torch_version" ] || die "$lock has no torch line"

# The tree's name changes with the pins and with the unpack rules below (bump `layout` or `cuda_layout`
# when they change).
layout=1
if [ "$use_cuda" = 0 ]; then
  digest=$( (cat "$lock"; echo "layout=$layout") | sha256sum | cut -c1-12)
  dest=$cache/libtorch/$torch_version-$digest
else
  cuda_layout=2
  read_lock "$cuda_lock"
  [ -n "$cudart_version" ] || die "$lock has no nvidia-cuda-runtime line (it sets the CUDA version of the CUDA tree)"
  cuda_version=$(echo "$cudart_version" | cut -d. -f1-2)    # 13.0.96 -> 13.0
  case "${cuda_version%%.*}" in                              # the driver each CUDA major version needs
    13) min_driver=580 ;; 12) min_driver=525 ;; 11) min_driver=450 ;;
    *) die "no known minimum NVIDIA driver for CUDA $cuda_version" ;;
  esac
  digest=$( (cat "$lock" "$cuda_lock"; echo "layout=$layout cuda_layout=$cuda_layout") | sha256sum | cut -c1-12)
  dest=$cache/libtorch/$torch_version+cu${cuda_version//./}-$digest
  instead="point LIBTORCH at a libtorch $torch_version built for the CUDA your driver supports (or set LIBTORCH_USE_PYTORCH=1 with such a PyTorch installed), with LD_LIBRARY_PATH at its lib/; or set WRN_CUDA=0 for the CPU-only libtorch"
  if [ -n "$driver_version" ] && [ "${driver_version%%.*}" -lt "$min_driver" ]; then
    die "the NVIDIA driver is $driver_version, but the pinned torch $torch_version wheels are built for CUDA $cuda_version, which needs driver $min_driver or newer. Nothing was downloaded. Upgrade the NVIDIA driver to $min_driver or newer, or $instead."
  fi
fi

wheels=$cache/wheels

listing() { (cd "$1" && find . \( -type f -o -type l \) ! -name .manifest ! -name .sha256 -printf '%s %P\n' | LC_ALL=C sort); }

cache_ok() {
  [ -f "$dest/.manifest" ] && listing "$dest" | cmp -s - "$dest/.manifest"
}

if cache_ok; then
  if [ "$verify" = 1 ]; then
    say "verifying every file of $dest"
    (cd "$dest" && sha256sum --quiet --check .sha256 >&2) || {
      say "cached libtorch at $dest is corrupt; rebuilding it"
      rm -f "$dest/.manifest"
    }
  fi
fi

if ! cache_ok; then
  mkdir -p "$cache"
  exec 9>"$cache/.libtorch.lock"
  flock 9
  if ! cache_ok; then
    [ -e "$dest" ] && say "cached libtorch at $dest is incomplete or damaged; rebuilding it"
    if [ "$use_cuda" = 1 ]; then
      if [ "$driver_present" = 0 ]; then
        say "no NVIDIA driver on this machine (WRN_CUDA=1): skipping the driver check; the tree will load, and CUDA becomes usable once a driver $min_driver or newer is installed"
      elif [ -z "$driver_version" ]; then
        say "warning: cannot read the NVIDIA driver's version ($driver_file, nvidia-smi); CUDA $cuda_version needs $min_driver or newer"
      fi
      # Measured for torch 2.11.0 + CUDA 13.0: the wheels take 2.5 GB, the unpacked tree 3.8 GB.
      need_mb=${WRN_CUDA_MIN_FREE_MB:-}
      if [ -z "$need_mb" ]; then
        need_mb=4000
        for i in "${!files[@]}"; do
          if [ ! -f "$wheels/${files[$i]}" ]; then need_mb=6500; break; fi
        done
      fi
      free_mb=$(df -Pk "$cache" | awk 'NR == 2 { print int($4 / 1024) }')
      if [ "${free_mb:-0}" -lt "$need_mb" ]; then
        die "the CUDA libtorch needs about $need_mb MB free in $cache (the wheels and the unpacked tree), but only $free_mb MB are free there. Nothing was downloaded. Free some space, or set WRN_CACHE_DIR to a directory on a disk with room, or $instead."
      fi
    fi
    # Python with pip downloads and unpacks the wheels; say what to install when either is missing.
    if ! command -v python3 >/dev/null 2>&1 || ! python3 -m pip --version >/dev/null 2>&1; then
      die "python3 with pip is needed to download and unpack the pinned libtorch wheels, and $(command -v python3 >/dev/null 2>&1 && echo "'python3 -m pip' does not run" || echo "there is no python3 on PATH"). Install Python 3.8 or newer with pip (Debian/Ubuntu: sudo apt-get install python3 python3-pip; without root: pyenv, conda or uv), or point LIBTORCH at an existing libtorch $torch_version (with lib/ and include/)."
    fi
    mkdir -p "$wheels"
    for i in "${!names[@]}"; do
      name=${names[$i]} version=${versions[$i]} want=${hashes[$i]} file=${files[$i]}
      wheel=$wheels/$file
      if [ -f "$wheel" ] && [ "$(sha256sum "$wheel" | cut -d' ' -f1)" = "$want" ]; then
        continue
      fi
      rm -f "$wheel"
      tmp=$(mktemp -d "$wheels/.download.XXXXXX")
      say "downloading $name==$version ($file) with pip"
      if ! python3 -m pip download --no-deps --only-binary=:all: --platform "${platforms[$i]}" --python-version 3.11 \
           --implementation cp --abi cp311 --abi none --progress-bar off --quiet --dest "$tmp" \
           "$name==$version" >"$tmp/pip.log" 2>&1; then
        tail -n 5 "$tmp/pip.log" | sed 's/^/  pip: /' >&2
        rm -rf "$tmp"
        die "could not download $name==$version from the package index (${PIP_INDEX_URL:-PyPI}). Check the network or proxy (HTTPS_PROXY), or point LIBTORCH at an existing libtorch $torch_version."
      fi
      got_file=$tmp/$file
      if [ ! -f "$got_file" ]; then
        found=$(cd "$tmp" && ls -- *.whl 2>/dev/null | tr '\n' ' ')
        rm -rf "$tmp"
        die "pip fetched '${found:-nothing}' for $name==$version, not the pinned $file"
      fi
      got=$(sha256sum "$got_file" | cut -d' ' -f1)
      if [ "$got" != "$want" ]; then
        rm -rf "$tmp"
        die "SHA-256 mismatch for $file: expected $want, got $got. The file was deleted; nothing was installed."
      fi
      mv "$got_file" "$wheel"
      rm -rf "$tmp"
    done

    mkdir -p "$cache/libtorch"
    build=$(mktemp -d "$cache/libtorch/.build.XXXXXX")
    trap 'rm -rf "$build"' EXIT
    if [ "$use_cuda" = 0 ]; then
    say "unpacking the CPU part of libtorch $torch_version into $dest"
    for i in "${!names[@]}"; do
      python3 - "$wheels/${files[$i]}" "$build" "${names[$i]}" <<'PY' || die "could not unpack ${files[$i]}"
import sys, zipfile, os, shutil
wheel, out, name = sys.argv[1:]
# What a CPU build needs from each wheel: headers, the CPU libraries, and the two CUDA runtime
# libraries that libtorch_cpu.so links against even on CPU. libtorch_cuda.so is left out on purpose:
# without it torch-sys links the CPU part only, and the binary dlopens it at run time where present.
want = {
    "torch": (["torch/include/"], ["torch/lib/libtorch_cpu.so", "torch/lib/libtorch.so",
                                   "torch/lib/libc10.so", "torch/lib/libgomp.so.1"]),
    "nvidia-cuda-runtime": ([], ["nvidia/cu13/lib/libcudart.so.13"]),
    "nvidia-cuda-cupti": ([], ["nvidia/cu13/lib/libcupti.so.13"]),
}[name]
prefixes, libs = want
with zipfile.ZipFile(wheel) as z:
    members = set(z.namelist())
    missing = [m for m in libs if m not in members]
    if missing:
        sys.exit(f"{wheel}: missing {', '.join(missing)}")
    for m in z.namelist():
        if m.endswith("/"):
            continue
        for p in prefixes:
            if m.startswith(p):
                target = os.path.join(out, "include", m[len(p):])
                break
        else:
            if m not in libs:
                continue
            target = os.path.join(out, "lib", os.path.basename(m))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with z.open(m) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    if name == "torch":
        # Like the libtorch archives, record the version in `build-version`: torch-sys checks it at
        # build time and `wrn doctor` reports it at run time.
        text = z.read("torch/version.py").decode()
        version = next(l.split("=", 1)[1].strip().strip("'\"") for l in text.splitlines()
                       if l.startswith("__version__"))
        with open(os.path.join(out, "build-version"), "w") as f:
            f.write(version + "\n")
PY
    done
    ln -s libgomp.so.1 "$build/lib/libgomp.so"
    else
    say "unpacking libtorch $torch_version with CUDA $cuda_version into $dest"
    pairs=()
    for i in "${!names[@]}"; do pairs+=("${names[$i]}" "$wheels/${files[$i]}"); done
    python3 - "$build" "$cuda_lock" "${pairs[@]}" <<'PY' || die "could not unpack the CUDA libtorch; nothing was installed"
import os, re, shutil, sys, zipfile
out, cuda_lock, *pairs = sys.argv[1:]
wheels = dict(zip(pairs[0::2], pairs[1::2]))
# The lock's `#provides WHEEL MEMBER...` (libraries a wheel must hold), `#headers WHEEL MEMBER...` (headers
# it must hold) and `#omit WHEEL MEMBER...` (plugins left out) lines.
provides, needed_headers, omit = {}, {}, set()
with open(cuda_lock) as f:
    for line in f:
        words = line.split()
        if not words or words[0] not in ("#provides", "#headers", "#omit"):
            continue
        if len(words) < 3 or words[1] not in wheels:
            sys.exit(f"{cuda_lock}: '{line.strip()}' must name a pinned wheel and at least one member")
        if words[0] == "#provides":
            provides.setdefault(words[1], []).extend(words[2:])
        elif words[0] == "#headers":
            needed_headers.setdefault(words[1], []).extend(words[2:])
        else:
            omit.update((words[1], m) for m in words[2:])
# From the torch wheel: the headers, the CPU libraries (as in the CPU tree) and the CUDA ones. Left out:
# libtorch_python.so, libshm.so and libtorch_global_deps.so (Python's), and the Python package itself.
torch_libs = ["libtorch_cpu.so", "libtorch.so", "libc10.so", "libgomp.so.1",
              "libtorch_cuda.so", "libc10_cuda.so", "libtorch_nvshmem.so", "libcaffe2_nvrtc.so",
              "libtorch_cuda_linalg.so"]
# From the nvidia-* wheels: every shared library, where pip puts it, and every header, which wrn-torch-ext's
# CUDA part compiles against (c10d's ProcessGroupNCCL reaches the CUDA runtime's, cuBLAS's, cuSPARSE's,
# cuSOLVER's and NCCL's headers through ATen's).
shared = re.compile(r"^nvidia/[^/]+/lib/[^/]+\.so(\.[0-9]+)*$")
header = re.compile(r"^nvidia/[^/]+/include/.+[^/]$")

def extract(z, member):
    target = os.path.join(out, member)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with z.open(member) as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)

for name, wheel in wheels.items():
    with zipfile.ZipFile(wheel) as z:
        members = z.namelist()
        if name == "torch":
            want = [f"torch/lib/{lib}" for lib in torch_libs]
        else:
            want = provides.get(name, []) + needed_headers.get(name, [])
        missing = [m for m in want if m not in members]
        if missing:
            sys.exit(f"{os.path.basename(wheel)} lacks {', '.join(missing)}"
                     + ("" if name == "torch" else f" ({os.path.basename(cuda_lock)} says {name} provides it)"))
        if name == "torch":
            for m in members:
                if m.startswith("torch/include/") and not m.endswith("/"):
                    extract(z, m)
            for m in want:
                extract(z, m)
            # torch-sys checks `build-version` beside include/ at build time; `wrn doctor` reads it beside
            # lib/ at run time.
            text = z.read("torch/version.py").decode()
            version = next(l.split("=", 1)[1].strip().strip("'\"") for l in text.splitlines()
                           if l.startswith("__version__"))
            with open(os.path.join(out, "torch", "build-version"), "w") as f:
                f.write(version + "\n")
        else:
            taken = [m for m in members if shared.match(m) and (name, m) not in omit]
            if not taken and name not in needed_headers:
                sys.exit(f"{os.path.basename(wheel)} holds no shared library under nvidia/*/lib/")
            taken += [m for m in members if header.match(m)]
            for m in taken:
                extract(z, m)

# link/: the LIBTORCH cargo and torch-sys see. Its lib/ holds the CPU libraries only (as the CPU tree does):
# torch-sys links libtorch_cuda whenever lib/ has it, and the binary must link the CPU part only, so that
# it starts on machines without CUDA and loads libtorch_cuda.so beside libtorch_cpu.so at run time.
link = os.path.join(out, "link")
os.makedirs(os.path.join(link, "lib"))
os.symlink("libgomp.so.1", os.path.join(out, "torch", "lib", "libgomp.so"))
os.symlink("../torch/include", os.path.join(link, "include"))
shutil.copyfile(os.path.join(out, "torch", "build-version"), os.path.join(link, "build-version"))
cpu = [f"torch/lib/{lib}" for lib in torch_libs[:4] + ["libgomp.so"]]
cpu += provides.get("nvidia-cuda-runtime", []) + provides.get("nvidia-cuda-cupti", [])
for member in cpu:
    os.symlink(os.path.join("..", "..", member), os.path.join(link, "lib", os.path.basename(member)))
PY
    say "checking that every library's DT_NEEDED is inside the tree"
    python3 "$here/libtorch-elf.py" closure "$build" \
      || die "the unpacked CUDA libtorch is not self-contained (above); nothing was installed"
    fi
    (cd "$build" && find . -type f ! -name .sha256 -printf '%P\0' | LC_ALL=C sort -z | xargs -0 sha256sum > .sha256)
    listing "$build" > "$build.manifest"
    mv "$build.manifest" "$build/.manifest"
    # mktemp made the tree 700; give it the mode of any new directory (the umask's), so that a cache shared
    # with other users (read-only: a ready tree is used without the lock or any write) can be read.
    chmod "$(printf '%o' $(( 0777 & ~$(umask) )))" "$build"
    rm -rf "$dest"
    mv "$build" "$dest"
    trap - EXIT
    say "libtorch $torch_version ready at $dest"
  fi
  exec 9>&-
fi

if [ "$use_cuda" = 0 ]; then
  print_env "$dest" "$dest/lib"
else
  printf "export LIBTORCH='%s'\n" "$dest/link"
  printf "export WRN_LIBTORCH_RUNTIME='%s'\n" "$dest/torch/lib"
  printf "export LD_LIBRARY_PATH='%s'\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}\n" "$dest/torch/lib"
fi
