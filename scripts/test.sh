#!/usr/bin/env bash
# The test command: installs the dependencies (Debian packages), builds with warnings as errors
# and runs every test suite with CTest, including the container image test (deploy/test-image.sh:
# builds the Dockerfile with ../shared/tools/container.sh and runs a fit against it; it prints SKIP
# by itself where it cannot run: not root, no buildah, no package mirror; DRFM_TEST_IMAGE=0 skips
# it on purpose). Then the sanitizer runs (scripts/sanitize.sh): the whole suite again under
# AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/), and the server and queue tests
# under ThreadSanitizer (build-tsan/); DRFM_SANITIZERS=0 skips them, DRFM_SANITIZERS=asan or tsan
# runs only that one. Last, every libFuzzer target for 20 s (scripts/fuzz.sh --ci, build-fuzz/);
# DRFM_FUZZ=0 skips it. This is what .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
bash scripts/install-deps.sh
bash scripts/build.sh -DDRFM_WERROR=ON -DDRFM_BUILD_TESTS=ON -DDRFM_BUILD_BENCH=ON
export DRFM_TEST_IMAGE=${DRFM_TEST_IMAGE:-1}
status=0
(cd build && ctest --output-on-failure --timeout 1800) || status=$?
echo "== normal build and suite: $((SECONDS - start)) s"
sanitizers=${DRFM_SANITIZERS:-asan tsan}
if [ "$sanitizers" != 0 ]; then
  # shellcheck disable=SC2086 # a list of modes
  bash scripts/sanitize.sh $sanitizers || status=1
fi
if [ "${DRFM_FUZZ:-1}" != 0 ]; then
  fuzz_start=$SECONDS
  bash scripts/fuzz.sh --ci || status=1
  echo "== fuzzing (build and run): $((SECONDS - fuzz_start)) s"
fi
echo "== scripts/test.sh: $((SECONDS - start)) s in all, exit $status"
exit $status
