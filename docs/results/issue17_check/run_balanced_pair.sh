#!/usr/bin/env bash
# The balanced control at the validation-chosen scale (s 10): am_softmax and ir_am_softmax, seed 1
# only (machine time), on balanced_control_long_tail_rho50 (the long-tail split's image count
# spread evenly over its 751 ids), standard Market-1501 query/gallery, CPU preset with 8 epochs.
# Run on 2026-12-03 at commit 7a37a5b (2-core CPU, the two cells side by side, one torch thread
# each, 16.6 min). Compare with the same pair on long_tail_rho50 in run_scale_test.sh.
# Run from the repository root with the project venv active and Market-1501 under
# datasets/market1501/Market-1501-v15.09.15. OUT is where the run folders go (outside git).
set -euo pipefail
OUT=${OUT:-output/issue17_check/balanced_s10}
PY=${PY:-python}
$PY tools/reproduce_tables.py --protocol scratch --dataset market1501 --root datasets --preset cpu \
    --methods am_softmax ir_am_softmax --splits balanced_control_long_tail_rho50 --seeds 1 --jobs 2 --threads 1 \
    --work-dir "$OUT" --out docs/results/issue17_check/balanced_s10 train.max_epoch 8 loss.margin.scale 10
