"""kill -9 a real training process at several points; ``--resume`` ends where an uninterrupted run ends.

Each run is ``tools/train_net.py``'s main in a process of its own, forked by
``crash_launcher.py --serve`` (which imports torch once for all of them); the
launcher makes the run stop dead at a chosen point, and the test sends it
SIGKILL from outside. The chain of kills and resumes must end with
bit-identical model, loss (IR centers / classifier), optimizer, scheduler,
hook state (CLMLE clusters), RNG states and metrics as one uninterrupted run
(CPU, ``train.deterministic``).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from reid_ir.engine.checkpoint import POINTER, CheckpointError

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
LAUNCHER = HERE / "crash_launcher.py"

TINY_CONFIG = Path(__file__).resolve().parents[1] / "tiny.yaml"
# tests/tiny.yaml plus what these runs need: one thread, every checkpoint kept
TINY = ["train.num_threads", "1", "train.keep_checkpoints", "0"]


def _opts(root: Path, out: Path, *extra: str) -> list[str]:
    return [*TINY, "data.root", str(root), "data.save_dir", str(out), *extra]


def _args(root: Path, out: Path, *extra: str) -> list[str]:
    """train_net's command line for a tiny run."""
    return ["--config-file", str(TINY_CONFIG), *_opts(root, out, *extra)]


class Launcher:
    """Client of ``crash_launcher.py --serve``: one forked training process per call."""

    def __init__(self) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, str(LAUNCHER), "--serve"], env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip

    def _reply(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            pytest.fail(f"crash_launcher server died ({self.proc.poll()})")
        return json.loads(line)

    def __call__(self, point: str, args: list[str], tmp: Path, resume: bool) -> int:
        """Run train_net with ``args``; at ``point`` SIGKILL it from here. Returns its exit status (-9: killed)."""
        stamp = time.monotonic_ns()
        marker, log = tmp / f"paused-{stamp}", tmp / f"run-{stamp}.log"
        argv = [*(["--resume"] if resume else []), *args]
        request = {"point": point, "marker": str(marker), "argv": argv, "log": str(log)}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        pid = self._reply()["pid"]
        # a safety net against a hung run (killed after 15 minutes), not a speed check
        killed, give_up = False, time.monotonic() + 900
        while not select.select([self.proc.stdout], [], [], 0.05)[0]:
            if (marker.exists() or time.monotonic() > give_up) and not killed:
                os.kill(pid, signal.SIGKILL)
                killed = True
        status = self._reply()["status"]
        out = log.read_text() if log.exists() else ""
        if point != "none" and status != -signal.SIGKILL:
            pytest.fail(f"{point}: expected to be killed, exited {status}:\n{out[-3000:]}")
        if point == "none" and status != 0:
            pytest.fail(f"run failed ({status}):\n{out[-3000:]}")
        return status

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def launch():
    launcher = Launcher()
    yield launcher
    launcher.close()


def _pointer(out: Path) -> str:
    return (out / "checkpoints" / POINTER).read_text().strip()


def _assert_same(a, b, where: str = "") -> None:
    """Recursive bit-for-bit equality of checkpoint contents."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), (where, sorted(set(a) ^ set(b)))
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    elif hasattr(a, "shape") and hasattr(a, "dtype"):  # numpy RNG state
        assert (a == b).all(), where
    else:
        assert a == b, where


def _final_state(out: Path, name: str) -> dict:
    state = torch.load(out / "checkpoints" / name, map_location="cpu", weights_only=False)
    return {
        k: state[k]
        for k in (
            "epoch",
            "batch",
            "iter",
            "model",
            "criterion",
            "optimizer",
            "scheduler",
            "hooks",
            "rng",
        )
    }


def _metrics(out: Path) -> dict:
    results = json.loads((out / "final_metrics.json").read_text())["results"]
    return {name: {k: v for k, v in m.items() if k != "backend"} for name, m in results.items()}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


def test_ir_am_softmax_survives_kills_mid_epoch_mid_write_before_pointer_and_in_evaluation(
    launch, root, tmp_path
):
    extra = ["loss.name", "ir_am_softmax", "train.max_epoch", "3", "train.checkpoint_iters", "2"]
    ref = tmp_path / "reference"
    launch("none", _args(root, ref, *extra), tmp_path, resume=False)

    out = tmp_path / "killed"
    args = _args(root, out, *extra)
    # 1. mid-epoch, after the iteration checkpoint of epoch 2
    launch("step:2:3", args, tmp_path, resume=False)
    assert _pointer(out) == "epoch_002_iter_000002.pth"
    # 2. half-way through writing a checkpoint: the half-written temp file is never used
    launch("write:epoch_003_iter_000002.pth", args, tmp_path, resume=True)
    assert _pointer(out) == "epoch_002.pth"
    assert list((out / "checkpoints").glob(".epoch_003_iter_000002.pth.tmp.*"))
    # 3. after the rename, before the pointer names the new file: the previous one stays in charge
    launch("pointer:epoch_003.pth", args, tmp_path, resume=True)
    assert (
        _pointer(out) == "epoch_003_iter_000002.pth"
        and (out / "checkpoints" / "epoch_003.pth").is_file()
    )
    # 4. while evaluating after the last epoch
    launch("eval:3", args, tmp_path, resume=True)
    assert _pointer(out) == "epoch_003.pth" and not (out / "final_metrics.json").exists()
    launch("none", args, tmp_path, resume=True)

    assert not list((out / "checkpoints").glob(".*.tmp.*")), "stale temp files are cleaned up"
    _assert_same(
        _final_state(ref, "epoch_003.pth"), _final_state(out, "epoch_003.pth"), "checkpoint"
    )
    assert _metrics(ref) == _metrics(out)
    log = [json.loads(line)["epoch"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert log == [1, 2, 3]


def test_clmle_clusters_survive_a_kill_mid_epoch(launch, root, tmp_path):
    extra = [
        "loss.name", "clmle", "train.max_epoch", "2", "loss.clmle.clusters_per_class", "2",
        "loss.clmle.min_cluster_size", "2", "loss.clmle.margin_within", "0.5", "loss.clmle.margin_between", "0.5",
    ]  # fmt: skip
    ref = tmp_path / "reference"
    launch("none", _args(root, ref, *extra), tmp_path, resume=False)
    out = tmp_path / "killed"
    launch("step:2:2", _args(root, out, *extra), tmp_path, resume=False)
    assert _pointer(out) == "epoch_001.pth"
    launch("none", _args(root, out, *extra), tmp_path, resume=True)
    final = _final_state(out, "epoch_002.pth")
    assert final["hooks"]["ClusterHook"]["centroids"].numel() > 0
    _assert_same(_final_state(ref, "epoch_002.pth"), final, "checkpoint")
    assert _metrics(ref) == _metrics(out)


def test_truncated_or_foreign_checkpoint_is_refused_and_nothing_is_loaded(root, tmp_path):
    """A truncated file, a torchreid checkpoint, or one of another loss: clear error, engine untouched."""
    from reid_ir.config import load_cfg
    from reid_ir.engine.builder import build_engine

    cfg = load_cfg(
        TINY_CONFIG, _opts(root, tmp_path / "run", "loss.name", "am_softmax", "train.max_epoch", "1")
    )
    engine = build_engine(cfg)
    engine.run(save_dir=str(tmp_path / "run"), max_epoch=1)
    good = tmp_path / "run" / "checkpoints" / "epoch_001.pth"
    data = good.read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(data[: len(data) // 2])
    foreign = tmp_path / "torchreid.pth.tar"
    torch.save({"state_dict": engine.model.state_dict(), "epoch": 1}, foreign)

    fresh = build_engine(cfg)
    before = {k: v.clone() for k, v in fresh.model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"truncated\.pth.*truncated or not a torch file"):
        fresh.resume(str(truncated))
    with pytest.raises(
        CheckpointError,
        match=r"torchreid\.pth\.tar is not a reid_ir checkpoint.*model.load_weights",
    ):
        fresh.resume(str(foreign))
    other = build_engine(
        load_cfg(TINY_CONFIG, _opts(root, tmp_path / "x", "loss.name", "arcface", "train.max_epoch", "1"))
    )
    with pytest.raises(CheckpointError, match=r"loss 'am_softmax' there, 'arcface' here"):
        other.resume(str(good))
    # loading fails half-way (model and loss already loaded): everything is put back
    load = fresh.scheduler.load_state_dict
    calls = []

    def fail_once(state):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("scheduler boom")
        return load(state)

    fresh.scheduler.load_state_dict = fail_once
    with pytest.raises(CheckpointError, match="scheduler boom.*nothing was changed"):
        fresh.resume(str(good))
    for k, v in fresh.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert fresh.start_epoch == 0 and fresh.resumed_from is None
