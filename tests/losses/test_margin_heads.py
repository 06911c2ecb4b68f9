"""Margin heads agree with pytorch-metric-learning (values and gradients) and keep their contracts."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml

from reid_ir.losses import build_loss
from reid_ir.losses.margin import (
    AMSoftmaxLoss,
    ArcFaceLoss,
    ASoftmaxLoss,
    CosineMarginLoss,
)

# pytorch-metric-learning 2.9 calls a numpy API deprecated in numpy 2.
pytestmark = pytest.mark.filterwarnings("ignore:__array_wrap__:DeprecationWarning")

C, D, B = 10, 8, 32


def _inputs(seed=0, far_targets=False):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(C, D, generator=g, dtype=torch.float64)
    targets = torch.randint(0, C, (B,), generator=g)
    features = 3.0 * torch.randn(B, D, generator=g, dtype=torch.float64)
    if far_targets:  # half the batch points away from its class weight: large target angles
        half = B // 2
        features[:half] = -weight[targets[:half]] + 0.3 * torch.randn(
            half, D, generator=g, dtype=torch.float64
        )
    return weight, features, targets


def _ours_and_pml(ours, oracle, weight, features, targets):
    """Loss values and gradients (features, weight) of both implementations on the same inputs."""
    ours = ours.double()
    with torch.no_grad():
        ours.weight.copy_(weight)
        oracle.W.data = weight.t().clone()
    x1 = features.clone().requires_grad_(True)
    x2 = features.clone().requires_grad_(True)
    l1 = ours(x1, targets).loss
    l2 = oracle(x2, targets)
    l1.backward()
    l2.backward()
    return (l1, x1.grad, ours.weight.grad), (l2, x2.grad, oracle.W.grad.t())


def _assert_same(a, b):
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v.to(u.dtype), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("far", [False, True])
def test_am_softmax_matches_pml_cosface(far):
    weight, x, y = _inputs(1, far)
    ours = AMSoftmaxLoss(C, D, scale=30.0, m=0.35, label_smooth=0.0)
    oracle = pml.CosFaceLoss(num_classes=C, embedding_size=D, margin=0.35, scale=30.0)
    _assert_same(*_ours_and_pml(ours, oracle, weight, x, y))


@pytest.mark.parametrize("far", [False, True])
def test_arcface_matches_pml_arcface_including_fallback(far):
    weight, x, y = _inputs(2, far)
    m = 0.5
    ours = ArcFaceLoss(C, D, scale=16.0, m=m, label_smooth=0.0)
    oracle = pml.ArcFaceLoss(num_classes=C, embedding_size=D, margin=math.degrees(m), scale=16.0)
    if far:  # the batch really exercises the theta + m > pi branch
        cos_t = F.cosine_similarity(x, weight[y])
        assert (torch.acos(cos_t) > math.pi - m).sum() >= 4
    _assert_same(*_ours_and_pml(ours, oracle, weight, x, y))


@pytest.mark.parametrize("m", [2, 3, 4])
@pytest.mark.parametrize("far", [False, True])
def test_a_softmax_without_lambda_matches_pml_sphereface(m, far):
    weight, x, y = _inputs(3 + m, far)
    ours = ASoftmaxLoss(C, D, m=m, scale=None, lambda_base=0.0, lambda_min=0.0, label_smooth=0.0)
    oracle = pml.SphereFaceLoss(num_classes=C, embedding_size=D, margin=m, scale=1)
    _assert_same(*_ours_and_pml(ours, oracle, weight, x, y))


def test_a_softmax_with_fixed_scale_matches_pml_on_unit_features():
    weight, x, y = _inputs(7, True)
    x = F.normalize(x, dim=1)
    ours = ASoftmaxLoss(C, D, m=4, scale=20.0, lambda_base=0.0, lambda_min=0.0, label_smooth=0.0)
    oracle = pml.SphereFaceLoss(num_classes=C, embedding_size=D, margin=4, scale=20.0)
    (l1, gx1, gw1), (l2, gx2, gw2) = _ours_and_pml(ours, oracle, weight, x, y)

    # PML's |x| factor (= 1 here) still passes a radial gradient; ours is fixed at s.
    # The tangential parts (what moves a unit feature) must agree.
    def tangential(g):
        return g - (g * x).sum(1, keepdim=True) * x

    _assert_same((l1, tangential(gx1), gw1), (l2, tangential(gx2), gw2))


def test_norm_softmax_is_scaled_cosine_cross_entropy():
    weight, x, y = _inputs(8)
    head = CosineMarginLoss(C, D, scale=30.0, label_smooth=0.0).double()
    with torch.no_grad():
        head.weight.copy_(weight)
    expected = F.cross_entropy(30.0 * F.normalize(x, dim=1) @ F.normalize(weight, dim=1).t(), y)
    torch.testing.assert_close(head(x, y).loss, expected)


def test_a_softmax_lambda_anneals_per_training_forward_and_is_checkpointed():
    head = ASoftmaxLoss(
        C, D, m=4, lambda_base=1000.0, lambda_gamma=0.12, lambda_power=1.0, lambda_min=5.0
    )
    _, x, y = _inputs(9)
    x = x.float()
    assert head.current_lambda() == pytest.approx(1000.0)
    for _ in range(3):
        head(x, y)
    assert int(head.iteration) == 3
    assert head.current_lambda() == pytest.approx(1000.0 / (1 + 0.12 * 3))
    head.eval()
    head(x, y)
    assert int(head.iteration) == 3, "evaluation forwards must not advance the schedule"
    head.iteration.fill_(10**6)
    assert head.current_lambda() == pytest.approx(5.0)
    clone = ASoftmaxLoss(C, D, m=4)
    clone.load_state_dict(head.state_dict())
    assert int(clone.iteration) == 10**6


def test_a_softmax_with_huge_lambda_is_plain_feature_norm_softmax():
    weight, x, y = _inputs(10, True)
    head = ASoftmaxLoss(C, D, m=4, lambda_base=1e12, lambda_min=1e12, label_smooth=0.0).double()
    with torch.no_grad():
        head.weight.copy_(weight)
    cos = F.normalize(x, dim=1) @ F.normalize(weight, dim=1).t()
    expected = F.cross_entropy(x.norm(dim=1, keepdim=True) * cos, y)
    torch.testing.assert_close(head(x, y).loss, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["norm_softmax", "a_softmax", "am_softmax", "arcface"])
def test_margin_cosines_change_only_the_target_column(name):
    head = build_loss(name, num_classes=C, feat_dim=D)
    _, x, y = _inputs(11)
    x = x.float()
    cos = head.cosines(x)
    mcos = head.margin_cosines(x, y)
    off_target = torch.ones_like(cos, dtype=torch.bool).scatter_(1, y.unsqueeze(1), False)
    assert torch.equal(mcos[off_target], cos[off_target])
    if name != "norm_softmax":
        assert (mcos.gather(1, y[:, None]) < cos.gather(1, y[:, None])).all(), (
            "margins make the target harder"
        )
    logits = head.logit_scale(x) * mcos
    expected = F.cross_entropy(logits, y, label_smoothing=head.epsilon)
    assert torch.allclose(expected, head(x, y).loss)


def test_margin_heads_return_cosine_scores_with_training_accuracy_argmax():
    head = AMSoftmaxLoss(C, D)
    _, x, y = _inputs(12)
    out = head(x.float(), y)
    assert out.logits.shape == (B, C)
    assert torch.equal(out.logits.argmax(1), head.cosines(x.float()).argmax(1))
    assert head.class_weight() is head.weight


def test_a_softmax_rejects_non_integer_margin():
    with pytest.raises(ValueError, match="positive integer"):
        ASoftmaxLoss(C, D, m=1.5)


def test_cos_m_theta_is_the_multiple_angle_cosine():
    head = ASoftmaxLoss(C, D, m=4)
    theta = torch.linspace(0, math.pi, 50, dtype=torch.float64)
    np.testing.assert_allclose(
        head.cos_m_theta(torch.cos(theta)).numpy(), torch.cos(4 * theta).numpy(), atol=1e-12
    )


@pytest.mark.parametrize("name", ["am_softmax", "ir_arcface", "unpg_am_softmax"])
def test_a_label_outside_the_classes_raises_instead_of_reading_another_row(name):
    loss = build_loss(name, num_classes=5, feat_dim=4)
    y = torch.tensor([6, 0, 1, 2])  # 6 >= C: as a flat index it would land in row 1
    with pytest.raises((IndexError, RuntimeError), match="out of bounds"):
        loss(torch.randn(4, 4, generator=torch.Generator().manual_seed(40)), y)


@pytest.mark.parametrize("m", [1, 2, 3, 4, 5])
def test_sphereface_branch_lookup_equals_the_acos_floor_definition(m):
    head = ASoftmaxLoss(3, 2, m=m).double()
    theta = torch.linspace(0.0, math.pi, 997, dtype=torch.float64)
    boundary = theta * m / math.pi
    theta = theta[(boundary - boundary.round()).abs() > 1e-6].unsqueeze(1)  # off the boundaries
    k = torch.floor(theta * m / math.pi)
    sign, neg_2k = head._branch(torch.cos(theta))
    assert torch.equal(sign, 1.0 - 2.0 * torch.remainder(k, 2.0))
    assert torch.equal(neg_2k, -2.0 * k)
    assert head._branch(torch.tensor([[1.0 + 1e-7], [-1.0 - 1e-7]], dtype=torch.float64))[
        1
    ].tolist() == [
        [0.0],
        [-2.0 * (m - 1)],
    ]
    assert "_branch_cos" not in head.state_dict()  # derived from m, not saved


def _cosine_heads():
    """Every registered cosine head (IR variants included, UNPG wrappers not): a new head is tested."""
    from reid_ir.losses import LOSSES
    from reid_ir.losses.unpg import PREFIX

    return sorted(
        n for n in LOSSES.names()
        if not n.startswith(PREFIX) and isinstance(LOSSES.get(n), type)
        and issubclass(LOSSES.get(n), CosineMarginLoss)
    )


@pytest.mark.parametrize("name", _cosine_heads())
@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.3])
def test_every_cosine_head_is_label_smoothed_ce_over_its_margin_logits(name, epsilon):
    head = build_loss(name, num_classes=C, feat_dim=D, label_smooth=epsilon).double().eval()
    if hasattr(head, "bank"):
        head.bank.centers.copy_(torch.randn(C, D, dtype=torch.float64))
        head.bank.seen.fill_(True)
    _, x, y = _inputs(12)
    x = x.clone().requires_grad_(True)
    loss = head(x, y).loss
    xr = x.detach().clone().requires_grad_(True)
    logits = head.logit_scale(xr) * head.margin_cosines(xr, y)
    expected = F.cross_entropy(logits, y, label_smoothing=epsilon)
    torch.testing.assert_close(loss, expected)
    (g,) = torch.autograd.grad(loss, x)
    (g_ref,) = torch.autograd.grad(expected, xr)
    torch.testing.assert_close(g, g_ref)


def test_every_classification_head_reads_the_one_label_smoothing_key():
    from reid_ir.config import get_cfg
    from reid_ir.losses import LOSSES, build_loss_from_cfg

    cfg = get_cfg()
    cfg.loss.label_smooth = 0.2
    for name in LOSSES.names():
        cfg.loss.name = name
        loss = build_loss_from_cfg(cfg, C, D, torch.ones(C))
        found = [m.epsilon for m in loss.modules() if hasattr(m, "epsilon")]
        assert found and set(found) == {0.2}, (name, found)
    cfg.loss.softmax.label_smooth = False  # torchreid's switch turns it off everywhere
    cfg.loss.name = "ir_am_softmax"
    assert build_loss_from_cfg(cfg, C, D).epsilon == 0.0


class _QuarterMargin(AMSoftmaxLoss):
    def target_margin(self, cos_target):
        return cos_target - 0.25


def test_a_new_head_that_overrides_only_target_margin_trains_with_its_margin():
    head = _QuarterMargin(C, D, label_smooth=0.0).double()
    plain = CosineMarginLoss(C, D, label_smooth=0.0).double()
    with torch.no_grad():
        plain.weight.copy_(head.weight)
    _, x, y = _inputs(13)
    cos = F.normalize(x, dim=1) @ F.normalize(head.weight, dim=1).t()
    logits = 30.0 * (cos - 0.25 * F.one_hot(y, C))
    torch.testing.assert_close(head(x, y).loss, F.cross_entropy(logits, y))
    assert head(x, y).loss > plain(x, y).loss
