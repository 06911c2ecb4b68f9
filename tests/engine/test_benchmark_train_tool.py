"""tools/benchmark_train.py times every contender's whole step and reports ratios to torchreid's."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

TOOL = Path(__file__).resolve().parents[2] / "tools" / "benchmark_train.py"
_spec = importlib.util.spec_from_file_location("benchmark_train", TOOL)
benchmark_train = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(benchmark_train)


def test_benchmark_reports_every_contender_against_torchreid(tmp_path):
    threads = torch.get_num_threads()
    try:
        code = benchmark_train.main(
            ["--rounds", "1", "--steps", "1", "--batch-size", "8", "--height", "64",
             "--width", "32", "--losses", "softmax", "ir_am_softmax",
             "--variants", "channels_last", "--extract", "--data-root", str(tmp_path / "data"),
             "--json", str(tmp_path / "out.json"), "--markdown", str(tmp_path / "out.md")]
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    res = json.loads((tmp_path / "out.json").read_text())
    names = [row["name"] for row in res["rows"]]
    assert names == [
        "torchreid_softmax",
        "reid_ir:softmax",
        "reid_ir:ir_am_softmax",
        "reid_ir:softmax+channels_last",
    ]
    assert res["rows"][0]["ratio_vs_peer"] == 1.0
    assert all(row["ms_per_iter_cpu"] > 0 and row["ratio_vs_peer"] > 0 for row in res["rows"])
    assert res["extract"]["reid_ir_images_per_s"] > 0
    assert res["extract"]["torchreid_images_per_s"] > 0
    table = (tmp_path / "out.md").read_text()
    assert all(f"| {name} |" in table for name in names)
    assert "x torchreid_softmax" in table and "images/s" in table
