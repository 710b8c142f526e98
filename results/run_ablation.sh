#!/usr/bin/env bash
# The ablation of Sec. 4.5 on MNIST at a reduced schedule (the same for every row):
# full-precision vs sign gradient x {no scaling, fixed x100, adaptive}, and the eta sweep.
# Usage: results/run_ablation.sh [EPOCHS] [DATA_DIR]; two runs at a time, one core each.
# ROWS=ablation runs the six ablation rows only. Runs of other than 10 epochs are saved
# with the suffix -EPOCHSep (results/ablation-full-adaptive-50ep.json), beside the 10-epoch set.
set -euo pipefail
cd "$(dirname "$0")/.."
epochs=${1:-10}
data=${2:?usage: results/run_ablation.sh EPOCHS DATA_DIR}
export NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
suffix=""
[ "$epochs" != 10 ] && suffix="-${epochs}ep"
mkdir -p runs/results
run() {  # name, extra options
  local name=$1$suffix; shift
  python -m minadder train --dataset mnist --data-dir "$data" --epochs "$epochs" \
    --output-dir "runs/results/$name" --overwrite --no-progress "$@" > "runs/results/$name.log" 2>&1
  cp "runs/results/$name/metrics.json" "results/$name.json"
}
jobs=(
  "ablation-full-none   --grad-mode full --adder-scaling none"
  "ablation-sign-none   --grad-mode sign --adder-scaling none"
  "ablation-full-fixed  --grad-mode full --adder-scaling fixed --adder-factor 100"
  "ablation-sign-fixed  --grad-mode sign --adder-scaling fixed --adder-factor 100"
  "ablation-full-adaptive --grad-mode full --adder-scaling adaptive --eta 0.1"
  "ablation-sign-adaptive --grad-mode sign --adder-scaling adaptive --eta 0.1"
)
[ "${ROWS:-all}" = ablation ] || jobs+=(
  "eta-1    --eta 1"
  "eta-0.5  --eta 0.5"
  "eta-0.2  --eta 0.2"
  "eta-0.05 --eta 0.05"
)
for ((i = 0; i < ${#jobs[@]}; i += 2)); do
  run ${jobs[i]} &
  if (( i + 1 < ${#jobs[@]} )); then run ${jobs[i+1]} & fi
  wait
done
