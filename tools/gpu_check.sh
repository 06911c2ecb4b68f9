#!/usr/bin/env bash
# GPU check (issue 22): the paper preset's ResNet-50 at 256x128, from scratch, 2 epochs with
# train.amp for softmax and ir_am_softmax, evaluated on the GPU; prints training images/s,
# evaluation images/s, peak GPU memory and the metrics. Target: under 8 minutes on one GPU.
#
# Runs on a machine that has torch, torchvision, opencv and tensorboard (and a usual CUDA image's
# scipy, matplotlib, PyYAML, requests, tqdm) but none of reid_ir's other dependencies and no
# registry access: it makes a venv over the system packages (--system-site-packages), installs
# the wheels built beforehand by tools/gpu_check_wheels.sh (torchreid, yacs, gdown, ...), then
# reid_ir itself (--no-deps, editable).
#
# Data: real Market-1501 when market1501.tar.gz is found (GPU_CHECK_MARKET, else
# shared/datasets/ in or beside the repository root), unpacked to a temporary folder; otherwise
# a synthetic Market-format set generated on the spot.
#
# Environment:
#   GPU_CHECK_CPU=1      tiny CPU flow check: synthetic data, osnet_x0_25 at 64x32, 1 epoch,
#                        bf16 autocast on the CPU (seconds; used by tests/engine/test_gpu_check.py)
#   GPU_CHECK_VENV=0     no venv or installs: use $PYTHON as it is (reid_ir importable)
#   GPU_CHECK_WHEELS     wheel folder (default: wheels/ in the repository root)
#   GPU_CHECK_MARKET     path of market1501.tar.gz holding Market-1501-v15.09.15/ (none:
#                        synthetic data; in CPU mode only a named tarball is used)
#   GPU_CHECK_LOSSES     losses to run (default: "softmax ir_am_softmax")
#   GPU_CHECK_EPOCHS     epochs per loss (default 2; 1 in CPU mode)
#   PYTHON               interpreter (default python3)
#   OUT                  folder for the runs and summary.json (default: a temporary folder)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cpu_mode="${GPU_CHECK_CPU:-0}"
python="${PYTHON:-python3}"
work="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"
out="${OUT:-$work/out}"
mkdir -p "$out"
trap 'rm -rf "$work/data" "$work/venv"' EXIT  # keep only the runs and the summary
losses=(${GPU_CHECK_LOSSES:-softmax ir_am_softmax})
t_start=$SECONDS
say() { echo "[gpu_check $((SECONDS - t_start))s] $*"; }

# ---------------------------------------------------------------- environment
if [ "${GPU_CHECK_VENV:-1}" = 1 ]; then
    wheels="${GPU_CHECK_WHEELS:-$repo/wheels}"
    if ! ls "$wheels"/*.whl >/dev/null 2>&1; then
        echo "gpu_check: no wheels in $wheels; build them where pip works: tools/gpu_check_wheels.sh" >&2
        exit 2
    fi
    say "venv over $("$python" --version 2>&1) system packages; installing $(ls "$wheels"/*.whl | wc -l) wheels"
    "$python" -m venv --system-site-packages "$work/venv"
    "$work/venv/bin/python" -m pip install -q --no-index --no-deps --no-compile "$wheels"/*.whl
    if ! "$work/venv/bin/python" -m pip install -q --no-index --no-deps --no-build-isolation \
        -e "$repo" >"$work/pip_reid_ir.log" 2>&1; then
        # e.g. no 'wheel' package for setuptools' editable build: same code from the source tree
        say "pip install -e failed ($(tail -n 1 "$work/pip_reid_ir.log")); using PYTHONPATH=$repo"
        export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
    fi
    python="$work/venv/bin/python"
fi
"$python" - <<'EOF'
import importlib
need = ["torch", "torchvision", "cv2", "tensorboard", "scipy", "matplotlib", "yaml", "tqdm",
        "yacs", "gdown", "torchreid", "reid_ir"]
missing = []
for name in need:
    try:
        importlib.import_module(name)
    except Exception as e:  # noqa: BLE001 - report every missing module at once
        missing.append(f"{name} ({type(e).__name__}: {e})")
if missing:
    raise SystemExit("gpu_check: cannot import " + "; ".join(missing))
EOF

# ----------------------------------------------------------------------- data
market="${GPU_CHECK_MARKET:-}"
if [ -z "$market" ] && [ "$cpu_mode" != 1 ]; then  # CPU mode: real data only when named
    for candidate in "$repo/shared/datasets/market1501.tar.gz" \
        "$repo/../shared/datasets/market1501.tar.gz"; do
        if [ -f "$candidate" ]; then market="$candidate"; break; fi
    done
fi
data_root="$work/data"
mkdir -p "$data_root"
if [ -n "$market" ] && [ "$market" != none ]; then
    if [ ! -f "$market" ]; then
        echo "gpu_check: GPU_CHECK_MARKET=$market is not a file (market1501.tar.gz expected)" >&2
        exit 2
    fi
    say "unpacking $market"
    mkdir -p "$data_root/market1501"
    tar -xzf "$market" -C "$data_root/market1501"
    dataset=market1501
    data_opts=(data.sources "['market1501']" data.targets "['market1501']")
else
    dataset=synthetic_market
    say "no market1501.tar.gz: synthetic Market-format data"
    data_opts=(data.sources "['synthetic_market']" data.targets "['synthetic_market']")
    if [ "$cpu_mode" = 1 ]; then
        data_opts+=(data.synthetic.num_train_ids 8 data.synthetic.num_test_ids 4
            data.synthetic.images_per_camera 2 data.synthetic.num_cameras 2
            data.synthetic.num_distractors 2 data.synthetic.num_junk 2
            data.synthetic.image_size "[64, 32]")
    else
        data_opts+=(data.synthetic.num_train_ids 300 data.synthetic.num_test_ids 100
            data.synthetic.images_per_camera 3 data.synthetic.num_cameras 4
            data.synthetic.num_distractors 200 data.synthetic.num_junk 50
            data.synthetic.image_size "[256, 128]")
    fi
fi

# ------------------------------------------------------------------- settings
# The paper preset (configs/presets/paper.yaml) from scratch: no ImageNet weights offline, so
# no fixbase epochs (they would train only the classifier of a random backbone).
if [ "$cpu_mode" = 1 ]; then
    epochs="${GPU_CHECK_EPOCHS:-1}"
    run_opts=(model.name osnet_x0_25 data.height 64 data.width 32 data.workers 0
        train.batch_size 8 test.batch_size 16 train.num_threads 1 use_gpu False)
else
    epochs="${GPU_CHECK_EPOCHS:-2}"
    run_opts=(model.name resnet50 data.height 256 data.width 128 data.workers 8
        train.batch_size 64 test.batch_size 256 use_gpu True)
fi
run_opts+=(model.pretrained False train.fixbase_epoch 0 train.max_epoch "$epochs" train.amp True
    data.root "$data_root" "${data_opts[@]}")

# ---------------------------------------------------------------------- runs
for loss in "${losses[@]}"; do
    say "training $loss on $dataset for $epochs epoch(s)"
    "$python" - "$repo/configs/methods/$loss.yaml" "$out/$loss" "$cpu_mode" \
        "${run_opts[@]}" data.save_dir "$out/$loss" <<'EOF'
import json
import logging
import sys
import time

import torch

from reid_ir.config import load_cfg
from reid_ir.engine.builder import build_engine, engine_run_kwargs
from reid_ir.engine.launch import setup_logging

config_file, save_dir, cpu_mode, *opts = sys.argv[1:]
cfg = load_cfg(config_file, opts)
setup_logging(save_dir)
logging.getLogger("reid_ir").setLevel(logging.WARNING)
if cpu_mode != "1" and not torch.cuda.is_available():
    raise SystemExit("gpu_check: torch sees no CUDA device (GPU_CHECK_CPU=1 checks the flow on a CPU)")
engine = build_engine(cfg)
cuda = engine.device.type == "cuda"
if cuda:
    torch.cuda.reset_peak_memory_stats()
eval_seconds = 0.0
run_test = engine.test


def timed_test(*args, **kwargs):  # the evaluation hook calls trainer.test()
    global eval_seconds
    tic = time.perf_counter()
    try:
        return run_test(*args, **kwargs)
    finally:
        eval_seconds += time.perf_counter() - tic


engine.test = timed_test
results = engine.run(**engine_run_kwargs(cfg))
train_images = engine.num_batches * cfg.train.batch_size * (cfg.train.max_epoch - engine.start_epoch)
metrics = next(iter(results.values()))
eval_images = metrics["num_query"] + metrics["num_gallery"] + metrics["num_junk"]
summary = {
    "loss": cfg.loss.name,
    "dataset": cfg.data.sources[0],
    "device": torch.cuda.get_device_name() if cuda else "cpu",
    "amp_dtype": str(engine.amp_dtype).removeprefix("torch."),
    "search_backend": metrics["backend"],
    "epochs": cfg.train.max_epoch,
    "train_images_per_s": round(train_images / engine.train_time, 1),
    "eval_images_per_s": round(eval_images / eval_seconds, 1),
    "train_seconds": round(engine.train_time, 1),
    "eval_seconds": round(eval_seconds, 1),
    "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
    "mAP": round(100 * metrics["mAP"], 2),
    "rank1": round(100 * metrics["rank1"], 2),
    "rank5": round(100 * metrics["rank5"], 2),
    "mINP": round(100 * metrics["mINP"], 2),
}
print("GPU_CHECK " + json.dumps(summary), flush=True)
with open(f"{save_dir}/gpu_check.json", "w") as f:
    json.dump(summary, f, indent=2)
EOF
done

# -------------------------------------------------------------------- summary
"$python" - "$out" "${losses[@]}" <<'EOF'
import json
import sys

out, *losses = sys.argv[1:]
rows = [json.load(open(f"{out}/{loss}/gpu_check.json")) for loss in losses]
json.dump(rows, open(f"{out}/summary.json", "w"), indent=2)
print(f"\n| loss | data | device | amp | search | epochs | train img/s | eval img/s | "
      "peak GPU GiB | mAP | rank-1 | rank-5 | mINP |")
print("|---|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|")
for r in rows:
    print(f"| {r['loss']} | {r['dataset']} | {r['device']} | {r['amp_dtype']} | "
          f"{r['search_backend']} | {r['epochs']} | {r['train_images_per_s']} | "
          f"{r['eval_images_per_s']} | {r['peak_gpu_memory_gib']} | {r['mAP']} | "
          f"{r['rank1']} | {r['rank5']} | {r['mINP']} |")
EOF
say "done; runs and summary.json in $out"
