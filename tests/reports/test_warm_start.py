"""The warm-start protocol's planning, resumability and outputs, with train_net faked.

``reproduce.subprocess.run`` is replaced by a fake ``train_net`` that writes what a
finished run leaves behind (a reid_ir checkpoint, final_metrics.json, the angle
CSVs, train_log.jsonl), so these tests check the protocol's bookkeeping, not training.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from reid_ir.config import load_cfg
from reid_ir.engine.checkpoint import save_checkpoint
from reid_ir.reports import reproduce

REPO = Path(__file__).resolve().parents[2]
METHODS = ["softmax", "am_softmax", "ir_am_softmax", "unpg_ir_am_softmax"]
SPLITS = ["full", "long_tail_rho50"]


def _score(folder: Path) -> float:
    """A fixed fake rank-1 per run folder (20..40)."""
    return 20 + int(hashlib.sha256(str(folder).encode()).hexdigest()[:6], 16) % 2000 / 100


class FakeTrainNet:
    """Stands in for ``subprocess.run([python, train_net.py, ...])``; records every call."""

    def __init__(self, fail_on: str = "", pair_mass: bool = True) -> None:
        self.calls: list[list[str]] = []
        self.fail_on, self.pair_mass = fail_on, pair_mass

    def __call__(self, cmd, stdout=None, stderr=None, env=None, cwd=None, check=False):
        self.calls.append(list(cmd))
        folder = Path(cmd[cmd.index("--config-file") + 1]).parent
        if self.fail_on and self.fail_on in str(folder):
            return subprocess.CompletedProcess(cmd, 1)
        state = {"epoch": 2, "model": {"backbone.w": torch.full((3,), float(len(self.calls)))},
                 "optimizer": {}, "hooks": {}, "rng": {}}  # fmt: skip
        save_checkpoint(state, folder / "checkpoints", epoch=2)
        rank1 = _score(folder)
        metrics = {"rank1": rank1 / 100, "rank5": 0.6, "mAP": rank1 / 200, "mINP": 0.02}
        final = {"results": {"market1501": metrics}, "train_seconds": 600.0, "wall_seconds": 700.0}
        (folder / "final_metrics.json").write_text(json.dumps(final))
        diag = folder / "diagnostics"
        diag.mkdir(exist_ok=True)
        for epoch in (1, 2):
            rows = ["class,train_images,epoch_images,angle_deg"]
            rows += [f"{c},{c + 1},{c + 1},{10 + c + epoch}" for c in range(20)] + ["20,1,0,"]
            (diag / f"angles_epoch_{epoch:03d}.csv").write_text("\n".join(rows) + "\n")
        extra = {"unpg_kept": 12.0} | ({"unpg_pair_mass": 0.4} if self.pair_mass else {})
        log = [{"epoch": e, "loss": 5.0 - e, **extra} for e in (1, 2)]
        (folder / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
        return subprocess.CompletedProcess(cmd, 0)


def _plan(tmp_path, seeds=(1, 2, 3)):
    return reproduce.plan_warm_start("market1501", METHODS, SPLITS, list(seeds), tmp_path / "work")


def _run(plan, fake, monkeypatch, **kw):
    monkeypatch.setattr(reproduce.subprocess, "run", fake)
    return reproduce.run_warm_start(plan, "market1501", "cpu", "datasets", **kw)


def test_plan_pretrains_on_half_p_and_fine_tunes_every_method_on_half_f(tmp_path):
    plan = _plan(tmp_path)
    work = tmp_path / "work"
    assert plan.pretrain == reproduce.Cell(
        "softmax", "full", 1, work / "pretrain_P/softmax/seed1", id_half="P"
    )
    assert plan.weights == work / "pretrain_P/backbone.pth"
    assert len(plan.cells) == len(METHODS) * len(SPLITS) * 3
    assert {c.id_half for c in plan.cells} == {"F"} and {c.init_weights for c in plan.cells} == {
        plan.weights
    }
    assert {c.label for c in plan.cells} == {"F_full", "F_long_tail_rho50"}
    cell = next(c for c in plan.cells if c.seed == 3)
    assert cell.folder == work / f"F_{cell.split}" / cell.method / "seed3"
    with pytest.raises(ValueError, match="unknown split 'rho3'"):
        reproduce.plan_warm_start("market1501", ["softmax"], ["rho3"], [1], work)


def test_composed_configs_load_with_the_half_and_the_pretrained_weights(tmp_path):
    plan = _plan(tmp_path, seeds=[2])
    cell = next(
        c for c in plan.cells if c.method == "ir_am_softmax" and c.split == "long_tail_rho50"
    )
    cfg = load_cfg(reproduce.write_cell_config(cell, "market1501", "cpu", "datasets"))
    assert cfg.data.sources == ["market1501_imb"] and cfg.data.targets == ["market1501"]
    assert (cfg.data.imbalance.id_half, cfg.data.imbalance.profile, cfg.data.imbalance.rho) == (
        "F",
        "long_tail",
        50.0,
    )
    assert cfg.model.load_weights == str(plan.weights.absolute()) and cfg.train.seed == 2
    assert cfg.loss.name == "ir_am_softmax"
    pre = load_cfg(reproduce.write_cell_config(plan.pretrain, "market1501", "cpu", "datasets"))
    assert (pre.data.imbalance.id_half, pre.data.imbalance.profile, pre.model.load_weights) == (
        "P",
        "full",
        "",
    )
    scratch = reproduce.plan_cells("market1501", ["softmax"], ["full"], [1], tmp_path / "s")[0]
    body = yaml.safe_load(
        reproduce.write_cell_config(scratch, "market1501", "cpu", "d").read_text()
    )
    assert "imbalance" not in body["data"] and "model" not in body


def test_pretraining_runs_first_alone_then_every_cell_from_its_exported_weights(
    tmp_path, monkeypatch
):
    plan = _plan(tmp_path, seeds=[1, 2])
    fake = FakeTrainNet()
    failures = _run(plan, fake, monkeypatch, jobs=2, threads=1, extra_opts=["train.max_epoch", "8"],
                    pretrain_opts=["train.max_epoch", "20"])  # fmt: skip
    assert failures == []
    first = fake.calls[0]
    assert "pretrain_P/softmax/seed1/cell.yaml" in first[first.index("--config-file") + 1]
    assert first[first.index("train.num_threads") + 1] == "2"  # jobs x threads: it runs alone
    assert first[-4:] == ["train.max_epoch", "8", "train.max_epoch", "20"]
    assert len(fake.calls) == 1 + len(plan.cells)
    assert all(
        c[-2:] == ["train.max_epoch", "8"] and c[c.index("train.num_threads") + 1] == "1"
        for c in fake.calls[1:]
    )
    exported = torch.load(plan.weights, weights_only=False)
    assert torch.equal(exported["model"]["backbone.w"], torch.ones(3)) and exported["epoch"] == 2
    assert set(exported) == {"model", "epoch", "source"}
    assert all(c.done for c in plan.cells)


def test_rerun_skips_everything_finished_and_resumes_a_killed_cell(tmp_path, monkeypatch, caplog):
    plan = _plan(tmp_path, seeds=[1])
    _run(plan, FakeTrainNet(), monkeypatch)
    again = FakeTrainNet()
    with caplog.at_level(logging.INFO, logger="reid_ir.reports.reproduce"):
        assert _run(plan, again, monkeypatch) == []
    assert again.calls == []
    assert (
        "skip pretraining" in caplog.text and "skip F_full/softmax/seed1: finished" in caplog.text
    )
    assert caplog.text.count(": finished") == len(plan.cells)

    killed = next(
        c for c in plan.cells if c.method == "am_softmax" and c.split == "long_tail_rho50"
    )
    (killed.folder / "final_metrics.json").unlink()  # killed after its last checkpoint
    plan.weights.unlink()  # the export lost: re-exported from the finished pretraining, not retrained
    third = FakeTrainNet()
    assert _run(plan, third, monkeypatch) == []
    assert len(third.calls) == 1 and "--resume" in third.calls[0]
    assert str(killed.folder) == third.calls[0][third.calls[0].index("--resume") + 1]
    assert torch.load(plan.weights, weights_only=False)["epoch"] == 2


def test_failed_pretraining_starts_no_fine_tuning(tmp_path, monkeypatch):
    plan = _plan(tmp_path, seeds=[1])
    fake = FakeTrainNet(fail_on="pretrain_P")
    failures = _run(plan, fake, monkeypatch)
    assert len(failures) == 1 and "pretrain_P/softmax/seed1 failed" in failures[0]
    assert len(fake.calls) == 1 and not plan.weights.exists()


def test_outputs_hold_statistics_plots_and_the_pretraining_note(tmp_path, monkeypatch):
    plan = _plan(tmp_path)
    _run(plan, FakeTrainNet(), monkeypatch)
    rows = reproduce.collect(plan.cells, "market1501")
    out = tmp_path / "out"
    paths = reproduce.write_outputs(
        rows, plan.cells, out, reproduce.pretrain_note(plan, "market1501")
    )
    table = (out / "table.md").read_text()
    assert (
        table.startswith("Warm start: fine-tuned from") and "that backbone alone (P only" in table
    )
    assert "95% confidence interval of the mean paired difference to softmax" in table
    assert "| F_long_tail_rho50 | softmax | 3 |" in table and "| baseline |" in table
    stats = (out / "stats.csv").read_text().splitlines()
    assert stats[0].startswith("split,method,seeds,rank1_mean,rank1_std")
    assert len(stats) == 1 + len(METHODS) * len(SPLITS)
    for name in (
        "rank1_map_by_method.png",
        "angles_F_full.png",
        "angles_F_long_tail_rho50.png",
        "unpg_pair_mass.png",
    ):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000, name
    assert set(paths) >= {"md", "csv", "stats_csv", "metrics_png", "unpg_png"}
    runs = reproduce.angle_runs(plan.cells, "F_full")
    assert list(runs) == ["softmax", "am_softmax", "ir_am_softmax"]
    counts, angles = runs["softmax"]
    assert (
        len(counts) == 20 and angles[0] == 12.0
    )  # last epoch; the class without an angle left out


def test_unpg_plot_is_skipped_with_a_log_line_without_pair_mass(tmp_path, monkeypatch, caplog):
    plan = _plan(tmp_path, seeds=[1])
    _run(plan, FakeTrainNet(pair_mass=False), monkeypatch)
    with caplog.at_level(logging.INFO, logger="reid_ir.reports.reproduce"):
        reproduce.write_outputs(
            reproduce.collect(plan.cells, "market1501"), plan.cells, tmp_path / "out"
        )
    assert "skip the UNPG pair-mass plot: no 'unpg_pair_mass'" in caplog.text
    assert not (tmp_path / "out/unpg_pair_mass.png").exists()
    curves = reproduce.unpg_curves(plan.cells)
    assert list(curves) == ["unpg_kept (negative pairs kept per batch)"]
    assert curves["unpg_kept (negative pairs kept per batch)"][
        "unpg_ir_am_softmax F_full seed1"
    ] == (
        [1, 2],
        [12.0, 12.0],
    )


def test_tool_runs_the_warm_start_protocol(tmp_path, monkeypatch, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "reproduce_tables", REPO / "tools/reproduce_tables.py"
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    fake = FakeTrainNet()
    monkeypatch.setattr(reproduce.subprocess, "run", fake)
    work = tmp_path / "work"
    args = tool.parse_args(["--protocol", "warm_start", "--root", "datasets", "--methods", "softmax", "clmle",
                            "--seeds", "1", "2", "--work-dir", str(work), "--pretrain-opts", "train.max_epoch 3",
                            "--jobs", "2", "train.max_epoch", "2"])  # fmt: skip
    assert tool.main(args) == 0
    assert (
        len(fake.calls) == 1 + 2 * 3 * 2
    )  # pretraining + 2 methods x 3 default F splits x 2 seeds
    assert fake.calls[0][-2:] == ["train.max_epoch", "3"]
    assert sorted(p.name for p in work.iterdir()) == [
        "F_balanced_control_long_tail_rho50", "F_full", "F_long_tail_rho50", "pretrain_P", "summary",
    ]  # fmt: skip
    assert "| F_full | clmle | 2 |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="KEY VALUE pairs"):
        tool.main(
            tool.parse_args(
                ["--protocol", "warm_start", "--root", "r", "--pretrain-opts", "train.lr"]
            )
        )
    with pytest.raises(SystemExit, match="warm_start only"):
        tool.main(tool.parse_args(["--root", "r", "--pretrain-opts", "train.lr 0.1"]))
