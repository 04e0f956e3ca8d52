#!/usr/bin/env bash
# Countersign benchmark: direct / nginx / haproxy-jwt / countersign, interleaved, one run
# (see README.md in this folder).
#
#   bench/run.sh                                  # build countersign, 3 interleaved rounds
#   ROUNDS=5 DURATION=20 bench/run.sh             # longer
#   ROWS="direct nginx haproxy-jwt" bench/run.sh  # peers only (no cargo build)
#   COUNTERSIGN_BIN=/path/to/countersign bench/run.sh
#
# Idempotent: installs missing tools (apt-get, pip into a private venv), builds
# countersign (cargo build --release) unless COUNTERSIGN_BIN is given, generates
# keys/tokens into a fresh temp dir, starts every server itself (foreground, own
# process group, pinned with taskset), stops them by PID on exit. Traffic goes to
# 127.0.0.1 only. Adapted from the side-by-side "peers" harness.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"

# ------------------------------------------------------------------ knobs
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}          # seconds per measured run
WARMUP=${WARMUP:-2}               # seconds of warm-up before each measured run
CONNS=${CONNS:-64}
WRK_THREADS=${WRK_THREADS:-1}
GEN_CPUS=${GEN_CPUS:-0}           # load generator
SRV_CPUS=${SRV_CPUS:-1}           # proxy under test
UPSTREAM_CPUS=${UPSTREAM_CPUS:-1} # upstream nginx
NICE=${NICE:--10}                 # niceness for servers + generator (other jobs on the box stay at 0)
[ "$(id -u)" = 0 ] || NICE=0
BAD_RUNS=${BAD_RUNS:-1}           # 1: JWT rows also get a bad-token load run
UNIQUE_RUNS=${UNIQUE_RUNS:-1}     # 1: JWT rows also get a unique-token load run (new valid token per request)
# distinct tokens for the unique runs: by default enough that no server is sent a token twice
# in the whole benchmark at 25,000 req/s (warm-ups included), at least 300,000
if [ -z "${UNIQUE_TOKENS:-}" ]; then
  UNIQUE_TOKENS=$(( ( (ROUNDS * (WARMUP + DURATION) * 25000 + 99999) / 100000 ) * 100000 ))
  [ "$UNIQUE_TOKENS" -ge 300000 ] || UNIQUE_TOKENS=300000
fi
UNIQUE_LOAD_RPS=${UNIQUE_LOAD_RPS:-40000} # a wrk run loads seconds x this tokens (memory: ~0.7 KB each)
BENCH_CACHE=${BENCH_CACHE:-$HOME/.cache/countersign-bench}  # RSA key + unique tokens, reused across runs
SEND_TOKEN_ALL=${SEND_TOKEN_ALL:-1} # 1: non-auth rows get the same Authorization header
COUNT_STATUS_ALL=${COUNT_STATUS_ALL:-0} # 1: exact status tally on good runs too (wrk response() cost)
ALLOW_BROKEN=${ALLOW_BROKEN:-0}
BENCH_PATH=${BENCH_PATH:-/}
DEFAULT_ROWS="direct nginx haproxy-jwt countersign"
ROWS=${ROWS:-$DEFAULT_ROWS}
SKIP_INSTALL=${SKIP_INSTALL:-0}
KEEP_WORK=${KEEP_WORK:-0}
VENV=${BENCH_VENV:-$BENCH_CACHE/venv}
STATE_FILE=${STATE_FILE:-/tmp/countersign-bench.state}
RESULTS_DIR=${RESULTS_DIR:-$HERE/results}
RESULTS_FILE=${RESULTS_FILE:-}
COUNTERSIGN_BIN=${COUNTERSIGN_BIN:-}
SHOWN_ENV="ROWS=\"$ROWS\" ROUNDS=$ROUNDS DURATION=$DURATION WARMUP=$WARMUP CONNS=$CONNS UNIQUE_RUNS=$UNIQUE_RUNS"
[ "$UNIQUE_RUNS" != 1 ] || SHOWN_ENV="$SHOWN_ENV UNIQUE_TOKENS=$UNIQUE_TOKENS"
[ -z "$COUNTERSIGN_BIN" ] || SHOWN_ENV="$SHOWN_ENV COUNTERSIGN_BIN=$COUNTERSIGN_BIN"
COUNTERSIGN_LOG=${COUNTERSIGN_LOG:-warn}   # RUST_LOG for the countersign row (no per-request logs)

# Ports: a range of their own, so the peers harness can run beside this one.
UPSTREAM_PORT=${UPSTREAM_PORT:-18180}
NGINX_PORT=${NGINX_PORT:-18181}
HAPROXY_PORT=${HAPROXY_PORT:-18182}
COUNTERSIGN_PORT=${COUNTERSIGN_PORT:-18185}
COUNTERSIGN_CONTROL_PORT=${COUNTERSIGN_CONTROL_PORT:-18186}

# One extra row (anything that proxies to $UPSTREAM_URL), as in the peers harness.
EXTRA_NAME=${EXTRA_NAME:-}
EXTRA_CMD=${EXTRA_CMD:-}
EXTRA_PORT=${EXTRA_PORT:-}
EXTRA_TOKEN_MODE=${EXTRA_TOKEN_MODE:-jwt}   # jwt | none
EXTRA_DESC=${EXTRA_DESC:-"extra row: $EXTRA_CMD"}

say() { printf '[bench] %s\n' "$*"; }
die() { printf '[bench] ERROR: %s\n' "$*" >&2; exit 1; }

has_row() { case " $ROWS " in *" $1 "*) return 0;; esac; return 1; }

# ------------------------------------------------------------------ install / build
install_deps() {
  local need=()
  command -v nginx   >/dev/null || need+=(nginx)
  command -v haproxy >/dev/null || need+=(haproxy)
  command -v wrk     >/dev/null || need+=(wrk)
  command -v curl    >/dev/null || need+=(curl)
  command -v taskset >/dev/null || need+=(util-linux)
  command -v ss      >/dev/null || need+=(iproute2)
  # pingora-core builds zlib-ng with cmake
  if has_row countersign && [ -z "$COUNTERSIGN_BIN" ]; then
    command -v cmake >/dev/null || need+=(cmake)
  fi
  if [ ${#need[@]} -gt 0 ]; then
    say "apt-get install ${need[*]}"
    apt-get update -qq
    # Debian's postinst would normally start system services on :80; the
    # benchmark never uses those (own configs, own ports).
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
  fi
  if ! "$VENV/bin/python" -c 'import jwt, cryptography' 2>/dev/null; then
    say "creating venv $VENV with pyjwt + cryptography"
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV" || {
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null
      /usr/bin/python3 -m venv "$VENV"
    }
    "$VENV/bin/pip" install -q pyjwt cryptography
  fi
}

build_countersign() {
  if [ -n "$COUNTERSIGN_BIN" ]; then
    [ -x "$COUNTERSIGN_BIN" ] || die "COUNTERSIGN_BIN=$COUNTERSIGN_BIN is not an executable"
    return 0
  fi
  command -v cargo >/dev/null || die "cargo not found (install Rust, or give COUNTERSIGN_BIN)"
  say "cargo build --release (countersign)"
  (cd "$REPO" && cargo build --release --bin countersign)
  COUNTERSIGN_BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/countersign"
  [ -x "$COUNTERSIGN_BIN" ] || die "build produced no $COUNTERSIGN_BIN"
}

# ------------------------------------------------------------------ process control
# State file lines: "<pid> <starttime-ticks> <name>"; every server is started
# with setsid so pid == pgid and the whole group can be stopped by that id.
declare -A PIDS=()

proc_start_time() { sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $20}'; }

# a previous run that was SIGKILLed may have left its servers: stop exactly
# those (pid + start time must both match), nothing else.
reap_stale() {
  [ -f "$STATE_FILE" ] || return 0
  local pid st name cur
  while read -r pid st name; do
    [ -n "$pid" ] || continue
    if [ "$pid" = "#work" ]; then  # work dir of that run (KEEP_WORK=1 keeps it)
      case "$st" in /tmp/countersign-bench.*) [ "$KEEP_WORK" = 1 ] || rm -rf "$st";; esac
      continue
    fi
    cur=$(proc_start_time "$pid") || true
    if [ -n "$cur" ] && [ "$cur" = "$st" ]; then
      say "stopping stale $name (pgid $pid) from an earlier run"
      kill -TERM -- "-$pid" 2>/dev/null || true
      sleep 1
      kill -KILL -- "-$pid" 2>/dev/null || true
    fi
  done < "$STATE_FILE"
  rm -f "$STATE_FILE"
}

start_server() { # name cpus cmd...
  local name=$1 cpus=$2; shift 2
  setsid nice -n "$NICE" taskset -c "$cpus" "$@" >"$WORK/$name.log" 2>&1 </dev/null &
  local pid=$!
  PIDS[$name]=$pid
  local st; st=$(proc_start_time "$pid") || true
  echo "$pid $st $name" >> "$STATE_FILE"
}

stop_all() {
  local name pid
  for name in "${!PIDS[@]}"; do
    pid=${PIDS[$name]}
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  done
  for name in "${!PIDS[@]}"; do
    pid=${PIDS[$name]}
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  PIDS=()
  rm -f "$STATE_FILE"
}

cleanup() {
  local rc=$?
  stop_all
  if [ "$KEEP_WORK" = 1 ] || [ $rc -ne 0 ]; then
    say "work dir kept: $WORK"
  else
    rm -rf "$WORK"
  fi
  exit $rc
}

port_busy() { ss -Hltn "sport = :$1" | grep -q .; }

# wait_ready name url [want]: until url answers (any status, or exactly `want`)
wait_ready() {
  local name=$1 url=$2 want=${3:-} code
  for _ in $(seq 150); do
    if ! kill -0 "${PIDS[$name]}" 2>/dev/null; then
      sed 's/^/    /' "$WORK/$name.log" >&2 || true
      die "$name exited during startup (log above)"
    fi
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true)
    if [ -n "$want" ]; then
      [ "$code" = "$want" ] && return 0
    elif [ -n "$code" ] && [ "$code" != 000 ]; then
      return 0
    fi
    sleep 0.1
  done
  sed 's/^/    /' "$WORK/$name.log" >&2 || true
  die "$name: $url did not answer ${want:-at all} within 15 s (last: ${code:-none})"
}

render() { # template -> stdout, replacing @VAR@ with $VAR
  shopt -u patsub_replacement 2>/dev/null || true   # bash 5.2: '&' must stay literal
  local v s
  s=$(cat "$1")
  for v in WORK UPSTREAM_PORT NGINX_PORT HAPROXY_PORT COUNTERSIGN_PORT COUNTERSIGN_CONTROL_PORT ISSUER AUDIENCE; do
    s=${s//@$v@/${!v}}
  done
  printf '%s\n' "$s"
}

json_str() { local s=${1//\\/\\\\}; s=${s//\"/\\\"}; printf '"%s"' "$s"; }

# ------------------------------------------------------------------ main
[ "$(uname -s)" = Linux ] || die "Linux only"

if [ -n "$EXTRA_NAME" ]; then
  if [ -z "$EXTRA_CMD" ] || [ -z "$EXTRA_PORT" ]; then die "EXTRA_NAME needs EXTRA_CMD and EXTRA_PORT"; fi
  case "$EXTRA_TOKEN_MODE" in jwt|none) ;; *) die "EXTRA_TOKEN_MODE must be jwt or none";; esac
  has_row "$EXTRA_NAME" || ROWS="$ROWS $EXTRA_NAME"
fi

[ "$SKIP_INSTALL" = 1 ] || install_deps
has_row countersign && build_countersign

reap_stale
WORK=$(mktemp -d /tmp/countersign-bench.XXXXXX)
chmod 755 "$WORK"   # nginx workers run as an unprivileged user and read jwks.json
echo "#work $WORK" > "$STATE_FILE"
trap cleanup EXIT
trap 'exit 130' INT TERM

# unique-token runs only where a row verifies JWTs
if [ "$UNIQUE_RUNS" = 1 ]; then
  has_row haproxy-jwt || has_row countersign || { [ -n "$EXTRA_NAME" ] && [ "$EXTRA_TOKEN_MODE" = jwt ]; } \
    || UNIQUE_RUNS=0
fi
gen_args=(--key-file "$BENCH_CACHE/bench-key.pem")
[ "$UNIQUE_RUNS" = 1 ] && gen_args+=(--unique "$UNIQUE_TOKENS" --unique-cache "$BENCH_CACHE")
say "work dir $WORK; RSA-2048 key $BENCH_CACHE/bench-key.pem (made once), JWKS and tokens" \
  "$([ "$UNIQUE_RUNS" = 1 ] && echo "+ $UNIQUE_TOKENS unique tokens (cached in $BENCH_CACHE)")"
"$VENV/bin/python" "$HERE/lib/gen_tokens.py" "$WORK" "${gen_args[@]}"
# shellcheck disable=SC1091
. "$WORK/claims.env"
export ISSUER AUDIENCE KID

mkdir -p "$WORK"/{upstream-nginx-tmp,nginx-proxy-tmp,countersign/policies}
render "$HERE/conf/upstream-nginx.conf" > "$WORK/upstream-nginx.conf"
render "$HERE/conf/nginx-proxy.conf"    > "$WORK/nginx-proxy.conf"
render "$HERE/conf/haproxy-jwt.cfg"     > "$WORK/haproxy-jwt.cfg"
render "$HERE/conf/countersign.toml"    > "$WORK/countersign/countersign.toml"
render "$HERE/conf/policies/bench.toml" > "$WORK/countersign/policies/bench.toml"

# rows: port, auth mode, description. auth: none | jwt | jwt+policy (jwt + policy checks)
declare -A ROW_PORT=( [direct]=$UPSTREAM_PORT [nginx]=$NGINX_PORT [haproxy-jwt]=$HAPROXY_PORT
                      [countersign]=$COUNTERSIGN_PORT )
declare -A ROW_AUTH=( [direct]=none [nginx]=none [haproxy-jwt]=jwt [countersign]=jwt+policy )
declare -A ROW_DESC=(
  [direct]="wrk -> upstream nginx (return 200 \"ok\"), no proxy"
  [nginx]="nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'), plain proxy_pass, upstream keepalive 64, 1 worker"
  [haproxy-jwt]="HAProxy $(haproxy -v | head -1 | awk '{print $3}'), http_auth_bearer + jwt_header_query(alg)=RS256 + jwt_verify(pub.pem) + iss/aud/exp via jwt_payload_query, deny 401, http-reuse always, nbthread 1"
  [countersign]="countersign ($(git -C "$REPO" describe --always --dirty 2>/dev/null || echo '?')), threads = 1, RS256 via [[issuer]] jwks_uri (JWKS served by the upstream nginx), policies/bench.toml (2 non-matching rules, then bench-read with require.scopes), default deny"
)
if [ -n "$EXTRA_NAME" ]; then
  ROW_PORT[$EXTRA_NAME]=$EXTRA_PORT; ROW_AUTH[$EXTRA_NAME]=$EXTRA_TOKEN_MODE; ROW_DESC[$EXTRA_NAME]=$EXTRA_DESC
fi
for r in $ROWS; do [ -n "${ROW_PORT[$r]:-}" ] || die "unknown row '$r' (known: ${!ROW_PORT[*]})"; done

# every port we are about to use must be free (never kill a stranger)
want_ports="$UPSTREAM_PORT"
for r in $ROWS; do [ "$r" = direct ] || want_ports="$want_ports ${ROW_PORT[$r]}"; done
has_row countersign && want_ports="$want_ports $COUNTERSIGN_CONTROL_PORT"
for p in $want_ports; do port_busy "$p" && die "127.0.0.1:$p already in use (not ours); set *_PORT to move"; done

say "starting servers (generator cpu $GEN_CPUS, proxies cpu $SRV_CPUS, upstream cpu $UPSTREAM_CPUS)"
start_server upstream "$UPSTREAM_CPUS" nginx -e "$WORK/upstream-nginx.error.log" -p "$WORK" -c "$WORK/upstream-nginx.conf"
wait_ready upstream "http://127.0.0.1:$UPSTREAM_PORT/"
for r in $ROWS; do
  ready_url="http://127.0.0.1:${ROW_PORT[$r]}/"; ready_code=""
  case $r in
    direct) ;;
    nginx) start_server nginx "$SRV_CPUS" nginx -e "$WORK/nginx-proxy.error.log" -p "$WORK" -c "$WORK/nginx-proxy.conf" ;;
    haproxy-jwt)
      haproxy -c -q -f "$WORK/haproxy-jwt.cfg" || die "haproxy config check failed"
      start_server haproxy-jwt "$SRV_CPUS" haproxy -db -f "$WORK/haproxy-jwt.cfg" ;;
    countersign)
      "$COUNTERSIGN_BIN" check --config "$WORK/countersign/countersign.toml" \
        || die "countersign check rejected the bench config (above)"
      start_server countersign "$SRV_CPUS" env RUST_LOG="$COUNTERSIGN_LOG" TOKIO_WORKER_THREADS=1 \
        "$COUNTERSIGN_BIN" run --config "$WORK/countersign/countersign.toml"
      # ready = every issuer has keys (SPEC 6), so the enforcement check never sees a 503
      ready_url="http://127.0.0.1:$COUNTERSIGN_CONTROL_PORT/readyz"; ready_code=200 ;;
    "$EXTRA_NAME")
      # EXTRA_CMD runs under bash -c with these variables exported:
      export PORT="$EXTRA_PORT" UPSTREAM_URL="http://127.0.0.1:$UPSTREAM_PORT" \
             JWKS_URL="http://127.0.0.1:$UPSTREAM_PORT/.well-known/jwks.json" \
             JWKS_FILE="$WORK/jwks.json" PUB_PEM="$WORK/pub.pem" \
             JWT_ISSUER="$ISSUER" JWT_AUDIENCE="$AUDIENCE" JWT_KID="$KID" BENCH_WORK="$WORK"
      start_server "$EXTRA_NAME" "$SRV_CPUS" bash -c "$EXTRA_CMD" ;;
  esac
  [ "$r" = direct ] || wait_ready "$r" "$ready_url" "$ready_code"
done

# rows.json for the driver: rows in order + process groups that count as "ours"
{
  printf '{"rows":['
  sep=""
  for r in $ROWS; do
    pg=${PIDS[$r]:-${PIDS[upstream]}}   # direct: the upstream itself
    printf '%s{"name":"%s","port":%s,"auth":"%s","pgid":%s,"desc":%s}' \
      "$sep" "$r" "${ROW_PORT[$r]}" "${ROW_AUTH[$r]}" "$pg" "$(json_str "${ROW_DESC[$r]}")"
    sep=","
  done
  printf '],"upstream_port":%s,"upstream_pgid":%s,"pgids":[' "$UPSTREAM_PORT" "${PIDS[upstream]}"
  sep=""
  for n in "${!PIDS[@]}"; do printf '%s%s' "$sep" "${PIDS[$n]}"; sep=","; done
  printf ']}\n'
} > "$WORK/rows.json"

if [ -z "$RESULTS_FILE" ]; then
  mkdir -p "$RESULTS_DIR"
  RESULTS_FILE="$RESULTS_DIR/results-$(date -u +%F-%H%M).md"
fi

say "rows: $ROWS"
taskset -c "$GEN_CPUS" "$VENV/bin/python" "$HERE/lib/bench.py" \
  --rows "$WORK/rows.json" --work "$WORK" --out "$RESULTS_FILE" \
  --rounds "$ROUNDS" --duration "$DURATION" --warmup "$WARMUP" --conns "$CONNS" \
  --threads "$WRK_THREADS" --gen-cpus "$GEN_CPUS" --srv-cpus "$SRV_CPUS" \
  --upstream-cpus "$UPSTREAM_CPUS" --path "$BENCH_PATH" \
  --bad-runs "$BAD_RUNS" --send-token-all "$SEND_TOKEN_ALL" \
  --unique-runs "$UNIQUE_RUNS" --unique-load-rps "$UNIQUE_LOAD_RPS" \
  --count-status-all "$COUNT_STATUS_ALL" --allow-broken "$ALLOW_BROKEN" \
  --nice "$NICE" --command "$(printf '%q ' "$0" | sed 's/ $//')" \
  --env "$SHOWN_ENV"
say "done: $RESULTS_FILE"
