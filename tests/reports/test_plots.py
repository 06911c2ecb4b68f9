"""PNG plots."""

from __future__ import annotations

import sys

import matplotlib
import pytest

from reid_ir.reports import plot_cmc, write_evaluation


def test_plot_cmc_writes_a_png_without_touching_the_global_backend(tmp_path):
    before = matplotlib.get_backend() if "matplotlib.pyplot" in sys.modules else None
    path = plot_cmc([0.5, 0.7, 0.9, 1.0], tmp_path / "out" / "cmc.png", title="test")
    assert path == str(tmp_path / "out" / "cmc.png")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    if before is not None:
        assert matplotlib.get_backend() == before


def test_plot_cmc_compares_several_curves(tmp_path):
    plot_cmc({"a": [0.1, 0.2], "b": [0.3, 0.4]}, tmp_path / "two.png")
    assert (tmp_path / "two.png").stat().st_size > 0


def test_plot_cmc_rejects_an_empty_curve(tmp_path):
    with pytest.raises(ValueError, match="at least one value"):
        plot_cmc([], tmp_path / "x.png")


def test_write_evaluation_writes_json_and_cmc_png(tmp_path):
    paths = write_evaluation({"cmc": [0.5, 1.0], "mAP": 0.4}, tmp_path, "market_epoch_001")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "market_epoch_001.json",
        "market_epoch_001_cmc.png",
    ]
    assert paths["json"].endswith(".json")


def test_plot_metrics_with_std_writes_one_figure_for_rank1_and_map(tmp_path):
    from reid_ir.reports.plots import plot_metrics_with_std

    stats = [
        {"split": s, "method": m, "seeds": 3, "rank1_mean": 30.0 + i, "rank1_std": 1.5,
         "mAP_mean": 15.0 + i, "mAP_std": None if m == "b" else 0.7}
        for s in ("lt", "bal") for i, m in enumerate("ab")
    ]  # fmt: skip
    path = plot_metrics_with_std(stats, tmp_path / "m.png")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_plot_epoch_curves_draws_panels_and_rejects_empty_ones(tmp_path):
    from reid_ir.reports.plots import plot_epoch_curves

    panels = {"mass": {"a": ([1, 2, 3], [0.5, 0.4, 0.3])}, "kept": {"a": ([1, 2, 3], [9, 8, 7])}}
    path = plot_epoch_curves(panels, tmp_path / "c.png")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="each with a curve"):
        plot_epoch_curves({"mass": {}}, tmp_path / "e.png")
