#!/usr/bin/env bash
# The one command that runs Countersign's whole test suite, also on a fresh Debian machine:
# installs what is missing (scripts/test-setup.sh), then formatting, every test target, and
# `countersign check` on the shipped example config. One build profile (dev) throughout, so
# the check and the demo reuse the binary the tests built. Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "setup"
scripts/test-setup.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo test --all-targets"
cargo test --all-targets --no-fail-fast

step "countersign check --config examples/countersign.toml"
cargo run -q -- check --config examples/countersign.toml

step "README's first command: scripts/demo.sh comes up (scripts/demo-check.sh)"
scripts/demo-check.sh

step "deployment files (scripts/check-deploy.sh)"
scripts/check-deploy.sh target/debug/countersign

step "all checks passed"
