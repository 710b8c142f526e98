#!/usr/bin/env bash
# The MNIST runs of results/README.md: LeNet-5-BN, the paper's recipe (NAG, momentum 0.9,
# weight decay 5e-4, batch 256, cosine decay from 0.1, eta 0.1), AdderNet and CNN.
# Usage: results/run_mnist.sh [EPOCHS] [DATA_DIR]; each run gets one core.
set -euo pipefail
cd "$(dirname "$0")/.."
epochs=${1:-50}
data=${2:-../shared/data/mnist}
export NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
for kind in adder cnn; do
  python -m minadder train --dataset mnist --data-dir "$data" --kind "$kind" --epochs "$epochs" \
    --output-dir "runs/results/mnist-lenet5_bn-$kind" --overwrite --no-progress > "runs/results/mnist-lenet5_bn-$kind.log" 2>&1 &
done
wait
for kind in adder cnn; do
  cp "runs/results/mnist-lenet5_bn-$kind/metrics.json" "results/mnist-lenet5_bn-$kind.json"
  cp "runs/results/mnist-lenet5_bn-$kind/curves.png" "results/mnist-lenet5_bn-$kind.png"
done
