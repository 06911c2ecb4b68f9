#!/usr/bin/env bash
# Why does ir_am_softmax trail on the test split (run.sh: 21.2 rank-1 against am_softmax's 35.2)?
# Asked on the VALIDATION split of run.sh (100 training ids held out; never the test set):
#   1. does validation rank am_softmax above ir_am_softmax as the test split does?
#   2. is it the centers' rule? ir_am_softmax with the old ema rule (mu 0.9), new neck and smoothing;
#   3. is it the neck? ir_am_softmax with model.neck none (torchreid's ReLU features);
#   4. softmax, the reference.
# Run after run.sh, same OUT. Two cells at a time, one torch thread each.
set -euo pipefail
OUT=${OUT:-output/issue17_check}
PY=${PY:-python}
COMMON=(--dataset market1501 --root datasets --preset cpu --splits long_tail_rho50 --seeds 1 --jobs 1 --threads 1)
VAL=(data.imbalance.val_ids 100 "data.targets" "['market1501_imb']" train.max_epoch 8)
$PY tools/reproduce_tables.py "${COMMON[@]}" --methods am_softmax softmax \
    --work-dir "$OUT/val_epoch_mean" --out "$OUT/val_epoch_mean/table_ref" "${VAL[@]}" &
$PY tools/reproduce_tables.py "${COMMON[@]}" --methods ir_am_softmax \
    --work-dir "$OUT/val_ema" --out "$OUT/val_ema/table" "${VAL[@]}" loss.ir.rule ema
$PY tools/reproduce_tables.py "${COMMON[@]}" --methods ir_am_softmax \
    --work-dir "$OUT/val_neck_none" --out "$OUT/val_neck_none/table" "${VAL[@]}" model.neck none
wait
