"""CLMLE end to end: trains a few iterations on synthetic data; its clusters survive a resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from reid_ir.config import load_cfg
from reid_ir.engine.builder import build_engine, engine_run_kwargs
from reid_ir.engine.checkpoint import load_checkpoint
from reid_ir.engine.hooks.clusters import ClusterHook
from reid_ir.evaluation.knc import knc_accuracy

pytestmark = pytest.mark.slow

TINY_CONFIG = Path(__file__).resolve().parents[1] / "tiny.yaml"
TINY_CLMLE = [
    "loss.name", "clmle",
    # 4 images per identity -> 2 clusters each; re-cluster after every second epoch
    "loss.clmle.clusters_per_class", "2", "loss.clmle.min_cluster_size", "2",
    "loss.clmle.refresh_epochs", "2",
    # margins large enough to be active on an untrained network
    "loss.clmle.margin_within", "0.5", "loss.clmle.margin_between", "0.5",
]  # fmt: skip


def _cfg(root: Path, save_dir: Path, epochs: int):
    return load_cfg(
        TINY_CONFIG,
        [
            *TINY_CLMLE,
            "data.root",
            str(root),
            "data.save_dir",
            str(save_dir),
            "train.max_epoch",
            str(epochs),
        ],
    )


def _train(cfg, resume: str | None = None):
    """Build, optionally resume, count training-set extractions, run."""
    torch.set_num_threads(1)
    engine = build_engine(cfg)
    if resume:
        engine.resume(resume)
    hook = engine.find_hook(ClusterHook)
    restored = None if not hook.bank.has_clusters else hook.state_dict()
    extract = engine.extract_train_embeddings
    calls = []

    def counting_extract():
        calls.append(engine.epoch)
        return extract()

    engine.extract_train_embeddings = counting_extract
    engine.run(**engine_run_kwargs(cfg))
    return engine, hook, calls, restored


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    out = tmp_path_factory.mktemp("run") / "one"
    return root, out, *_train(_cfg(root, out, 1))


def test_clmle_trains_and_its_hook_is_registered_from_the_loss(one_epoch):
    _, out, engine, hook, calls, _ = one_epoch
    assert hook.bank is engine.criterion.clusters and hook.refresh_epochs == 2
    assert calls == [0]  # clustered once, in before_train of a fresh run
    bank = hook.bank
    assert bank.has_clusters and torch.bincount(bank.centroid_labels).tolist() == [2] * 6
    feats, pids = engine.extract_train_embeddings()
    out_ = engine.criterion(feats, pids)
    assert torch.isfinite(out_.loss) and out_.terms["clmle_between"] > 0
    acc = knc_accuracy(feats.cpu(), pids.cpu(), bank.centroids, bank.centroid_labels, k=3)
    assert 0.0 <= acc <= 1.0


def test_checkpoint_holds_the_clusters(one_epoch):
    _, out, _, hook, _, _ = one_epoch
    state = load_checkpoint(out)["hooks"][hook.name]
    assert torch.equal(state["centroids"], hook.bank.centroids)
    assert torch.equal(state["assignments"], hook.bank.assignments)
    assert state["refreshed_epoch"] == 0


def test_clusters_survive_a_resume_and_training_continues_exactly(one_epoch, tmp_path):
    root, out, _, first_hook, _, _ = one_epoch
    straight, straight_hook, straight_calls, _ = _train(_cfg(root, tmp_path / "straight", 2))
    resumed, resumed_hook, resumed_calls, restored = _train(
        _cfg(root, tmp_path / "resumed", 2), resume=str(out)
    )
    assert restored is not None and torch.equal(restored["centroids"], first_hook.bank.centroids)
    assert resumed_calls == [
        1
    ]  # no re-clustering on resume, only the scheduled refresh after epoch 2
    assert straight_calls == [0, 1]
    for name, a in straight.model.state_dict().items():
        assert torch.equal(a, resumed.model.state_dict()[name]), name
    assert torch.equal(straight_hook.bank.centroids, resumed_hook.bank.centroids)
