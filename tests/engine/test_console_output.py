"""What a run prints and logs: lines never glued to the bar, no irrelevant warnings, each message
once, and the lr of each epoch as it ran."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tqdm import tqdm

from reid_ir.engine.hooks.train_logger import TrainLoggerHook
from reid_ir.engine.launch import setup_logging

REPO = Path(__file__).resolve().parents[2]
TINY_YAML = REPO / "tests" / "tiny.yaml"


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)


def test_a_log_line_never_lands_on_an_open_progress_bar(monkeypatch, restore_logging):
    term = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", term)
    setup_logging(None)
    bar = tqdm(total=10, file=term, desc="epoch 1/1")
    bar.update(3)
    logging.getLogger("reid_ir.test").info("saved checkpoint X")
    bar.close()
    segments = re.split(r"[\r\n]", term.getvalue())
    line = next(s for s in segments if "saved checkpoint X" in s)
    assert re.match(r"^\d\d:\d\d:\d\d INFO reid_ir\.test: saved checkpoint X$", line), line


def _fake_trainer(num_batches: int = 4) -> SimpleNamespace:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    return SimpleNamespace(
        is_main_process=True, train_loader=range(num_batches), epoch=0, max_epoch=1,
        optimizer=opt, start_epoch=0, start_batch=0,
    )  # fmt: skip


@pytest.mark.parametrize("terminal, bar", [(False, False), (True, True)])
def test_the_progress_bar_is_shown_only_on_a_terminal(monkeypatch, terminal, bar):
    monkeypatch.setattr(sys, "stderr", FakeTerminal() if terminal else io.StringIO())
    hook = TrainLoggerHook(progress_bar=True)
    hook._trainer = _fake_trainer()
    hook.before_epoch()
    assert (hook._bar is not None) is bar
    if hook._bar is not None:
        hook._bar.close()


def test_importing_torchreid_through_compat_prints_no_cython_warning():
    proc = subprocess.run(
        [sys.executable, "-W", "always", "-c", "import reid_ir.compat"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    assert "Cython evaluation" not in proc.stderr, proc.stderr


def test_an_existing_synthetic_dataset_is_reported_once(tmp_path, caplog):
    from reid_ir.data.synthetic import generate_synthetic_dataset

    params = dict(num_train_ids=2, num_test_ids=2, images_per_camera=2, num_cameras=2,
                  num_distractors=1, num_junk=1, image_size=(32, 16), seed=0)  # fmt: skip
    with caplog.at_level(logging.INFO):
        for _ in range(4):  # generated once, then found three times (train, query, gallery)
            generate_synthetic_dataset(tmp_path / "syn", **params)
    infos = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert sum("already exists" in m for m in infos) == 1, infos


def test_train_log_records_the_lr_the_epoch_ran_at(tmp_path):
    from reid_ir.config import load_cfg
    from reid_ir.engine.builder import build_engine, engine_run_kwargs

    # tiny.yaml: lr 0.001, single_step with stepsize [1]: epoch 1 runs at 0.001, epoch 2 at 0.0001
    cfg = load_cfg(TINY_YAML, ["data.root", str(tmp_path / "data"), "data.save_dir",
                               str(tmp_path / "out"), "train.max_epoch", "2", "train.num_threads", "1",
                               "test.eval_freq", "-1"])  # fmt: skip
    engine = build_engine(cfg)
    engine.run(**engine_run_kwargs(cfg))
    records = [json.loads(line) for line in (tmp_path / "out" / "train_log.jsonl").open()]
    assert [r["lr"] for r in records] == pytest.approx([0.001, 0.0001])


def test_piped_output_is_plain_log_lines_without_bars(tmp_path):
    cmd = [sys.executable, str(REPO / "tools" / "train_net.py"), "--config-file", str(TINY_YAML),
           "data.root", str(tmp_path / "data"), "data.save_dir", str(tmp_path / "out"),
           "train.max_epoch", "1", "train.num_threads", "1"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "\r" not in proc.stderr and "it/s]" not in proc.stderr and "img/s]" not in proc.stderr
    logged = [line for line in proc.stderr.splitlines() if " INFO " in line]
    assert logged and all(re.match(r"^\d\d:\d\d:\d\d INFO ", line) for line in logged), logged
