"""ClusterHook: built from the loss's ClusterBank, refresh schedule, checkpoint round trip."""

from __future__ import annotations

import io
import logging

import pytest
import torch

from reid_ir.config.defaults import get_cfg
from reid_ir.engine.hooks.base import PRIORITY_STATE
from reid_ir.engine.hooks.clusters import ClusterHook, cluster_hooks
from reid_ir.losses import build_loss, build_loss_from_cfg
from reid_ir.losses.clusters import ClusterBank
from reid_ir.losses.triplet import WithTriplet


class FakeTrainer:
    """What ClusterHook reads from the engine: epoch and extract_train_embeddings()."""

    def __init__(self, features, pids):
        self.features, self.pids = features, pids
        self.epoch = 0
        self.extract_calls = 0

    def extract_train_embeddings(self):
        self.extract_calls += 1
        return self.features, self.pids


def _hook(refresh_epochs=1, **bank_kwargs) -> ClusterHook:
    bank_kwargs = {"num_classes": 5, "clusters_per_class": 3, "min_cluster_size": 2, **bank_kwargs}
    return ClusterHook(ClusterBank(**bank_kwargs), refresh_epochs)


def test_hook_is_built_from_the_loss_bank_and_period_also_inside_the_triplet_wrapper():
    cfg = get_cfg()
    cfg.loss.name = "clmle"
    cfg.loss.clmle.refresh_epochs = 3
    cfg.loss.triplet.weight = 1.0
    loss = build_loss_from_cfg(cfg, num_classes=4, feat_dim=8)
    assert isinstance(loss, WithTriplet)
    (hook,) = cluster_hooks(loss)
    assert hook.priority == PRIORITY_STATE and hook.name == "ClusterHook"
    assert hook.bank is loss.loss.clusters and hook.refresh_epochs == 3
    assert cluster_hooks(build_loss("am_softmax", num_classes=4, feat_dim=8)) == []


def test_builder_refuses_two_banks_and_a_bank_without_a_refresh_period():
    class TwoBanks(torch.nn.Module):
        refresh_epochs = 1

        def __init__(self):
            super().__init__()
            self.a, self.b = ClusterBank(2), ClusterBank(2)

    with pytest.raises(ValueError, match="2 cluster banks"):
        cluster_hooks(TwoBanks())
    no_period = torch.nn.Module()
    no_period.bank = ClusterBank(2)
    with pytest.raises(ValueError, match="refresh_epochs"):
        cluster_hooks(no_period)


def test_before_train_clusters_a_fresh_run_and_after_epoch_refreshes_on_schedule(blobs):
    feats, pids = blobs()
    trainer = FakeTrainer(feats, pids)
    hook = _hook(refresh_epochs=2)
    hook.trainer = trainer
    hook.before_train()
    assert trainer.extract_calls == 1 and hook.bank.has_clusters
    assert hook.bank.refreshed_epoch == 0
    hook.after_epoch()  # epoch 0 done: 1 % 2 != 0
    assert trainer.extract_calls == 1
    trainer.epoch = 1
    hook.after_epoch()  # epoch 1 done: refresh
    assert trainer.extract_calls == 2 and hook.bank.refreshed_epoch == 2  # after 2 epochs
    assert len(hook.bank.assignments) == len(pids)


def test_refresh_period_zero_clusters_only_at_the_start(blobs):
    trainer = FakeTrainer(*blobs())
    hook = _hook(refresh_epochs=0)
    hook.trainer = trainer
    hook.before_train()
    for epoch in range(3):
        trainer.epoch = epoch
        hook.after_epoch()
    assert trainer.extract_calls == 1


def test_checkpoint_round_trip_restores_clusters_and_skips_reclustering(blobs):
    feats, pids = blobs()
    trainer = FakeTrainer(feats, pids)
    hook = _hook(seed=3)
    hook.trainer = trainer
    hook.before_train()
    buf = io.BytesIO()
    torch.save({"hooks": {hook.name: hook.state_dict()}}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)["hooks"][hook.name]
    assert set(state) == {
        "centroids",
        "centroid_labels",
        "assignments",
        "refreshed_epoch",
        "num_classes",
    }

    other_trainer = FakeTrainer(torch.randn_like(feats), pids)  # would give other clusters
    restored = _hook(seed=3)
    restored.trainer = other_trainer
    restored.load_state_dict(state)
    restored.before_train()
    assert other_trainer.extract_calls == 0  # resumed: no re-clustering
    for name in ("centroids", "centroid_labels", "assignments"):
        assert torch.equal(getattr(restored.bank, name), getattr(hook.bank, name))
    assert restored.bank.refreshed_epoch == hook.bank.refreshed_epoch
    for a, b in zip(restored.bank.padded(), hook.bank.padded(), strict=True):
        assert torch.equal(a, b)


def test_checkpoint_without_clusters_warns_then_reclusters(caplog, blobs):
    trainer = FakeTrainer(*blobs())
    hook = _hook()
    hook.trainer = trainer
    with caplog.at_level(logging.WARNING):
        hook.load_state_dict({})
    assert "no CLMLE clusters" in caplog.text
    hook.before_train()
    assert trainer.extract_calls == 1 and hook.bank.has_clusters


def test_checkpoint_for_another_class_count_is_refused(blobs):
    hook = _hook()
    hook.bank.refresh(*blobs())
    with pytest.raises(ValueError, match="5 classes"):
        _hook(num_classes=6).load_state_dict(hook.state_dict())
