"""tools/benchmark_losses.py runs end to end on a tiny problem (no timing assertions)."""

import importlib.util
from pathlib import Path

TOOL = Path(__file__).resolve().parents[2] / "tools" / "benchmark_losses.py"


def test_benchmark_reports_a_ratio_for_every_loss_and_the_center_update(tmp_path):
    spec = importlib.util.spec_from_file_location("benchmark_losses", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "bench.json"
    argv = ["--classes", "20", "50", "--batch", "4", "--dim", "8", "--rounds", "2"]
    results = tool.main([*argv, "--budget", "0.002", "--json", str(out)])
    assert out.is_file()
    for num_classes in ("20", "50"):
        table = results["losses"][num_classes]
        assert set(table) == set(tool.DEFAULT_LOSSES)
        assert table["softmax"]["ratio"] == 1.0
        assert all(row["ms"] > 0 for row in table.values())
    assert set(results["center_update_us"]) == {"20", "50"}
