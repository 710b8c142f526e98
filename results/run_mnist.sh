#!/usr/bin/env bash
# The MNIST runs of results/README.md: LeNet-5-BN, the paper's recipe (NAG, momentum 0.9,
# weight decay 5e-4, batch 256, cosine decay from 0.1, eta 0.1), AdderNet and CNN.
# RUNS picks the networks (default "adder cnn"): adder, cnn, bnn, or adder-l2 (Appendix B).
# Usage: results/run_mnist.sh EPOCHS DATA_DIR (the folder of the MNIST files); each run gets one core.
set -euo pipefail
cd "$(dirname "$0")/.."
epochs=${1:-50}
data=${2:?usage: results/run_mnist.sh EPOCHS DATA_DIR}
export NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
runs=${RUNS:-adder cnn}
mkdir -p runs/results
for run in $runs; do
  kind=${run%-l2}
  distance=l1
  [ "$run" != "$kind" ] && distance=l2
  python -m minadder train --dataset mnist --data-dir "$data" --kind "$kind" --distance "$distance" \
    --epochs "$epochs" --output-dir "runs/results/mnist-lenet5_bn-$run" --overwrite --no-progress \
    > "runs/results/mnist-lenet5_bn-$run.log" 2>&1 &
done
wait
for run in $runs; do
  cp "runs/results/mnist-lenet5_bn-$run/metrics.json" "results/mnist-lenet5_bn-$run.json"
  cp "runs/results/mnist-lenet5_bn-$run/curves.png" "results/mnist-lenet5_bn-$run.png"
done
