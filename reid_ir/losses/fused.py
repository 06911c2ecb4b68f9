"""Autograd functions with written-out backward passes, shared by the cosine heads and UNPG.

At re-ID sizes (batch B = 64, dimension D = 512, C ~ 10^3 classes) a head's
step on a CPU is dominated by the number of small tensor ops, not by their
arithmetic: autograd's backward of ``F.normalize`` alone is about six ops over
the (B, D) features. Each function here computes the same values as its plain
torch counterpart with fewer ops; each is checked by ``gradcheck`` in
``tests/losses/test_fused.py``.

* :class:`UnitRows` -- ``F.normalize(x, dim=1)`` (same forward, bit for bit);
* :class:`WeightNormalizedProduct` -- ``x @ (W / |W|)^T`` for learned class weights;
* :class:`TargetMarginLogits` -- a cosine head's logits with the margin on the
  target class, differentiated through the head's analytic slope ``psi'``;
* :class:`SharedColumnCrossEntropy` -- cross-entropy over the class logits
  plus one column shared by every row (UNPG's negatives);
* :class:`MaskedLogSumExp` -- log-sum-exp over the masked entries of a matrix
  (UNPG's kept negative pairs).
"""

from __future__ import annotations

import math
from typing import Any

import torch

#: Norm clamp of :class:`UnitRows` and :class:`WeightNormalizedProduct` (as ``F.normalize``).
EPS = 1e-12


class UnitRows(torch.autograd.Function):
    """``y = x / max(|x|, eps)`` row-wise: (B, D) -> (B, D), as ``F.normalize(x, dim=1)``.

    Backward, with ``n = max(|x|, eps)``::

        grad_x = (g - y (y . g)) / n      rows with |x| > eps
        grad_x = g / n                    rows whose norm was clamped

    (three (B, D) passes instead of the six autograd makes through
    ``norm``, ``clamp_min``, ``expand`` and ``div``).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        norm = x.norm(dim=1, keepdim=True)
        denom = norm.clamp_min(EPS)
        y = x / denom
        ctx.save_for_backward(y, denom, norm > EPS)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        y, denom, unclamped = ctx.saved_tensors
        dot = (y * grad).sum(1, keepdim=True).mul_(unclamped)  # (B, 1); 0 where clamped
        return torch.addcmul(grad, y, dot, value=-1.0).div_(denom)


def unit_rows_with_grad(x: torch.Tensor) -> torch.Tensor:
    """(B, D) rows of ``x`` divided by their L2 norms, differentiable (:class:`UnitRows`)."""
    return UnitRows.apply(x)


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


class TargetMarginLogits(torch.autograd.Function):
    """A cosine head's logits: (B, C) scaled cosines ``z = s cos`` with each row's target
    entry replaced by ``s psi(z_iy / s)``.

    ``psi`` and its slope ``psi'`` come from ``head.margin_and_slope`` in one
    no-grad pass over the B target cosines. Backward, with ``c_i = z_iy / s_i``::

        grad_z = grad, except grad_z[i, y_i] = grad[i, y_i] psi'(c_i)
        grad_s_i = grad[i, y_i] (psi(c_i) - c_i psi'(c_i))   (s = (B, 1) feature norms only)

    This replaces autograd's graph of gather + margin function + scatter
    (10-20 (B, 1) ops for ArcFace and SphereFace, and a zero-filled (B, C)
    gradient for the gather) by a copy and two B-element index ops.

    Args (of ``apply``): z (B, C); targets (B,); s, a float or a (B, 1)
    tensor; a head with ``margin_and_slope(cos) -> (psi, psi')`` ((B, 1) each).
    """

    @staticmethod
    def forward(
        ctx: Any, scaled_cos: torch.Tensor, targets: torch.Tensor, scale, head: Any
    ) -> torch.Tensor:
        batch, num_classes = scaled_cos.shape
        flat = torch.arange(batch, device=targets.device).mul_(num_classes).add_(targets)
        logits = scaled_cos.clone(memory_format=torch.contiguous_format)
        cos = logits.view(-1).index_select(0, flat).unsqueeze(1).div_(scale)  # (B, 1)
        psi, slope = head.margin_and_slope(cos)
        logits.view(-1).index_copy_(0, flat, (scale * psi).view(-1))
        ctx.scale_is_tensor = isinstance(scale, torch.Tensor)
        ctx.save_for_backward(flat, slope, cos, psi)
        return logits

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        flat, slope, cos, psi = ctx.saved_tensors
        grad = grad.contiguous()
        grad_target = grad.view(-1).index_select(0, flat)  # (B,)
        grad_z = grad_s = None
        if ctx.needs_input_grad[0]:
            grad_z = grad.clone()
            grad_z.view(-1).index_copy_(0, flat, grad_target * slope.view(-1))
        if ctx.scale_is_tensor and ctx.needs_input_grad[2]:
            grad_s = grad_target.unsqueeze(1) * (psi - cos * slope)
        return grad_z, None, grad_s, None


class SharedColumnCrossEntropy(torch.autograd.Function):
    """``mean_i [logaddexp(lse_i, e_i) - z_iy]``: cross-entropy over ``[z | e]`` without the concat.

    The cross-entropy of (B, C) logits z with one extra column e shared by all
    rows (UNPG's log-sum-exp of its kept negatives): a 0-d e, or (B,) when
    each row has its own. With ``m_i = max(max_j z_ij, e_i)``,
    ``p_ij = exp(z_ij - m_i)``, ``q_i = exp(e_i - m_i)`` and ``S_i = sum_j p_ij + q_i``
    (so ``logaddexp(lse_i, e_i) = m_i + log S_i``), backward::

        grad_z_ij = g / B (p_ij / S_i - [j = y_i])
        grad_e_i  = g / B q_i / S_i          (summed over i for a 0-d e)

    The forward's exponentials are kept for the backward: two (B, C) passes
    forward, one backward, no (B, C + 1) copy and no autograd graph.

    Args (of ``apply``): z (B, C); y (B,); e, 0-d or (B,).
    """

    @staticmethod
    def forward(
        ctx: Any, logits: torch.Tensor, targets: torch.Tensor, extra: torch.Tensor
    ) -> torch.Tensor:
        peak = torch.maximum(logits.amax(1), extra)  # (B,)
        exps = (logits - peak.unsqueeze(1)).exp_()  # (B, C)
        extra_exp = (extra - peak).exp_()  # (B,)
        total = exps.sum(1).add_(extra_exp)  # S (B,)
        ctx.save_for_backward(exps, extra_exp, total, targets)
        ctx.extra_is_scalar = extra.dim() == 0
        target_logit = logits.gather(1, targets.unsqueeze(1)).squeeze(1)
        return (total.log() + peak - target_logit).mean()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        exps, extra_exp, total, targets = ctx.saved_tensors
        batch, num_classes = exps.shape
        weight = grad / batch
        row_weight = weight / total  # (B,)
        grad_logits = grad_extra = None
        if ctx.needs_input_grad[0]:
            grad_logits = exps * row_weight.unsqueeze(1)
            flat = torch.arange(batch, device=targets.device).mul_(num_classes).add_(targets)
            grad_logits.view(-1).index_add_(0, flat, weight.expand(batch).neg())
        if ctx.needs_input_grad[2]:
            share = extra_exp * row_weight
            grad_extra = share.sum() if ctx.extra_is_scalar else share
        return grad_logits, None, grad_extra


class MaskedLogSumExp(torch.autograd.Function):
    """``log sum_{mask} exp(s x)``: a 0-d log-sum-exp of the entries of s x where ``mask`` holds.

    With ``m = max_{mask} s x``, ``p = exp(s x - m) mask`` and ``S = sum p``,
    the value is ``m + log S`` and the backward ``grad_x = g s p / S`` (zero
    off the mask). At least one entry must be in the mask.

    Args (of ``apply``): x (any shape); mask (bool, same shape); s (float).
    """

    @staticmethod
    def forward(ctx: Any, values: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
        scaled = values * scale
        peak = scaled.masked_fill(~mask, -math.inf).amax()
        exps = (scaled - peak).exp_().mul_(mask)
        total = exps.sum()
        ctx.save_for_backward(exps, total)
        ctx.scale = scale
        return total.log() + peak

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        exps, total = ctx.saved_tensors
        return exps * (grad * ctx.scale / total), None, None
