#!/usr/bin/env bash
# The one command that runs Countersign's whole test suite, also on a fresh Debian machine:
# installs what is missing (scripts/test-setup.sh), then formatting, every test target, the
# doctests (`--all-targets` skips them; the compile_fail ones guard secret handling),
# `countersign check` on the shipped example config and `countersign test` on its policies.
# One build profile (dev) and one build: the steps after the tests run the binary that
# `cargo test` built (target/debug/countersign). `cargo run` would build the library again,
# because dev-dependencies unify extra features (reqwest's cookies, tempfile's std) into the
# test build only. Exits non-zero on the first failure.
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

bin=target/debug/countersign

step "countersign check --strict on every shipped config"
# --strict: the coverage lint (SPEC 8) must find no gap in what we ship.
"$bin" check --strict --config examples/countersign.toml
replicas=$(mktemp -d)
trap 'rm -rf "$replicas"' EXIT
cp -r examples/replicas/. "$replicas/"
ISSUER=https://idp.example.com UPSTREAM=http://127.0.0.1:7000 "$replicas/render.sh" >/dev/null
for n in 1 2 3; do
  "$bin" check --strict --config "$replicas/replica-$n.toml"
done

step "countersign test on the shipped policies (policies/tests/)"
# Every shipped rule has cases; a policy change that breaks one fails CI here.
"$bin" test --config examples/countersign.toml policies/tests/*.toml

step "README's first command: scripts/demo.sh comes up (scripts/demo-check.sh)"
COUNTERSIGN_BIN="$bin" scripts/demo-check.sh

step "deployment files (scripts/check-deploy.sh)"
scripts/check-deploy.sh "$bin"

step "all checks passed"
