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
    md = tmp_path / "bench.md"
    results = tool.main([*argv, "--budget", "0.002", "--json", str(out), "--markdown", str(md)])
    assert out.is_file()
    table_text = md.read_text()
    assert "| ir_arcface |" in table_text and "20 + Adam step" in table_text
    assert "| unpg_am_softmax |" in table_text.split("| x head |")[1]
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


def test_unpg_floor_rows_are_timed_against_their_head():
    tool = load_tool()
    argv = ["--classes", "20", "--batch", "6", "--dim", "8", "--rounds", "2", "--budget", "0.002"]
    argv += ["--losses", "am_softmax", "unpg_am_softmax", "a_softmax", "unpg_a_softmax"]
    results = tool.main([*argv, "--optimizer-step-classes", "--unpg-floor"])
    table = results["losses"]["20"]
    for head in ("am_softmax", "a_softmax"):  # a fixed scale, and SphereFace's feature norms
        assert table[f"unpg_floor_{head}"]["x_head"] > 0
        assert table[f"unpg_{head}"]["x_head"] > 0


def test_unpg_floor_is_a_differentiable_loss_over_the_head():
    tool = load_tool()
    built = tool._build("unpg_floor_ir_am_softmax", 5, 8, seed=0)
    assert isinstance(built.loss, tool.UNPGFloor)
    x = torch.randn(6, 8, requires_grad=True)
    out = built.loss(x, torch.tensor([0, 1, 2, 0, 1, 3]))
    out.loss.backward()
    assert torch.isfinite(out.loss) and x.grad is not None and x.grad.abs().sum() > 0


def test_small_arrays_ab_times_the_torch_path_in_the_same_rounds_and_restores_numpy():
    tool = load_tool()
    argv = ["--classes", "20", "--batch", "6", "--dim", "8", "--rounds", "2", "--budget", "0.002"]
    argv += ["--losses", "am_softmax", "unpg_am_softmax", "--optimizer-step-classes"]
    table = tool.main([*argv, "--small-arrays-ab", "--unpg-floor"])["losses"]["20"]
    assert set(table) == {
        "softmax",
        "am_softmax",
        "unpg_am_softmax",
        "unpg_floor_am_softmax",
        "unpg_am_softmax:torch-arrays",
    }
    assert table["unpg_am_softmax:torch-arrays"]["x_head"] > 0
    assert tool.fused.SMALL_ARRAYS_IN_NUMPY  # restored after every torch-path iteration
    seen = []
    built = tool._build("unpg_am_softmax:torch-arrays", 5, 8, 0)
    assert not built.small_arrays_in_numpy
    forward = built.loss.forward
    built.loss.forward = lambda *a: seen.append(tool.fused.SMALL_ARRAYS_IN_NUMPY) or forward(*a)
    tool._iteration(built, torch.randn(6, 8), torch.arange(6) % 5)
    assert seen == [False] and tool.fused.SMALL_ARRAYS_IN_NUMPY


def test_the_peer_row_is_torchreids_cross_entropy_and_equals_reid_irs_softmax(tmp_path):
    tool = load_tool()
    peer, ours = tool._build(tool.PEER, 7, 5, seed=0), tool._build("softmax", 7, 5, seed=0)
    assert type(peer.loss.criterion).__module__.startswith("torchreid")
    ours.loss.classifier.load_state_dict(peer.loss.classifier.state_dict())
    x, y = torch.randn(6, 5, generator=torch.Generator().manual_seed(3)), torch.arange(6) % 7
    torch.testing.assert_close(peer.loss(x, y).loss, ours.loss(x, y).loss)
    argv = ["--classes", "20", "--batch", "6", "--dim", "8", "--rounds", "2", "--budget", "0.002"]
    md = tmp_path / "bench.md"
    argv += ["--losses", tool.PEER, "ir_am_softmax", "--optimizer-step-classes"]
    results = tool.main([*argv, "--markdown", str(md)])
    table = results["losses"]["20"]
    assert table[tool.PEER]["x_peer"] == 1.0 and table["ir_am_softmax"]["x_peer"] > 0
    peer_table = md.read_text().split(f"| x {tool.PEER} |")[1]
    assert "| softmax |" in peer_table and "| ir_am_softmax |" in peer_table
    assert f"| {tool.PEER} |" not in peer_table  # its own ratio (1) is not repeated there
