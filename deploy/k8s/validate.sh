#!/usr/bin/env bash
# Validates the Kubernetes manifests offline (no cluster): installs the pinned validator
# (validate/package-lock.json, from the npm registry) and checks every document against the
# Kubernetes and Prometheus Operator schemas and drfm's deployment rules (validate/validate.mjs):
# each file the kustomization lists, and, when kubectl is installed, the `kubectl kustomize`
# output. Exits non-zero on any invalid document.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/validate"
command -v node >/dev/null && command -v npm >/dev/null || {
  echo "validate.sh: node and npm are needed (Debian: apt-get install nodejs npm)" >&2; exit 1; }
# npm ci wipes and reinstalls; skip it when node_modules already holds what the lock file pins.
installed_matches_lock() {
  [ -f node_modules/.package-lock.json ] && node -e '
    const versions = (f) => Object.entries(require(f).packages)
      .filter(([k]) => k).map(([k, v]) => `${k}@${v.version}`).sort().join(" ");
    process.exit(versions("./package-lock.json") === versions("./node_modules/.package-lock.json") ? 0 : 1);'
}
if ! installed_matches_lock; then
  timeout 300 npm ci --no-audit --no-fund --loglevel=error
fi
args=(--kustomization "$here/kustomization.yaml" --self-test)
rendered=""
if command -v kubectl >/dev/null && kubectl kustomize --help >/dev/null 2>&1; then
  rendered=$(mktemp --suffix=.yaml)
  trap 'rm -f "$rendered"' EXIT
  timeout 120 kubectl kustomize "$here" > "$rendered"
  args+=(--rendered "$rendered")
else
  echo "validate.sh: kubectl not found: validating the resource files only, not the kustomize output"
fi
node validate.mjs "${args[@]}"
