#!/usr/bin/env bash
# End-to-end test of the Python client (client/python) against a real drfm-server:
#   python_client_test.sh BUILD_DIR SOURCE_DIR
# Starts BUILD_DIR/bin/drfm-server on a free loopback port with a temporary data dir, generates the
# Python stubs into a temporary directory (client/python/generate.sh), runs client/python/example.py
# with a bounded time and checks its output (every layer printed, predictions made), runs
# tests/e2e/python_client_check.py (the server's errors as grpc status codes, dedup, resumed
# watches, predict, export, token auth, a watch across a server restart), then stops the server with
# SIGTERM and checks that it exits 0. Registered with CTest as e2e_python_client.
set -euo pipefail
build=${1:?usage: python_client_test.sh BUILD_DIR SOURCE_DIR}
src=${2:?usage: python_client_test.sh BUILD_DIR SOURCE_DIR}
server_bin=$build/bin/drfm-server
[ -x "$server_bin" ] || { echo "FAIL: $server_bin is not built" >&2; exit 1; }

# A Python with Debian's python3-grpcio, python3-protobuf and python3-numpy (a python3 earlier on
# PATH, e.g. a pyenv one, may lack them). $DRFM_PYTHON overrides.
python=""
for candidate in ${DRFM_PYTHON:-} python3 /usr/bin/python3; do
  if command -v "$candidate" >/dev/null 2>&1 &&
     "$candidate" -c "import grpc, google.protobuf, numpy" >/dev/null 2>&1; then
    python=$candidate
    break
  fi
done
if [ -z "$python" ]; then
  echo "FAIL: no python3 with grpc, protobuf and numpy (apt-get install python3-grpcio python3-protobuf python3-numpy)" >&2
  exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/drfm-python-e2e.XXXXXX")
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  for log in "$tmp"/*.log "$tmp"/*.out; do
    [ -f "$log" ] && { echo "----- $log" >&2; tail -n 60 "$log" >&2; }
  done
  exit 1
}

# The server on port 0: it prints the port it bound (no race for a "free" port). The log exists
# before the loop reads it: the background job opens it only once it has been scheduled (under a
# sanitizer that can be after the first read, and a failing sed ends the script).
: >"$tmp/server.log"
"$server_bin" --listen 127.0.0.1:0 --metrics-listen "" --data-dir "$tmp/data" \
  --threads-per-fit 1 --drain-seconds 10 >"$tmp/server.log" 2>&1 &
server_pid=$!
port=""
for _ in $(seq 1 200); do
  port=$(sed -n 's/.*listening on port \([0-9]*\).*/\1/p' "$tmp/server.log" | head -n 1)
  [ -n "$port" ] && break
  kill -0 "$server_pid" 2>/dev/null || fail "drfm-server exited at startup"
  sleep 0.1
done
[ -n "$port" ] || fail "drfm-server did not report its port within 20 s"
echo "drfm-server (pid $server_pid) on 127.0.0.1:$port; python: $python ($("$python" --version 2>&1))"

# The stubs, generated outside the source tree.
bash "$src/client/python/generate.sh" "$tmp/stubs" >/dev/null || fail "generate.sh failed"
[ -f "$tmp/stubs/drfm/v1/jobs_pb2_grpc.py" ] || fail "generate.sh produced no jobs_pb2_grpc.py"
export DRFM_PYTHON_STUBS=$tmp/stubs
export PYTHONDONTWRITEBYTECODE=1  # no __pycache__ in the source tree

# The example: upload, fit with live layers, predict.
status=0
timeout 300 "$python" "$src/client/python/example.py" --server "127.0.0.1:$port" --layers 2 --width 32 \
  >"$tmp/example.out" 2>&1 || status=$?
cat "$tmp/example.out"
[ "$status" = 0 ] || fail "example.py exited $status"
grep -q "^server 127.0.0.1:$port: SERVING" "$tmp/example.out" || fail "example.py printed no health"
grep -q "^uploaded python-example as ds-" "$tmp/example.out" || fail "example.py uploaded nothing"
for layer in "layer 1 " "layer 2 " "readout "; do
  grep -q "^$layer.*nc1 input .*train_acc .*test_acc " "$tmp/example.out" ||
    fail "example.py printed no '$layer' line with nc1 and accuracies"
done
[ "$(grep -c '^layer \|^readout ' "$tmp/example.out")" = 3 ] || fail "example.py printed a layer twice"
grep -q ": SUCCEEDED$" "$tmp/example.out" || fail "the example's job did not succeed"
grep -q "^predicted 200 rows with python-example-model v1: accuracy .* (matches the readout" \
  "$tmp/example.out" || fail "example.py made no predictions matching the readout's test accuracy"

# The client's checks, error paths included.
status=0
timeout 300 "$python" "$src/tests/e2e/python_client_check.py" --server "127.0.0.1:$port" \
  --server-bin "$server_bin" --work-dir "$tmp" >"$tmp/check.out" 2>&1 || status=$?
cat "$tmp/check.out"
[ "$status" = 0 ] || fail "python_client_check.py exited $status"
grep -q "^ok: NOT_FOUND: train.dataset: no dataset has id or name \"no-such-dataset\"" "$tmp/check.out" ||
  fail "an unknown dataset did not give NOT_FOUND with the server's message"
grep -q "^ALL PYTHON CLIENT CHECKS PASSED$" "$tmp/check.out" || fail "python_client_check.py did not finish"

# SIGTERM: the server stops and exits 0.
kill -TERM "$server_pid"
status=0
for _ in $(seq 1 300); do
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.1
done
kill -0 "$server_pid" 2>/dev/null && fail "drfm-server still running 30 s after SIGTERM"
wait "$server_pid" || status=$?
server_pid=""
[ "$status" = 0 ] || fail "drfm-server exited $status on SIGTERM"
grep -q "drfm-server: stopped" "$tmp/server.log" || fail "drfm-server did not log its stop"
echo "PASS: Python client e2e (example, checks, SIGTERM exit 0)"
