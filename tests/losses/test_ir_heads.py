"""IR heads: class weights are the tracked centers, never learned."""

import pytest
import torch
import torch.nn.functional as F

from reid_ir.config import get_cfg
from reid_ir.engine.hooks.center_tracker import CenterTrackerHook
from reid_ir.losses import build_loss, build_loss_from_cfg
from reid_ir.losses.ir import IRSoftmaxLoss

C, D, B = 12, 16, 24
IR = ["ir_softmax", "ir_a_softmax", "ir_am_softmax", "ir_arcface"]
LEARNED = {"ir_a_softmax": "a_softmax", "ir_am_softmax": "am_softmax", "ir_arcface": "arcface"}


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, D, generator=g), torch.randint(0, C, (B,), generator=g)


@pytest.mark.parametrize("name", IR)
def test_ir_weights_get_no_gradient(name):
    loss = build_loss(name, num_classes=C, feat_dim=D)
    loss.bank.centers.copy_(torch.randn(C, D))
    x, y = _batch()
    x.requires_grad_(True)
    loss(x, y).loss.backward()
    assert list(loss.parameters()) == []
    assert not loss.class_weight().requires_grad and loss.class_weight().grad is None
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", list(LEARNED))
def test_ir_head_equals_its_learned_head_with_weights_set_to_the_centers(name):
    ir = build_loss(name, num_classes=C, feat_dim=D)
    learned = build_loss(LEARNED[name], num_classes=C, feat_dim=D)
    centers = torch.randn(C, D)
    ir.bank.centers.copy_(centers)
    with torch.no_grad():
        learned.weight.copy_(3.0 * centers)  # the heads normalise the weights
    x, y = _batch(1)
    torch.testing.assert_close(ir(x, y).loss, learned(x, y).loss)
    torch.testing.assert_close(ir.margin_cosines(x, y), learned.margin_cosines(x, y))


def test_ir_softmax_logits_are_dot_products_with_the_centers():
    loss = IRSoftmaxLoss(C, D, label_smooth=False)
    loss.bank.centers.copy_(torch.randn(C, D))
    x, y = _batch(2)
    out = loss(x, y)
    torch.testing.assert_close(out.logits, x @ loss.bank.centers.t())
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, y))


@pytest.mark.parametrize("name", IR)
def test_ir_head_provides_a_tracker_hook_on_its_own_centers(name):
    cfg = get_cfg()
    cfg.loss.name = name
    cfg.loss.ir.rule = "center_loss"
    cfg.loss.ir.alpha = 0.25
    loss = build_loss_from_cfg(cfg, C, D)
    (hook,) = loss.hooks()
    assert isinstance(hook, CenterTrackerHook)
    assert hook.bank is loss.bank and hook.centers is loss.class_weight()
    assert (hook.update, hook.alpha) == ("center_loss", 0.25)


@pytest.mark.parametrize("name", IR)
def test_centers_are_part_of_the_loss_state_dict(name):
    loss = build_loss(name, num_classes=C, feat_dim=D)
    loss.bank.centers.copy_(torch.randn(C, D))
    loss.bank.initialized.fill_(True)
    other = build_loss(name, num_classes=C, feat_dim=D)
    other.load_state_dict(loss.state_dict())
    assert torch.equal(other.bank.centers, loss.bank.centers) and bool(other.bank.initialized)


def test_invalid_tracker_settings_fail_at_construction():
    with pytest.raises(ValueError, match="ema"):
        build_loss("ir_am_softmax", num_classes=C, feat_dim=D, update="mean")
    with pytest.raises(ValueError, match="momentum"):
        build_loss("ir_am_softmax", num_classes=C, feat_dim=D, momentum=1.5)


def test_unit_center_cache_follows_every_change_of_the_centers():
    from reid_ir.losses.centers import unit_rows

    loss = build_loss("ir_am_softmax", num_classes=C, feat_dim=D)
    bank = loss.bank
    bank.centers.copy_(torch.randn(C, D))
    assert torch.equal(bank.unit_centers(), unit_rows(bank.centers))
    for seed in range(3):  # incremental row refresh == full recompute, bit for bit
        x, y = _batch(seed)
        bank.update(x, y, "ema", 0.5)
        assert torch.equal(bank.unit_centers(), unit_rows(bank.centers))
    bank.centers.mul_(-1.0)  # any outside in-place change invalidates the cache
    assert torch.equal(bank.unit_centers(), unit_rows(bank.centers))
    other = build_loss("ir_am_softmax", num_classes=C, feat_dim=D)
    other.bank.unit_centers()
    other.load_state_dict(loss.state_dict())
    assert torch.equal(other.bank.unit_centers(), bank.unit_centers())
    x, y = _batch(4)
    assert torch.equal(other(x, y).loss, loss(x, y).loss)
