#!/usr/bin/env bash
# Does train.channels_last change what a run learns? One real Market-1501 cell trained twice,
# float32 NCHW and float32 channels_last, side by side with one torch thread each: softmax,
# long_tail_rho50, CPU preset, 2 epochs (a short check, not a table cell). Run from the
# repository root with Market-1501 under datasets/; OUT is outside git.
set -euo pipefail
OUT=${OUT:-output/channels_last_check}
PY=${PY:-python}
COMMON=(--dataset market1501 --root datasets --preset cpu --splits long_tail_rho50 --methods softmax
        --seeds 1 --jobs 1 --threads 1)
$PY tools/reproduce_tables.py "${COMMON[@]}" --work-dir "$OUT/nchw" --out "$OUT/nchw/table" \
    train.max_epoch 2 train.channels_last False &
$PY tools/reproduce_tables.py "${COMMON[@]}" --work-dir "$OUT/channels_last" --out "$OUT/channels_last/table" \
    train.max_epoch 2 train.channels_last True &
wait
