#!/usr/bin/env bash
# Validation cells after run.sh (same OUT, same worktree code 1a44e12, whose default rule is
# epoch_mean): on the VALIDATION split of run.sh (100 training ids held out; never the test set),
#   1. the old ema rule (mu 0.9) with the new neck and label smoothing,
#   2. am_softmax, to see whether validation ranks it against ir_am_softmax as the test split does,
#   3. ir_am_softmax (ema) without the neck (model.neck none): is it the neck?
# One torch thread per cell; 1 ran beside unpg_ir_am_softmax's test cell, 2 and 3 side by side.
# Ran at commit 1a44e12, like run.sh: to reproduce at a later commit append run.sh's
# `loss.ir.warmup_epochs 0 loss.unpg.whisker 1.5 loss.margin.scale 30` to each command.
set -euo pipefail
OUT=${OUT:-output/issue17_check}
PY=${PY:-python}
COMMON=(--dataset market1501 --root datasets --preset cpu --splits long_tail_rho50 --seeds 1 --jobs 1 --threads 1)
VAL=(data.imbalance.val_ids 100 "data.targets" "['market1501_imb']" train.max_epoch 8)
$PY tools/reproduce_tables.py "${COMMON[@]}" --methods ir_am_softmax \
    --work-dir "$OUT/val_ema" --out "$OUT/val_ema/table" "${VAL[@]}" loss.ir.rule ema
$PY tools/reproduce_tables.py "${COMMON[@]}" --methods am_softmax \
    --work-dir "$OUT/val_epoch_mean" --out "$OUT/val_epoch_mean/table_ref" "${VAL[@]}" &
$PY tools/reproduce_tables.py "${COMMON[@]}" --methods ir_am_softmax \
    --work-dir "$OUT/val_neck_none" --out "$OUT/val_neck_none/table" "${VAL[@]}" model.neck none loss.ir.rule ema &
wait
