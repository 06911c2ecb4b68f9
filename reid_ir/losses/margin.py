"""Cosine-margin softmax heads: NormFace, SphereFace, CosFace, ArcFace.

All heads share one core (:class:`CosineMarginLoss`)::

    cos_ij   = <x_i / |x_i|, w_j / |w_j|>                     (B, C)
    mcos_ij  = psi(cos_ij) if j == y_i else cos_ij            margin on the target only
    logit_ij = scale_i * mcos_ij                              scale s, or |x_i| (SphereFace)
    loss     = label_smoothed_cross_entropy(logits, y, epsilon)   (``loss.label_smooth``)

and differ only in the target-margin function psi (:meth:`target_margin`): a new
head is a subclass that overrides it (autograd differentiates it):

============== ============ ==================================================
``loss.name``  paper        psi(cos theta)
============== ============ ==================================================
norm_softmax   NormFace     cos theta
a_softmax      SphereFace   ((-1)^k cos(m theta) - 2k + lambda cos theta) / (1 + lambda),
                            theta in [k pi / m, (k+1) pi / m], integer m
am_softmax     CosFace      cos theta - m
arcface        ArcFace      cos(theta + m) if theta + m <= pi, else cos theta - m sin m
============== ============ ==================================================

Wrappers (e.g. UNPG) reuse a head through :meth:`CosineMarginLoss.unit_cosines`
(cosines of features the wrapper has normalised already),
:meth:`CosineMarginLoss.margin_cosines`
(the (B, C) cosines with the margin applied to the target class only, before
scaling), :meth:`CosineMarginLoss.logit_scale` (the scale s, or the (B, 1)
feature norms for SphereFace without a fixed scale),
:meth:`CosineMarginLoss.margin_cross_entropy` (the label-smoothed cross-entropy
over ``logit_scale(x) * margin_cosines(x, y)``, optionally with one extra column
shared by every row) and :meth:`CosineMarginLoss.after_forward` (per-step state such as
SphereFace's annealing). The IR-Softmax variants
(``reid_ir.losses.ir``) are the same heads with the class weights replaced by
tracked class centers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from reid_ir.errors import ConfigError
from reid_ir.losses.base import LossOutput, ReidLoss
from reid_ir.losses.registry import LOSSES
from reid_ir.losses.softmax import label_smooth_epsilon, label_smoothed_cross_entropy


class CosineMarginLoss(ReidLoss):
    """Shared core of the cosine heads; on its own it is NormFace (no margin).

    Args:
        num_classes: C.
        feat_dim: D.
        scale: logit scale s.
        label_smooth: label smoothing epsilon over the C classes (True: 0.1).

    Attributes:
        scale: s (``None`` for SphereFace scaled by the feature norm).
        epsilon: the label smoothing.
    """

    def __init__(
        self,
        num_classes: int,
        feat_dim: int,
        scale: float | None = 30.0,
        label_smooth: float = 0.1,
    ) -> None:
        super().__init__()
        self.num_classes, self.feat_dim = num_classes, feat_dim
        self.scale = None if scale is None else float(scale)
        self.epsilon = label_smooth_epsilon(label_smooth)
        self._build_class_weight()

    def _build_class_weight(self) -> None:
        """Create the class weights (learned here; tracked centers in IR heads)."""
        self.weight = nn.Parameter(torch.empty(self.num_classes, self.feat_dim))
        nn.init.normal_(self.weight, 0.0, 0.01)

    def class_weight(self) -> torch.Tensor:
        """(C, D) class weight vectors (un-normalised)."""
        return self.weight

    def fixed_unit_weight(self) -> torch.Tensor | None:
        """(C, D) unit-norm class weights that get no gradient, or None (learned weights here)."""
        return None

    def unit_cosines(self, unit_features: torch.Tensor) -> torch.Tensor:
        """(B, C) cosines of already L2-normalised (B, D) features with every class weight."""
        return unit_features @ F.normalize(self.class_weight(), dim=1).t()

    def cosines(self, features: torch.Tensor) -> torch.Tensor:
        """(B, C) cosines between the (B, D) features and every class weight."""
        return self.unit_cosines(F.normalize(features, dim=1))

    def target_margin(self, cos_target: torch.Tensor) -> torch.Tensor:
        """psi: the margin applied to the target cosines, (B, 1) -> (B, 1)."""
        return cos_target

    def margin_cosines(
        self, features: torch.Tensor, targets: torch.Tensor, cosines: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Cosines with the margin applied to each sample's target class only.

        Args:
            features: (B, D) embeddings.
            targets: (B,) labels.
            cosines: (B, C) precomputed :meth:`cosines`, to avoid recomputing them.

        Returns:
            (B, C) margin cosines, before scaling.
        """
        cos = self.cosines(features) if cosines is None else cosines
        index = targets.unsqueeze(1)
        return cos.scatter(1, index, self.target_margin(cos.gather(1, index)))

    def logit_scale(self, features: torch.Tensor) -> torch.Tensor | float:
        """Multiplier of the margin cosines: ``scale`` (float) or (B, 1) feature norms."""
        if self.scale is None:
            return features.norm(dim=1, keepdim=True)
        return self.scale

    def margin_cross_entropy(
        self,
        features: torch.Tensor,
        targets: torch.Tensor,
        unit_features: torch.Tensor | None = None,
        extra: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The head's loss: label-smoothed CE over ``logit_scale(x) * margin_cosines(x, y)``.

        Args:
            features: (B, D) embeddings.
            targets: (B,) labels.
            unit_features: (B, D) ``features / |features|`` if the caller has them.
            extra: one more logit column shared by every row (0-d, or (B,)), as
                UNPG adds; it takes part in the softmax but gets no smoothing
                mass (smoothing spreads over the C classes only).

        Returns:
            The loss (0-d), the (B, C) scaled cosines without margin (detached:
            the logits for accuracy) and the mean softmax mass of the extra
            column (0-d, detached) or None without one.
        """
        if unit_features is None:
            unit_features = F.normalize(features, dim=1)
        cos = self.unit_cosines(unit_features)
        scale = self.logit_scale(features)
        logits = self.margin_cosines(features, targets, cos) * scale
        num_classes = logits.shape[1]
        if extra is not None:
            column = extra.expand(len(targets)) if extra.dim() == 0 else extra
            logits = torch.cat([logits, column.unsqueeze(1)], dim=1)
        loss, log_probs = label_smoothed_cross_entropy(
            logits, targets, self.epsilon, num_classes=num_classes, return_log_probs=True
        )
        extra_mass = None
        if extra is not None:
            extra_mass = log_probs[:, num_classes].detach().exp().mean()
        return loss, (cos * scale).detach(), extra_mass

    def forward(self, features: torch.Tensor, targets: torch.Tensor) -> LossOutput:
        """:meth:`margin_cross_entropy`.

        Args:
            features: (B, D) embeddings.
            targets: (B,) labels.

        Returns:
            The loss, and the scaled cosines (B, C) without margin as ``logits``.
        """
        loss, scaled_cos, _ = self.margin_cross_entropy(features, targets)
        self.after_forward(features, targets)
        return LossOutput(loss, scaled_cos)

    def after_forward(self, features: torch.Tensor, targets: torch.Tensor) -> None:
        """State update after a training forward (SphereFace's iteration count, IR's centers).

        Wrappers that compute the head's logits themselves (UNPG) call it once
        per forward, as :meth:`forward` does.
        """

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, feat_dim={self.feat_dim}, scale={self.scale}"


class AMSoftmaxLoss(CosineMarginLoss):
    """CosFace / AM-Softmax (Wang et al., 2018): psi = cos theta - m.

    Args:
        num_classes: C.
        feat_dim: D.
        scale: s.
        m: additive cosine margin.
        label_smooth: see :class:`CosineMarginLoss`.
    """

    def __init__(
        self,
        num_classes: int,
        feat_dim: int,
        scale: float = 30.0,
        m: float = 0.35,
        label_smooth: float = 0.1,
    ) -> None:
        super().__init__(num_classes, feat_dim, scale, label_smooth)
        self.m = float(m)

    def target_margin(self, cos_target: torch.Tensor) -> torch.Tensor:
        return cos_target - self.m


class ArcFaceLoss(CosineMarginLoss):
    """ArcFace (Deng et al., 2019): psi = cos(theta + m).

    Where theta + m > pi, cos(theta + m) would increase with theta; there the
    standard fallback psi = cos theta - m sin m keeps psi decreasing.

    Args:
        num_classes: C.
        feat_dim: D.
        scale: s.
        m: additive angular margin in radians.
        label_smooth: see :class:`CosineMarginLoss`.
    """

    def __init__(
        self,
        num_classes: int,
        feat_dim: int,
        scale: float = 30.0,
        m: float = 0.5,
        label_smooth: float = 0.1,
    ) -> None:
        super().__init__(num_classes, feat_dim, scale, label_smooth)
        self.m = float(m)
        self._cos_m, self._sin_m = math.cos(self.m), math.sin(self.m)
        self._threshold = math.cos(math.pi - self.m)

    def _psi(
        self, cos_target: torch.Tensor, sin: torch.Tensor, fallback: torch.Tensor
    ) -> torch.Tensor:
        """cos(theta + m) = c cos m - sin(theta) sin m, or c - m sin m where ``fallback``: (B, 1)."""
        plain = cos_target * self._cos_m - sin * self._sin_m
        shifted = cos_target - self.m * self._sin_m
        return torch.where(fallback, shifted, plain)

    def _fallback(self, cos_target: torch.Tensor) -> torch.Tensor:
        """(B, 1) bool: theta + m > pi, where the fallback c - m sin m applies."""
        return cos_target <= self._threshold

    def _one_minus_square(self, cos_target: torch.Tensor) -> torch.Tensor:
        """1 - c^2 = sin^2 theta: (B, 1)."""
        return 1.0 - cos_target * cos_target

    def target_margin(self, cos_target: torch.Tensor) -> torch.Tensor:
        sin = self._one_minus_square(cos_target).clamp_min(1e-12).sqrt()
        return self._psi(cos_target, sin, self._fallback(cos_target))


def _chebyshev_coefficients(m: int) -> list[int]:
    """Coefficients of T_m (T_0 = 1, T_1 = x, T_k+1 = 2x T_k - T_k-1) for x^m, x^(m-2), ..."""
    prev, cur = [1], [0, 1]  # ascending powers
    for _ in range(m - 1):
        nxt = [0] + [2 * c for c in cur]
        for i, c in enumerate(prev):
            nxt[i] -= c
        prev, cur = cur, nxt
    poly = cur if m >= 1 else prev
    return [poly[p] for p in range(m, -1, -2)]


def _horner(coefficients: list[int], x: torch.Tensor) -> torch.Tensor:
    """sum_j c_j x^(n - j) for coefficients c_0..c_n (highest power first), by Horner's rule."""
    if len(coefficients) == 1:
        return torch.full_like(x, float(coefficients[0]))
    out = coefficients[0] * x + coefficients[1]
    for coef in coefficients[2:]:
        out = out * x + coef
    return out


class ASoftmaxLoss(CosineMarginLoss):
    """SphereFace / A-Softmax (Liu et al., 2017) with lambda annealing.

    psi(theta) = (-1)^k cos(m theta) - 2k for theta in [k pi/m, (k+1) pi/m], blended
    with the plain cosine as (lambda cos theta + psi) / (1 + lambda), where
    lambda = max(lambda_min, lambda_base (1 + gamma t)^-power) and t counts
    training forwards. t is a buffer, so it is saved with the loss's state_dict.

    Args:
        num_classes: C.
        feat_dim: D.
        m: integer angular margin (>= 1).
        scale: None scales the logits by the feature norm |x| (original
            SphereFace); a float normalises features and uses it as s.
        lambda_base, lambda_gamma, lambda_power, lambda_min: annealing schedule.
        label_smooth: see :class:`CosineMarginLoss`.
    """

    def __init__(
        self,
        num_classes: int,
        feat_dim: int,
        m: int = 4,
        scale: float | None = None,
        lambda_base: float = 1000.0,
        lambda_gamma: float = 0.12,
        lambda_power: float = 1.0,
        lambda_min: float = 5.0,
        label_smooth: float = 0.1,
    ) -> None:
        super().__init__(num_classes, feat_dim, scale, label_smooth)
        if int(m) != m or m < 1:
            raise ConfigError(f"A-Softmax margin m must be a positive integer, got {m}")
        self.m = int(m)
        self.lambda_base, self.lambda_gamma = float(lambda_base), float(lambda_gamma)
        self.lambda_power, self.lambda_min = float(lambda_power), float(lambda_min)
        # cos(m theta) = T_m(cos theta); T_m's coefficients of cos^m, cos^(m-2), ... (highest first)
        self._cheb = _chebyshev_coefficients(self.m)
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))
        self._iteration_host, self._iteration_key = 0, None
        # branch k of theta in [k pi / m, (k + 1) pi / m]: with i = #{branch cosines <= c}
        # (one bucketize), k = m - 1 - i; (-1)^k and -2k are looked up by i. Not saved
        # in the state_dict (derived from m).
        branch_k = [self.m - 1 - i for i in range(self.m)]
        branch_cos = [math.cos(j * math.pi / self.m) for j in range(self.m - 1, 0, -1)]
        self.register_buffer("_branch_cos", torch.tensor(branch_cos), persistent=False)
        self.register_buffer(
            "_branch_sign", torch.tensor([(-1.0) ** k for k in branch_k]), persistent=False
        )
        self.register_buffer(
            "_branch_neg_2k", torch.tensor([-2.0 * k for k in branch_k]), persistent=False
        )

    def _iteration_value(self) -> int:
        """The iteration count as a Python int, mirrored to avoid a device sync per step."""
        iteration = self._buffers["iteration"]  # (a dict read; module attribute lookup is slower)
        key = (iteration.data_ptr(), iteration._version)
        if key != self._iteration_key:  # changed from outside (load_state_dict, .to(), fill_)
            self._iteration_host, self._iteration_key = int(iteration), key
        return self._iteration_host

    def current_lambda(self) -> float:
        """lambda at the current iteration."""
        t = self._iteration_value()
        lam = self.lambda_base * (1.0 + self.lambda_gamma * t) ** (-self.lambda_power)
        return max(self.lambda_min, lam)

    def cos_m_theta(self, cos: torch.Tensor, cos2: torch.Tensor | None = None) -> torch.Tensor:
        """cos(m theta) = T_m(cos theta), the Chebyshev polynomial, by Horner's rule in cos^2."""
        out = _horner(self._cheb, cos * cos if cos2 is None else cos2)
        return out * cos if self.m % 2 else out

    def _branch(self, cos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(-1)^k and -2k for theta in [k pi / m, (k + 1) pi / m], no gradient: (B, 1) each.

        k = #{j in 1..m-1: cos < cos(j pi / m)}, read with one ``bucketize``
        over the m - 1 branch cosines (three ops instead of acos, floor and
        five more). At a branch boundary both neighbouring k give the same
        psi and psi' (psi is C^1 there), so the side rounding picks is immaterial.
        """
        buffers = self._buffers  # one dict for three reads (module attribute lookup is slower)
        i = torch.bucketize(cos.detach(), buffers["_branch_cos"], right=True)
        return torch.take(buffers["_branch_sign"], i), torch.take(buffers["_branch_neg_2k"], i)

    def _blend_weight(self) -> float:
        """w = 1 / (1 + lambda) at the current iteration."""
        return 1.0 / (1.0 + self.current_lambda())

    @staticmethod
    def _blend(
        cos: torch.Tensor, sign: torch.Tensor, neg_2k: torch.Tensor, cos_m: torch.Tensor, w: float
    ) -> torch.Tensor:
        """(lambda cos + (-1)^k cos(m theta) - 2k) / (1 + lambda), with w = 1 / (1 + lambda).

        Written as ``cos + w (-2k - cos) + w (-1)^k cos(m theta)``: lambda
        changes every step, so it enters only as ``alpha=`` / ``value=``
        numbers (no new tensor per step).
        """
        return torch.add(cos, neg_2k - cos, alpha=w).addcmul_(sign, cos_m, value=w)

    def target_margin(self, cos_target: torch.Tensor) -> torch.Tensor:
        sign, neg_2k = self._branch(cos_target)
        cos_m = self.cos_m_theta(cos_target)
        return self._blend(cos_target, sign, neg_2k, cos_m, self._blend_weight())

    def after_forward(self, features: torch.Tensor, targets: torch.Tensor) -> None:
        if self.training:
            t = self._iteration_value()
            iteration = self._buffers["iteration"]
            iteration += 1
            self._iteration_host = t + 1
            self._iteration_key = (iteration.data_ptr(), iteration._version)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, m={self.m}"


def _head_kwargs(cfg) -> dict:
    """Arguments every cosine head reads: the scale s and the label smoothing."""
    return {"scale": float(cfg.loss.margin.scale), "label_smooth": label_smooth_epsilon(cfg)}


def sphere_kwargs(cfg) -> dict:
    """A-Softmax's arguments from ``loss.margin``."""
    mc = cfg.loss.margin
    return {
        **_head_kwargs(cfg),
        "m": int(mc.sphere_m),
        "scale": None if mc.sphere_feature_norm else float(mc.scale),
        "lambda_base": float(mc.sphere_lambda_base),
        "lambda_gamma": float(mc.sphere_lambda_gamma),
        "lambda_power": float(mc.sphere_lambda_power),
        "lambda_min": float(mc.sphere_lambda_min),
    }


def am_kwargs(cfg) -> dict:
    """AM-Softmax's (CosFace's) arguments: s, the cosine margin ``loss.margin.m``."""
    return {**_head_kwargs(cfg), "m": float(cfg.loss.margin.m)}


def arcface_kwargs(cfg) -> dict:
    """ArcFace's arguments: s, its own angular margin ``loss.margin.arc_m`` (radians)."""
    return {**_head_kwargs(cfg), "m": float(cfg.loss.margin.arc_m)}


LOSSES.add("norm_softmax", CosineMarginLoss, _head_kwargs)
LOSSES.add("a_softmax", ASoftmaxLoss, sphere_kwargs)
LOSSES.add("am_softmax", AMSoftmaxLoss, am_kwargs)
LOSSES.add("arcface", ArcFaceLoss, arcface_kwargs)
