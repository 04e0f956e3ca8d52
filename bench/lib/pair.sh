# Shared by bench/h2.sh and bench/latency.sh (sourced, not run): the setup of a two-row
# comparison, an nginx proxy and countersign in front of the same upstream nginx
# (conf/upstream-nginx.conf), both pinned with it to PROXY_CPU, each in its own process group
# and stopped by PID on exit.
#
# The sourcing script sets TAG, HERE, UPSTREAM_PORT, NGINX_PORT, CS_PORT, CS_CONTROL_PORT,
# PROXY_CPU and COUNTERSIGN_BIN (empty: build release), then calls, in order:
#   pair_prepare TOOL:PACKAGE...   installs what is missing, the token venv and countersign;
#                                  makes WORK with the JWKS, TOKEN, the upstream config and
#                                  countersign.toml + policies (the script may edit them)
#   pair_start NGINX_CONF          checks countersign.toml, starts the three servers, waits
#                                  for countersign's /readyz; sets NG and CS (process groups)
# and may use render, group_cpu, say and die.

CACHE=${BENCH_CACHE:-$HOME/.cache/countersign-bench}
VENV=${BENCH_VENV:-$CACHE/venv}

say() { printf '[%s] %s\n' "$TAG" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "$TAG" "$*" >&2; exit 1; }

render() {  # template -> work file with @NAME@ placeholders replaced
  sed -e "s#@WORK@#$WORK#g" -e "s#@UPSTREAM_PORT@#$UPSTREAM_PORT#g" \
    -e "s#@NGINX_PORT@#$NGINX_PORT#g" -e "s#@COUNTERSIGN_PORT@#$CS_PORT#g" \
    -e "s#@COUNTERSIGN_CONTROL_PORT@#$CS_CONTROL_PORT#g" \
    -e "s#@ISSUER@#$ISSUER#g" -e "s#@AUDIENCE@#$AUDIENCE#g" "$1" >"$2"
}

PIDS=()
pair_cleanup() {
  for p in "${PIDS[@]}"; do kill -- "-$p" 2>/dev/null || kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}

pair_prepare() {
  local need=() t
  for t in nginx:nginx curl:curl "$@"; do
    command -v "${t%%:*}" >/dev/null || need+=("${t#*:}")
  done
  if [ "${#need[@]}" -gt 0 ]; then
    say "apt-get install ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}" >/dev/null
  fi
  if ! "$VENV/bin/python" -c 'import jwt, cryptography' 2>/dev/null; then
    mkdir -p "$CACHE"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q pyjwt cryptography
  fi
  if [ -z "$COUNTERSIGN_BIN" ]; then
    (cd "$HERE/.." && cargo build --release --bin countersign)
    COUNTERSIGN_BIN="$HERE/../target/release/countersign"
  fi
  WORK="$(mktemp -d "/tmp/countersign-$TAG.XXXXXX")"
  trap pair_cleanup EXIT
  chmod 755 "$WORK"   # nginx workers (www-data) read the JWKS from it
  "$VENV/bin/python" "$HERE/lib/gen_tokens.py" "$WORK" >/dev/null
  chmod a+r "$WORK/jwks.json"
  # shellcheck disable=SC1091
  . "$WORK/claims.env"
  TOKEN="$(cat "$WORK/token.good")"
  mkdir -p "$WORK"/{upstream-nginx-tmp,nginx-proxy-tmp}/{body,proxy,fastcgi,uwsgi,scgi} \
    "$WORK/policies"
  render "$HERE/conf/upstream-nginx.conf" "$WORK/upstream-nginx.conf"
  render "$HERE/conf/countersign.toml" "$WORK/countersign.toml"
  cp "$HERE"/conf/policies/*.toml "$WORK/policies/"
}

STARTED=
start() {  # name cpu cmd...: own process group (pid == pgid), pinned; sets STARTED
  local name=$1 cpu=$2; shift 2
  setsid taskset -c "$cpu" "$@" >"$WORK/$name.log" 2>&1 </dev/null &
  STARTED=$!
  PIDS+=("$STARTED")
}

pair_start() {
  local nginx
  nginx=$(command -v nginx)
  "$COUNTERSIGN_BIN" check --config "$WORK/countersign.toml" >/dev/null \
    || die "countersign check failed on the rendered config"
  start upstream "$PROXY_CPU" "$nginx" -p "$WORK" -c "$WORK/upstream-nginx.conf"
  start nginx-proxy "$PROXY_CPU" "$nginx" -p "$WORK" -c "$1"
  NG=$STARTED
  cd "$WORK"   # countersign.toml names its policies relative to its own folder
  start countersign "$PROXY_CPU" env RUST_LOG=warn "$COUNTERSIGN_BIN" run --config countersign.toml
  CS=$STARTED
  cd - >/dev/null
  for _ in $(seq 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$CS_CONTROL_PORT/readyz")" = 200 ] && return 0
    sleep 0.1
  done
  die "countersign not ready: $(tail -3 "$WORK/countersign.log")"
}

# CPU seconds (user+sys) of every process in process group $1.
group_cpu() {
  local tick total=0 f a
  tick=$(getconf CLK_TCK)
  for f in /proc/[0-9]*/stat; do
    # fields after the ")": state ppid pgrp ... utime (index 11) stime (index 12)
    read -r -a a < <(sed 's/^.*) //' "$f" 2>/dev/null) || continue
    [ "${a[2]:-}" = "$1" ] || continue
    total=$((total + a[11] + a[12]))
  done
  echo "$total $tick" | awk '{printf "%.3f", $1 / $2}'
}
