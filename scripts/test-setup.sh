#!/usr/bin/env bash
# Installs what Countersign's test suite needs, on a fresh Debian machine (as root) or on one
# that already has it all (then it changes nothing). Safe to run any number of times.
#
#   cmake          pingora-core builds zlib-ng with it
#   redis-server   shared approval store tests start their own on a loopback port
#   chromium       browser tests of the approval page (headless), with chromedriver
#   node, npm      the real outside OpenID Provider (tests/idp, npm package oidc-provider)
#                  and the Express upstream of tests/e2e_path_spellings.rs (tests/upstreams/express)
#   systemd-analyze  checks deploy/countersign.service (scripts/check-deploy.sh, which also
#                  installs its own Python tools, kubernetes-validate and hadolint, on first use)
#   jq             tests/audit_chain.rs runs the documented shell recipe that verifies a log
#
# Then `npm ci` in tests/idp when its node_modules is missing or older than package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*"; }

# command -> Debian package providing it
declare -A wanted=(
  [cmake]=cmake
  [redis-server]=redis-server
  [chromium]=chromium
  [chromedriver]=chromium-driver
  [node]=nodejs
  [npm]=npm
  [systemd-analyze]=systemd
  [jq]=jq
)

missing=()
for cmd in cmake redis-server chromium chromedriver node npm systemd-analyze jq; do
  if command -v "$cmd" >/dev/null 2>&1; then
    say "have $cmd ($(command -v "$cmd"))"
  else
    missing+=("${wanted[$cmd]}")
  fi
done

if ((${#missing[@]} > 0)); then
  sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo=(sudo)
    else
      echo "test-setup: missing ${missing[*]} and not root (no sudo): install them and rerun" >&2
      exit 1
    fi
  fi
  say "installing with apt-get: ${missing[*]}"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

node_major=$(node -p 'process.versions.node.split(".")[0]')
if ((node_major < 20)); then
  echo "test-setup: Node.js $(node --version) is too old for oidc-provider (needs >= 20)" >&2
  exit 1
fi

# npm ci only when node_modules is missing or was installed from another lock file.
idp=tests/idp
stamp="$idp/node_modules/.countersign-lock.sha256"
want=$(sha256sum "$idp/package-lock.json" | cut -d' ' -f1)
if [[ -f $stamp && $(cat "$stamp") == "$want" && -d $idp/node_modules/oidc-provider ]]; then
  say "tests/idp/node_modules is up to date"
else
  say "npm ci in tests/idp"
  (cd "$idp" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" >"$stamp"
fi
[[ -d tests/adaptivecards/node_modules/adaptivecards ]] || { say "npm ci in tests/adaptivecards"; (cd tests/adaptivecards && npm ci --no-audit --no-fund --loglevel=error); }

# Real upstream routers for the path-spelling differential test (tests/e2e_path_spellings.rs):
# Express (npm) and Flask/Werkzeug (PyPI, in its own venv).
express=tests/upstreams/express
stamp="$express/node_modules/.countersign-lock.sha256"
want=$(sha256sum "$express/package-lock.json" | cut -d' ' -f1)
if [[ -f $stamp && $(cat "$stamp") == "$want" && -d $express/node_modules/express ]]; then
  say "tests/upstreams/express/node_modules is up to date"
else
  say "npm ci in tests/upstreams/express"
  (cd "$express" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" >"$stamp"
fi
upvenv="$HOME/.cache/countersign-upstreams-venv"
upreq=tests/upstreams/flask/requirements.txt
if ! cmp -s "$upreq" "$upvenv/.countersign-requirements.txt" 2>/dev/null \
  || ! "$upvenv/bin/python" -c 'import flask' 2>/dev/null; then
  say "python venv with Flask in $upvenv"
  python3 -m venv "$upvenv"
  "$upvenv/bin/pip" install --quiet --disable-pip-version-check -r "$upreq"
  cp "$upreq" "$upvenv/.countersign-requirements.txt"
fi

# Slack's own Python SDK, for the signature interop test (tests/slack_interop.rs).
venv="$HOME/.cache/slack-interop-venv"
if ! "$venv/bin/python" -c 'import slack_sdk' 2>/dev/null; then
  say "python venv with slack_sdk in $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'slack_sdk==3.*'
fi
say "test setup done"
