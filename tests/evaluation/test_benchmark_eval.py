"""tools/benchmark_eval.py runs end to end at a tiny scale and its checks pass."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

TOOL = Path(__file__).resolve().parents[2] / "tools" / "benchmark_eval.py"


def load_tool():
    spec = importlib.util.spec_from_file_location("benchmark_eval", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_runs_and_agrees_with_torchreid(tmp_path, capsys):
    tool = load_tool()
    out = tmp_path / "bench.json"
    args = ["--scale", "tiny", "--dim", "16", "--repeat", "1", "--threads", "1", "--json", str(out)]
    assert tool.main(args) == 0
    text = capsys.readouterr().out
    assert "torchreid / reid_ir" in text and "reid_ir / product" in text
    assert "identical (<= 1e-6)" in text
    info = json.loads(out.read_text())
    assert info["check"]["tie_broken_abs_mAP_diff"] <= 1e-6
    assert info["num_junk"] == 30 and info["backend_used"] == "torch"


def test_synthetic_features_have_market_structure():
    tool = load_tool()
    qf, gf, q_pids, g_pids, q_cams, g_cams = tool.make_features("tiny", 8, seed=1)
    assert qf.dtype == np.float32 and qf.shape == (60, 8) and gf.shape == (470, 8)
    assert (g_pids == -1).sum() == 30 and (g_pids == 0).sum() == 40
    assert set(np.unique(q_cams)) <= set(range(6)) and q_pids.min() >= 1


def test_tie_breaking_keeps_order_and_orders_ties_by_column():
    tool = load_tool()
    d = np.array([[1.0, 2.0, 1.0, np.float32(1.0000001)]], dtype=np.float32)
    tb = tool.tie_broken(d)
    assert np.argsort(tb[0]).tolist() == [0, 2, 3, 1]
