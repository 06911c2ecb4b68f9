"""weighted_softmax: class weights from image counts, and the weighted cross-entropy."""

import pytest
import torch
import torch.nn.functional as F

from reid_ir.config import get_cfg
from reid_ir.losses import build_loss, build_loss_from_cfg
from reid_ir.losses.weighted import class_balance_weights

COUNTS = torch.tensor([100, 10, 1, 50])


def test_inverse_rule_is_count_to_the_minus_beta_with_mean_one():
    w = class_balance_weights(COUNTS, "inverse", beta=0.5)
    raw = COUNTS.double() ** -0.5
    torch.testing.assert_close(w.double(), raw * 4 / raw.sum())
    assert w.mean().item() == pytest.approx(1.0)
    assert w[2] > w[1] > w[3] > w[0]


def test_effective_number_rule_matches_cui_et_al():
    gamma = 0.99
    w = class_balance_weights(COUNTS, "effective", gamma=gamma)
    effective = (1 - gamma ** COUNTS.double()) / (1 - gamma)
    raw = 1 / effective
    torch.testing.assert_close(w.double(), raw * 4 / raw.sum())


def test_effective_rule_with_gamma_zero_is_uniform():
    torch.testing.assert_close(class_balance_weights(COUNTS, "effective", gamma=0.0), torch.ones(4))


def test_weighted_loss_equals_torch_weighted_cross_entropy():
    loss = build_loss(
        "weighted_softmax", num_classes=4, feat_dim=6, class_counts=COUNTS, label_smooth=False
    )
    x, y = torch.randn(16, 6), torch.randint(0, 4, (16,))
    out = loss(x, y)
    expected = F.cross_entropy(loss.classifier(x), y, weight=loss.loss_weights)
    torch.testing.assert_close(out.loss, expected)
    assert out.logits.shape == (16, 4) and loss.class_weight().shape == (4, 6)


def test_built_from_cfg_with_class_counts():
    cfg = get_cfg()
    cfg.loss.name = "weighted_softmax"
    cfg.loss.weighted.rule = "effective"
    cfg.loss.weighted.gamma = 0.9
    loss = build_loss_from_cfg(cfg, 4, 6, COUNTS)
    torch.testing.assert_close(
        loss.loss_weights, class_balance_weights(COUNTS, "effective", gamma=0.9)
    )


def test_missing_or_bad_counts_and_unknown_rule_fail_clearly():
    with pytest.raises(ValueError, match="class_counts"):
        build_loss("weighted_softmax", num_classes=4, feat_dim=6)
    with pytest.raises(ValueError, match="entries"):
        build_loss("weighted_softmax", num_classes=5, feat_dim=6, class_counts=COUNTS)
    with pytest.raises(ValueError, match="inverse"):
        class_balance_weights(COUNTS, "sqrt")
    with pytest.raises(ValueError, match="positive"):
        class_balance_weights(torch.tensor([3, 0]))
