#!/usr/bin/env bash
# The count-aware center momentum (loss.ir.rule count_ema), validation only, as run on 2026-12-03
# at commit e5ccb85 (2-core CPU, one torch thread, beside two protocol-A cells).
# Run from the repository root with the project venv active and Market-1501 under
# datasets/market1501/Market-1501-v15.09.15. OUT is where the run folders go (outside git).
# Reference: run_warmup.sh's warm-up 5 validation cell (same setting with the ema rule).
# These cells ran at s 30, the CPU preset's scale until run_sweep.sh chose 10 on validation:
# loss.margin.scale 30 below keeps them reproducible.
set -euo pipefail
OUT=${OUT:-output/issue17_check}
PY=${PY:-python}
$PY tools/reproduce_tables.py --dataset market1501 --root datasets --preset cpu --splits long_tail_rho50 \
    --jobs 1 --threads 1 --methods ir_am_softmax --seeds 1 \
    --work-dir "$OUT/val_count/count_ema" --out "$OUT/val_count/count_ema/table" \
    data.imbalance.val_ids 100 "data.targets" "['market1501_imb']" train.max_epoch 8 loss.ir.rule count_ema \
    loss.margin.scale 30
