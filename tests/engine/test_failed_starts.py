"""A start that fails (config, data, checkpoint) leaves the run folder byte for byte as it was.

An existing run folder is compared by the checksums of every file in it before and after the
failed attempt; a new folder must not be created at all.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

import pytest

from reid_ir.engine.run import main, parse_args

REPO = Path(__file__).resolve().parents[2]
TINY_YAML = REPO / "tests" / "tiny.yaml"
FAST = ["train.max_epoch", "1", "train.num_threads", "1"]


def cli(caplog, *args: str) -> tuple[int, list[str]]:
    """``tools/train_net.py --config-file tests/tiny.yaml ARGS`` in-process -> (exit code, errors)."""
    caplog.clear()
    with caplog.at_level(logging.INFO):
        code = main(parse_args(["--config-file", str(TINY_YAML), *FAST, *args]))
    return code, [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def checksums(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under ``folder`` (empty folders included as '<dir>')."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "<dir>"
    return out


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """(data root, folder of a finished one-epoch softmax run)."""
    root = tmp_path_factory.mktemp("data")
    out = tmp_path_factory.mktemp("runs") / "done"
    argv = [
        "--config-file",
        str(TINY_YAML),
        *FAST,
        "data.root",
        str(root),
        "data.save_dir",
        str(out),
    ]
    assert main(parse_args(argv)) == 0
    assert (out / "config.yaml").is_file() and (out / "log.txt").is_file()
    return root, out


@pytest.fixture
def run_copy(finished_run, tmp_path):
    root, out = finished_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    return root, copy


def _truncate_checkpoint(run: Path) -> None:
    ckpt = run / "checkpoints" / "epoch_001.pth"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 3])


@pytest.mark.parametrize(
    "case, overrides, prepare, fragments",
    [
        ("unknown loss", ["loss.name", "ir_am_softmaxx"], None, ["loss.name", "ir_am_softmaxx"]),
        ("missing data", ["data.sources", "['market1501']", "data.targets", "['market1501']"], None,
         ["dataset 'market1501' not found"]),
        ("out-of-range value", ["train.lr", "-1"], None, ["train.lr", "expected > 0"]),
        ("truncated checkpoint", [], _truncate_checkpoint, ["cannot read checkpoint", "truncated"]),
        ("checkpoint of another loss", ["loss.name", "am_softmax"], None,
         ["loss 'softmax' there, 'am_softmax' here", "model 'osnet_x0_25' in both"]),
        ("checkpoint of another model", ["model.name", "osnet_x0_5"], None,
         ["model 'osnet_x0_25' there, 'osnet_x0_5' here", "loss 'softmax' in both"]),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)  # fmt: skip
def test_a_failed_resume_leaves_the_run_folder_byte_for_byte(
    caplog, run_copy, case, overrides, prepare, fragments
):
    root, run = run_copy
    if prepare is not None:
        prepare(run)
    before = checksums(run)
    code, errors = cli(
        caplog, "--resume", "data.root", str(root), "data.save_dir", str(run), *overrides
    )
    assert code == 2, case
    assert len(errors) == 1 and all(f in errors[0] for f in fragments), errors
    assert checksums(run) == before, f"{case}: the failed start changed the run folder"


@pytest.mark.parametrize(
    "overrides",
    [["loss.name", "ir_am_softmaxx"],
     ["data.sources", "['market1501']", "data.targets", "['market1501']"],
     ["train.batch_size", "0"]],
    ids=["unknown loss", "missing data", "out-of-range value"],
)  # fmt: skip
def test_a_failed_start_creates_no_run_folder(caplog, finished_run, tmp_path, overrides):
    root, _ = finished_run
    out = tmp_path / "new" / "run"
    code, errors = cli(caplog, "data.root", str(root), "data.save_dir", str(out), *overrides)
    assert code == 2 and len(errors) == 1, errors
    assert not out.exists() and not out.parent.exists()


def test_a_started_run_logs_its_start_in_log_txt(finished_run):
    _, out = finished_run
    log = (out / "log.txt").read_text(encoding="utf-8")
    assert "config " in log and "-> output" in log, "records logged before the folder opened"
    assert log.count("-> output") == 1
