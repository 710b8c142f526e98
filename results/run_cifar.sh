#!/usr/bin/env bash
# CIFAR-10, ResNet-20, AdderNet and CNN side by side (one core each), the paper's recipe
# compressed to EPOCHS epochs (default 30): NAG with momentum 0.9, weight decay 5e-4, lr 0.1
# with cosine decay, batch 128, random crop with 4-pixel padding and horizontal flip, eta 0.1
# (ETA=0.2 for the reference code's value). Every epoch is evaluated on the 1,000 byte-exact
# official test images (the headline) and on the JPEG-decoded 10,000.
#
# The run folders live under results/ (metrics.json, curves.png, checkpoint.npz and
# checkpoint.optim.npz), so a run that outlasts a session is committed there and continued
# by running this script again: a folder holding a checkpoint is resumed, not restarted.
#
# RUNS picks the networks (default "adder cnn"): adder, cnn, bnn, or adder-l2 (the
# l2-AdderNet of Appendix B), e.g. RUNS="adder-l2 bnn" results/run_cifar.sh 30 DIR.
# BINARY_DECAY sets the BNN's --binary-weight-decay (the decay of its binary layers' real
# weights; default: the 5e-4 of every weight), e.g. BINARY_DECAY=0 RUNS=bnn ...
# THREADS=2 gives each run two threads and runs them one after another instead of side by
# side. On the 2-core development VM that trains about 1.4x more images per second in all:
# an AdderNet epoch took 210-233 s alone on both cores (215-238 images/s), 626-637 s on one
# core beside another run (80 images/s each, 160 together).
#
# Usage: results/run_cifar.sh EPOCHS DATA_DIR (the folder of the binary CIFAR-10 batches)
set -euo pipefail
cd "$(dirname "$0")/.."
epochs=${1:-30}
data=${2:?usage: results/run_cifar.sh EPOCHS DATA_DIR}
eta=${ETA:-0.1}
threads=${THREADS:-1}
export NUMBA_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
for run in ${RUNS:-${KINDS:-adder cnn}}; do
  kind=${run%-l2}
  distance=l1
  [ "$run" != "$kind" ] && distance=l2
  out="results/cifar10-resnet20-$run-${epochs}ep"
  [ "$eta" != "0.1" ] && out="$out-eta$eta"
  extra=()
  if [ "$kind" = bnn ] && [ -n "${BINARY_DECAY:-}" ]; then
    out="$out-binary-decay$BINARY_DECAY"
    extra=(--binary-weight-decay "$BINARY_DECAY")
  fi
  if [ -f "$out/checkpoint.npz" ]; then
    args=(--resume "$out")
  else
    args=(--model resnet20 --dataset cifar10 --data-dir "$data" --kind "$kind" --distance "$distance" --epochs "$epochs"
          --batch-size 128 --lr 0.1 --schedule cosine --momentum 0.9 --nesterov --weight-decay 5e-4
          --eta "$eta" --test-file test_batch_first1000_exact.bin --extra-test-file test_batch.bin
          --output-dir "$out" "${extra[@]}")
  fi
  mkdir -p "$out"
  if [ "$threads" = 1 ]; then
    python -m minadder train "${args[@]}" --no-progress >> "$out/train.log" 2>&1 &
  else
    python -m minadder train "${args[@]}" --no-progress >> "$out/train.log" 2>&1
  fi
done
wait
