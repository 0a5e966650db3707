# Shared by scripts/serve and scripts/test. Sourced, not run.
# Everything here is idempotent: a second run does nothing that is already done.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Build output lives outside the clone so fresh clones (and CI runs) reuse it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/strata-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

say() { printf '==> %s\n' "$*" >&2; }

need_root_or_sudo() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
# ensure_apt PKG...: installs the Debian packages that are missing.
ensure_apt() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$apt_updated" -eq 0 ]; then
    say "apt-get update"
    need_root_or_sudo apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt_updated=1
  fi
  say "installing Debian packages: ${missing[*]}"
  # Another apt run (unattended-upgrades, a second script) may hold the dpkg lock: wait for it
  # rather than fail. An install that was killed half-way leaves dpkg "interrupted", and every
  # later install refuses until `dpkg --configure -a` finishes it: do that, then try again.
  local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq)
  if ! need_root_or_sudo "${apt[@]}" "${missing[@]}" >/dev/null; then
    say "apt-get install failed; finishing any interrupted dpkg run (dpkg --configure -a) and retrying"
    need_root_or_sudo env DEBIAN_FRONTEND=noninteractive dpkg --configure -a
    need_root_or_sudo "${apt[@]}" "${missing[@]}" >/dev/null
  fi
}

# pip_venv VENV WHAT PIP-ARGS...: makes the venv at VENV (kept if it is there) and installs
# PIP-ARGS into it with pip, saying WHAT it installs. Callers check first whether what they
# need is already there, and call this only when it is not.
pip_venv() {
  local venv="$1" what="$2"
  shift 2
  ensure_apt python3 python3-venv
  say "installing $what into $venv (pip)"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$@"
}

ensure_toolchain() {
  # A C compiler builds the bundled SQLite; pkg-config helps -sys crates find libraries.
  ensure_apt build-essential pkg-config ca-certificates
  if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    say "cargo is not installed. Install the Rust toolchain (https://rustup.rs or the Debian"
    say "packages cargo + rustc, version 1.89 or newer), then run this command again."
    exit 1
  fi
  say "using $(cargo --version), build output in $CARGO_TARGET_DIR"
  mkdir -p "$CARGO_TARGET_DIR"
}

# start_strata WORK [ENV=VALUE...] [-- SERVE_FLAG...]: builds the debug binary, starts
# Builds the debug `strata` binary. Cargo compiles a dependency once per feature set, and the
# set depends on which packages a command selects: `-p strata` alone resolves features
# differently from the whole workspace with its tests, and recompiles qdrant-edge and others
# (minutes on a cold machine). scripts/test sets STRATA_BUILD_ARGS to the test run's own
# selection, so its checks reuse what the test build made; run alone, a check builds just
# the server.
build_strata() {
  say "building strata"
  # shellcheck disable=SC2086 # the arguments are words on purpose
  (cd "$ROOT" && cargo build --locked ${STRATA_BUILD_ARGS:--p strata --bin strata})
}

# `strata serve` on a free loopback port with its data directory and log under WORK (extra
# environment given as ENV=VALUE words, extra serve flags after --), waits until it is
# ready, and sets BIN, PORT, BASE and SERVER. The caller stops it with stop_strata (an EXIT
# trap).
start_strata() {
  local work="$1"; shift
  local envs=() flags=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do envs+=("$1"); shift; done
  [ "${1:-}" = "--" ] && shift
  flags=("$@")
  build_strata
  BIN="$CARGO_TARGET_DIR/debug/strata"
  PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  BASE="http://127.0.0.1:$PORT"
  say "starting strata on $BASE (log: $work/server.log)"
  env "${envs[@]}" "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$work/data" "${flags[@]}" \
    >"$work/server.log" 2>&1 &
  SERVER=$!
  for _ in $(seq 1 300); do
    curl -fsS "$BASE/readyz" >/dev/null 2>&1 && return 0
    kill -0 "$SERVER" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
    sleep 0.2
  done
  say "strata did not become ready within 60 s"; cat "$work/server.log" >&2; exit 1
}

# stop_strata WORK: stops the server start_strata started, fails the run if it panicked, and
# removes WORK.
stop_strata() {
  local work="$1" rc=0
  if [ -n "${SERVER:-}" ]; then kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null || true; fi
  if [ -f "$work/server.log" ] && grep -q "panicked" "$work/server.log"; then
    say "the server panicked during the run:"; grep -n -A5 "panicked" "$work/server.log" >&2; rc=1
  fi
  rm -rf "$work"
  return "$rc"
}
