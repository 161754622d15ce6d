#!/usr/bin/env bash
# Tests everything under deploy/ (and the Dockerfile), offline and in about a minute:
#   - Prometheus: `promtool check config` / `check rules`, the rule unit tests (rules_test.yml),
#     every alert shown firing by some test;
#   - the metric names the rules and the dashboard use are the server's (server/metrics.cc);
#   - Kubernetes: deploy/k8s/validate.sh (schemas of every manifest and of the kustomize output,
#     drfm's deployment rules; installs its pinned npm packages);
#   - Grafana: the dashboard is valid JSON with valid PromQL showing every API metric;
#   - the Dockerfile has what the image promises;
#   - the image itself (deploy/test-image.sh: build with buildah, run a fit against it) only with
#     DRFM_TEST_IMAGE=1, because building takes 10-15 minutes on 2 cores; it skips by itself where
#     it cannot run (not root, no mirror, no buildah).
# Needs promtool (Debian package prometheus), node and npm, python3. Ends with the line
# "deploy: N passed, N failed, N skipped" and exits non-zero when a check failed.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
passed=0 failed=0 skipped=0
failures=()
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# check NAME TIMEOUT COMMAND...: runs COMMAND, shows its output, counts the result. Output with a
# line starting "SKIP:" and exit 0 counts as skipped.
check() {
  local name=$1 limit=$2; shift 2
  echo "=== $name"
  local rc
  timeout "$limit" "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  if [ "$rc" = 0 ] && grep -q '^SKIP:' "$log"; then
    echo "--- skipped: $name"; skipped=$((skipped + 1))
  elif [ "$rc" = 0 ]; then
    echo "--- ok: $name"; passed=$((passed + 1))
  else
    [ "$rc" = 124 ] && echo "(timed out after ${limit}s)"
    echo "--- FAILED: $name (exit $rc)"; failed=$((failed + 1)); failures+=("$name")
  fi
}

need_promtool() {
  command -v promtool >/dev/null || { echo "promtool not found: apt-get install prometheus (scripts/install-deps.sh installs it)"; return 1; }
}

every_alert_fires_in_a_test() {
  local alerts fired missing=()
  alerts=$(sed -nE 's/^[[:space:]]*- alert:[[:space:]]*([A-Za-z0-9_]+).*/\1/p' deploy/prometheus/rules.yml | sort -u)
  # An alertname whose exp_alerts lists at least one alert.
  fired=$(awk '
    /^[[:space:]]*alertname:/ { current = $2 }
    /^[[:space:]]*exp_alerts:[[:space:]]*\[\]/ { current = "" }
    /^[[:space:]]*- exp_labels:/ { if (current != "") print current }
  ' deploy/prometheus/rules_test.yml | sort -u)
  for a in $alerts; do grep -qx "$a" <<<"$fired" || missing+=("$a"); done
  if [ ${#missing[@]} -gt 0 ]; then echo "alerts never shown firing in rules_test.yml: ${missing[*]}"; return 1; fi
  echo "all $(wc -w <<<"$alerts") alerts fire in some test: $(tr '\n' ' ' <<<"$alerts")"
}

metric_names_are_the_servers() {
  local missing=() names
  # Metric names (not recording-rule names, which follow a colon) in the rules and the dashboard.
  names=$(cat deploy/prometheus/rules.yml deploy/grafana/drfm-dashboard.json \
    | grep -oE '(^|[^:a-z_])(drfm|grpc_server)_[a-z_]+' | sed -E 's/^[^a-z]//; s/_(bucket|sum|count)$//' | sort -u)
  for n in $names; do grep -q "\"$n\"" server/metrics.cc || missing+=("$n"); done
  if [ ${#missing[@]} -gt 0 ]; then echo "not defined in server/metrics.cc: ${missing[*]}"; return 1; fi
  echo "$(wc -w <<<"$names") metric names, all defined in server/metrics.cc"
}

dashboard_json() {
  python3 -m json.tool deploy/grafana/drfm-dashboard.json > /dev/null && echo "valid JSON" \
    && python3 deploy/grafana/check-dashboard.py deploy/grafana/drfm-dashboard.json
}

dockerfile_essentials() {
  local bad=0 want
  for want in 'FROM debian:bookworm AS build|FROM \$\{DEBIAN_IMAGE\} AS build' 'install-deps\.sh --build-only' \
              '-DDRFM_NATIVE=OFF' '-DDRFM_BUILD_TESTS=OFF' '-DDRFM_BUILD_BENCH=OFF' '^USER ' \
              '^VOLUME .*/var/lib/drfm' '^EXPOSE .*50051' '^EXPOSE .*9464' '^ENTRYPOINT .*drfm-server' \
              '--no-install-recommends' 'rm -rf /var/lib/apt/lists'; do
    grep -qE -- "$want" Dockerfile || { echo "Dockerfile lacks /$want/"; bad=1; }
  done
  grep -q '^build\*/' .dockerignore && grep -q '^\.git$' .dockerignore || { echo ".dockerignore must exclude build*/ and .git"; bad=1; }
  bash -n deploy/test-image.sh deploy/k8s/validate.sh scripts/install-deps.sh || bad=1
  [ "$bad" = 0 ] && echo "Dockerfile, .dockerignore and scripts look right"
}

image_test() {
  if [ "${DRFM_TEST_IMAGE:-0}" != 1 ]; then
    echo "SKIP: image test not requested (DRFM_TEST_IMAGE=1 builds the image, 10-15 min, and runs a fit against it)"
    return 0
  fi
  bash deploy/test-image.sh
}

export -f need_promtool every_alert_fires_in_a_test metric_names_are_the_servers dashboard_json \
  dockerfile_essentials image_test
check "promtool check config" 60 bash -c 'need_promtool && promtool check config deploy/prometheus/prometheus.yml'
check "promtool check rules" 60 bash -c 'need_promtool && promtool check rules deploy/prometheus/rules.yml'
check "promtool test rules" 120 bash -c 'need_promtool && promtool test rules deploy/prometheus/rules_test.yml'
check "every alert has a firing test" 30 bash -c every_alert_fires_in_a_test
check "metric names exist in the server" 30 bash -c metric_names_are_the_servers
check "kubernetes manifests" 420 bash deploy/k8s/validate.sh
check "grafana dashboard" 120 bash -c dashboard_json
check "dockerfile" 30 bash -c dockerfile_essentials
check "image" "${DRFM_IMAGE_TEST_TIMEOUT:-3600}" bash -c image_test

[ ${#failures[@]} -eq 0 ] || echo "failed: ${failures[*]}"
echo "deploy: $passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
