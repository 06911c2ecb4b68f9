"""Autograd functions with written-out backward passes, shared by the cosine heads and UNPG.

At re-ID sizes (batch B = 64, dimension D = 512, C ~ 10^3 classes) a head's
step on a CPU is dominated by the number of small tensor ops, not by their
arithmetic: autograd's backward of ``F.normalize`` alone is about six ops over
the (B, D) features. Each function here computes the same values as its plain
torch counterpart with fewer ops; each is checked by ``gradcheck`` in
``tests/losses/test_fused.py``.

* :class:`UnitRows` -- ``s F.normalize(x, dim=1)`` (the same forward, bit for bit, for s = 1);
* :class:`WeightNormalizedProduct` -- ``x @ (W / |W|)^T`` for learned class weights;
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
