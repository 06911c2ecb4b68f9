#!/usr/bin/env bash
# The validation-chosen scale (s 10, run_sweep.sh) on the TEST split: am_softmax and ir_am_softmax,
# seeds 1-3, long_tail_rho50, standard Market-1501 query/gallery, CPU preset (warm-up 5, m 0.35)
# with 8 epochs, as protocol A (docs/results/market1501_scratch/). Run on 2026-12-03 at commit
# 7a37a5b (2-core CPU, three cells side by side, one torch thread each).
# The softmax cells (seeds 1-3) are protocol A's, run at e42d4a0, copied into OUT before this
# command (softmax does not read the scale, and its training code did not change since; its
# seed-1 cell was bit-identical across 1a44e12 and c8a8279). Without the copies the command runs
# them too. The s 30 rows to compare with are protocol A's table.
# Run from the repository root with the project venv active and Market-1501 under
# datasets/market1501/Market-1501-v15.09.15. OUT is where the run folders go (outside git).
set -euo pipefail
OUT=${OUT:-output/issue17_check/test_scale10}
PY=${PY:-python}
$PY tools/reproduce_tables.py --protocol scratch --dataset market1501 --root datasets --preset cpu \
    --methods softmax am_softmax ir_am_softmax --splits long_tail_rho50 --seeds 1 2 3 --jobs 3 --threads 1 \
    --work-dir "$OUT" --out docs/results/issue17_check/test_scale10 train.max_epoch 8 loss.margin.scale 10
