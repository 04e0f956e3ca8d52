#!/usr/bin/env bash
# Renders replica-1.toml .. replica-3.toml for the README's worked example.
#   ISSUER=https://idp.example.com UPSTREAM=http://127.0.0.1:7000 examples/replicas/render.sh
set -euo pipefail
cd "$(dirname "$0")"
: "${ISSUER:?set ISSUER to your token issuer}" "${UPSTREAM:?set UPSTREAM to the protected API}"
[ -f approval-signing.pem ] || openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out approval-signing.pem 2>/dev/null
for n in 1 2 3; do
  sed -e "s|@N@|$n|g" -e "s|@ISSUER@|$ISSUER|g" -e "s|@UPSTREAM@|$UPSTREAM|g" replica.toml.in > "replica-$n.toml"
done
echo "rendered replica-1.toml replica-2.toml replica-3.toml"
