#!/usr/bin/env bash
# Builds the repository's Dockerfile into an image without a Docker engine (the shared
# tools/container.sh beside the repository: buildah with chroot isolation, host network) and tests
# what the image ships:
#   - its configuration: non-root user, entrypoint flags, ports 50051 and 9464, the data volume;
#   - every shared library of the binaries resolves inside the image;
#   - drfm-server started from the image under tini on loopback ports with a bearer token answers
#     gRPC health, rejects a call without the token, runs a synthetic fit and a Fashion-MNIST fit
#     (the data package in the image) and a prediction through the image's CLI (the host's
#     build/bin/drfm when the image has none);
#   - /metrics exports drfm_jobs_submitted_total and every metric the Prometheus rules and the
#     Grafana dashboard use;
#   - SIGTERM drains it and it exits 0;
# and reports the image size. Prints "SKIP: reason" and exits 0 when it cannot run here: not root,
# no container.sh, the Debian mirror unreachable, buildah not installable or not working.
#
# Environment: DRFM_IMAGE_TAG (default drfm:test), DRFM_IMAGE_BUILD_TIMEOUT (seconds, default
# 2700), DRFM_IMAGE_REMOVE=1 (remove the image afterwards; by default it stays, and its build
# stage layers speed up the next run), DRFM_CONTAINER_SH (path of container.sh).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
container_sh=${DRFM_CONTAINER_SH:-$(dirname "$repo")/shared/tools/container.sh}
tag=${DRFM_IMAGE_TAG:-drfm:test}
build_timeout=${DRFM_IMAGE_BUILD_TIMEOUT:-2700}
work=$(mktemp -d /tmp/drfm-image-test.XXXXXX)
server_pid=""

skip() { echo "SKIP: image test: $*"; exit 0; }
fail() { echo "FAIL: image test: $*" >&2; exit 1; }
step() { echo "== $*"; }

cleanup() {
  local rc=$?
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    stop_server >/dev/null 2>&1 || true
  fi
  if [ "${DRFM_IMAGE_REMOVE:-0}" = 1 ]; then podman rmi -f "$tag" >/dev/null 2>&1 || true; fi
  if [ "$rc" != 0 ] && [ -f "$work/server.log" ]; then
    echo "--- server log (last 30 lines)"; tail -n 30 "$work/server.log"
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# ---- can it run here? ----------------------------------------------------------------------------
[ "$(id -u)" = 0 ] || skip "needs root (buildah with chroot isolation)"
[ -f "$container_sh" ] || skip "$container_sh not found"
mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$mirror" ] || skip "no Debian mirror configured for apt"
if command -v curl >/dev/null; then
  curl -fsS --max-time 20 -o /dev/null "${mirror%/}/dists/bookworm/InRelease" \
    || skip "the Debian mirror $mirror is not reachable"
fi
if ! command -v buildah >/dev/null || ! command -v podman >/dev/null || ! command -v debootstrap >/dev/null; then
  step "installing podman, buildah, debootstrap"
  { timeout 300 apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq podman buildah debootstrap; } \
    > "$work/apt.log" 2>&1 || skip "podman/buildah/debootstrap not installable: $(tail -n 1 "$work/apt.log")"
fi
timeout 60 buildah info > /dev/null 2>&1 || skip "buildah does not work on this machine"
step "base image (debootstrap, once)"
timeout 1200 bash "$container_sh" base > "$work/base.log" 2>&1 \
  || skip "cannot make the debian:bookworm base image: $(tail -n 1 "$work/base.log")"

# ---- build -----------------------------------------------------------------------------------------
step "building $tag from $repo/Dockerfile (log: $work/build.log; up to ${build_timeout}s)"
start=$(date +%s)
# Docker format keeps the HEALTHCHECK; cached layers make a rebuild after a source change cheap.
if ! (cd "$repo" && BUILDAH_LAYERS=true BUILDAH_FORMAT=docker \
      timeout "$build_timeout" bash "$container_sh" build "$tag") > "$work/build.log" 2>&1; then
  tail -n 40 "$work/build.log"
  fail "the image did not build"
fi
echo "built in $(( $(date +%s) - start ))s"

in_image() { timeout "${TIMEOUT:-120}" bash "$container_sh" run "$tag" "$@"; }

# ---- configuration ---------------------------------------------------------------------------------
step "image configuration"
config=$(podman image inspect "$tag" --format \
  'user={{.Config.User}}|entrypoint={{join .Config.Entrypoint " "}}|ports={{range $p, $_ := .Config.ExposedPorts}}{{$p}} {{end}}|volumes={{range $v, $_ := .Config.Volumes}}{{$v}} {{end}}')
echo "$config"
user=$(sed -n 's/^user=\([^|]*\)|.*/\1/p' <<<"$config")
[ -n "$user" ] && [ "${user%%:*}" != 0 ] && [ "${user%%:*}" != root ] || fail "the image must run as a non-root user (USER is '$user')"
for want in "drfm-server" "--listen 0.0.0.0:50051" "--metrics-listen 0.0.0.0:9464" "--data-dir /var/lib/drfm" \
            "50051/tcp" "9464/tcp" "volumes=/var/lib/drfm"; do
  grep -qF -- "$want" <<<"$config" || fail "image configuration lacks '$want'"
done
[ "$(in_image id -u)" = "${user%%:*}" ] || fail "commands in the image do not run as $user"

step "shared libraries"
libs=$(in_image sh -c 'for b in /usr/local/bin/*; do ldd "$b"; done')
if grep -q "not found" <<<"$libs"; then grep "not found" <<<"$libs"; fail "libraries missing in the image"; fi
echo "all libraries of $(in_image sh -c 'ls /usr/local/bin | tr "\n" " "')resolve"
in_image test -s /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz \
  || fail "the Fashion-MNIST package is not in the image"

# ---- run the server --------------------------------------------------------------------------------
free_port() {
  local p
  for _ in $(seq 1 50); do
    p=$(( 20000 + RANDOM % 30000 ))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return 0; }
  done
  return 1
}
grpc_port=$(free_port) || fail "no free loopback port"
metrics_port=$(free_port) || fail "no free loopback port"
[ "$grpc_port" != "$metrics_port" ] || metrics_port=$(free_port) || fail "no free loopback port"
token=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')

step "starting drfm-server from the image on 127.0.0.1:$grpc_port (metrics :$metrics_port), with a token"
# tini as in the image's entrypoint (-s: it is not PID 1 here); the flags the entrypoint sets, but on
# loopback (the run shares the host's network).
TIMEOUT=900 in_image sh -c 'umask 077; printf "%s ci\n" "$1" > /tmp/drfm-tokens
  exec /usr/bin/tini -s -- /usr/local/bin/drfm-server --listen "127.0.0.1:$2" \
    --metrics-listen "127.0.0.1:$3" --data-dir /var/lib/drfm --token-file /tmp/drfm-tokens --workers 1' \
  sh "$token" "$grpc_port" "$metrics_port" > "$work/server.log" 2>&1 &
server_pid=$!

# The process of the server's tini: a descendant of the background job.
descendants() {
  local c
  for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do echo "$c"; descendants "$c"; done
}
tini_pid() {
  local p
  for p in $(descendants "$server_pid"); do
    [ "$(cat "/proc/$p/comm" 2>/dev/null)" = tini ] && { echo "$p"; return 0; }
  done
  return 1
}
stop_server() {
  local p
  p=$(tini_pid) || { kill -TERM "$server_pid" 2>/dev/null; return 1; }
  kill -TERM "$p"
  for _ in $(seq 1 60); do kill -0 "$server_pid" 2>/dev/null || break; sleep 1; done
  if kill -0 "$server_pid" 2>/dev/null; then
    kill -KILL "$p" 2>/dev/null || true
    return 1
  fi
}

# Which CLI: the image's, else the host's build, else none (health by a raw gRPC call).
if in_image test -x /usr/local/bin/drfm; then
  cli_where=image
elif [ -x "$repo/build/bin/drfm" ]; then
  cli_where=host
  echo "NOTE: the image has no drfm CLI; using $repo/build/bin/drfm"
else
  cli_where=none
  echo "NOTE: no drfm CLI (neither in the image nor in build/bin): health only, no fit or predict"
fi
# Runs a shell script with the CLI on PATH, DRFM_SERVER and DRFM_TOKEN_FILE set and $W a scratch dir.
cli_script() {
  local script=$1
  local prelude='printf "%s\n" "$1" > "$W/token"; export DRFM_SERVER="127.0.0.1:$2" DRFM_TOKEN_FILE="$W/token"'
  if [ "$cli_where" = image ]; then
    in_image sh -c "W=/tmp; $prelude; $script" sh "$token" "$grpc_port"
  else
    mkdir -p "$work/cli"
    W="$work/cli" PATH="$repo/build/bin:$PATH" timeout "${TIMEOUT:-120}" sh -c "$prelude; $script" sh "$token" "$grpc_port"
  fi
}

raw_health() {  # grpc.health.v1.Health/Check with hand-encoded messages (python3-grpcio)
  python3 - "127.0.0.1:$grpc_port" "$1" <<'PY'
import sys, grpc
name = sys.argv[2].encode()
request = (b"\x0a" + bytes([len(name)]) + name) if name else b""
check = grpc.insecure_channel(sys.argv[1]).unary_unary(
    "/grpc.health.v1.Health/Check", request_serializer=lambda b: b, response_deserializer=lambda b: b)
sys.exit(0 if check(request, timeout=5) == b"\x08\x01" else 1)  # status: SERVING
PY
}

step "waiting for health"
healthy=0
for _ in $(seq 1 60); do
  kill -0 "$server_pid" 2>/dev/null || fail "the server exited during start-up"
  if [ "$cli_where" != none ]; then
    TIMEOUT=30 cli_script 'drfm --timeout 2 health --service drfm.v1.JobService' > "$work/health.out" 2>&1 && { healthy=1; break; }
  elif python3 -c 'import grpc' 2>/dev/null; then
    raw_health drfm.v1.JobService 2>/dev/null && { healthy=1; break; }
  elif (exec 3<>"/dev/tcp/127.0.0.1/$grpc_port") 2>/dev/null; then
    echo "NOTE: no CLI and no python3-grpcio: only checked that the gRPC port accepts connections"
    healthy=1; break
  fi
  sleep 1
done
[ "$healthy" = 1 ] || fail "the server did not become healthy within 60 s"
[ -f "$work/health.out" ] && cat "$work/health.out"
head -n 3 "$work/server.log"

if [ "$cli_where" != none ]; then
  step "a call without the token is rejected"
  if out=$(TIMEOUT=60 cli_script 'unset DRFM_TOKEN_FILE; drfm --timeout 10 models list' 2>&1); then
    fail "models list without a token succeeded: $out"
  fi
  grep -q UNAUTHENTICATED <<<"$out" || fail "expected UNAUTHENTICATED, got: $out"
  echo "rejected: $(head -n 1 <<<"$out")"

  step "synthetic fit"
  TIMEOUT=300 cli_script 'drfm --timeout 60 fit --train synthetic:rows=300,cols=10,classes=3 --layers 1 --width 32 --model smoke' \
    | tee "$work/fit1.out" || fail "the synthetic fit failed"
  grep -q SUCCEEDED "$work/fit1.out" || fail "the synthetic fit did not succeed"

  step "Fashion-MNIST fit (500 training images, from the image's data package)"
  TIMEOUT=600 cli_script 'drfm --timeout 60 fit --train fashion-mnist:train --train-limit 500 --test fashion-mnist:test --test-limit 200 --layers 1 --width 64 --model fmnist' \
    | tee "$work/fit2.out" || fail "the Fashion-MNIST fit failed"
  grep -q SUCCEEDED "$work/fit2.out" || fail "the Fashion-MNIST fit did not succeed"

  step "predict 20 rows with model smoke"
  TIMEOUT=120 cli_script 'awk "BEGIN { srand(7); for (i = 0; i < 20; i++) { l = \"\"; for (j = 0; j < 10; j++) l = l (j ? \",\" : \"\") sprintf(\"%.4f\", 2 * rand() - 1); print l } }" > "$W/rows.csv"
    drfm --timeout 60 predict smoke "$W/rows.csv" --out "$W/labels.csv" && cat "$W/labels.csv"' > "$work/predict.out" \
    || { cat "$work/predict.out"; fail "predict failed"; }
  labels=$(grep -cE '^[0-2]$' "$work/predict.out" || true)
  [ "$labels" = 20 ] || { cat "$work/predict.out"; fail "expected 20 labels in 0..2, got $labels"; }
  echo "20 labels: $(grep -E '^[0-2]$' "$work/predict.out" | tr '\n' ' ')"
fi

step "metrics endpoint"
if command -v curl >/dev/null; then
  curl -fsS --max-time 10 "http://127.0.0.1:$metrics_port/metrics" > "$work/metrics.txt" || fail "GET /metrics failed"
else
  exec 3<>"/dev/tcp/127.0.0.1/$metrics_port"
  printf 'GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
  timeout 10 cat <&3 | sed '1,/^\r\{0,1\}$/d' > "$work/metrics.txt"
  exec 3<&-
fi
grep -E '^drfm_jobs_submitted_total' "$work/metrics.txt" || fail "/metrics has no drfm_jobs_submitted_total"
if [ "$cli_where" != none ]; then
  submitted=$(awk '/^drfm_jobs_submitted_total /{print $2}' "$work/metrics.txt")
  [ "${submitted%.*}" -ge 2 ] || fail "drfm_jobs_submitted_total is $submitted after two fits"
  succeeded=$(awk '/^drfm_jobs_finished_total\{state="succeeded"\} /{print $2}' "$work/metrics.txt")
  [ "${succeeded:-0}" -ge 2 ] 2>/dev/null || fail "drfm_jobs_finished_total{state=\"succeeded\"} is '$succeeded' after two fits"
  echo "drfm_jobs_finished_total{state=\"succeeded\"} $succeeded"
  grep -E '^drfm_predict_rows_total ' "$work/metrics.txt"
  # Every metric the rules and the dashboard query must be exported (recording-rule names, after a
  # colon, and `up` are Prometheus' own). drfm_auth_rejected_total exists after the rejected call.
  missing=()
  for name in $(cat "$repo/deploy/prometheus/rules.yml" "$repo/deploy/grafana/drfm-dashboard.json" \
                | grep -oE '(^|[^:a-z_])(drfm|grpc_server)_[a-z_]+' | sed -E 's/^[^a-z]//; s/_(bucket|sum|count)$//' | sort -u); do
    grep -qE "^${name}(_bucket|_sum|_count)?(\{| )" "$work/metrics.txt" || missing+=("$name")
  done
  [ ${#missing[@]} = 0 ] || fail "metrics used by rules/dashboard but not exported: ${missing[*]}"
  echo "every metric used by rules.yml and the dashboard is exported"
fi

step "SIGTERM"
stop_server || fail "the server did not stop within 60 s of SIGTERM"
set +e; wait "$server_pid"; server_rc=$?; set -e
server_pid=""
tail -n 2 "$work/server.log"
[ "$server_rc" = 0 ] || fail "the server exited with $server_rc after SIGTERM"
grep -q "stopped" "$work/server.log" || fail "no 'stopped' line in the server log"

size=$(podman image inspect "$tag" --format '{{.Size}}')
echo "image $tag: $size bytes ($(numfmt --to=iec --suffix=B "$size")); base debian:bookworm: $(numfmt --to=iec --suffix=B "$(podman image inspect docker.io/library/debian:bookworm --format '{{.Size}}')")"
echo "PASS: image test (CLI: $cli_where)"
