"""Autograd functions with written-out backward passes, shared by the cosine heads and UNPG.

At re-ID sizes (batch B = 64, dimension D = 512, C ~ 10^3 classes) a head's
step on a CPU is dominated by the number of small tensor ops, not by their
arithmetic: autograd's backward of ``F.normalize`` alone is about six ops over
the (B, D) features. Each function here computes the same values as its plain
torch counterpart with fewer ops; each is checked by ``gradcheck`` in
``tests/losses/test_fused.py``.

* :class:`UnitRows` -- ``s F.normalize(x, dim=1)`` (the same forward, bit for bit, for s = 1);
* :class:`WeightNormalizedProduct` -- ``x @ (W / |W|)^T`` for learned class weights;
* :class:`MarginCrossEntropy` -- a cosine head's loss, the margin on the target
  class differentiated through the head's analytic slope ``psi'``, optionally
  with one extra column shared by every row (UNPG's negatives);
* :class:`NormScaledMarginCrossEntropy` -- the same with the feature norm as
  the scale and fixed unit class weights (IR-A-Softmax), the product and the
  norm inside;
* :class:`MaskedLogSumExp` -- log-sum-exp over the masked entries of a matrix
  (UNPG's kept negative pairs);
* :class:`SmallArrays` -- numpy views of CPU tensors for the parts where numpy
  measurably beats eager torch (UNPG's (N, N) filter), the tensors elsewhere;
* :func:`constant` -- cached 0-d tensors for the numbers in binary ops on small
  tensors (``x * 2.0`` pays for a new tensor made from the number each call).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import torch

#: Norm clamp of :class:`UnitRows` and :class:`WeightNormalizedProduct` (as ``F.normalize``).
EPS = 1e-12


@functools.lru_cache(maxsize=1024)
def _constant(value: float, dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor(value, dtype=dtype)


def constant(value: float, like: torch.Tensor) -> torch.Tensor:
    """``value`` as a cached 0-d CPU tensor of ``like``'s dtype: the operand for a number.

    In ``x * 2.0``, ``x - m`` or ``x <= t`` torch wraps the Python number in a
    new 0-d tensor on every call: measured on these CPUs, ``x * 2.0`` on (64, 1)
    values takes ~5.5 us and ``x * constant(2.0, x)`` ~1.7 us (the op itself).
    The values are the same: the kernel reads the number in ``x``'s dtype either
    way. A CPU 0-d tensor is a scalar operand for CUDA tensors too. Where the
    op has a number argument (``alpha=``, ``value=``, ``clamp_min``,
    ``masked_fill_``, ``lerp``'s weight) no tensor is made and none is needed.
    The cached tensors are shared: never write into one. Only for numbers
    fixed by a head's configuration (a few per head), not per-step values.
    """
    return _constant(float(value), like.dtype)


class UnitRows(torch.autograd.Function):
    """``y = s x / max(|x|, eps)`` row-wise: (B, D) -> (B, D); ``F.normalize(x, dim=1)`` for s = 1.

    Backward, with ``n = max(|x|, eps)``::

        grad_x = (g - y (y . g) / s^2) s / n      rows with |x| > eps
        grad_x = g s / n                          rows whose norm was clamped

    (three (B, D) passes instead of the six autograd makes through
    ``norm``, ``clamp_min``, ``expand`` and ``div``, and the scale s of the
    cosine heads costs no extra pass or autograd node).

    Args (of ``apply``): x (B, D); s, a float (default 1).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        norm = x.norm(dim=1, keepdim=True)
        denom = norm.clamp_min(EPS)
        if scale != 1.0:
            denom = denom / constant(scale, denom)
        y = x / denom
        ctx.save_for_backward(y, denom, norm > constant(EPS, norm))
        ctx.inv_scale2 = 1.0 / (scale * scale)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        y, denom, unclamped = ctx.saved_tensors
        dot = (y * grad).sum(1, keepdim=True).mul_(unclamped)  # (B, 1); 0 where clamped
        return torch.addcmul(grad, y, dot, value=-ctx.inv_scale2).div_(denom), None


def unit_rows_with_grad(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """(B, D) rows of ``x`` divided by their L2 norms (times ``scale``), differentiable.

    :class:`UnitRows`.
    """
    return UnitRows.apply(x, scale)


class WeightNormalizedProduct(torch.autograd.Function):
    """``out = (x @ W^T) / |W_j|``: (B, D) x (C, D) -> (B, C), products with unit-norm rows of W.

    Backward, with ``g = grad / |W_j|`` (column-wise) and ``r_j = sum_i grad_ij
    out_ij / |W_j|^2``::

        grad_x = g @ W                       (B, D)
        grad_W = g^T @ x - r[:, None] * W    (C, D): one product, one fused pass

    (autograd through ``W.norm(dim=1)`` makes about eight (C, D) passes, which
    dominate at many classes). ``|W_j|`` is clamped at 1e-12 as ``F.normalize``
    does; the clamp's zero gradient for an all-zero row is not reproduced (such
    a row gets ``g^T x``, a valid descent direction).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        inv_norm = weight.norm(dim=1).clamp_min(EPS).reciprocal()  # (C,)
        out = (x @ weight.t()) * inv_norm
        ctx.save_for_backward(x, weight, inv_norm, out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        x, weight, inv_norm, out = ctx.saved_tensors
        g = grad * inv_norm  # (B, C)
        grad_x = g @ weight if ctx.needs_input_grad[0] else None
        grad_weight = None
        if ctx.needs_input_grad[1]:
            r = (g * out).sum(0) * inv_norm  # (C,)
            grad_weight = torch.addcmul(g.t() @ x, weight, r.unsqueeze(1), value=-1.0)
        return grad_x, grad_weight


#: Evaluate the small (N, N)-sized parts of UNPG in numpy when the tensors are
#: on the CPU (see :class:`SmallArrays`). Tests set it to False to
#: run, on the CPU, the torch path that GPU tensors take.
SMALL_ARRAYS_IN_NUMPY = True


class SmallArrays:
    """Where a fused function keeps its small arrays: numpy views of CPU tensors, or tensors.

    On small arrays an eager torch op costs ~6 us on these CPUs whatever its
    size, a numpy op ~1.3 us, a ``.numpy()`` view or ``from_numpy`` ~1-3 us,
    but in a whole training step (cold caches after the big products) both
    cost several times that, so numpy pays only where it saves many ops for
    few conversions. Measured in whole steps, interleaved with the torch path
    (``tools/benchmark_losses.py --small-arrays-ab``): UNPG's pair filter and
    masked log-sum-exp (~25 ops on the (N, N) Gram matrix, whose torch
    quartiles take two ``kthvalue``) in numpy cut UNPG's overhead over its
    head from 1.26-1.34x to 1.23-1.28x, so :class:`MaskedLogSumExp` and
    ``reid_ir.losses.unpg`` use it. Not used where it did not pay (measured
    and reverted): ArcFace's and SphereFace's margins in numpy (~20 ops on B
    values) were no faster, and MarginCrossEntropy's (B,)-sized row math in
    numpy (~15 ops, ~18 conversions) was 6% slower for ir_am_softmax. Elsewhere (or with
    :data:`SMALL_ARRAYS_IN_NUMPY` off) the same code runs on the tensors
    (``xp`` is ``numpy`` or ``torch``).

    Args:
        like: a tensor of the function (its device and dtype decide).
    """

    def __init__(self, like: torch.Tensor) -> None:
        self.host = (
            SMALL_ARRAYS_IN_NUMPY
            and like.device.type == "cpu"
            and like.dtype in (torch.float32, torch.float64)
        )
        self.xp = np if self.host else torch
        self.numpy_dtype = np.float64 if like.dtype == torch.float64 else np.float32

    def array(self, tensor: torch.Tensor):
        """The (detached) tensor as an array of this side (a view: no copy)."""
        if tensor.requires_grad:
            tensor = tensor.detach()
        return tensor.numpy() if self.host else tensor

    def tensor(self, array) -> torch.Tensor:
        """An array of this side as a tensor (no copy on the CPU); floats in the function's dtype."""
        if not self.host:
            return array
        array = np.asarray(array)
        if array.dtype.kind == "f" and array.dtype != self.numpy_dtype:
            array = array.astype(self.numpy_dtype)
        return torch.from_numpy(array)


class MarginCrossEntropy(torch.autograd.Function):
    """A cosine head's loss: cross-entropy over the scaled cosines with the margin on the target.

    With z = s cos (B, C), each row's target logit becomes ``u_i = s psi(c_i)``
    (``c_i = z_iy / s``; psi from ``head.margin_and_slope``, no autograd), and
    optionally one extra column e shared by every row (UNPG's log-sum-exp of its
    kept negatives; 0-d, or (B,) per row)::

        loss = mean_i [log(sum_{j != y_i} exp z_ij + exp u_i + exp e_i) - u_i]

    With ``p`` the row softmax over ``[z with u on the target | e]`` and ``w = g / B``::

        grad_z_ij = w p_ij                    j != y_i
        grad_z_iy = w (p_iy - 1) psi'(c_i)
        grad_e_i  = w p_ie                    (summed over i for a 0-d e)
        grad_s_i  = w (p_iy - 1) (psi(c_i) - c_i psi'(c_i))   (s = (B, 1) feature norms only)

    One autograd function instead of gather + margin function + scatter +
    log-softmax + NLL (+ concatenation): the forward's exponentials are kept for
    the backward, two (B, C) passes forward and one backward.

    Args (of ``apply``): z (B, C); y (B,); s, a float or a (B, 1) tensor; a head
    with ``margin_and_slope(cos) -> (psi, psi')`` ((B, 1) each); e (0-d or (B,))
    or None.
    """

    @staticmethod
    def forward(ctx: Any, scaled_cos, targets, scale, head, extra=None) -> torch.Tensor:
        loss, saved = _margin_ce_forward(scaled_cos, targets, scale, head, extra)
        ctx.save_for_backward(*saved)
        ctx.scale_is_tensor = isinstance(scale, torch.Tensor)
        ctx.extra_is_scalar = extra is not None and extra.dim() == 0
        return loss

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        want_scale = ctx.scale_is_tensor and ctx.needs_input_grad[2]
        grad_z, grad_s, grad_e = _margin_ce_backward(
            grad, ctx.saved_tensors, want_scale, ctx.extra_is_scalar, ctx.needs_input_grad[4]
        )
        return grad_z, None, grad_s, None, grad_e


def _margin_ce_forward(scaled_cos, targets, scale, head, extra) -> tuple[torch.Tensor, tuple]:
    """:class:`MarginCrossEntropy`'s forward: the loss and the tensors its backward reads."""
    index = targets.unsqueeze(1)  # (B, 1); gather checks it is in [0, C)
    scale_operand = scale if isinstance(scale, torch.Tensor) else constant(scale, scaled_cos)
    cos = scaled_cos.gather(1, index).div_(scale_operand)  # (B, 1)
    psi, slope = head.margin_and_slope(cos)
    target_logit = (psi * scale_operand).view(-1)  # u (B,)
    peak = torch.maximum(scaled_cos.amax(1), target_logit)  # >= every term of the row
    if extra is not None:
        peak = torch.maximum(peak, extra)
    exps = (scaled_cos - peak.unsqueeze(1)).exp_()  # (B, C)
    exps.scatter_(1, index, (target_logit - peak).exp_().unsqueeze(1))
    total = exps.sum(1)  # (B,)
    extra_exp = None
    if extra is not None:
        extra_exp = (extra - peak).exp_()
        total.add_(extra_exp)
    loss = (total.log() + peak - target_logit).mean()
    return loss, (exps, total, index, slope, cos, psi, extra_exp)


def _margin_ce_backward(
    grad: torch.Tensor, saved: tuple, want_scale: bool, extra_is_scalar: bool, want_extra: bool
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """:class:`MarginCrossEntropy`'s backward: grad_z (B, C), grad_s (B, 1) and grad_e, or None."""
    exps, total, index, slope, cos, psi, extra_exp = saved
    weight = grad / constant(exps.shape[0], grad)
    row_weight = weight / total  # (B,)
    grad_z = exps * row_weight.unsqueeze(1)  # w p
    target_grad = grad_z.gather(1, index).sub_(weight)  # w (p_iy - 1), (B, 1)
    grad_s = grad_e = None
    if want_scale:
        grad_s = target_grad * (psi - cos * slope)
    grad_z.scatter_(1, index, target_grad.mul_(slope))
    if extra_exp is not None and want_extra:
        share = extra_exp * row_weight
        grad_e = share.sum() if extra_is_scalar else share
    return grad_z, grad_s, grad_e


class NormScaledMarginCrossEntropy(torch.autograd.Function):
    """:class:`MarginCrossEntropy` with s = |x| and fixed unit class weights, from the features.

    The original SphereFace logits ``|x_i| psi(cos theta_ij)`` with weights
    that get no gradient (IR-A-Softmax's normalised centers W)::

        z = x @ W^T        (B, C) = |x_i| cos_ij, as |W_j| = 1
        s = max(|x|, eps)  (B, 1)
        loss = MarginCrossEntropy(z, y, s, head, e)

    Backward, with grad_z and grad_s from :class:`MarginCrossEntropy`::

        grad_x = grad_z @ W + x grad_s / s    one product, one fused pass

    (autograd would run the product's and the norm's backward as two nodes and
    add their results in a third op). A zero row (s clamped at eps) gets
    cosines 0 and the gradient ``grad_z @ W``, not the NaN of 0 / 0.

    Args (of ``apply``): x (B, D); W (C, D) unit rows, no gradient; y (B,); a
    head with ``margin_and_slope``; e (0-d or (B,)) or None.

    Returns:
        The loss (0-d) and z (B, C), the scaled cosines without margin (not differentiable).
    """

    @staticmethod
    def forward(ctx: Any, x, unit_weight, targets, head, extra=None):
        # (B, 1); clamped so a zero row has cosines 0, not 0 / 0 (its logits are 0 either way)
        norm = x.norm(dim=1, keepdim=True).clamp_min_(EPS)
        scaled_cos = x @ unit_weight.t()  # (B, C)
        loss, saved = _margin_ce_forward(scaled_cos, targets, norm, head, extra)
        ctx.save_for_backward(x, unit_weight, norm, *saved)
        ctx.extra_is_scalar = extra is not None and extra.dim() == 0
        ctx.mark_non_differentiable(scaled_cos)
        return loss, scaled_cos

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor, _grad_scaled_cos: torch.Tensor | None):
        x, unit_weight, norm, *saved = ctx.saved_tensors
        grad_z, grad_s, grad_e = _margin_ce_backward(
            grad, saved, True, ctx.extra_is_scalar, ctx.needs_input_grad[4]
        )
        grad_x = torch.addcmul(grad_z @ unit_weight, x, grad_s / norm)
        return grad_x, None, None, None, grad_e


class MaskedLogSumExp(torch.autograd.Function):
    """``log sum_{mask} exp(s x)``: a 0-d log-sum-exp of the entries of s x where ``mask`` holds.

    With ``m = max_{mask} s x``, ``p = exp(s x - m) mask`` and ``S = sum p``,
    the value is ``m + log S`` and the backward ``grad_x = g s p / S`` (zero
    off the mask). At least one entry must be in the mask.

    Args (of ``apply``): x (any shape); mask (bool, same shape); s (float).
    """

    @staticmethod
    def forward(ctx: Any, values: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
        side = SmallArrays(values)  # numpy on the CPU
        scaled, keep = side.array(values) * scale, side.array(mask)
        if side.host:
            peak = scaled.max(where=keep, initial=-np.inf)
        else:
            peak = scaled.masked_fill(~keep, -math.inf).amax()
        exps = side.xp.exp(scaled - peak) * keep
        total = exps.sum()
        ctx.side, ctx.small, ctx.scale = side, (exps, total), scale
        return side.tensor(side.xp.log(total) + peak)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        side = ctx.side
        exps, total = ctx.small
        coefficient = (float(grad) if side.host else grad) * ctx.scale / total
        return side.tensor(exps * coefficient), None, None
