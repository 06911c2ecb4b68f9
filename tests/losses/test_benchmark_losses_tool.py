"""tools/benchmark_losses.py runs end to end on a tiny problem (no timing assertions)."""

import importlib.util
from pathlib import Path

import torch

TOOL = Path(__file__).resolve().parents[2] / "tools" / "benchmark_losses.py"


def load_tool():
    spec = importlib.util.spec_from_file_location("benchmark_losses", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_benchmark_reports_a_ratio_for_every_loss_and_the_center_update(tmp_path):
    tool = load_tool()
    out = tmp_path / "bench.json"
    argv = ["--classes", "20", "50", "--batch", "4", "--dim", "8", "--rounds", "2"]
    argv += ["--optimizer-step-classes", "20"]
    results = tool.main([*argv, "--budget", "0.002", "--json", str(out)])
    assert out.is_file()
    for num_classes in ("20", "50"):
        table = results["losses"][num_classes]
        assert set(table) == set(tool.DEFAULT_LOSSES)
        assert table["softmax"]["ratio"] == 1.0
        assert all(row["ms"] > 0 for row in table.values())
    assert set(results["center_update_us"]) == {"20", "50"}
    assert set(results["with_optimizer_step"]) == {"20"}
    assert set(results["with_optimizer_step"]["20"]) == set(tool.DEFAULT_LOSSES)


def test_optimizer_step_updates_learned_weights_and_ir_heads_have_none():
    tool = load_tool()
    features, targets = torch.randn(6, 8), torch.tensor([0, 1, 2, 0, 1, 3])
    softmax = tool._build("softmax", 5, 8, seed=0)
    before = softmax.loss.classifier.weight.detach().clone()
    tool._iteration(softmax, features, targets, optimizer_step=False)
    assert torch.equal(softmax.loss.classifier.weight, before)
    tool._iteration(softmax, features, targets, optimizer_step=True)
    assert not torch.equal(softmax.loss.classifier.weight, before)
    assert tool._build("ir_am_softmax", 5, 8, seed=0).optimizer is None
