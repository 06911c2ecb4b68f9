"""softmax_triplet keeps both terms in the loss (BoT); loss.triplet.weight adds a triplet to any head."""

import pytest
import torch

from reid_ir.config import get_cfg
from reid_ir.losses import LOSSES, build_loss_from_cfg
from reid_ir.losses.triplet import WithTriplet, batch_hard_triplet

C, D = 5, 8


def _batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(20, D, generator=g), torch.arange(20) % C


def test_softmax_triplet_default_config_sums_both_terms():
    cfg = get_cfg()
    cfg.loss.name = "softmax_triplet"
    loss = build_loss_from_cfg(cfg, C, D)
    x, y = _batch()
    out = loss(x, y)
    assert (loss.weight_x, loss.weight_t) == (1.0, 1.0)
    torch.testing.assert_close(out.loss, out.terms["xent"] + out.terms["triplet"])
    assert out.terms["xent"] > 0 and out.terms["triplet"] > 0


@pytest.mark.parametrize("name", [n for n in LOSSES.names() if "triplet" not in n])
def test_triplet_weight_adds_a_triplet_term_beside_any_loss(name):
    cfg = get_cfg()
    cfg.loss.name, cfg.loss.triplet.weight = name, 0.5
    loss = build_loss_from_cfg(cfg, C, D, torch.ones(C))
    assert isinstance(loss, WithTriplet)
    x, y = _batch()
    loss.eval()  # no state update, so the inner loss sees the same state twice
    out = loss(x, y)
    inner = loss.loss(x, y)
    trip = batch_hard_triplet(x, y, cfg.loss.triplet.margin)
    torch.testing.assert_close(out.loss, inner.loss + 0.5 * trip)
    assert set(out.terms) >= {"cls", "triplet"}
