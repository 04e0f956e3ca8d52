#!/usr/bin/env bash
# HTTP/2 over TLS (issue 12 target 4): h2load against nginx (TLS + h2, plain proxy, no auth) and
# countersign (TLS + h2, RS256 token verified, policy evaluated), side by side, interleaved
# rounds. Both proxies and the upstream nginx are pinned to one core, h2load to the other; one
# worker each; the same self-signed P-256 certificate; HTTP/1.1 keep-alive to the upstream.
#
#   bench/h2.sh                                   # release build, 3 rounds
#   ROUNDS=5 REQUESTS=400000 bench/h2.sh
#   COUNTERSIGN_BIN=target/release/countersign bench/h2.sh   # no build
#
# Starts everything itself on 127.0.0.1, stops it by PID on exit. Needs h2load
# (nghttp2-client), nginx, openssl, python3 (pyjwt + cryptography in the same venv as run.sh).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TAG=h2
ROUNDS=${ROUNDS:-3}
REQUESTS=${REQUESTS:-200000}
CLIENTS=${CLIENTS:-32}            # TLS connections
STREAMS=${STREAMS:-10}            # concurrent streams per connection
WARMUP_REQUESTS=${WARMUP_REQUESTS:-20000}
UPSTREAM_PORT=${UPSTREAM_PORT:-18381}
NGINX_PORT=${NGINX_PORT:-18382}
CS_PORT=${CS_PORT:-18383}
CS_CONTROL_PORT=${CS_CONTROL_PORT:-18384}
PROXY_CPU=${PROXY_CPU:-1}
GEN_CPU=${GEN_CPU:-0}
COUNTERSIGN_BIN=${COUNTERSIGN_BIN:-}
# shellcheck source=bench/lib/pair.sh
. "$HERE/lib/pair.sh"

pair_prepare h2load:nghttp2-client openssl:openssl
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1" \
  -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
cat > "$WORK/nginx-h2.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/nginx-h2.pid;
error_log $WORK/nginx-h2.error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx-proxy-tmp/body;
    proxy_temp_path       $WORK/nginx-proxy-tmp/proxy;
    fastcgi_temp_path     $WORK/nginx-proxy-tmp/fastcgi;
    uwsgi_temp_path       $WORK/nginx-proxy-tmp/uwsgi;
    scgi_temp_path        $WORK/nginx-proxy-tmp/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    http2_max_concurrent_streams 128;
    upstream bench_upstream {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 64;
        keepalive_requests 10000000;
        keepalive_timeout 120s;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT ssl http2 backlog=4096;
        ssl_certificate     $WORK/cert.pem;
        ssl_certificate_key $WORK/key.pem;
        location / {
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
CONF
python3 - "$WORK/countersign.toml" "$WORK" <<'PY'
import sys
path, work = sys.argv[1], sys.argv[2]
s = open(path).read()
s = s.replace("threads = 1\n", 'threads = 1\n\n[server.tls]\ncert = "%s/cert.pem"\nkey = "%s/key.pem"\n' % (work, work), 1)
open(path, "w").write(s)
PY
pair_start "$WORK/nginx-h2.conf"
url() { echo "https://127.0.0.1:$1/"; }
code() { curl -sk --http2 -o /dev/null -w '%{http_version} %{http_code}' -H "Authorization: Bearer $TOKEN" "$(url "$1")"; }
[ "$(code "$NGINX_PORT")" = "2 200" ] || die "nginx: $(code "$NGINX_PORT") (want h2 200): $(tail -3 "$WORK/nginx-proxy.log")"
[ "$(code "$CS_PORT")" = "2 200" ] || die "countersign: $(code "$CS_PORT") (want h2 200): $(tail -3 "$WORK/countersign.log")"
[ "$(curl -sk --http2 -o /dev/null -w '%{http_code}' "$(url "$CS_PORT")")" = 401 ] \
  || die "countersign let a request without a token through"

load() {  # port requests -> "req/s succeeded"
  taskset -c "$GEN_CPU" h2load -n "$2" -c "$CLIENTS" -m "$STREAMS" \
    -H "authorization: Bearer $TOKEN" "$(url "$1")" 2>&1 \
    | awk '/^finished in/ {gsub(",", "", $4); rps=$4} /^requests:/ {ok=$8} /^status codes:/ {s2=$3} END {printf "%s %s %s", rps, ok, s2}'
}

printf '| round | row | req/s | requests succeeded | 2xx | proxy CPU µs/req |\n|---:|---|---:|---:|---:|---:|\n'
for r in $(seq "$ROUNDS"); do
  for row in nginx countersign; do
    if [ "$row" = nginx ]; then port=$NGINX_PORT; pg=$NG; else port=$CS_PORT; pg=$CS; fi
    load "$port" "$WARMUP_REQUESTS" >/dev/null
    before=$(group_cpu "$pg")
    read -r rps ok ok2xx <<<"$(load "$port" "$REQUESTS")"
    after=$(group_cpu "$pg")
    us=$(awk -v a="$after" -v b="$before" -v n="$REQUESTS" 'BEGIN {printf "%.1f", (a - b) * 1e6 / n}')
    printf '| %s | %s | %s | %s | %s | %s |\n' "$r" "$row" "$rps" "$ok" "$ok2xx" "$us"
  done
done
say "h2load -n $REQUESTS -c $CLIENTS -m $STREAMS per run; countersign $("$COUNTERSIGN_BIN" --version 2>/dev/null || echo '?')"
