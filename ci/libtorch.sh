#!/usr/bin/env bash
# libtorch bootstrap: makes the CPU libtorch that `tch` links against available, and prints the
# environment cargo needs (`export LIBTORCH=...` and `export LD_LIBRARY_PATH=...`) on stdout.
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
# Messages go to stderr; nothing but the exports goes to stdout.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
lock=${WRN_LIBTORCH_LOCK:-$here/libtorch.lock}
cache=${WRN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/wrn}
verify=0

say() { echo "libtorch: $*" >&2; }
die() { echo "libtorch: error: $*" >&2; exit 1; }

for arg in "$@"; do
  case "$arg" in
    --verify) verify=1 ;;
    -h|--help) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
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
[ -f "$lock" ] || die "lock file $lock not found"
names=() versions=() platforms=() hashes=() files=()
while read -r name version platform sha file rest; do
  case "$name" in ''|'#'*) continue ;; esac
  [ -n "$file" ] && [ -z "$rest" ] || die "$lock: malformed line for '$name' (want: name version platform sha256 file)"
  [[ "$sha" =~ ^[0-9a-f]{64}$ ]] || die "$lock: '$sha' is not a SHA-256 for $name"
  names+=("$name") versions+=("$version") platforms+=("$platform") hashes+=("$sha") files+=("$file")
done < "$lock"
[ "${#names[@]}" -gt 0 ] || die "$lock lists no wheels"
torch_version=
for i in "${!names[@]}"; do [ "${names[$i]}" = torch ] && torch_version=${versions[$i]}; done
[ -n "$torch_version" ] || die "$lock has no torch line"

# The tree's name changes with the pins and with the unpack rules below (bump `layout` when they change).
layout=1
digest=$( (cat "$lock"; echo "layout=$layout") | sha256sum | cut -c1-12)
dest=$cache/libtorch/$torch_version-$digest
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
      if ! pip download --no-deps --only-binary=:all: --platform "${platforms[$i]}" --python-version 3.11 \
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
    (cd "$build" && find . -type f ! -name .sha256 -printf '%P\0' | LC_ALL=C sort -z | xargs -0 sha256sum > .sha256)
    listing "$build" > "$build.manifest"
    mv "$build.manifest" "$build/.manifest"
    rm -rf "$dest"
    mv "$build" "$dest"
    trap - EXIT
    say "libtorch $torch_version ready at $dest"
  fi
  exec 9>&-
fi

print_env "$dest" "$dest/lib"
