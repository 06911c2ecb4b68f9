#!/usr/bin/env bash
# The commands that produced this folder's table (run from the repository root on the
# 2-core CPU machine, Market-1501 unpacked under datasets/market1501/Market-1501-v15.09.15).
# Two lanes, one per split, each one cell at a time with one torch thread, so the two
# lanes share the two cores; then one collect step writes the table and the plots.
# Every command is resumable: finished cells are skipped, a killed cell resumes.
# Run with the project venv active (`make setup && . .venv/bin/activate`).
set -euo pipefail
METHODS="softmax ir_am_softmax am_softmax unpg_ir_am_softmax clmle weighted_softmax class_balanced unpg_am_softmax"
COMMON=(--dataset market1501 --root datasets --preset cpu --methods $METHODS --seeds 1
        --extra-seeds softmax=2 ir_am_softmax=2 --jobs 1 --threads 1
        --work-dir output/tables/market1501_cpu)
python tools/reproduce_tables.py --splits long_tail_rho50 "${COMMON[@]}" train.max_epoch 8 &
python tools/reproduce_tables.py --splits balanced_control_long_tail_rho50 "${COMMON[@]}" train.max_epoch 8 &
wait
# the table over every finished cell (both splits), the plots, into this folder
python tools/reproduce_tables.py "${COMMON[@]}" --splits long_tail_rho50 balanced_control_long_tail_rho50 \
    --collect-only --out docs/results/market1501_cpu train.max_epoch 8
