#!/usr/bin/env bash
# The README's first command: the zero-setup demo on a fresh Debian/Ubuntu machine.
# Installs what the build needs and is missing (as root, or with sudo), then `cargo run -- demo`.
# Safe to run any number of times; on a machine that has it all it changes nothing.
#
#   cmake            pingora-core builds zlib-ng with it
#   cc, c++, make    C/C++ parts of the dependencies (zlib-ng, ring, mimalloc)
#   curl             the demo prints curl commands to try
#
# Rust itself is not installed here: get it from https://rustup.rs (rust-version is in
# Cargo.toml). Arguments are passed to `countersign demo`. COUNTERSIGN_BIN=path runs that
# binary instead of building one (CI passes the one its tests built; see scripts/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*" >&2; }

if ! command -v cargo >/dev/null 2>&1; then
  echo "demo: cargo is not installed; install Rust from https://rustup.rs and rerun" >&2
  exit 1
fi

# command -> Debian package providing it
declare -A wanted=([cmake]=cmake [cc]=gcc [c++]=g++ [make]=make [curl]=curl)
missing=()
for cmd in cmake cc c++ make curl; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${wanted[$cmd]}")
done

if ((${#missing[@]} > 0)); then
  sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo=(sudo)
    else
      echo "demo: missing ${missing[*]} and not root (no sudo): install them and rerun" >&2
      exit 1
    fi
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "demo: missing ${missing[*]}; install them with your package manager and rerun" >&2
    exit 1
  fi
  say "installing with apt-get: ${missing[*]}"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [[ -n "${COUNTERSIGN_BIN:-}" ]]; then
  say "starting the demo with $COUNTERSIGN_BIN"
  exec "$COUNTERSIGN_BIN" demo "$@"
fi

say "building and starting the demo (the first build takes a few minutes)"
exec cargo run -- demo "$@"
