#!/usr/bin/env bash
# The main job: installs the dependencies (Debian packages), builds, and runs a Deep RFM fit on
# Fashion-MNIST (first 2000 train / 1000 test images, 3 layers) that prints the per-layer
# neural-collapse table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh -DDRFM_BUILD_TESTS=OFF -DDRFM_BUILD_BENCH=OFF
exec build/bin/drfm-local-fit --train-limit 2000 --test-limit 1000 --layers 3 "$@"
