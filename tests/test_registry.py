"""Registries name their known entries when asked for an unknown one."""

import re

import pytest
import torch

import reid_ir.losses
from reid_ir.errors import ConfigError
from reid_ir.losses import LOSSES, build_loss
from reid_ir.registry import Registry


def test_unknown_loss_lists_known_names():
    with pytest.raises(KeyError, match=r"unknown loss name 'softmx'.*Did you mean \['softmax'.*Known loss names: \["):
        build_loss("softmx", num_classes=3, feat_dim=4)


def test_duplicate_registration_is_refused():
    reg = Registry("thing")
    reg.add("a", int)
    with pytest.raises(KeyError, match="already registered"):
        reg.add("a", float)


def test_build_loss_passes_only_accepted_context():
    loss = build_loss("softmax", num_classes=5, feat_dim=8, class_counts=torch.ones(5), label_smooth=False)
    out = loss(torch.randn(4, 8), torch.tensor([0, 1, 2, 3]))
    assert out.logits.shape == (4, 5) and out.loss.ndim == 0
    assert "softmax" in LOSSES and "triplet" in LOSSES


def test_unpg_enabled_switch_wraps_the_configured_head():
    from reid_ir.config import load_cfg
    from reid_ir.losses import build_loss_from_cfg
    from reid_ir.losses.unpg import UNPGLoss

    cfg = load_cfg(None, ["loss.name", "am_softmax", "loss.unpg.enabled", "True"])
    loss = build_loss_from_cfg(cfg, num_classes=4, feat_dim=8)
    assert isinstance(loss, UNPGLoss)
    with pytest.raises(ConfigError, match="Heads with UNPG"):
        build_loss_from_cfg(load_cfg(None, ["loss.name", "softmax", "loss.unpg.enabled", "True"]), 4, 8)


def test_the_loss_table_in_losses_init_lists_every_registered_name():
    rows = [line for line in reid_ir.losses.__doc__.splitlines() if line.startswith("| ")][1:]
    listed = {n for row in rows for n in re.split(r"[,\s]+", row.split("|")[1]) if n}
    assert listed == set(LOSSES.names())
