"""reid_ir.reports.runs and tools/collect_runs.py: a sweep's finished runs in one table."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from reid_ir.reports.runs import collect_runs, config_value, run_row

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("collect_runs", REPO / "tools" / "collect_runs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def fake_run(folder: Path, name: str, scale: float, m: float, rank1: float, seed: int = 1, finished: bool = True) -> Path:
    """A run folder as train_net.py leaves it: config.yaml, train_log.jsonl, final_metrics.json."""
    folder.mkdir(parents=True)
    config = {"loss": {"name": name, "margin": {"scale": scale, "m": m}}, "train": {"seed": seed}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / "train_log.jsonl").write_text(
        "\n".join(json.dumps({"epoch": e, "acc": 10.0 * e}) for e in (1, 2)) + "\n"
    )
    if finished:
        results = {"val": {"rank1": rank1, "mAP": rank1 / 2, "mINP": rank1 / 4}}
        (folder / "final_metrics.json").write_text(json.dumps({"epochs": 2, "train_seconds": 90.0, "results": results}))
    return folder


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "sweep"
    fake_run(root / "am_m010" / "seed1", "am_softmax", 30.0, 0.1, 0.60)
    fake_run(root / "am_m035" / "seed1", "am_softmax", 30.0, 0.35, 0.50)
    fake_run(root / "am_m035" / "seed2", "am_softmax", 30.0, 0.35, 0.54, seed=2)
    fake_run(root / "am_s16" / "seed1", "am_softmax", 16.0, 0.35, 0.40)
    fake_run(root / "ir_m035" / "seed1", "ir_am_softmax", 30.0, 0.35, 0.55)
    fake_run(root / "softmax" / "seed1", "softmax", 30.0, 0.35, 0.58)
    fake_run(root / "killed" / "seed1", "am_softmax", 30.0, 0.2, 0.0, finished=False)
    return root


def test_config_value_reads_dotted_keys_and_names_a_missing_one():
    assert config_value({"loss": {"margin": {"m": 0.35}}}, "loss.margin.m") == 0.35
    with pytest.raises(KeyError, match=r"cfg.yaml: no config key 'loss.margin.x'"):
        config_value({"loss": {"margin": {"m": 0.35}}}, "loss.margin.x", "cfg.yaml")


def test_collect_skips_unfinished_runs_and_reports_metrics_in_percent(sweep):
    rows = collect_runs([sweep], ["loss.name", "loss.margin.m"])
    assert len(rows) == 6 and not any("killed" in r["run"] for r in rows)
    row = next(r for r in rows if r["run"] == "sweep/am_m010/seed1")
    assert row["loss.margin.m"] == 0.1
    assert row["rank1"] == pytest.approx(60.0) and row["mAP"] == pytest.approx(30.0)
    assert row["train_acc"] == 20.0 and row["epochs"] == 2 and row["train_min"] == 1.5


def test_run_row_names_the_missing_target(sweep):
    with pytest.raises(KeyError, match="no target 'test'"):
        run_row(sweep / "softmax" / "seed1", ["loss.name"], target="test")


def test_a_corrupt_run_file_is_named(sweep):
    (sweep / "softmax" / "seed1" / "final_metrics.json").write_text("{not json")
    with pytest.raises(ValueError, match="softmax/seed1: unreadable"):
        run_row(sweep / "softmax" / "seed1", ["loss.name"])


def test_tool_writes_table_and_one_sweep_panel_per_base_key(tool, sweep, tmp_path):
    out = tmp_path / "summary"
    argv = [str(sweep), "--keys", "loss.name", "loss.margin.scale", "loss.margin.m", "--out", str(out)]
    argv += ["--group", "loss.name", "--base", "loss.margin.scale=30", "loss.margin.m=0.35", "--reference", "softmax"]
    assert tool.main(argv) == 0
    with open(out / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and list(rows[0])[:5] == ["run", "loss.name", "loss.margin.scale", "loss.margin.m", "train.seed"]
    assert "| sweep/am_m035/seed1 | am_softmax | 30 | 0.35 | 1 | 50.0 |" in (out / "runs.md").read_text()
    for metric in ("rank1", "mAP"):
        assert (out / f"sweep_{metric}.png").read_bytes()[:4] == b"\x89PNG"
    panels = tool.sweep_panels(tool.collect_runs([sweep], ["loss.name", "loss.margin.scale", "loss.margin.m"]),
                               "loss.name", {"loss.margin.scale": 30.0, "loss.margin.m": 0.35}, "rank1", ["softmax"])
    # the m panel holds the s-30 runs (both seeds at 0.35), the s panel the m-0.35 runs; softmax is a line
    assert sorted(panels["loss.margin.m"]["am_softmax"][0]) == [0.1, 0.35, 0.35]
    assert sorted(panels["loss.margin.scale"]["am_softmax"][0]) == [16.0, 30.0, 30.0]
    assert "softmax" not in panels["loss.margin.m"]


def test_reference_lines_average_every_run_of_the_reference(tool, sweep):
    fake_run(sweep / "softmax" / "seed2", "softmax", 30.0, 0.35, 0.62, seed=2)
    rows = tool.collect_runs([sweep], ["loss.name"])
    lines = tool.reference_lines(rows, "loss.name", ["softmax", "arcface"], "rank1")
    assert list(lines) == ["softmax (2 runs)"] and lines["softmax (2 runs)"] == pytest.approx(60.0)


def test_tool_rejects_bad_base_and_empty_roots_with_a_clear_message(tool, sweep, tmp_path, caplog):
    out = str(tmp_path / "o")
    assert tool.main([str(sweep), "--out", out, "--group", "loss.name", "--base", "loss.margin.m"]) == 2
    assert "expected KEY=VALUE" in caplog.text
    assert tool.main([str(sweep), "--out", out, "--group", "loss.name", "--base", "loss.margin.m=1"]) == 2
    assert "not one of --keys" in caplog.text
    assert tool.main([str(tmp_path / "missing"), "--out", out]) == 2
    assert "no such run folder" in caplog.text
    assert tool.main([str(sweep), "--out", out, "--keys", "loss.margin.m", "--base", "loss.margin.m=1"]) == 2
    assert "--base needs --group" in caplog.text
    (sweep / "softmax" / "seed1" / "final_metrics.json").write_text(
        json.dumps({"train_seconds": 1.0, "results": {"a": {"rank1": 0.5}, "b": {"rank1": 0.5}}})
    )
    assert tool.main([str(sweep), "--out", out]) == 2
    assert "several evaluation targets ['a', 'b']" in caplog.text
    (tmp_path / "empty").mkdir()
    assert tool.main([str(tmp_path / "empty"), "--out", out]) == 2
    assert "no finished run" in caplog.text
