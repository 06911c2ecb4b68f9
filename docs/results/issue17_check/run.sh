#!/usr/bin/env bash
# Issue 17's real-data check, as run (2-core CPU, two lanes of one torch thread each).
# Run from the repository root with the project venv active and Market-1501 under
# datasets/market1501/Market-1501-v15.09.15. OUT is where the run folders go (outside git).
#
# 1. Validation (never the test set): the long_tail_rho50 profile built on the training
#    identities minus 100 held out as query/gallery (data.imbalance.val_ids 100), evaluated on
#    those 100 ids. ir_am_softmax with the two center rules that keep true centers:
#    epoch_mean (running mean over the epoch, no extra pass) and exact (class means
#    recomputed by a feature pass every epoch). The rule with the higher validation mAP wins.
# 2. Test: long_tail_rho50 (all 751 ids), standard Market-1501 query/gallery, seeds 1 and 2
#    (one lane each): ir_am_softmax (winning rule), am_softmax, softmax, unpg_ir_am_softmax,
#    all with the new defaults (bnneck, label smoothing 0.1 for every head).
# Ran at commit 1a44e12. Later commits' CPU preset adds loss.ir.warmup_epochs 5 (5aec623),
# loss.unpg.whisker 0 (bf28324) and chosen on validation afterwards: to reproduce these cells
# loss.margin.scale 10 (this session's sweep, run_sweep.sh), all chosen on validation afterwards:
# to reproduce these cells there, append `loss.ir.warmup_epochs 0 loss.unpg.whisker 1.5
# loss.margin.scale 30` to each command.
set -euo pipefail
OUT=${OUT:-output/issue17_check}
PY=${PY:-python}
COMMON=(--dataset market1501 --root datasets --preset cpu --splits long_tail_rho50 --jobs 1 --threads 1)
VAL=(data.imbalance.val_ids 100 "data.targets" "['market1501_imb']" train.max_epoch 8)

$PY tools/reproduce_tables.py "${COMMON[@]}" --methods ir_am_softmax --seeds 1 \
    --work-dir "$OUT/val_epoch_mean" --out "$OUT/val_epoch_mean/table" "${VAL[@]}" loss.ir.rule epoch_mean &
$PY tools/reproduce_tables.py "${COMMON[@]}" --methods ir_am_softmax --seeds 1 \
    --work-dir "$OUT/val_exact" --out "$OUT/val_exact/table" "${VAL[@]}" loss.ir.rule exact &
wait

RULE=$($PY - "$OUT" <<'PY'
import glob, json, sys
out = sys.argv[1]
best = {}
for rule in ("epoch_mean", "exact"):
    (path,) = glob.glob(f"{out}/val_{rule}/**/final_metrics.json", recursive=True)
    metrics = json.load(open(path))["results"]
    (result,) = metrics.values()  # the one target: market1501_imb's validation query/gallery
    best[rule] = result["mAP"]
    print(f"validation {rule}: mAP {result['mAP']}", file=sys.stderr)
print(max(best, key=best.get))
PY
)
echo "center rule chosen on validation: $RULE"

METHODS="ir_am_softmax am_softmax softmax unpg_ir_am_softmax"
for SEED in 1 2; do
  $PY tools/reproduce_tables.py "${COMMON[@]}" --methods $METHODS --seeds $SEED \
      --work-dir "$OUT/test" --out "$OUT/test/table_seed$SEED" train.max_epoch 8 loss.ir.rule "$RULE" &
done
wait
$PY tools/reproduce_tables.py "${COMMON[@]}" --methods $METHODS --seeds 1 2 --collect-only \
    --work-dir "$OUT/test" --out docs/results/issue17_check train.max_epoch 8 loss.ir.rule "$RULE"
