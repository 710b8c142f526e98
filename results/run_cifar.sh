#!/usr/bin/env bash
# CIFAR-10, ResNet-20, AdderNet and CNN side by side (one core each), with the paper's
# augmentation (random crop with 4-pixel padding + horizontal flip), batch 256, NAG,
# cosine decay from 0.1, weight decay 5e-4, eta 0.1, for as many epochs as the budget allows.
# Usage: results/run_cifar.sh [EPOCHS] [DATA_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
epochs=${1:-3}
data=${2:-../shared/data/cifar-10-batches-bin}
export NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
mkdir -p runs/results
for kind in adder cnn; do
  python -m minadder train --model resnet20 --dataset cifar10 --data-dir "$data" --kind "$kind" \
    --epochs "$epochs" --output-dir "runs/results/cifar10-resnet20-$kind" --overwrite --no-progress \
    > "runs/results/cifar10-resnet20-$kind.log" 2>&1 &
done
wait
for kind in adder cnn; do
  cp "runs/results/cifar10-resnet20-$kind/metrics.json" "results/cifar10-resnet20-$kind.json"
  cp "runs/results/cifar10-resnet20-$kind/curves.png" "results/cifar10-resnet20-$kind.png"
done
