#!/usr/bin/env bash
# CI check of the README's first command: runs scripts/demo.sh (which reuses the dev binary
# the tests built), waits for the tour, pastes its `export TOKEN_...` lines and its first curl
# command (an allowed read) and expects 200 from the demo upstream, then stops the demo.
set -euo pipefail
cd "$(dirname "$0")/.."

limit=${DEMO_CHECK_TIMEOUT:-300}
out=$(mktemp)
setsid scripts/demo.sh >"$out" 2>"$out.err" &
pid=$!
stop() {
  kill -TERM -- "-$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -f "$out" "$out.err"
}
trap stop EXIT

for ((i = 0; i < limit; i++)); do
  grep -q '^curl -i .*/v1/deployments -H .*TOKEN_READER' "$out" && break
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "demo-check: the demo exited early" >&2
    cat "$out" "$out.err" >&2
    exit 1
  fi
  sleep 1
done
if ! grep -q '^curl -i ' "$out"; then
  echo "demo-check: no tour printed within ${limit}s" >&2
  tail -n 30 "$out.err" >&2
  exit 1
fi

# Exactly what a person pastes: the exports, then command 1 (status code only).
eval "$(grep '^export TOKEN_' "$out")"
probe="curl -s -o /dev/null -w %{http_code}"
allowed=$(grep -m1 '^curl -i .*/v1/deployments -H ' "$out")
status=$(eval "${allowed/curl -i/$probe}")
if [[ $status != 200 ]]; then
  echo "demo-check: the printed allowed call answered $status, not 200:" >&2
  echo "$allowed" >&2
  exit 1
fi
denied=$(grep -m1 '^curl -i -X DELETE' "$out")
status=$(eval "${denied/curl -i/$probe}")
if [[ $status != 403 ]]; then
  echo "demo-check: the printed denied call answered $status, not 403" >&2
  exit 1
fi
echo "demo-check: demo up; printed allowed call 200, denied call 403"
