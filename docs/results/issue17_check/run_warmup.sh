#!/usr/bin/env bash
# The IR warm-up (loss.ir.warmup_epochs), as run on 2026-12-03 (2-core CPU, one torch thread per cell).
# Run from the repository root with the project venv active and Market-1501 under
# datasets/market1501/Market-1501-v15.09.15. OUT is where the run folders go (outside git).
#
# 1. Validation (commit ea2b8cb, before the CPU preset set a warm-up): ir_am_softmax, long-tail
#    profile of the training identities minus 100 held out (data.imbalance.val_ids 100), seed 1,
#    warm-up 2 and 5 epochs of 8. References from run.sh / run_ablation.sh: warm-up 0 (ema) and am_softmax.
# 2. Test (commit c8a8279, the CPU preset sets loss.ir.warmup_epochs 5): ir_am_softmax seeds 1 and 2
#    on long_tail_rho50 with the standard query/gallery, and softmax seed 1 again, which must give
#    run.sh's number (38.7 / 22.0 at 1a44e12): the repeatability check of protocol A.
# These cells ran at s 30, the CPU preset's scale until run_sweep.sh chose 10 on validation:
# loss.margin.scale 30 below keeps them reproducible.
set -euo pipefail
OUT=${OUT:-output/issue17_check}
PY=${PY:-python}
COMMON=(--dataset market1501 --root datasets --preset cpu --splits long_tail_rho50 --jobs 1 --threads 1)
VAL=(data.imbalance.val_ids 100 "data.targets" "['market1501_imb']" train.max_epoch 8 loss.margin.scale 30)

for N in 2 5; do
  $PY tools/reproduce_tables.py "${COMMON[@]}" --methods ir_am_softmax --seeds 1 \
      --work-dir "$OUT/val_warmup/w$N" --out "$OUT/val_warmup/w$N/table" "${VAL[@]}" loss.ir.warmup_epochs $N &
done
wait

for SEED in 1 2; do
  $PY tools/reproduce_tables.py "${COMMON[@]}" --methods ir_am_softmax --seeds $SEED \
      --work-dir "$OUT/test_warmup" --out "$OUT/test_warmup/t_ir$SEED" train.max_epoch 8 loss.margin.scale 30 &
done
$PY tools/reproduce_tables.py "${COMMON[@]}" --methods softmax --seeds 1 \
    --work-dir "$OUT/test_warmup" --out "$OUT/test_warmup/t_sm1" train.max_epoch 8 loss.margin.scale 30 &
wait
