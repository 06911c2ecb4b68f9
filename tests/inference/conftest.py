"""A tiny trained run folder (config.yaml + checkpoints/) on synthetic Market-format data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from reid_ir.config import load_cfg, save_cfg
from reid_ir.engine.builder import build_engine, engine_run_kwargs

TINY = Path(__file__).resolve().parents[1] / "tiny.yaml"
MARKET = "synthetic_market/Market-1501-v15.09.15"


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    """One epoch of tests/tiny.yaml, saved as tools/train_net.py saves a run."""
    root = tmp_path_factory.mktemp("data")
    out = tmp_path_factory.mktemp("runs") / "tiny"
    cfg = load_cfg(
        TINY,
        ["data.root", str(root), "data.save_dir", str(out), "train.max_epoch", "1"],
    )
    torch.set_num_threads(1)
    engine = build_engine(cfg)
    engine.run(**engine_run_kwargs(cfg))
    save_cfg(cfg, out / "config.yaml")
    return out


@pytest.fixture(scope="session")
def market_dir(run_dir) -> Path:
    """The run's synthetic dataset (query/, bounding_box_test/, ...)."""
    cfg = load_cfg(run_dir / "config.yaml")
    return Path(cfg.data.root) / MARKET
