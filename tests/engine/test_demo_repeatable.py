"""``make demo`` is repeatable: its config pins the torch thread count, the engine applies it and
the README states the numbers for that count."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from reid_ir.config import load_cfg

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "configs" / "demo.yaml"
SMALL_DATA = [
    "data.synthetic.num_train_ids", "6", "data.synthetic.num_test_ids", "4",
    "data.synthetic.images_per_camera", "2", "data.synthetic.num_cameras", "2",
    "data.synthetic.num_distractors", "2", "data.synthetic.num_junk", "2",
    "data.synthetic.image_size", "[64, 32]", "data.height", "64", "data.width", "32",
    "train.batch_size", "8",
]  # fmt: skip


def test_the_demo_config_pins_the_thread_count_the_readme_states():
    threads = load_cfg(DEMO).train.num_threads
    assert threads > 0, "configs/demo.yaml must pin train.num_threads (0 is torch's default)"
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    stated = re.findall(r"`configs/demo\.yaml` pins `train\.num_threads: (\d+)`", readme)
    assert stated == [str(threads)], stated


def test_the_engine_runs_at_the_pinned_thread_count(tmp_path):
    from reid_ir.engine.builder import build_engine

    cfg = load_cfg(
        DEMO, [*SMALL_DATA, "data.root", str(tmp_path), "data.save_dir", str(tmp_path / "o")]
    )
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        build_engine(cfg)
        assert torch.get_num_threads() == cfg.train.num_threads
    finally:
        torch.set_num_threads(before)
