#!/usr/bin/env bash
# UNPG's box-and-whisker knob (loss.unpg.whisker): w = 0 (keep only the negative pairs between the
# quartiles) and the default w = 1.5, validation only, as run on 2026-12-03 at commit e5ccb85 (2-core CPU, one torch
# thread, beside two protocol-A cells). Run from the repository root with the project venv
# active and Market-1501 under datasets/market1501/Market-1501-v15.09.15. OUT: run folders.
# Reference: run_warmup.sh's warm-up 5 validation cell of ir_am_softmax (UNPG off).
# These cells ran at s 30, the CPU preset's scale until run_sweep.sh chose 10 on validation:
# loss.margin.scale 30 below keeps them reproducible.
set -euo pipefail
OUT=${OUT:-output/issue17_check}
PY=${PY:-python}
for W in 0.0 1.5; do
  $PY tools/reproduce_tables.py --dataset market1501 --root datasets --preset cpu --splits long_tail_rho50 \
      --jobs 1 --threads 1 --methods unpg_ir_am_softmax --seeds 1 \
      --work-dir "$OUT/val_unpg/w$W" --out "$OUT/val_unpg/w$W/table" \
      data.imbalance.val_ids 100 "data.targets" "['market1501_imb']" train.max_epoch 8 loss.unpg.whisker $W \
      loss.margin.scale 30
done
