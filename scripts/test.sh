#!/usr/bin/env bash
# The test command: installs the dependencies (Debian packages), builds with warnings as errors
# and runs every test suite with CTest, including the container image test (deploy/test-image.sh:
# builds the Dockerfile with ../shared/tools/container.sh and runs a fit against it; it prints SKIP
# by itself where it cannot run: not root, no buildah, no package mirror; DRFM_TEST_IMAGE=0 skips
# it on purpose). This is what .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh -DDRFM_WERROR=ON -DDRFM_BUILD_TESTS=ON -DDRFM_BUILD_BENCH=ON
export DRFM_TEST_IMAGE=${DRFM_TEST_IMAGE:-1}
cd build
ctest --output-on-failure --timeout 1800
