#!/usr/bin/env bash
# The test command: installs the dependencies (Debian packages), builds with warnings as errors
# and runs every test suite with CTest. This is what .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh -DDRFM_WERROR=ON -DDRFM_BUILD_TESTS=ON -DDRFM_BUILD_BENCH=ON
cd build
ctest --output-on-failure --timeout 900
