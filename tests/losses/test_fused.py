"""The written-out backward passes of reid_ir.losses.fused equal autograd's."""


import pytest
import torch
import torch.nn.functional as F

from reid_ir.losses import build_loss
from reid_ir.losses.fused import (
    MaskedLogSumExp,
    UnitRows,
    constant,
)


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


def test_ir_a_softmax_equals_sphereface_over_the_normalised_centers_by_autograd(small_arrays):
    loss = build_loss("ir_a_softmax", num_classes=9, feat_dim=5, label_smooth=0.0).double()
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
    loss = build_loss("ir_am_softmax", num_classes=9, feat_dim=5, label_smooth=0.0)
    loss.bank.centers.copy_(torch.randn(9, 5, generator=_gen(11)))
    loss.bank.seen.fill_(True)
    w = F.normalize(loss.bank.centers, dim=1)  # the forward updates the centers after using them
    x = torch.randn(6, 5, generator=_gen(12), requires_grad=True)
    y = torch.randint(0, 9, (6,), generator=_gen(13))
    out = loss(x, y)
    (got,) = torch.autograd.grad(out.loss, x)
    xr = x.detach().clone().requires_grad_(True)
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
