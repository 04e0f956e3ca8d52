#!/usr/bin/env bash
# CI check of the README's first command: runs scripts/demo.sh (with COUNTERSIGN_BIN set, it
# runs that binary; CI passes the one its tests built), waits for the tour, pastes its
# `export TOKEN_...` lines and runs printed commands as a person would: the allowed read (200),
# the denied delete (403), the grant step (hold, approve with a grant through the API, the same
# deploy passes naming the grant) and break-glass (200, then 429 inside the cooldown); then
# stops the demo.
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

# Step 6, the grant: hold a deploy (202), approve it with a grant through the API, and the
# same deploy then passes at once (200) naming the grant.
eval "$(grep -m1 '^ID=\$(curl' "$out")"
if [[ -z ${ID:-} ]]; then
  echo "demo-check: the printed grant step did not hold a request" >&2
  exit 1
fi
vote=$(grep -m1 '^curl -s -X POST .*/approvals/\$ID/decision' "$out")
status=$(eval "${vote/curl -s/$probe}")
if [[ $status != 200 ]]; then
  echo "demo-check: the printed grant vote answered $status, not 200" >&2
  exit 1
fi
reuse=$(grep -m1 "^curl -i -X POST .*TOKEN_DEPLOYER\" -d '{\"version\":\"1.4.3\"}'" "$out")
grant=$(eval "${reuse/curl -i/curl -s -o /dev/null -D -}" | tr -d '\r' | sed -n 's/^countersign-grant-id: //Ip')
if [[ $grant != gr_* ]]; then
  echo "demo-check: the deploy after the grant did not pass under it: $reuse" >&2
  exit 1
fi

# Step 7, break-glass: forwarded at once (200), and again inside the cooldown 429.
glass=$(grep -m1 "^curl -i .*Countersign-Break-Glass" "$out")
status=$(eval "${glass/curl -i/$probe}")
again=$(eval "${glass/curl -i/$probe}")
if [[ $status != 200 || $again != 429 ]]; then
  echo "demo-check: break-glass answered $status then $again, not 200 then 429" >&2
  exit 1
fi
echo "demo-check: demo up; allowed 200, denied 403, grant $grant reused, break-glass 200 then 429"
