#!/usr/bin/env bash
# The paper's MLP experiment (DNN.md) through the service: installs and builds like run-main.sh,
# starts a drfm-server on a free loopback port, trains an MLP of depth 5, width 512, init gain 0.1
# with Adam (lr 5e-5, batch 128) on the first 10000 Fashion-MNIST training images with `drfm mlp`
# (live per-layer nc1 of none / right / left and NFA correlation at every measurement, plot in
# OUT/mlp-collapse.svg), then prints, per layer at the end of training, nc1 of none / right / left,
# the NFA correlation, and whether nc1 falls more between none and right (W_l's right singular
# structure) than between right and left (the ReLU), the paper's claim. EPOCHS (default 250, DNN.md) and MEASURE_EVERY (25) override.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${DRFM_SKIP_BUILD:-0}" != 1 ]; then
  bash scripts/install-deps.sh
  bash scripts/build.sh
fi
out=${DRFM_MAIN_OUT:-main-output}/mlp-paper
mkdir -p "$out"
source scripts/local-server.sh
start_local_server "$out"

epochs=${EPOCHS:-250}
echo "== MLP: Fashion-MNIST 10000 train / 10000 test, depth 5, width 512, init gain 0.1, Adam 5e-5, batch 128, $epochs epochs =="
drfm mlp --train fashion-mnist:train --train-limit 10000 --test fashion-mnist:test --test-limit 10000 \
  --depth 5 --width 512 --init-gain 0.1 --lr 5e-5 --batch-size 128 --epochs "$epochs" \
  --measure-every "${MEASURE_EVERY:-25}" --seed 0 --model paper-mlp --plot "$out/mlp-collapse.svg"
drfm jobs list --output json > "$out/jobs.json"
job=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["jobs"][0]["id"])' "$out/jobs.json")
drfm jobs get "$job" --output json > "$out/job.json"
python3 - "$out/job.json" <<'PY'
import json, sys
job = json.load(open(sys.argv[1]))
last = job["network_reports"][-1]
print(f"\nend of training (epoch {last.get('epoch', 0)}): train accuracy {last.get('train_accuracy', 0):.4f}, "
      f"test accuracy {last.get('test_accuracy', 0):.4f}")
print(f"{'layer':>6} {'nc1 none':>10} {'nc1 right':>10} {'nc1 left':>10} {'NFA':>7} "
      f"{'none-right':>11} {'right-left':>11}  larger step")
hidden = [l for l in last["layers"] if not l.get("output")]
by_right = 0
for l in last["layers"]:
    none, right = l["none"]["nc1"], l["right"]["nc1"]
    if l.get("output"):
        print(f"{str(l['layer']) + ' out':>6} {none:>10.4f} {right:>10.4f} {'-':>10} {l.get('nfa_correlation', float('nan')):>7.4f} "
              f"{none - right:>11.4f}")
        continue
    left = l["left"]["nc1"]
    step = "none->right" if none - right > right - left else "right->left"
    by_right += step == "none->right"
    print(f"{l['layer']:>6} {none:>10.4f} {right:>10.4f} {left:>10.4f} {l.get('nfa_correlation', float('nan')):>7.4f} "
          f"{none - right:>11.4f} {right - left:>11.4f}  {step}")
print(f"nc1 falls more from none to right (the weights' right singular structure) than from right to "
      f"left (the ReLU) in {by_right} of {len(hidden)} hidden layers")
PY
echo "plot: $out/mlp-collapse.svg; job: $out/job.json"
