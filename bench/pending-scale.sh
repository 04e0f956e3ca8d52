#!/usr/bin/env bash
# Pending scale (issue 13 item 3): N pending approvals across 3 countersign replicas sharing one
# Redis. Measures Redis memory per pending approval, CPU per replica (and Redis CPU and
# commands/s) at idle with 0 and with N pending, GET /approvals paging (first page, full walk
# with the cursor, every id exactly once), and that a small batch of short-lived approvals
# expires on time while the N sit there (the sweep reads the due-index, not every approval).
#
#   bench/pending-scale.sh                                    # N=10000, release build
#   N=1000 IDLE=30 bench/pending-scale.sh
#   COUNTERSIGN_BIN=$PWD/target/debug/countersign bench/pending-scale.sh   # no build
#   HELD=1000 N=100 IDLE=20 bench/pending-scale.sh   # also: HELD callers held open at once
#
# With HELD > 0 it last holds HELD callers open (rule hold = 10 min, spread over the 3
# replicas) and measures the same idle window while they wait: what the per-caller hold lease
# (one compare-and-set per held caller per second, issue 13) costs the replicas and Redis.
#
# Starts redis-server, a python upstream/JWKS server and 3 replicas on 127.0.0.1, stops them by
# PID on exit and removes its temp dir. Needs redis-server, redis-cli, openssl, curl, python3
# (pyjwt + cryptography in the same venv as run.sh, for the tokens).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
N=${N:-10000}
HELD=${HELD:-0}               # callers held open at once in the last phase (0: skip)
SOON=${SOON:-100}              # approvals that expire after SOON_EXPIRES (sweep proof)
SOON_EXPIRES=${SOON_EXPIRES:-20}
IDLE=${IDLE:-60}               # seconds of each idle CPU window
THREADS=${THREADS:-32}         # client threads creating approvals
BASE_PORT=${BASE_PORT:-18290}  # replicas: +1..+3 data, +11..+13 control; +20 redis; +21 upstream
VENV=${BENCH_VENV:-$HOME/.cache/countersign-bench/venv}
COUNTERSIGN_BIN=${COUNTERSIGN_BIN:-}

say() { printf '[pending] %s\n' "$*" >&2; }
die() { printf '[pending] ERROR: %s\n' "$*" >&2; exit 1; }

for t in redis-server redis-cli python3 openssl curl; do
  command -v "$t" >/dev/null || die "$t missing (apt-get install redis-server openssl curl python3)"
done
if ! "$VENV/bin/python" -c 'import jwt, cryptography' 2>/dev/null; then
  mkdir -p "$(dirname "$VENV")"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q pyjwt cryptography
fi
if [ -z "$COUNTERSIGN_BIN" ]; then
  (cd "$REPO" && cargo build --release --bin countersign)
  COUNTERSIGN_BIN="$REPO/target/release/countersign"
fi
[ -x "$COUNTERSIGN_BIN" ] || die "COUNTERSIGN_BIN=$COUNTERSIGN_BIN is not an executable"
ulimit -n 65536 2>/dev/null || true

REDIS_PORT=$((BASE_PORT + 20))
UP_PORT=$((BASE_PORT + 21))
WORK="$(mktemp -d /tmp/countersign-pending.XXXXXX)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for p in $REDIS_PORT $UP_PORT $((BASE_PORT+1)) $((BASE_PORT+2)) $((BASE_PORT+3)) \
         $((BASE_PORT+11)) $((BASE_PORT+12)) $((BASE_PORT+13)); do
  (echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null && die "port $p already in use (set BASE_PORT)"
done

# --- redis
mkdir -p "$WORK/redis"
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
  --dir "$WORK/redis" >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
rcli() { redis-cli -p "$REDIS_PORT" "$@"; }
for _ in $(seq 50); do rcli ping >/dev/null 2>&1 && break; sleep 0.1; done
rcli ping >/dev/null || die "redis did not start: $(tail -3 "$WORK/redis.log")"
REDIS_PID=$(rcli info server | awk -F: '/^process_id/ {print $2}' | tr -d '\r')

# --- tokens, JWKS + upstream (python http.server answers GET /.well-known/jwks.json; the held
# POSTs are never executed, so the upstream only needs to exist)
"$VENV/bin/python" "$HERE/lib/gen_tokens.py" "$WORK" >/dev/null
# shellcheck disable=SC1091
. "$WORK/claims.env"
TOKEN="$(cat "$WORK/token.good")"
mkdir -p "$WORK/www/.well-known"
cp "$WORK/jwks.json" "$WORK/www/.well-known/jwks.json"
python3 -m http.server "$UP_PORT" --bind 127.0.0.1 --directory "$WORK/www" >/dev/null 2>&1 &
PIDS+=($!)
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/signing.pem" 2>/dev/null

mkdir -p "$WORK/policies"
cat > "$WORK/policies/pending.toml" <<POL
[[rule]]
name = "pending-long"
methods = ["POST"]
path_prefix = "/pending/"
action = "approve"
[rule.approval]
approvers = ["nobody@example.com"]
expires = "2h"
unidentified_requester = "hold"

[[rule]]
name = "held-long"
methods = ["POST"]
path_prefix = "/held/"
action = "approve"
[rule.approval]
approvers = ["nobody@example.com"]
hold = "10m"
expires = "2h"
unidentified_requester = "hold"

[[rule]]
name = "pending-soon"
methods = ["POST"]
path_prefix = "/soon/"
action = "approve"
[rule.approval]
approvers = ["nobody@example.com"]
hold = "1s"
expires = "${SOON_EXPIRES}s"
unidentified_requester = "hold"
POL
CS_PIDS=()
DATA_PORTS=""
for i in 1 2 3; do
  cat > "$WORK/replica-$i.toml" <<CFG
[server]
listen = "127.0.0.1:$((BASE_PORT + i))"
control_listen = "127.0.0.1:$((BASE_PORT + 10 + i))"
public_url = "http://127.0.0.1:$((BASE_PORT + 11))"
threads = 1

[[upstream]]
name = "bench"
url = "http://127.0.0.1:$UP_PORT"

[[route]]
path_prefix = "/"
upstream = "bench"

[[issuer]]
issuer = "$ISSUER"
audiences = ["$AUDIENCE"]
jwks_uri = "http://127.0.0.1:$UP_PORT/.well-known/jwks.json"
algorithms = ["RS256"]

[policy]
files = ["policies/*.toml"]
default = "deny"

[approvals]
store = "redis://127.0.0.1:$REDIS_PORT/0"
signing_key = "file:signing.pem"
audit_log = "audit-$i.jsonl"
max_pending_per_requester = 1000000
CFG
  (cd "$WORK" && RUST_LOG=warn exec "$COUNTERSIGN_BIN" run --config "replica-$i.toml") \
    >"$WORK/replica-$i.log" 2>&1 &
  CS_PIDS+=($!)
  PIDS+=($!)
  DATA_PORTS="${DATA_PORTS:+$DATA_PORTS,}127.0.0.1:$((BASE_PORT + i))"
done
CONTROL="127.0.0.1:$((BASE_PORT + 11))"
for i in 1 2 3; do
  code=000
  for _ in $(seq 300); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" \
      "http://127.0.0.1:$((BASE_PORT + i))/nothing" || true)
    [ "$code" = 403 ] && break
    kill -0 "${CS_PIDS[$((i-1))]}" 2>/dev/null || break
    sleep 0.2
  done
  [ "$code" = 403 ] || die "replica $i probe answered $code: $(tail -5 "$WORK/replica-$i.log")"
done
say "redis :$REDIS_PORT, replicas $DATA_PORTS, control $CONTROL; N=$N IDLE=${IDLE}s"

# --- measurements
ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }   # utime+stime
HZ=$(getconf CLK_TCK)
rinfo() { rcli info "$1" | awk -F: -v k="$2" '$1 == k {print $2}' | tr -d '\r'; }
# idle_window LABEL: prints ms CPU/s of each replica and of redis, and redis commands/s
idle_window() {
  local a=() b=() i r0 r1 c0 c1
  for p in "${CS_PIDS[@]}"; do a+=("$(ticks "$p")"); done
  r0=$(awk -v s="$(rinfo cpu used_cpu_sys)" -v u="$(rinfo cpu used_cpu_user)" 'BEGIN {print s + u}')
  c0=$(rinfo stats total_commands_processed)
  sleep "$IDLE"
  for p in "${CS_PIDS[@]}"; do b+=("$(ticks "$p")"); done
  r1=$(awk -v s="$(rinfo cpu used_cpu_sys)" -v u="$(rinfo cpu used_cpu_user)" 'BEGIN {print s + u}')
  c1=$(rinfo stats total_commands_processed)
  local out=""
  for i in 0 1 2; do
    out+="$(awk -v d=$((b[i] - a[i])) -v hz="$HZ" -v t="$IDLE" 'BEGIN {printf "%.1f", d * 1000 / hz / t}') "
  done
  # the 2 INFO calls + this window's own reads count as commands too (a handful)
  out+="$(awk -v a="$r0" -v b="$r1" -v t="$IDLE" 'BEGIN {printf "%.1f", (b - a) * 1000 / t}') "
  out+="$(awk -v a="$c0" -v b="$c1" -v t="$IDLE" 'BEGIN {printf "%.1f", (b - a) / t}')"
  echo "$out"
}

sleep 3   # let start-up settle
mem0=$(rinfo memory used_memory)
keys0=$(rcli dbsize)
say "idle window with 0 pending (${IDLE}s)"
read -r c1_0 c2_0 c3_0 r_0 q_0 <<<"$(idle_window)"

say "creating $N pending approvals over 3 replicas"
created=$("$VENV/bin/python" "$HERE/lib/pending_clients.py" create "$DATA_PORTS" /pending/x "$TOKEN" "$N" "$THREADS")
say "$created"
case "$created" in "created $N failed 0 "*) ;; *) die "create: $created";; esac
create_secs=$(awk '{print $6}' <<<"$created")
sleep 3
mem1=$(rinfo memory used_memory)
keys1=$(rcli dbsize)
per_bytes=$(( (mem1 - mem0) / N ))

# what one pending approval consists of: keys that are not shared indexes
sample_key=$(rcli --scan | grep -v -E '^cs:(due|index|list|pending|by-)' | head -1 || true)
say "idle window with $N pending (${IDLE}s)"
read -r c1_n c2_n c3_n r_n q_n <<<"$(idle_window)"

say "walking GET /approvals (limit 500, status=pending)"
walk=$("$VENV/bin/python" "$HERE/lib/pending_clients.py" walk "$CONTROL" "$TOKEN" pending 500)
say "$walk"
walk100=$("$VENV/bin/python" "$HERE/lib/pending_clients.py" walk "$CONTROL" "$TOKEN" all 100)
say "$walk100"
wj() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }
[ "$(wj "$walk" unique)" = "$N" ] && [ "$(wj "$walk" ids)" = "$N" ] \
  || die "pending walk saw $(wj "$walk" ids) ids ($(wj "$walk" unique) unique), expected $N"
[ "$(wj "$walk100" unique)" = "$N" ] && [ "$(wj "$walk100" ids)" = "$N" ] \
  || die "walk saw $(wj "$walk100" ids) ids ($(wj "$walk100" unique) unique), expected $N"

say "sweep proof: $SOON approvals with expires=${SOON_EXPIRES}s beside the $N"
soon=$("$VENV/bin/python" "$HERE/lib/pending_clients.py" create "$DATA_PORTS" /soon/x "$TOKEN" "$SOON" 8)
case "$soon" in "created $SOON failed 0 "*) ;; *) die "create soon: $soon";; esac
t0=$(date +%s.%N)
expired_at=""
for _ in $(seq $(( (SOON_EXPIRES + 30) * 2 ))); do
  w=$("$VENV/bin/python" "$HERE/lib/pending_clients.py" walk "$CONTROL" "$TOKEN" pending 500)
  if [ "$(wj "$w" ids)" = "$N" ]; then
    expired_at=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}'); break
  fi
  sleep 0.5
done
[ -n "$expired_at" ] || die "the $SOON short-lived approvals were still pending after $((SOON_EXPIRES + 30))s"
final=$("$VENV/bin/python" "$HERE/lib/pending_clients.py" walk "$CONTROL" "$TOKEN" all 500)
expired_audit=$(cat "$WORK"/audit-*.jsonl | grep -c '"expired"' || true)

echo
echo "N=$N pending across 3 replicas, 1 Redis; idle window ${IDLE}s; $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "binary: $COUNTERSIGN_BIN"
echo
echo "| measure | 0 pending | $N pending |"
echo "|---|---:|---:|"
printf '| Redis used_memory | %s B | %s B |\n' "$mem0" "$mem1"
printf '| Redis keys (DBSIZE) | %s | %s |\n' "$keys0" "$keys1"
printf '| **Redis bytes per pending approval** | | **%s B** |\n' "$per_bytes"
printf '| replica 1 / 2 / 3 CPU at idle (ms per s) | %s / %s / %s | %s / %s / %s |\n' \
  "$c1_0" "$c2_0" "$c3_0" "$c1_n" "$c2_n" "$c3_n"
printf '| Redis CPU at idle (ms per s) | %s | %s |\n' "$r_0" "$r_n"
printf '| Redis commands/s at idle (3 replicas) | %s | %s |\n' "$q_0" "$q_n"
echo
echo "creating $N: ${create_secs}s over 3 replicas ($THREADS client threads, Prefer: respond-async)"
echo "GET /approvals?status=pending&limit=500: first page $(wj "$walk" first_page_ms) ms; all $(wj "$walk" pages) pages $(wj "$walk" walk_ms) ms; $(wj "$walk" unique) ids, each once"
echo "GET /approvals?limit=100 (default): first page $(wj "$walk100" first_page_ms) ms; all $(wj "$walk100" pages) pages $(wj "$walk100" walk_ms) ms; $(wj "$walk100" unique) ids, each once"
echo "sweep: $SOON approvals with expires=${SOON_EXPIRES}s all left pending ${expired_at}s after creation, with $N pending beside them; statuses now $(wj "$final" by_status); audit lines naming \"expired\": $expired_audit"
if [ "$HELD" -gt 0 ]; then
  say "holding $HELD callers open over 3 replicas"
  pending_before=$(rcli zcard cs:pending)
  "$VENV/bin/python" "$HERE/lib/pending_clients.py" hold "$DATA_PORTS" /held/x "$TOKEN" "$HELD" \
    $((IDLE + 60)) >"$WORK/hold.out" 2>&1 &
  HOLD_PID=$!
  PIDS+=($HOLD_PID)
  for _ in $(seq 120); do
    [ "$(( $(rcli zcard cs:pending) - pending_before ))" -ge "$HELD" ] && break
    sleep 0.5
  done
  held_now=$(( $(rcli zcard cs:pending) - pending_before ))
  [ "$held_now" -ge "$HELD" ] || die "only $held_now of $HELD callers are held: $(cat "$WORK/hold.out")"
  sleep 3
  say "idle window with $HELD held callers (${IDLE}s)"
  read -r c1_h c2_h c3_h r_h q_h <<<"$(idle_window)"
  rss=""
  for p in "${CS_PIDS[@]}"; do rss+="$(awk '/^VmRSS/ {print $2}' "/proc/$p/status") "; done
  kill "$HOLD_PID" 2>/dev/null || true
  echo
  echo "$HELD callers held open at once (hold = 10 min), spread over the 3 replicas:"
  echo "| measure | $N pending, none held | + $HELD held |"
  echo "|---|---:|---:|"
  printf '| replica 1 / 2 / 3 CPU (ms per s) | %s / %s / %s | %s / %s / %s |\n' \
    "$c1_n" "$c2_n" "$c3_n" "$c1_h" "$c2_h" "$c3_h"
  printf '| Redis CPU (ms per s) | %s | %s |\n' "$r_n" "$r_h"
  printf '| Redis commands/s (3 replicas) | %s | %s |\n' "$q_n" "$q_h"
  printf '| **Redis commands/s per held caller** | | **%s** |\n' \
    "$(awk -v a="$q_n" -v b="$q_h" -v h="$HELD" 'BEGIN {printf "%.2f", (b - a) / h}')"
  echo "replica RSS with $HELD held (KiB): $rss"
fi
if [ -n "$sample_key" ]; then
  echo
  echo "one approval's keys (MEMORY USAGE, bytes):"
  id_part=$(sed -E 's/^.*(apr_[A-Za-z0-9_-]+).*$/\1/' <<<"$sample_key")
  rcli --scan --pattern "*${id_part}*" | while read -r k; do
    printf '  %-60s %6s B  %s\n' "$k" "$(rcli memory usage "$k")" "$(rcli type "$k")"
  done
  echo "shared keys:"
  rcli --scan | grep -v 'apr_' | sort | while read -r k; do
    t=$(rcli type "$k"); case $t in zset) n=$(rcli zcard "$k");; set) n=$(rcli scard "$k");; hash) n=$(rcli hlen "$k");; *) n=-;; esac
    printf '  %-60s %8s B  %s (%s entries)\n' "$k" "$(rcli memory usage "$k")" "$t" "$n"
  done
fi
