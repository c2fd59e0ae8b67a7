#!/usr/bin/env bash
# The main job as a new, unprivileged user: `make demo` in a fresh clone of this repository's committed
# HEAD (uncommitted changes are not in it), run as the user `wrn-user` (created when missing, reused
# otherwise), with no sudo, no package manager and no network: the toolchain, the cargo registry and the
# libtorch cache are root's, shared read-only. Run as root (CI is root); `make test` runs it.
#
# What the user gets, and why this way:
#   - Root's toolchain, cargo registry and libtorch cache, used in place and read-only (all root-owned, files
#     0644). They usually live under /root, whose 0700 mode lets no one through, so for the length of the
#     test each directory above them that the user cannot search gets o+x (search, not listing), and its mode
#     is restored on exit (an ACL for wrn-user alone would be narrower, but setfacl is not on every
#     machine). A copy (/opt) would cost 1.5 GB and, worse, would move the registry: cargo's
#     fingerprint of a registry crate hashes its source path under CARGO_HOME, and the torch-sys build script
#     reruns when LIBTORCH changes, so only the very same paths let the user reuse built dependencies. A
#     libtorch tree made before ci/libtorch.sh gave trees the umask's mode is still 0700: it gets o+rx the
#     same way. A ready tree is used without the lock or any write, so the user reads it as is.
#   - Cargo with CARGO_HOME read-only and CARGO_NET_OFFLINE=true: it builds from the registry's sources,
#     and says "failed to save last-use data" (its cache-cleaning record), which is harmless.
#   - A target directory of its own, kept between runs in ~wrn-user/.cache/wrn-test-user/target (the
#     clone's target/ is a link to it), seeded on first use with a copy of this repository's
#     target/release (`make test-user` builds it first; in `make test` it is already built): cargo finds
#     every registry crate fresh (same rustc, registry path, LIBTORCH and flags; it relocates build
#     scripts' OUT_DIR paths itself), and rebuilds only the workspace's crates, whose sources in the clone
#     are newer. WRN_TEST_USER_SEED=0 skips the seed (a cold build from scratch). `userdel -r wrn-user`
#     removes the user and that directory. Measured on two cores: first run with the seed 9.6 min (2.6 of
#     them cargo), later runs 3 to 6 min (1.6 to 2.5 cargo), without the seed 16 min (10.4 cargo); the
#     rest is the demo's training.
#   - PATH: stand-ins for apt-get, apt, aptitude, dpkg, sudo, pip and pip3 that record the call and fail,
#     then root's cargo, then the system's directories. The environment is otherwise empty (`env -i`): no
#     WRN_FONT, so the plots use the font embedded in the binary.
# Checked: `make demo` exits 0; report.md, report.html and at least one plots/*.png exist, are not empty
# and belong to the user; no stand-in was called and the output names no package manager. Ends with
# "test-user: make demo as wrn-user passed in N s"; as non-root it prints the command to run and exits 2.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
user=wrn-user
seed=${WRN_TEST_USER_SEED:-1}
t0=$(date +%s)

say() { echo "test-user: $*"; }
die() { echo "test-user: FAIL $*" >&2; exit 1; }

if [ "$(id -u)" != 0 ]; then
  echo "test-user: needs root, to create the unprivileged user $user and run \`make demo\` as it; run: sudo make -C '$repo' test-user" >&2
  exit 2
fi
for tool in runuser useradd git make; do
  command -v "$tool" >/dev/null || die "$tool not found (runuser and useradd: util-linux and passwd)"
done

# Root's toolchain and libtorch, as `make build` used them.
cargo=$(command -v cargo) || die "no cargo on PATH"
cargo_dir=$(dirname "$cargo")
[ -x "$cargo_dir/rustc" ] || die "no rustc beside $cargo_dir/cargo"
cargo_home=${CARGO_HOME:-$HOME/.cargo}
rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
[ -d "$rustup_home" ] || rustup_home=
[ -f "$repo/target/libtorch.env" ] || die "$repo/target/libtorch.env is missing: run \`make libtorch\` first"
libtorch=$(. "$repo/target/libtorch.env" && echo "$LIBTORCH")
tree=${libtorch%/link}  # the CUDA tree's LIBTORCH is its link/ directory
cache=${WRN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/wrn}

# The user: created once, reused after.
if ! id "$user" >/dev/null 2>&1; then
  useradd -m -U -s /bin/bash "$user"
  say "created user $user"
fi
[ "$(id -u "$user")" != 0 ] || die "$user has uid 0"
home=$(getent passwd "$user" | cut -d: -f6)
[ -d "$home" ] || { mkdir -p "$home"; chown "$user:" "$home"; }
as_user() { runuser -u "$user" -- "$@"; }

# Search (o+x) on the directories above the shared paths where the user has none, for this test only.
restore=()
work=
cleanup() {
  local i
  for ((i = ${#restore[@]} - 2; i >= 0; i -= 2)); do chmod "${restore[i]}" "${restore[i + 1]}" || true; done
  [ -z "$work" ] || [ ! -d "$work" ] || [ "${keep:-0}" = 1 ] || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
grant() { # grant BITS PATH: adds BITS for others to PATH until the test ends
  local old
  old=$(stat -c %a "$2")
  restore+=("$old" "$2")
  chmod "o+$1" "$2"
  say "o+$1 on $2 for this test (mode $old restored on exit)"
}
reach() { # reach PATH: every directory from / to PATH searchable by the user
  local p='' part
  IFS=/ read -ra parts <<<"${1#/}"
  for part in "${parts[@]}"; do
    [ -n "$part" ] || continue
    p=$p/$part
    [ -d "$p" ] || break
    as_user test -x "$p" || grant x "$p"
  done
}
for path in "$cargo_dir" "$cargo_home" ${rustup_home:+"$rustup_home"} "$(dirname "$tree")"; do reach "$path"; done
as_user test -r "$tree" -a -x "$tree" || grant rx "$tree"
as_user test -r "$cargo_home/registry" || die "$user cannot read $cargo_home/registry"
as_user test -r "$libtorch/lib/libtorch_cpu.so" || die "$user cannot read $libtorch/lib/libtorch_cpu.so"

# A fresh clone of HEAD, owned by the user (--no-hardlinks: chown must not reach this repository's objects).
work=$(mktemp -d "${TMPDIR:-/tmp}/wrn-test-user.XXXXXX")
git clone -q --no-hardlinks "$repo" "$work/wrn"
say "cloned $(git -C "$work/wrn" rev-parse --short=12 HEAD) into $work/wrn"

# The user's target directory, kept between runs, seeded from ours the first time.
tcache=$home/.cache/wrn-test-user/target
if [ ! -d "$tcache/release/.fingerprint" ] && [ "$seed" = 1 ] && [ -d "$repo/target/release/.fingerprint" ]; then
  s=$(date +%s)
  rm -rf "$tcache"
  mkdir -p "$tcache/release"
  cp -a "$repo/target/release/.fingerprint" "$repo/target/release/build" "$repo/target/release/deps" "$tcache/release/"
  say "seeded $tcache from $repo/target/release ($(du -sh "$tcache" | cut -f1), $(($(date +%s) - s)) s)"
fi
mkdir -p "$tcache"
chown -R "$user:" "$home/.cache" "$work"
ln -s "$tcache" "$work/wrn/target"
chown -h "$user:" "$work/wrn/target"

# Stand-ins for the package managers (and pip: the libtorch cache must already be ready).
shims=$work/shims
mkdir -p "$shims"
touch "$work/forbidden.log"
chown "$user:" "$work/forbidden.log"
for tool in apt-get apt aptitude dpkg sudo pip pip3; do
  printf '#!/bin/sh\necho "%s $*" >> "%s"\necho "test-user: %s called by make demo: a new user cannot run it" >&2\nexit 1\n' \
    "$tool" "$work/forbidden.log" "$tool" > "$shims/$tool"
  chmod 755 "$shims/$tool"
done
chmod 755 "$work" "$shims"

env_user=(env -i HOME="$home" USER="$user" LOGNAME="$user" SHELL=/bin/bash LANG=C.UTF-8
  PATH="$shims:$cargo_dir:/usr/local/bin:/usr/bin:/bin" CARGO_HOME="$cargo_home" CARGO_NET_OFFLINE=true)
[ -z "$rustup_home" ] || env_user+=(RUSTUP_HOME="$rustup_home")
if [ -n "${LIBTORCH:-}" ]; then env_user+=(LIBTORCH="$LIBTORCH"); else env_user+=(WRN_CACHE_DIR="$cache"); fi
[ -z "${WRN_CUDA:-}" ] || env_user+=(WRN_CUDA="$WRN_CUDA")

# The user sees our libtorch, read-only, at the same path (else cargo would rebuild torch-sys and up).
seen=$(cd "$work/wrn" && as_user "${env_user[@]}" ci/libtorch.sh 2>"$work/libtorch.err" | sed -n "s/^export LIBTORCH='\(.*\)'$/\1/p") || true
[ "$seen" = "$libtorch" ] || { cat "$work/libtorch.err" >&2; die "as $user, ci/libtorch.sh gives LIBTORCH='$seen', not the shared $libtorch"; }

say "make demo as $user ($(id "$user")), in $work/wrn"
s=$(date +%s)
set +e
(cd "$work/wrn" && as_user "${env_user[@]}" make demo) 2>&1 | tee "$work/demo.log" | sed -u 's/^/  | /'
rc=${PIPESTATUS[0]}
set -e
demo_s=$(($(date +%s) - s))

keep=1  # the clone stays for a look when a check fails
[ "$rc" = 0 ] || die "make demo as $user exited $rc (output above; clone kept in $work/wrn)"
report=$work/wrn/runs/demo/report
for f in report.md report.html; do
  [ -s "$report/$f" ] || die "$report/$f is missing or empty"
  [ "$(stat -c %U "$report/$f")" = "$user" ] || die "$report/$f does not belong to $user"
done
pngs=0
for f in "$report"/plots/*.png; do
  [ -s "$f" ] || die "plot $f is missing or empty"
  pngs=$((pngs + 1))
done
if [ -s "$work/forbidden.log" ]; then die "make demo called: $(tr '\n' ';' < "$work/forbidden.log")"; fi
if grep -Ew 'apt-get|aptitude|dpkg|sudo' "$work/demo.log"; then die "make demo's output names a package manager (above)"; fi
keep=0

say "report.md, report.html and $pngs plots in $report; no package manager called"
say "make demo as $user passed in $(($(date +%s) - t0)) s (make demo $demo_s s)"
