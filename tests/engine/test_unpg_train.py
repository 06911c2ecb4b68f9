"""UNPG over IR-AM-Softmax end to end: trains on synthetic data with tracked centers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from reid_ir.config import load_cfg
from reid_ir.engine.builder import build_engine, engine_run_kwargs
from reid_ir.losses.unpg import UNPGLoss

pytestmark = pytest.mark.slow

TINY_CONFIG = Path(__file__).resolve().parents[1] / "tiny.yaml"
TINY_UNPG = [
    "loss.name", "unpg_ir_am_softmax", "loss.unpg.whisker", "1.5",
]  # fmt: skip


def test_unpg_ir_am_softmax_trains_with_tracked_centers(tmp_path):
    cfg = load_cfg(
        TINY_CONFIG,
        [*TINY_UNPG, "data.root", str(tmp_path / "data"), "data.save_dir", str(tmp_path / "run"),
         "train.max_epoch", "2"],
    )  # fmt: skip
    torch.set_num_threads(1)
    engine = build_engine(cfg)
    assert isinstance(engine.criterion, UNPGLoss)
    bank = engine.criterion.head.bank
    engine.run(**engine_run_kwargs(cfg))
    assert bool(bank.seen.all()) and bank.centers.abs().sum() > 0
    records = [
        json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()
    ]
    assert len(records) == 2
    for record in records:
        assert torch.isfinite(torch.tensor(record["loss"]))
        assert 0.0 < record["unpg_pair_mass"] < 1.0  # the pair column's softmax share, per epoch
        assert 0 < record["unpg_kept"] <= record["unpg_negatives"]
    metrics = engine.last_metrics["synthetic_market"]
    assert 0.0 <= metrics["mAP"] <= 1.0
