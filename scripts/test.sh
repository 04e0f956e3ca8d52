#!/usr/bin/env bash
# The one command that runs Countersign's whole test suite, also on a fresh Debian machine:
# installs what is missing (scripts/test-setup.sh), then formatting, every test target, the
# doctests (`--all-targets` skips them; the compile_fail ones guard secret handling), and
# `countersign check` on the shipped example config. One build profile (dev) throughout, so
# the check reuses the binary the tests built. Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "setup"
scripts/test-setup.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo test --all-targets"
cargo test --all-targets --no-fail-fast

step "cargo test --doc"
cargo test --doc --no-fail-fast

step "countersign check --config examples/countersign.toml"
cargo run -q -- check --config examples/countersign.toml

step "all checks passed"
