# Sourced by the scripts that drive a throwaway drfm-server through the CLI (run-main.sh,
# paper-mlp.sh): start_local_server OUT_DIR starts build/bin/drfm-server with its embedded defaults
# on free loopback ports and a fresh data dir (log in OUT_DIR/server.log), defines drfm() to call
# the CLI against it, waits until it is healthy, and stops it with SIGTERM (printing its exit
# status) and removes the data dir when the calling script exits.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_local_server() {
  local out=$1
  local_data_dir=$(mktemp -d)
  local_port=$(free_port)
  local metrics_port
  metrics_port=$(free_port)
  build/bin/drfm-server --listen "127.0.0.1:$local_port" --metrics-listen "127.0.0.1:$metrics_port" \
    --data-dir "$local_data_dir" > "$out/server.log" 2>&1 &
  local_server_pid=$!
  trap stop_local_server EXIT
  drfm health --wait --timeout 30
}

stop_local_server() {
  if kill -0 "$local_server_pid" 2>/dev/null; then
    kill -TERM "$local_server_pid"
    local status=0
    wait "$local_server_pid" || status=$?
    echo "drfm-server stopped (exit $status)"
  fi
  rm -rf "$local_data_dir"
}

drfm() { build/bin/drfm --server "127.0.0.1:$local_port" "$@"; }
