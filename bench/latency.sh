#!/usr/bin/env bash
# Latency at a fixed moderate rate (issue 12 target 5): p50/p99/p99.9 of nginx's plain proxy and
# of countersign (RS256 token verified from its cache, policy evaluated), HTTP/1.1, both driven
# at the same constant rate, by default half of nginx's maximum measured in the same run.
# oha paces the requests (`-q`) and corrects for coordinated omission (`--latency-correction`):
# a late answer also delays the requests queued behind it, and those delays are counted.
# Proxies and the upstream nginx share one core, oha runs on the other; rows interleaved.
#
#   bench/latency.sh                              # release build, 3 rounds of 20 s
#   RATE=20000 ROUNDS=5 bench/latency.sh
#   COUNTERSIGN_BIN=target/release/countersign bench/latency.sh
#
# Starts everything itself on 127.0.0.1, stops it by PID on exit. Needs wrk, nginx, python3
# (pyjwt + cryptography in the same venv as run.sh) and oha (installed with `cargo install`
# into ~/.cache/countersign-bench/bin the first time).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TAG=latency
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-20}
CONNS=${CONNS:-64}
RATE=${RATE:-}                    # requests/s; default: half of nginx's max in this run
UPSTREAM_PORT=${UPSTREAM_PORT:-18391}
NGINX_PORT=${NGINX_PORT:-18392}
CS_PORT=${CS_PORT:-18393}
CS_CONTROL_PORT=${CS_CONTROL_PORT:-18394}
PROXY_CPU=${PROXY_CPU:-1}
GEN_CPU=${GEN_CPU:-0}
OHA_VERSION=${OHA_VERSION:-1.16.0}
COUNTERSIGN_BIN=${COUNTERSIGN_BIN:-}
# shellcheck source=bench/lib/pair.sh
. "$HERE/lib/pair.sh"

OHA="$CACHE/bin/oha"
if [ ! -x "$OHA" ]; then
  say "cargo install oha $OHA_VERSION (once, into $CACHE)"
  cargo install --quiet --locked --root "$CACHE" --version "$OHA_VERSION" oha
fi
pair_prepare wrk:wrk
render "$HERE/conf/nginx-proxy.conf" "$WORK/nginx-proxy.conf"
pair_start "$WORK/nginx-proxy.conf"
url() { echo "http://127.0.0.1:$1/"; }
code() { curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$(url "$1")"; }
[ "$(code "$NGINX_PORT")" = 200 ] || die "nginx answered $(code "$NGINX_PORT")"
[ "$(code "$CS_PORT")" = 200 ] || die "countersign answered $(code "$CS_PORT"): $(tail -3 "$WORK/countersign.log")"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$(url "$CS_PORT")")" = 401 ] \
  || die "countersign let a request without a token through"

if [ -z "$RATE" ]; then
  max=$(taskset -c "$GEN_CPU" wrk -t1 -c"$CONNS" -d5s "$(url "$NGINX_PORT")" \
    | awk '/Requests\/sec/ {printf "%d", $2}')
  RATE=$((max / 2))
  say "nginx max ${max} req/s (wrk, 5 s): rate ${RATE} req/s"
fi

# One paced run -> "achieved_rps p50_ms p99_ms p999_ms ok_fraction".
paced() {
  taskset -c "$GEN_CPU" "$OHA" --no-tui --output-format json --latency-correction \
    -z "${DURATION}s" -q "$RATE" -c "$CONNS" -H "Authorization: Bearer $TOKEN" "$(url "$1")" \
    | python3 -c '
import json, sys
r = json.load(sys.stdin)
s, p = r["summary"], r["latencyPercentiles"]
ms = lambda k: "%.3f" % (1000 * (p.get(k) or 0))
codes = r.get("statusCodeDistribution", {})
ok = codes.get("200", 0) / max(1, sum(codes.values()))
print("%.0f %s %s %s %.4f" % (s["requestsPerSec"], ms("p50"), ms("p99"), ms("p99.9"), ok))'
}

printf '| round | row | target req/s | achieved req/s | p50 ms | p99 ms | p99.9 ms | 200s |\n'
printf '|---:|---|---:|---:|---:|---:|---:|---:|\n'
for r in $(seq "$ROUNDS"); do
  for row in nginx countersign; do
    if [ "$row" = nginx ]; then port=$NGINX_PORT; else port=$CS_PORT; fi
    read -r rps p50 p99 p999 ok <<<"$(paced "$port")"
    printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$r" "$row" "$RATE" "$rps" "$p50" "$p99" "$p999" "$ok"
  done
done
say "oha -z ${DURATION}s -q $RATE -c $CONNS --latency-correction per run"
