#!/usr/bin/env bash
# Validation (run_ablation.sh) ranked the centers' rules ema (mu 0.9) > epoch_mean > exact for
# ir_am_softmax with the new neck and label smoothing, so ema became the default; this runs the
# test cells of run.sh for ir_am_softmax with it (seeds 1 and 2, two cells side by side, one torch
# thread each, same code as run.sh). Then the table over every test cell.
# Ran at commit 1a44e12, like run.sh: to reproduce at a later commit append run.sh's
# `loss.ir.warmup_epochs 0 loss.unpg.whisker 1.5 loss.margin.scale 30` to each command.
set -euo pipefail
OUT=${OUT:-output/issue17_check}
PY=${PY:-python}
COMMON=(--dataset market1501 --root datasets --preset cpu --splits long_tail_rho50)
$PY tools/reproduce_tables.py "${COMMON[@]}" --methods ir_am_softmax --seeds 1 2 --jobs 2 --threads 1 \
    --work-dir "$OUT/test_ema" --out "$OUT/test_ema/table" train.max_epoch 8 loss.ir.rule ema
