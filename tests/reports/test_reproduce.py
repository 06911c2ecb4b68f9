"""tools/reproduce_tables.py end to end on synthetic DukeMTMC-reID-format data."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from reid_ir.data.synthetic import generate_synthetic_dataset
from reid_ir.reports import reproduce

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "data.height", "64", "data.width", "32", "data.workers", "0", "train.max_epoch", "1",
    "train.batch_size", "8", "test.batch_size", "32", "train.deterministic", "True",
]


def run_tool(root: Path, work: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, str(REPO / "tools" / "reproduce_tables.py"), "--dataset", "dukemtmcreid",
        "--root", str(root), "--preset", "cpu", "--methods", "softmax", "ir_am_softmax",
        "--splits", "long_tail_rho10", "--seeds", "1", "--extra-seeds", "softmax=2",
        "--work-dir", str(work), "--out", str(out), *extra, *TINY,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    generate_synthetic_dataset(
        root / "dukemtmc-reid", layout="duke", num_train_ids=16, num_test_ids=6, images_per_camera=3,
        num_cameras=4, num_distractors=3, image_size=(64, 32), seed=5,
    )
    work, out = tmp_path_factory.mktemp("work"), tmp_path_factory.mktemp("out")
    proc = run_tool(root, work, out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root, work, out


def test_grid_writes_every_cell_table_and_plots(grid):
    _, work, out = grid
    finals = sorted(work.glob("long_tail_rho10/*/seed*/final_metrics.json"))
    assert [p.parent.relative_to(work).as_posix() for p in finals] == [
        "long_tail_rho10/ir_am_softmax/seed1", "long_tail_rho10/softmax/seed1", "long_tail_rho10/softmax/seed2",
    ]
    with open(out / "table.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {(r["method"], r["seed"]) for r in rows} == {("softmax", "1"), ("softmax", "2"), ("ir_am_softmax", "1")}
    table = (out / "table.md").read_text()
    assert "| long_tail_rho10 | softmax | 2 |" in table and "±" in table
    assert "| long_tail_rho10 | ir_am_softmax | 1 |" in table and "(1) | no evidence |" in table
    for name in ("rank1_map_by_method.png", "angles_long_tail_rho10.png"):
        assert (out / name).stat().st_size > 1000, name


def test_cells_use_the_split_and_the_cell_seed(grid):
    _, work, _ = grid
    cfg = (work / "long_tail_rho10/softmax/seed2/config.yaml").read_text()
    assert "dukemtmcreid_imb" in cfg and "seed: 2" in cfg and "profile: long_tail" in cfg


def test_rerun_skips_finished_cells_and_resumes_killed_ones(grid, tmp_path):
    root, work, out = grid
    cell = work / "long_tail_rho10/softmax/seed1"
    before = json.loads((cell / "final_metrics.json").read_text())
    (cell / "final_metrics.json").unlink()  # as if killed after its last checkpoint
    proc = run_tool(root, work, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "skip long_tail_rho10/ir_am_softmax/seed1: finished" in proc.stderr
    assert "--resume" in proc.stderr
    after = json.loads((cell / "final_metrics.json").read_text())
    assert after["results"] == before["results"]


def test_unknown_method_or_split_lists_known_ones(tmp_path):
    with pytest.raises(ValueError, match="unknown method 'nope'.*losses: \\["):
        reproduce.plan_cells("market1501", ["nope"], ["long_tail_rho50"], [1], tmp_path)
    with pytest.raises(ValueError, match="unknown split 'rho3'.*long_tail_rho50"):
        reproduce.plan_cells("market1501", ["softmax"], ["rho3"], [1], tmp_path)


def test_override_swallowed_by_a_list_option_is_named(tmp_path):
    cmd = [
        sys.executable, str(REPO / "tools" / "reproduce_tables.py"), "--root", str(tmp_path),
        "--work-dir", str(tmp_path / "work"), "--splits", "long_tail_rho50", "train.max_epoch", "8",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode != 0
    assert "--splits got ['train.max_epoch']" in proc.stderr
    assert not (tmp_path / "work").exists()  # nothing was started


def test_warm_start_pretrains_on_half_p_and_fine_tunes_on_half_f_from_its_weights(grid, tmp_path):
    root = grid[0]
    work, out = tmp_path / "work", tmp_path / "out"
    cmd = [
        sys.executable, str(REPO / "tools" / "reproduce_tables.py"), "--protocol", "warm_start",
        "--dataset", "dukemtmcreid", "--root", str(root), "--methods", "softmax", "--splits", "full",
        "--seeds", "1", "--work-dir", str(work), "--out", str(out), *TINY,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    weights = work / "pretrain_P" / "backbone.pth"
    assert weights.is_file()
    pre_log = (work / "pretrain_P/softmax/seed1/stdout.txt").read_text()
    fine_log = (work / "F_full/softmax/seed1/stdout.txt").read_text()
    assert "'identities': 8" in pre_log and "'identities': 8" in fine_log  # 16 ids, two halves
    assert f"from {weights.absolute()}" in fine_log and "loaded" in fine_log
    assert "| F_full | softmax | 1 |" in (out / "table.md").read_text()
