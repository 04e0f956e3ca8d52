#!/usr/bin/env bash
# Hold capacity (issue 12 target 3): N concurrently held requests in one countersign process
# (memory store, no chat). Measures RSS per hold beyond the idle baseline and the data-plane
# throughput (wrk on a token-verified GET refused by a deny rule) idle and while N are held.
#
#   bench/hold-capacity.sh                       # N="2000 10000", release build
#   N="2000" DURATION=5 bench/hold-capacity.sh
#   COUNTERSIGN_BIN=target/debug/countersign bench/hold-capacity.sh   # no build
#
# Starts everything itself on 127.0.0.1, stops it by PID on exit. Needs wrk and python3
# (pyjwt + cryptography in the same venv as run.sh, for the tokens).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
N=${N:-"2000 10000"}
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
PORT=${PORT:-18285}
CONTROL_PORT=${CONTROL_PORT:-18286}
JWKS_PORT=${JWKS_PORT:-18287}
VENV=${BENCH_VENV:-$HOME/.cache/countersign-bench/venv}
COUNTERSIGN_BIN=${COUNTERSIGN_BIN:-}

say() { printf '[hold] %s\n' "$*"; }
die() { printf '[hold] ERROR: %s\n' "$*" >&2; exit 1; }

command -v wrk >/dev/null || die "wrk missing (apt-get install wrk)"
if ! "$VENV/bin/python" -c 'import jwt, cryptography' 2>/dev/null; then
  mkdir -p "$(dirname "$VENV")"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q pyjwt cryptography
fi
if [ -z "$COUNTERSIGN_BIN" ]; then
  (cd "$REPO" && cargo build --release --bin countersign)
  COUNTERSIGN_BIN="$REPO/target/release/countersign"
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
max=0; for n in $N; do [ "$n" -gt "$max" ] && max=$n; done
[ "$(ulimit -n)" -gt $((max + 1000)) ] || die "open-file limit $(ulimit -n) too low for N=$max"

WORK="$(mktemp -d /tmp/countersign-hold.XXXXXX)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

"$VENV/bin/python" "$HERE/lib/gen_tokens.py" "$WORK" >/dev/null
# shellcheck disable=SC1091
. "$WORK/claims.env"
mkdir -p "$WORK/www/.well-known"
cp "$WORK/jwks.json" "$WORK/www/.well-known/jwks.json"
python3 -m http.server "$JWKS_PORT" --bind 127.0.0.1 --directory "$WORK/www" >/dev/null 2>&1 &
PIDS+=($!)
mkdir -p "$WORK/policies"
cat > "$WORK/policies/hold.toml" <<POL
[[rule]]
name = "denied"
path_prefix = "/admin/"
action = "deny"

[[rule]]
name = "held"
methods = ["POST"]
path_prefix = "/hold/"
action = "approve"
[rule.approval]
approvers = ["nobody@example.com"]
hold = "1h"
expires = "2h"
unidentified_requester = "hold"
POL
cat > "$WORK/countersign.toml" <<CFG
[server]
listen = "127.0.0.1:$PORT"
control_listen = "127.0.0.1:$CONTROL_PORT"
public_url = "http://127.0.0.1:$CONTROL_PORT"
threads = 1

[[upstream]]
name = "bench"
url = "http://127.0.0.1:$JWKS_PORT"

[[route]]
path_prefix = "/"
upstream = "bench"

[[issuer]]
issuer = "$ISSUER"
audiences = ["$AUDIENCE"]
jwks_uri = "http://127.0.0.1:$JWKS_PORT/.well-known/jwks.json"
algorithms = ["RS256"]

[policy]
files = ["policies/*.toml"]
default = "deny"

[approvals]
store = "memory"
max_pending_per_requester = 1000000
CFG
TOKEN="$(cat "$WORK/token.good")"

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
throughput() {
  wrk -t1 -c"$CONNS" -d"${DURATION}s" -H "Authorization: Bearer $TOKEN" \
    "http://127.0.0.1:$PORT/admin/x" | awk '/Requests\/sec/ {printf "%d", $2}'
}
start_countersign() {
  (cd "$WORK" && RUST_LOG=warn exec "$COUNTERSIGN_BIN" run --config countersign.toml) \
    >"$WORK/countersign.log" 2>&1 &
  CS=$!
  PIDS+=("$CS")
  for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$PORT/" && return 0
    sleep 0.1
  done
  die "countersign did not start: $(tail -5 "$WORK/countersign.log")"
}

printf '\n| held requests | idle RSS | RSS held | RSS per hold | idle req/s | req/s while held | ratio |\n'
printf '|---:|---:|---:|---:|---:|---:|---:|\n' 
for n in $N; do
  start_countersign
  # Status check: the probe is refused by the deny rule after the token is verified.
  # (503 until the JWKS is fetched.)
  for _ in $(seq 100); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/admin/x")
    [ "$code" = 403 ] && break
    sleep 0.1
  done
  [ "$code" = 403 ] || die "probe answered $code, expected 403: $(tail -3 "$WORK/countersign.log")"
  throughput >/dev/null   # warm-up
  idle_rps=$(throughput)
  idle_rss=$(rss_kib "$CS")
  mkfifo "$WORK/hold.in"
  "$VENV/bin/python" "$HERE/lib/hold_clients.py" 127.0.0.1 "$PORT" /hold/x "$TOKEN" "$n" \
    <"$WORK/hold.in" >"$WORK/hold.out" 2>&1 &
  HOLDER=$!
  PIDS+=("$HOLDER")
  exec 3>"$WORK/hold.in"
  for _ in $(seq 600); do grep -q '^held' "$WORK/hold.out" && break; sleep 0.5; done
  held_line=$(cat "$WORK/hold.out")
  case "$held_line" in "held $n answered 0"*) ;; *) die "holds: $held_line";; esac
  sleep 2
  held_rss=$(rss_kib "$CS")
  held_rps=$(throughput)
  per=$(( (held_rss - idle_rss) / n ))
  ratio=$(awk -v a="$held_rps" -v b="$idle_rps" 'BEGIN {printf "%.2f", a / b}')
  printf '| %d | %d KiB | %d KiB | %s KiB | %s | %s | %s |\n' \
    "$n" "$idle_rss" "$held_rss" "$per" "$idle_rps" "$held_rps" "$ratio"
  exec 3>&-
  wait "$HOLDER" 2>/dev/null || true
  rm -f "$WORK/hold.in"
  kill "$CS"; wait "$CS" 2>/dev/null || true
done
