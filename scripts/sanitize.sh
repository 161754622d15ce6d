#!/usr/bin/env bash
# Builds drfm with sanitizers in separate build directories and runs the tests there with CTest.
# scripts/test.sh (CI) runs both after the normal suite; run it by hand the same way:
#   bash scripts/sanitize.sh asan   AddressSanitizer + UndefinedBehaviorSanitizer (GCC), build-asan/:
#                                   every test of the suite (see EXCLUDE_ASAN below)
#   bash scripts/sanitize.sh tsan   ThreadSanitizer (clang + LLVM libomp + libarcher), build-tsan/:
#                                   the server and queue tests, i.e. every test whose binary is a
#                                   tests/server/* or tests/e2e/* GoogleTest binary, plus the e2e
#                                   shell tests (they drive build-tsan/bin/drfm-server)
#   bash scripts/sanitize.sh        both, asan first
# Assumes scripts/install-deps.sh has run. Every sanitizer report of every process (test binaries
# and the drfm-server / drfm children they start) is written to <build>/sanitizer-logs/; the run
# fails if CTest fails or if any report was written there, and prints the reports.
# Environment:
#   DRFM_SANITIZE_JOBS   ctest -j (default 2)         DRFM_BUILD_JOBS   ninja -j (default nproc)
#   DRFM_CCACHE=0        do not use ccache even where it is installed
#   CTEST_ARGS           extra ctest arguments, e.g. CTEST_ARGS="-R ServerTest" for a quick look
# shellcheck disable=SC2317 # run_asan / run_tsan are called as "run_$mode"
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
modes=("$@")
[ ${#modes[@]} -gt 0 ] || modes=(asan tsan)
for mode in "${modes[@]}"; do
  case "$mode" in asan|tsan) ;; *) echo "sanitize.sh: unknown mode '$mode' (asan|tsan)" >&2; exit 2 ;; esac
done
jobs=${DRFM_SANITIZE_JOBS:-2}
build_jobs=${DRFM_BUILD_JOBS:-$(nproc)}

# The deploy checks (deploy/test-deploy.sh: promtool, npm schema validation and the container
# image, which compiles its own Release build inside the image) run no binary of this build
# directory: under a sanitizer they would only repeat the normal run.
EXCLUDE_ASAN='^deploy_checks$'
# Besides the GoogleTest binaries of tests/server and tests/e2e, these CTest tests drive the
# sanitized drfm-server and drfm binaries from the outside.
TSAN_EXTRA_TESTS=(e2e_prometheus_scrape e2e_python_client)

launcher=()
if [ "${DRFM_CCACHE:-1}" != 0 ] && command -v ccache >/dev/null; then
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  export CCACHE_BASEDIR="$root" CCACHE_NOHASHDIR=1
fi

configure() {  # configure BUILD_DIR CMAKE_ARGS...
  local dir=$1; shift
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" -DDRFM_BUILD_TESTS=ON \
    -DDRFM_BUILD_BENCH=OFF "${launcher[@]}" "$@" >"$dir/configure.log" 2>&1 \
    || { cat "$dir/configure.log"; return 1; }
}

# Prints the reports in LOG_DIR; fails if there is any.
check_logs() {
  local dir=$1 found=0
  for f in "$dir"/*; do
    [ -s "$f" ] || continue
    found=1
    echo "==== sanitizer report: $f"
    cat "$f"
  done
  return "$found"
}

run_ctest() {  # run_ctest BUILD_DIR LOG_DIR CTEST_ARGS...
  local dir=$1 logs=$2; shift 2
  local status=0
  # shellcheck disable=SC2086 # CTEST_ARGS is a list of arguments
  (cd "$dir" && ctest --output-on-failure -j "$jobs" --timeout 1800 "$@" ${CTEST_ARGS:-}) || status=$?
  check_logs "$logs" || status=1
  if [ "$status" != 0 ]; then
    echo "sanitize.sh: FAILED in $dir (CTest status or sanitizer reports above; logs in $logs)" >&2
  fi
  return "$status"
}

run_asan() {
  local dir=build-asan
  local start=$SECONDS
  echo "== ASan + UBSan: configure and build ($dir)"
  mkdir -p "$dir"
  configure "$dir" -DDRFM_SANITIZE=address,undefined
  cmake --build "$dir" -j "$build_jobs"
  echo "== ASan + UBSan: build took $((SECONDS - start)) s"
  local logs=$root/$dir/sanitizer-logs
  rm -rf "$logs"; mkdir -p "$logs"
  # detect_leaks: LeakSanitizer at every process exit. log_path + log_exe_name: one file per
  # reporting process (children such as drfm-server included), checked after CTest.
  export ASAN_OPTIONS="detect_leaks=1:check_initialization_order=1:strict_init_order=1:detect_stack_use_after_return=1:strict_string_checks=1:log_path=$logs/asan:log_exe_name=1"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$logs/ubsan:log_exe_name=1"
  export LSAN_OPTIONS="suppressions=$root/tests/sanitizers/lsan.supp:print_suppressions=0"
  # Two tests at a time on two cores: OpenMP threads yield instead of spinning.
  export OMP_WAIT_POLICY=passive
  start=$SECONDS
  local status=0
  run_ctest "$dir" "$logs" -E "$EXCLUDE_ASAN" || status=$?
  echo "== ASan + UBSan: tests took $((SECONDS - start)) s"
  unset ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS
  return "$status"
}

run_tsan() {
  local dir=build-tsan
  local start=$SECONDS
  echo "== TSan: configure and build ($dir)"
  # clang, so that OpenMP is LLVM's libomp: with libarcher as its OMPT tool, TSan sees the
  # synchronization of parallel regions, barriers and reductions (GCC's libgomp is not
  # instrumented and would make every OpenMP region look racy).
  local clang=${DRFM_TSAN_CXX:-clang++}
  command -v "$clang" >/dev/null || { echo "sanitize.sh: $clang is missing (scripts/install-deps.sh installs clang)" >&2; return 1; }
  local llvm_lib
  llvm_lib=$(dirname "$(readlink -f "$(command -v "$clang")")")/../lib
  local archer=$llvm_lib/libarcher.so
  [ -f "$archer" ] || { echo "sanitize.sh: $archer is missing (Debian package libomp-dev)" >&2; return 1; }
  mkdir -p "$dir"
  configure "$dir" -DCMAKE_CXX_COMPILER="$clang" -DDRFM_SANITIZE=thread
  # Only what the selected tests run: the server and e2e test binaries and the two programs.
  local targets
  mapfile -t targets < <(ninja -C "$dir" -t targets all | sed -nE 's/^((server|e2e)_[A-Za-z0-9_]+_test): phony$/\1/p' | sort -u)
  cmake --build "$dir" -j "$build_jobs" --target drfm-server drfm "${targets[@]}"
  echo "== TSan: build took $((SECONDS - start)) s"
  # Test numbers of the selected tests: those whose command is a server_* or e2e_* binary.
  local numbers
  numbers=$(cd "$dir" && ctest --show-only=json-v1 | python3 -c '
import json, os, re, sys
extra = set(sys.argv[1:])
tests = json.load(sys.stdin)["tests"]
picked = [str(i) for i, t in enumerate(tests, 1)
          if t["name"] in extra
          or re.fullmatch(r"(server|e2e)_\w+_test", os.path.basename((t.get("command") or [""])[0]))]
print(",".join(picked))' "${TSAN_EXTRA_TESTS[@]}")
  [ -n "$numbers" ] || { echo "sanitize.sh: no server/e2e tests found in $dir" >&2; return 1; }
  local logs=$root/$dir/sanitizer-logs
  rm -rf "$logs"; mkdir -p "$logs"
  export TSAN_OPTIONS="suppressions=$root/tests/sanitizers/tsan.supp:second_deadlock_stack=1:history_size=4:log_path=$logs/tsan:log_exe_name=1"
  export OMP_TOOL_LIBRARIES=$archer OMP_WAIT_POLICY=passive
  start=$SECONDS
  local status=0
  run_ctest "$dir" "$logs" -I "0,0,0,$numbers" || status=$?
  echo "== TSan: $(tr ',' '\n' <<<"$numbers" | wc -l) tests took $((SECONDS - start)) s"
  unset TSAN_OPTIONS OMP_TOOL_LIBRARIES
  return "$status"
}

overall=0
for mode in "${modes[@]}"; do
  "run_$mode" || overall=1
done
exit $overall
