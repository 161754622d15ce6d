#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, clang with ASan + UBSan) in build-fuzz/ and runs each for a
# bounded time, one after another, on a copy of its seed corpus (fuzz/corpus/<target>/) and past
# crash inputs (fuzz/regressions/<target>/), with its dictionary (fuzz/dicts/<target>.dict) when
# it has one. Exits non-zero when any target finds a crash, leak, timeout, out-of-memory or a
# broken property; the reproducer is left in build-fuzz/findings/<target>/ (replay it with
# `build-fuzz/bin/<target> FILE`).
#   fuzz.sh                   every target for 300 s (on demand)
#   fuzz.sh --ci              every target for 20 s (what scripts/test.sh runs)
#   fuzz.sh --seconds N       every target for N s
#   fuzz.sh --target NAME     only NAME (e.g. model_fuzz); may be repeated
#   fuzz.sh --build-only      configure and build, run nothing
#   fuzz.sh --jobs N          ninja build parallelism (default: the number of cores)
# New corpus entries found during a run stay in build-fuzz/corpus/<target>/; copy the useful ones
# into fuzz/corpus/<target>/ (after `<target> -merge=1 fuzz/corpus/<target> build-fuzz/corpus/<target>`).
# Needs clang and its libFuzzer/sanitizer runtimes: Debian clang, libclang-rt-14-dev, libomp-dev.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

seconds=300
build_only=0
jobs=$(nproc)
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --ci) seconds=20 ;;
    --seconds) seconds=${2:?--seconds needs a value}; shift ;;
    --target) targets+=("${2:?--target needs a name}"); shift ;;
    --build-only) build_only=1 ;;
    --jobs) jobs=${2:?--jobs needs a value}; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "fuzz.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$seconds" in ''|*[!0-9]*) echo "fuzz.sh: --seconds must be a whole number" >&2; exit 2 ;; esac

all=(npy_fuzz idx_fuzz csv_fuzz model_fuzz safetensors_fuzz upload_fuzz import_fuzz request_fuzz)
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
for t in "${targets[@]}"; do
  case " ${all[*]} " in *" $t "*) ;; *) echo "fuzz.sh: unknown target '$t' (known: ${all[*]})" >&2; exit 2 ;; esac
done

for tool in clang clang++; do
  command -v "$tool" >/dev/null || { echo "fuzz.sh: $tool not found; install the Debian packages clang libclang-rt-14-dev libomp-dev" >&2; exit 1; }
done

build=build-fuzz
# -O1 -g1 (line tables) with assertions on: Eigen's and our own checks stay active while fuzzing.
CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DDRFM_FUZZ=ON -DDRFM_BUILD_TESTS=OFF \
  -DDRFM_BUILD_BENCH=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" \
  ${CMAKE_CXX_COMPILER_LAUNCHER:+-DCMAKE_CXX_COMPILER_LAUNCHER=$CMAKE_CXX_COMPILER_LAUNCHER} >/dev/null
ninja -C "$build" -j "$jobs" "${targets[@]}"
[ "$build_only" = 0 ] || exit 0

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
# The server targets keep a store in a temporary directory; tmpfs when there is one.
tmp=$(mktemp -d /dev/shm/drfm-fuzz.XXXXXX 2>/dev/null || mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export DRFM_FUZZ_TMPDIR=$tmp
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
failed=()
for t in "${targets[@]}"; do
  name=${t%_fuzz}
  work="$root/$build/corpus/$t"
  findings="$root/$build/findings/$t"
  mkdir -p "$work" "$findings"
  # The seeds and every past crash input: a regression shows up in the first second.
  cp -n "$root/fuzz/corpus/$name/"* "$root/fuzz/regressions/$name/"* "$work/" 2>/dev/null || true
  # One process per target (one core); any single allocation over 2 GiB is a finding (a parser
  # that trusts a size it read), as is an input that takes over 10 s.
  args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048
        -max_len=8192 -print_final_stats=1 -artifact_prefix="$findings/")
  [ -f "$root/fuzz/dicts/$name.dict" ] && args+=(-dict="$root/fuzz/dicts/$name.dict")
  echo "== $t: ${seconds}s"
  log="$root/$build/findings/$t.log"
  if "$root/$build/bin/$t" "${args[@]}" "$work" >"$log" 2>&1; then
    grep -E "^(stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb)|^#[0-9]+ +DONE" "$log" || true
  else
    echo "fuzz.sh: $t FAILED; reproducer in $findings, log in $log:" >&2
    tail -40 "$log" >&2
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: findings in ${failed[*]}" >&2
  exit 1
fi
echo "fuzz.sh: ${#targets[@]} targets ran ${seconds}s each, no findings"
