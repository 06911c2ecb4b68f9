"""torchrun --nproc_per_node 2 (gloo, CPU) on synthetic data: ranks stay in sync, rank 0 writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent

# tests/tiny.yaml with identity batches of 2 x 2 images and one thread per rank
TINY = [
    "--config-file", str(Path(__file__).resolve().parents[1] / "tiny.yaml"),
    "sampler.train_sampler", "RandomIdentitySampler", "sampler.num_instances", "2",
    "train.batch_size", "4", "train.num_threads", "1",
]  # fmt: skip
# 24 training images in identity groups of 2 -> 6 batches of 4 per epoch -> 3 per rank


@pytest.fixture(scope="module")
def torchrun(tmp_path_factory):
    """One torchrun job, two runs: ir_am_softmax (centers) for 2 epochs, clmle (clusters, kNC) for 1."""
    tmp = tmp_path_factory.mktemp("ddp")
    root = tmp / "data"
    ir = [*TINY, "data.root", str(root), "data.save_dir", str(tmp / "ir"), "loss.name", "ir_am_softmax",
          "train.max_epoch", "2", "train.checkpoint_iters", "2"]  # fmt: skip
    clmle = [*TINY, "data.root", str(root), "data.save_dir", str(tmp / "clmle"), "loss.name", "clmle",
             "train.max_epoch", "1", "loss.clmle.clusters_per_class", "2", "loss.clmle.min_cluster_size", "2",
             "test.knc", "True"]  # fmt: skip
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(HERE / "record_launcher.py"), str(tmp / "rec"), *ir, "+", *clmle,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    def records(run: int) -> list[dict]:
        return [json.loads((tmp / f"rec.run{run}.rank{r}.json").read_text()) for r in (0, 1)]

    return tmp, proc, records


def test_centers_and_parameters_are_identical_on_both_ranks_after_every_step(torchrun):
    _, _, records = torchrun
    r0, r1 = records(0)
    assert r0["exit"] == r1["exit"] == 0
    assert len(r0["steps"]) == len(r1["steps"]) == 6  # 2 epochs x 3 steps per rank
    for a, b in zip(r0["steps"], r1["steps"], strict=True):
        assert (a["epoch"], a["batch"]) == (b["epoch"], b["batch"])
        assert a["model"] == b["model"], a
        assert a["criterion"] == b["criterion"], a  # the IR centers are the loss's buffers
    assert len({s["criterion"] for s in r0["steps"]}) == 6, "centers change at every step"
    assert r0["epochs"] == r1["epochs"]  # parameters and BatchNorm buffers after each epoch


def test_identity_batches_are_split_across_ranks(torchrun):
    _, _, records = torchrun
    r0, r1 = records(0)
    for a, b in zip(r0["steps"], r1["steps"], strict=True):
        for targets in (a["targets"], b["targets"]):
            assert len(targets) == 4 and all(n == 2 for n in Counter(targets).values())
    for epoch in (0, 1):
        seen = [
            sorted(t for s in r["steps"] if s["epoch"] == epoch for t in s["targets"])
            for r in (r0, r1)
        ]
        assert seen[0] != seen[1], "the ranks saw the same batches"


def test_clusters_are_identical_on_both_ranks_and_knc_is_reported(torchrun):
    tmp, _, records = torchrun
    r0, r1 = records(1)
    assert len(r0["steps"]) == 3
    for a, b in zip(r0["steps"], r1["steps"], strict=True):
        assert a["clusters"] is not None and a["clusters"] == b["clusters"]
        assert a["model"] == b["model"] and a["criterion"] == b["criterion"]
    metrics = json.loads((tmp / "clmle" / "final_metrics.json").read_text())["results"][
        "synthetic_market"
    ]
    assert 0.0 <= metrics["knc_accuracy"] <= 1.0 and metrics["knc_k"] == 5


def test_only_rank0_writes_checkpoints_and_metrics_in_the_usual_format(torchrun):
    tmp, proc, records = torchrun
    for run in (0, 1):
        r0, r1 = records(run)
        assert r1["writes"] == []
        assert any(w.endswith(".pth") for w in r0["writes"]) and any(
            w.endswith("metrics") for w in r0["writes"]
        )
    out = tmp / "ir"
    assert (out / "checkpoints" / "last_checkpoint").read_text().strip() == "epoch_002.pth"
    assert sorted(p.name for p in (out / "metrics").glob("*.json")) == [
        "synthetic_market_epoch_002.json"
    ]
    summary = json.loads((out / "final_metrics.json").read_text())
    assert summary["world_size"] == 2
    m = summary["results"]["synthetic_market"]
    assert {"rank1", "rank5", "mAP", "mINP", "cmc"} <= set(m)
    assert (
        proc.stdout.count("| dataset | rank-1 | rank-5 | rank-10 | mAP | mINP |") == 2
    )  # one table per run
    assert (out / "log.txt").is_file() and (out / "log.rank1.txt").is_file()
