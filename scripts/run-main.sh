#!/usr/bin/env bash
# The main job: installs the dependencies (Debian packages) and builds; then starts drfm-server
# with its embedded defaults on a free loopback port, submits a Deep RFM fit on Fashion-MNIST
# (first 2000 train / 1000 test images, 3 layers) through the drfm CLI, streams the per-layer
# collapse metrics live, writes the collapse plot, predicts the 10000 test images with the stored
# model, and shuts the server down cleanly (SIGTERM, exit 0).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh -DDRFM_BUILD_TESTS=OFF -DDRFM_BUILD_BENCH=OFF

out=${DRFM_MAIN_OUT:-main-output}
mkdir -p "$out"
source scripts/local-server.sh
start_local_server "$out"
echo "== fit: Fashion-MNIST, 2000 train / 1000 test images, 3 layers =="
drfm fit --train fashion-mnist:train --train-limit 2000 --test fashion-mnist:test --test-limit 1000 \
  --layers 3 --model fashion-mnist-rfm --plot "$out/collapse.svg"
echo "== predict the 10000 Fashion-MNIST test images with the stored model =="
drfm predict fashion-mnist-rfm /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz \
  --out "$out/predictions.csv"
python3 - "$out/predictions.csv" <<'PY'
import gzip, sys
labels = gzip.open('/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz').read()[8:]
rows = open(sys.argv[1]).read().split()[1:]
correct = sum(int(r) == labels[i] for i, r in enumerate(rows))
print(f"{len(rows)} predictions written to {sys.argv[1]}; accuracy on the 10000 test images: {correct / len(rows):.4f}")
PY
drfm models list
echo "collapse plot: $out/collapse.svg; server log: $out/server.log"
