"""The written-out backward passes of reid_ir.losses.fused equal autograd's."""

import math

import pytest
import torch
import torch.nn.functional as F

from reid_ir.losses import build_loss
from reid_ir.losses.centers import CenterBank, unit_rows
from reid_ir.losses.fused import (
    MarginCrossEntropy,
    MaskedLogSumExp,
    NormScaledMarginCrossEntropy,
    UnitRows,
    constant,
)
from reid_ir.losses.margin import AMSoftmaxLoss, ArcFaceLoss, ASoftmaxLoss, CosineMarginLoss


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_unit_rows_forward_is_f_normalize_bit_for_bit_and_gradcheck_passes():
    x = torch.randn(16, 9, generator=_gen(0))
    assert torch.equal(UnitRows.apply(x), F.normalize(x, dim=1))
    xd = torch.randn(6, 5, dtype=torch.float64, generator=_gen(1), requires_grad=True)
    assert torch.autograd.gradcheck(UnitRows.apply, (xd,))


def test_unit_rows_gradient_equals_f_normalize_also_for_zero_and_tiny_rows():
    x = torch.randn(5, 4, dtype=torch.float64, generator=_gen(2))
    x[1] = 0.0  # norm clamped at eps: F.normalize's gradient is grad / eps
    x[3] = 1e-14
    grad = torch.randn(5, 4, dtype=torch.float64, generator=_gen(3))
    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    (got,) = torch.autograd.grad(UnitRows.apply(a), a, grad)
    (want,) = torch.autograd.grad(F.normalize(b, dim=1), b, grad)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0.0)
    assert torch.isfinite(got).all()


def test_scaled_unit_rows_equal_scale_times_f_normalize_in_value_and_gradient():
    x = torch.randn(5, 4, dtype=torch.float64, generator=_gen(4))
    x[2] = 0.0
    grad = torch.randn(5, 4, dtype=torch.float64, generator=_gen(5))
    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    got = UnitRows.apply(a, 30.0)
    want = F.normalize(b, dim=1) * 30.0
    torch.testing.assert_close(got, want, rtol=1e-15, atol=0.0)
    (ga,) = torch.autograd.grad(got, a, grad)
    (gb,) = torch.autograd.grad(want, b, grad)
    torch.testing.assert_close(ga, gb, rtol=1e-12, atol=0.0)
    xd = torch.randn(6, 5, dtype=torch.float64, generator=_gen(6), requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: UnitRows.apply(t, 7.5), (xd,))


def _cosines(seed, n=64):
    """(n, 1) target cosines across [-1, 1], the end points and the ArcFace threshold."""
    c = torch.rand(n, 1, dtype=torch.float64, generator=_gen(seed)) * 2 - 1
    c[:4, 0] = torch.tensor([1.0, -1.0, math.cos(math.pi - 0.5), 0.0], dtype=torch.float64)
    return c


HEADS = {
    "norm_softmax": lambda: CosineMarginLoss(3, 2),
    "am_softmax": lambda: AMSoftmaxLoss(3, 2, m=0.35),
    "arcface": lambda: ArcFaceLoss(3, 2, m=0.5),
    "a_softmax_m4": lambda: ASoftmaxLoss(3, 2, m=4),
    "a_softmax_m3": lambda: ASoftmaxLoss(3, 2, m=3),
    "a_softmax_m1": lambda: ASoftmaxLoss(3, 2, m=1),
}


@pytest.mark.parametrize("name", sorted(HEADS))
def test_margin_and_slope_equal_target_margin_and_its_autograd_derivative(name):
    head = HEADS[name]().double()
    if isinstance(head, ASoftmaxLoss):
        head.iteration.fill_(500)  # lambda well inside its annealing range
    cos = _cosines(6).requires_grad_(True)
    psi_ref = head.target_margin(cos)
    (slope_ref,) = torch.autograd.grad(psi_ref.sum(), cos)
    psi, slope = head.margin_and_slope(cos.detach())
    assert torch.equal(psi, psi_ref.detach())  # the same arithmetic, bit for bit
    torch.testing.assert_close(slope, slope_ref, rtol=1e-10, atol=1e-10)


def _margin_ce_inputs(name, tensor_scale, extra_kind, seed=8):
    head = HEADS[name]().double()
    batch, num_classes = 12, 5
    cos = _cosines(7, n=batch + 4)[4:]  # away from |c| = 1, where the derivative is unbounded
    g = _gen(seed)
    scale = (
        (torch.rand(batch, 1, dtype=torch.float64, generator=g) * 5 + 1).requires_grad_(True)
        if tensor_scale
        else 30.0
    )
    y = torch.randint(0, num_classes, (batch,), generator=g)
    others = torch.rand(batch, num_classes, dtype=torch.float64, generator=g) * 2 - 1
    z = (others.scatter(1, y.unsqueeze(1), cos) * scale).detach().requires_grad_(True)
    extra = {
        "none": None,
        "shared": torch.tensor(20.0, dtype=torch.float64),
        "per_row": torch.randn(batch, dtype=torch.float64, generator=g) * 10,
    }[extra_kind]
    if extra is not None:
        extra.requires_grad_(True)
    return head, z, y, scale, extra


def _reference_margin_ce(head, z, y, scale, extra):
    """cross_entropy over [z with s psi(z_iy / s) on the target | extra], by autograd."""
    index = y.unsqueeze(1)
    logits = z.scatter(1, index, scale * head.target_margin(z.gather(1, index) / scale))
    if extra is not None:
        column = extra.expand(len(y), 1) if extra.dim() == 0 else extra.unsqueeze(1)
        logits = torch.cat([logits, column], 1)
    return F.cross_entropy(logits, y)


@pytest.mark.parametrize("name", sorted(HEADS))
@pytest.mark.parametrize("tensor_scale", [False, True])
@pytest.mark.parametrize("extra_kind", ["none", "shared", "per_row"])
def test_margin_cross_entropy_equals_autograd_through_margin_scatter_concat_and_ce(
    name, tensor_scale, extra_kind, small_arrays
):
    head, z, y, scale, extra = _margin_ce_inputs(name, tensor_scale, extra_kind)
    out = MarginCrossEntropy.apply(z, y, scale, head, extra)
    ref = _reference_margin_ce(head, z, y, scale, extra)
    torch.testing.assert_close(out, ref)
    inputs = [z] + ([scale] if tensor_scale else []) + ([extra] if extra is not None else [])
    grad_out = torch.tensor(1.7, dtype=torch.float64)
    got = torch.autograd.grad(out, inputs, grad_out)
    want = torch.autograd.grad(ref, inputs, grad_out)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_margin_cross_entropy_passes_gradcheck(small_arrays):
    head, z, y, scale, extra = _margin_ce_inputs("arcface", True, "per_row")
    assert torch.autograd.gradcheck(
        lambda a, s, e: MarginCrossEntropy.apply(a, y, s, head, e), (z, scale, extra)
    )


def _norm_scaled_inputs(extra_kind, seed=50):
    g = _gen(seed)
    batch, num_classes, dim = 10, 6, 4
    x = torch.randn(batch, dim, dtype=torch.float64, generator=g) * 3
    w = F.normalize(torch.randn(num_classes, dim, dtype=torch.float64, generator=g), dim=1)
    y = torch.randint(0, num_classes, (batch,), generator=g)
    extra = {
        "none": None,
        "shared": torch.tensor(2.0, dtype=torch.float64),
        "per_row": torch.randn(batch, dtype=torch.float64, generator=g),
    }[extra_kind]
    if extra is not None:
        extra.requires_grad_(True)
    return x.requires_grad_(True), w, y, extra


@pytest.mark.parametrize("name", ["a_softmax_m4", "a_softmax_m3", "am_softmax"])
@pytest.mark.parametrize("extra_kind", ["none", "shared", "per_row"])
def test_norm_scaled_margin_ce_equals_margin_ce_over_autograd_product_and_norm(name, extra_kind):
    head = HEADS[name]().double()
    x, w, y, extra = _norm_scaled_inputs(extra_kind)
    out, scaled_cos = NormScaledMarginCrossEntropy.apply(x, w, y, head, extra)
    xr = x.detach().clone().requires_grad_(True)
    ref_z = xr @ w.t()
    ref = MarginCrossEntropy.apply(ref_z, y, xr.norm(dim=1, keepdim=True), head, extra)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=0.0)
    torch.testing.assert_close(scaled_cos, ref_z.detach(), rtol=1e-12, atol=0.0)
    assert not scaled_cos.requires_grad  # logits for accuracy only
    inputs = [x] + ([extra] if extra is not None else [])
    ref_inputs = [xr] + ([extra] if extra is not None else [])
    grad_out = torch.tensor(0.8, dtype=torch.float64)
    got = torch.autograd.grad(out, inputs, grad_out)
    want = torch.autograd.grad(ref, ref_inputs, grad_out)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_norm_scaled_margin_ce_passes_gradcheck_and_a_zero_row_gets_a_finite_gradient():
    head = HEADS["a_softmax_m4"]().double()
    head.iteration.fill_(500)
    x, w, y, extra = _norm_scaled_inputs("per_row", seed=51)
    assert torch.autograd.gradcheck(
        lambda a, e: NormScaledMarginCrossEntropy.apply(a, w, y, head, e)[0], (x, extra)
    )
    x0 = x.detach().clone()
    x0[2] = 0.0
    x0.requires_grad_(True)
    (g,) = torch.autograd.grad(NormScaledMarginCrossEntropy.apply(x0, w, y, head, None)[0], x0)
    assert torch.isfinite(g).all()


def test_constant_is_a_cached_0d_tensor_of_the_dtype_and_gives_the_python_number_result():
    x = torch.randn(7, 1, generator=_gen(52))
    c = constant(0.35, x)
    assert c.dim() == 0 and c.dtype == torch.float32 and constant(0.35, x) is c
    assert constant(0.35, x.double()).dtype == torch.float64
    assert torch.equal(x - c, x - 0.35) and torch.equal(x * constant(30.0, x), x * 30.0)
    assert torch.equal(x <= constant(0.1, x), x <= 0.1)


@pytest.mark.parametrize("name", ["am_softmax", "ir_arcface", "unpg_am_softmax"])
def test_a_label_outside_the_classes_raises_instead_of_reading_another_row(name, small_arrays):
    loss = build_loss(name, num_classes=5, feat_dim=4)
    y = torch.tensor([6, 0, 1, 2])  # 6 >= C: as a flat index it would land in row 1
    with pytest.raises((IndexError, RuntimeError), match="out of bounds"):
        loss(torch.randn(4, 4, generator=_gen(40)), y)


def test_margin_cross_entropy_is_stable_for_large_logits(small_arrays):
    head = AMSoftmaxLoss(3, 2, m=0.35)
    z = torch.tensor([[90.0, -90.0, 89.0]], requires_grad=True)
    y = torch.tensor([0])
    out = MarginCrossEntropy.apply(z, y, 30.0, head, torch.tensor(95.0))
    ref = _reference_margin_ce(head, z, y, 30.0, torch.tensor(95.0))
    torch.testing.assert_close(out, ref)
    (g,) = torch.autograd.grad(out, z)
    assert torch.isfinite(out) and torch.isfinite(g).all()


def test_center_bank_unit_cache_equals_a_full_recompute_after_index_copy_updates():
    bank = CenterBank(11, 6)
    bank.centers.copy_(torch.randn(11, 6, generator=_gen(10)))
    bank.unit_centers()
    for seed in range(4):
        g = _gen(20 + seed)
        x, y = torch.randn(8, 6, generator=g), torch.randint(0, 11, (8,), generator=g)
        bank.update(x, y, "ema", 0.7)
        assert torch.equal(bank.unit_centers(), unit_rows(bank.centers))


def test_ir_a_softmax_equals_sphereface_over_the_normalised_centers_by_autograd(small_arrays):
    loss = build_loss("ir_a_softmax", num_classes=9, feat_dim=5).double()
    loss.iteration.fill_(300)
    loss.bank.centers.copy_(torch.randn(9, 5, dtype=torch.float64, generator=_gen(14)))
    x = (torch.randn(6, 5, dtype=torch.float64, generator=_gen(15)) * 4).requires_grad_(True)
    y = torch.randint(0, 9, (6,), generator=_gen(16))
    loss.eval()  # no iteration step, so the reference sees the same lambda
    out = loss(x, y)
    (got,) = torch.autograd.grad(out.loss, x)
    xr = x.detach().clone().requires_grad_(True)
    cos = F.normalize(xr, dim=1) @ F.normalize(loss.bank.centers, dim=1).t()
    index = y.unsqueeze(1)
    mcos = cos.scatter(1, index, loss.target_margin(cos.gather(1, index)))
    ref = F.cross_entropy(xr.norm(dim=1, keepdim=True) * mcos, y)
    (want,) = torch.autograd.grad(ref, xr)
    torch.testing.assert_close(out.loss, ref)
    torch.testing.assert_close(got, want)


def test_ir_head_forward_and_feature_gradient_equal_the_plain_product(small_arrays):
    loss = build_loss("ir_am_softmax", num_classes=9, feat_dim=5)
    loss.bank.centers.copy_(torch.randn(9, 5, generator=_gen(11)))
    x = torch.randn(6, 5, generator=_gen(12), requires_grad=True)
    y = torch.randint(0, 9, (6,), generator=_gen(13))
    out = loss(x, y)
    (got,) = torch.autograd.grad(out.loss, x)
    xr = x.detach().clone().requires_grad_(True)
    w = F.normalize(loss.bank.centers, dim=1)
    logits = 30.0 * F.normalize(xr, dim=1) @ w.t()
    logits = logits - 30.0 * 0.35 * F.one_hot(y, 9)
    ref = F.cross_entropy(logits, y)
    (want,) = torch.autograd.grad(ref, xr)
    torch.testing.assert_close(out.loss, ref)
    torch.testing.assert_close(got, want)


def test_masked_log_sum_exp_equals_logsumexp_of_the_selected_entries_and_gradcheck(
    small_arrays,
):
    g = _gen(31)
    x = torch.randn(6, 6, dtype=torch.float64, generator=g).requires_grad_(True)
    mask = torch.rand(6, 6, generator=g) > 0.6
    out = MaskedLogSumExp.apply(x, mask, 30.0)
    ref = torch.logsumexp(30.0 * x[mask], 0)
    torch.testing.assert_close(out, ref)
    (got,) = torch.autograd.grad(out, x)
    (want,) = torch.autograd.grad(ref, x)
    torch.testing.assert_close(got, want)
    assert (got[~mask] == 0).all()
    assert torch.autograd.gradcheck(lambda a: MaskedLogSumExp.apply(a, mask, 3.0), (x,))
