#!/usr/bin/env bash
# End-to-end check of the metrics contract (API.md "Prometheus") with a real Prometheus: starts
# build/bin/drfm-server on free loopback ports, runs a small fit and a prediction with build/bin/drfm,
# lints a scrape with `promtool check metrics`, starts /usr/bin/prometheus (Debian package
# `prometheus`) scraping the server's /metrics every second as job "drfm" (with
# deploy/prometheus/rules.yml when it exists and is valid), and waits until Prometheus' HTTP API
# reports up == 1 for the target and the drfm_ series the workload must have produced. Then stops
# Prometheus and SIGTERMs the server, which must exit 0. Loopback only; bounded by a 60 s deadline.
#   bash tests/e2e/prometheus_test.sh BUILD_DIR        (CTest: e2e_prometheus_scrape)
# Environment: PROMETHEUS, PROMTOOL (default /usr/bin/prometheus, /usr/bin/promtool);
# KEEP_WORKDIR=1 keeps the temporary directory (logs, config, TSDB).
set -euo pipefail

build_dir=${1:?usage: prometheus_test.sh BUILD_DIR}
build_dir=$(cd "$build_dir" && pwd)
source_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
server_bin=$build_dir/bin/drfm-server
cli_bin=$build_dir/bin/drfm
prometheus_bin=${PROMETHEUS:-/usr/bin/prometheus}
promtool_bin=${PROMTOOL:-/usr/bin/promtool}
rules_file=$source_dir/deploy/prometheus/rules.yml
deadline=$((SECONDS + 60))

for f in "$server_bin" "$cli_bin"; do
  [ -x "$f" ] || { echo "FAIL: $f is missing: build drfm-server and drfm first" >&2; exit 1; }
done
for f in "$prometheus_bin" "$promtool_bin"; do
  [ -x "$f" ] || { echo "FAIL: $f is missing: install the Debian package prometheus (scripts/install-deps.sh)" >&2; exit 1; }
done
command -v python3 >/dev/null || { echo "FAIL: python3 is needed for HTTP and JSON" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/drfm-prometheus-test.XXXXXX")
server_pid=
prometheus_pid=
status=1
cleanup() {
  if [ -n "$prometheus_pid" ]; then kill "$prometheus_pid" 2>/dev/null || true; wait "$prometheus_pid" 2>/dev/null || true; fi
  if [ -n "$server_pid" ]; then kill -KILL "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  if [ "$status" != 0 ]; then
    for log in "$work"/server.log "$work"/prometheus.log; do
      [ -f "$log" ] && { echo "--- $log (tail)"; tail -n 30 "$log"; }
    done
  fi
  if [ "${KEEP_WORKDIR:-0}" = 1 ]; then echo "work dir kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
remaining() { echo $((deadline - SECONDS)); }

# GET http://127.0.0.1:PORT/PATH -> stdout; non-zero exit on a connection error or non-2xx.
http_get() {
  python3 - "$1" <<'EOF'
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=3) as r:
    sys.stdout.buffer.write(r.read())
EOF
}

# A free TCP port on 127.0.0.1 (for Prometheus, which cannot report a port it chose itself).
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The value of the single sample PromQL `$1` returns right now ("" when none or on error).
prom_value() {
  python3 - "http://127.0.0.1:$prometheus_port/api/v1/query" "$1" <<'EOF'
import json, sys, urllib.parse, urllib.request
url = sys.argv[1] + "?" + urllib.parse.urlencode({"query": sys.argv[2]})
try:
    with urllib.request.urlopen(url, timeout=3) as r:
        body = json.load(r)
except Exception:
    sys.exit(0)
result = body.get("data", {}).get("result", [])
if body.get("status") == "success" and len(result) == 1:
    print(result[0]["value"][1])
EOF
}

# Polls `$2` (a shell command whose stdout is compared with `$3`) until equal or the deadline.
wait_for() {
  local what=$1 command=$2 want=$3 got=
  local pause=0.05
  while [ "$SECONDS" -lt "$deadline" ]; do
    got=$(eval "$command" 2>/dev/null || true)
    [ "$got" = "$want" ] && { echo "ok: $what = $got"; return 0; }
    sleep "$pause"
    pause=$(python3 -c "print(min(0.5, $pause * 2))")
  done
  fail "$what: want '$want', last got '$got' (deadline passed)"
}

# 1. drfm-server on free ports (port 0: the server reports the ports it bound).
"$server_bin" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --data-dir "$work/data" \
  --workers 1 --threads-per-fit 1 --drain-seconds 5 >"$work/server.log" 2>&1 &
server_pid=$!
grpc_port=''
metrics_port=''
while [ "$SECONDS" -lt "$deadline" ] && [ -z "$metrics_port" ]; do
  kill -0 "$server_pid" 2>/dev/null || fail "drfm-server exited at startup"
  line=$(grep -m1 'listening on port' "$work/server.log" || true)
  if [ -n "$line" ]; then
    grpc_port=$(sed -E 's/.*listening on port ([0-9]+).*/\1/' <<<"$line")
    metrics_port=$(sed -nE 's/.*metrics on port ([0-9]+).*/\1/p' <<<"$line")
    [ -n "$metrics_port" ] || fail "drfm-server did not report a metrics port: $line"
  else
    sleep 0.05
  fi
done
[ -n "$metrics_port" ] || fail "drfm-server did not start in time"
drfm() { "$cli_bin" --server "127.0.0.1:$grpc_port" --timeout "$(remaining)" "$@"; }
drfm health --service drfm.v1.JobService --wait >/dev/null || fail "drfm-server is not serving"
echo "ok: drfm-server up (gRPC port $grpc_port, metrics port $metrics_port)"

# 2. A small fit and a prediction of 5 rows.
drfm --output json fit --train "synthetic:rows=300,cols=10,classes=3,seed=1" \
  --test "synthetic:rows=300,cols=10,classes=3,seed=1" --test-limit 50 \
  --layers 1 --width 64 --seed 1 --model prom-model >"$work/fit.json" || fail "drfm fit failed"
grep -q '"state": "SUCCEEDED"' "$work/fit.json" || fail "the fit did not succeed: $(cat "$work/fit.json")"
python3 -c 'import random; random.seed(1)
print("\n".join(",".join(f"{random.gauss(0, 1):.4f}" for _ in range(10)) for _ in range(5)))' >"$work/rows.csv"
drfm predict prom-model "$work/rows.csv" --out "$work/labels.csv" || fail "drfm predict failed"
[ "$(grep -cE '^[0-9]+$' "$work/labels.csv")" = 5 ] || fail "expected 5 labels, got: $(cat "$work/labels.csv")"
echo "ok: fit and prediction done"

# 3. The exposition is valid: promtool's parser and linter.
http_get "http://127.0.0.1:$metrics_port/metrics" >"$work/metrics.txt" || fail "cannot GET /metrics"
if ! "$promtool_bin" check metrics <"$work/metrics.txt" >"$work/promtool.txt" 2>&1; then
  cat "$work/promtool.txt" >&2
  fail "promtool check metrics found problems"
fi
for name in drfm_build_info drfm_jobs_submitted_total drfm_jobs_finished_total drfm_jobs \
  drfm_job_queue_depth drfm_job_duration_seconds_bucket drfm_layer_phase_seconds_bucket \
  drfm_predict_requests_total drfm_predict_latency_seconds_bucket drfm_predict_rows_total \
  drfm_models_stored drfm_store_bytes grpc_server_handled_total grpc_server_handling_seconds_bucket; do
  grep -qE "^$name(\{| )" "$work/metrics.txt" || fail "/metrics lacks $name (API.md)"
done
echo "ok: promtool check metrics; every API.md metric family is exposed"

# 4. Prometheus scraping every second, with the deploy rules when they are valid.
rule_block=
expected_rules=0
if [ -f "$rules_file" ]; then
  if "$promtool_bin" check rules "$rules_file" >"$work/rules-check.txt" 2>&1; then
    rule_block="rule_files: ['$rules_file']"
    expected_rules=$(grep -cE '^[[:space:]]*- (record|alert):' "$rules_file" || true)
  else
    echo "warning: $rules_file does not pass promtool check rules; running without it" >&2
    cat "$work/rules-check.txt" >&2
  fi
fi
cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
$rule_block
scrape_configs:
  - job_name: drfm
    metrics_path: /metrics
    static_configs:
      - targets: ['127.0.0.1:$metrics_port']
EOF
"$promtool_bin" check config "$work/prometheus.yml" >/dev/null || fail "generated prometheus.yml is invalid"
for _ in 1 2 3; do
  prometheus_port=$(free_port)
  "$prometheus_bin" --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address="127.0.0.1:$prometheus_port" --log.level=warn >"$work/prometheus.log" 2>&1 &
  prometheus_pid=$!
  ready=
  while [ "$SECONDS" -lt "$deadline" ] && kill -0 "$prometheus_pid" 2>/dev/null; do
    if [ "$(http_get "http://127.0.0.1:$prometheus_port/-/ready" 2>/dev/null | head -c 40)" != "" ]; then ready=1; break; fi
    sleep 0.1
  done
  [ -n "$ready" ] && break
  kill -0 "$prometheus_pid" 2>/dev/null && fail "prometheus did not become ready in time"
  wait "$prometheus_pid" 2>/dev/null || true  # it exited: most likely the port was taken meanwhile
  prometheus_pid=
done
[ -n "$prometheus_pid" ] || fail "prometheus did not start"
echo "ok: prometheus ready on 127.0.0.1:$prometheus_port"

wait_for 'up{job="drfm"}' "prom_value 'up{job=\"drfm\"}'" 1
wait_for 'drfm_jobs_submitted_total' "prom_value 'drfm_jobs_submitted_total{job=\"drfm\"}'" 1
wait_for 'drfm_jobs_finished_total{state="succeeded"}' \
  "prom_value 'drfm_jobs_finished_total{job=\"drfm\",state=\"succeeded\"}'" 1
wait_for 'drfm_predict_rows_total' "prom_value 'drfm_predict_rows_total{job=\"drfm\"}'" 5
wait_for 'drfm_models_stored' "prom_value 'drfm_models_stored{job=\"drfm\"}'" 1
wait_for 'grpc_server_handled_total{SubmitFit,OK}' \
  "prom_value 'grpc_server_handled_total{job=\"drfm\",grpc_service=\"drfm.v1.JobService\",grpc_method=\"SubmitFit\",grpc_code=\"OK\"}'" 1
wait_for 'drfm_job_duration_seconds_count' "prom_value 'drfm_job_duration_seconds_count{job=\"drfm\"}'" 1

# 5. The deploy rules are loaded, and the groups evaluated every second (the alerts) run cleanly.
if [ "$expected_rules" -gt 0 ]; then
  rules_state() {
    python3 - "http://127.0.0.1:$prometheus_port/api/v1/rules" <<'EOF'
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=3) as r:
    groups = json.load(r)["data"]["groups"]
rules = [rule for g in groups for rule in g["rules"]]
evaluated = [r for r in rules if r.get("health") != "unknown"]
bad = [r["name"] + ": " + r.get("lastError", "") for r in evaluated if r.get("health") != "ok"]
# loaded-count, then whether some rules were evaluated and none failed
print(len(rules), "evaluated-ok" if evaluated and not bad else ("errors: " + "; ".join(bad) if bad else "pending"))
EOF
  }
  wait_for "rules loaded from $(basename "$rules_file")" rules_state "$expected_rules evaluated-ok"
fi

# 6. Clean stop: Prometheus, then SIGTERM to drfm-server, which must exit 0.
kill "$prometheus_pid"
wait "$prometheus_pid" 2>/dev/null || true
prometheus_pid=
kill -TERM "$server_pid"
while kill -0 "$server_pid" 2>/dev/null && [ "$SECONDS" -lt "$((deadline + 15))" ]; do sleep 0.1; done
kill -0 "$server_pid" 2>/dev/null && fail "drfm-server did not exit after SIGTERM"
server_status=0
wait "$server_pid" || server_status=$?
server_pid=
[ "$server_status" = 0 ] || fail "drfm-server exited with status $server_status after SIGTERM"
echo "ok: drfm-server exited 0 after SIGTERM"
echo "PASS: e2e_prometheus_scrape in ${SECONDS}s"
status=0
