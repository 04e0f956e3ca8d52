#!/usr/bin/env bash
# The fault soak (issue 13 item 5), longer than the CI run: three replicas of the binary on a
# Redis master + replica + three Sentinels, random approve / deny / expire, random hang-ups,
# SIGKILL and restart of random replicas, one Redis failover, a Slack fake that answers 429 or
# 500 to 20% of its calls. It checks that nothing ran twice, nothing refused ran, nothing is left
# pending, every audit log verifies and the logs account for every approval, then prints the
# figures (tests/e2e_soak.rs).
#
#   bench/soak.sh [APPROVALS] [SECONDS]     # defaults 1000 and 600 (10 min)
set -euo pipefail
cd "$(dirname "$0")/.."
export COUNTERSIGN_SOAK_APPROVALS="${1:-1000}"
export COUNTERSIGN_SOAK_SECS="${2:-600}"
scripts/test-setup.sh >/dev/null
exec cargo test --test e2e_soak -- --nocapture
