"""IR-Softmax (Zhu et al., 2020, arXiv 2011.11155): class weights = class centers.

Under imbalance the learned weight w_c of a tail class drifts away from the
center of its features. IR-Softmax removes the learned weights: each class's
weight *is* its feature center c_c, tracked outside gradient descent by the
center tracker hook (``reid_ir.engine.hooks.center_tracker``), which updates
the centers after every optimizer step (``ema``, ``center_loss`` or ``exact``
rule; see ``docs/losses.md``).

============== ==========================================================
``loss.name``  logits
============== ==========================================================
ir_softmax     <x, c_y> (no bias), label-smoothed cross-entropy
ir_a_softmax   A-Softmax with w = c / |c|
ir_am_softmax  AM-Softmax (CosFace) with w = c / |c|
ir_arcface     ArcFace with w = c / |c|
============== ==========================================================

The centers are buffers of a :class:`~reid_ir.losses.centers.CenterBank`
sub-module: they get no gradient, move with ``.to(device)`` and are saved in the
loss's state_dict (and, via the hook, in the checkpoint's hook states).
"""

from __future__ import annotations

import torch

from reid_ir.losses.base import LossOutput, ReidLoss
from reid_ir.losses.centers import UPDATE_RULES, CenterBank
from reid_ir.losses.margin import (
    AMSoftmaxLoss,
    ArcFaceLoss,
    ASoftmaxLoss,
    _am_kwargs,
    _sphere_kwargs,
)
from reid_ir.losses.registry import LOSSES
from reid_ir.losses.softmax import label_smoothed_cross_entropy


class CenterWeights:
    """Mixin: class weights are the tracked centers of a :class:`CenterBank`.

    Put it before the head in the bases; call :meth:`_setup_tracker` at the
    end of ``__init__``.
    """

    bank: CenterBank

    def _build_class_weight(self) -> None:
        self.bank = CenterBank(self.num_classes, self.feat_dim)

    def _setup_tracker(self, update: str, momentum: float, alpha: float) -> None:
        if update not in UPDATE_RULES:
            raise ValueError(f"unknown center update rule {update!r}; known: {list(UPDATE_RULES)}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"center momentum must be in [0, 1], got {momentum}")
        self.update, self.momentum, self.alpha = update, float(momentum), float(alpha)

    def class_weight(self) -> torch.Tensor:
        """(C, D) tracked class centers (the class weights)."""
        return self.bank.centers

    def fixed_unit_weight(self) -> torch.Tensor:
        """(C, D) the (cached) unit-norm centers: the class weights, without gradient."""
        return self.bank.unit_centers()

    def unit_cosines(self, unit_features: torch.Tensor) -> torch.Tensor:
        """(B, C) cosines of unit-norm (B, D) features with the (cached) unit-norm centers."""
        return unit_features @ self.fixed_unit_weight().t()

    def hooks(self) -> list:
        """A :class:`CenterTrackerHook` that keeps ``bank`` up to date."""
        from reid_ir.engine.hooks.center_tracker import CenterTrackerHook

        return [
            CenterTrackerHook(
                self.bank, update=self.update, momentum=self.momentum, alpha=self.alpha
            )
        ]


class IRSoftmaxLoss(CenterWeights, ReidLoss):
    """IR-Softmax: logits x . c_j over the tracked centers (no bias).

    Args:
        num_classes: C.
        feat_dim: D.
        label_smooth: label smoothing with epsilon 0.1.
        update: center update rule (``ema``, ``center_loss``, ``exact``).
        momentum: ema momentum mu.
        alpha: center_loss step.
    """

    def __init__(
        self,
        num_classes: int,
        feat_dim: int,
        label_smooth: bool = True,
        update: str = "ema",
        momentum: float = 0.9,
        alpha: float = 0.5,
    ) -> None:
        super().__init__()
        self.num_classes, self.feat_dim = num_classes, feat_dim
        self._build_class_weight()
        self.epsilon = 0.1 if label_smooth else 0.0
        self._setup_tracker(update, momentum, alpha)

    def forward(self, features: torch.Tensor, targets: torch.Tensor) -> LossOutput:
        """Args: features (B, D), targets (B,). Returns the loss and (B, C) logits."""
        logits = features @ self.bank.centers.t()
        return LossOutput(label_smoothed_cross_entropy(logits, targets, self.epsilon), logits)


class IRASoftmaxLoss(CenterWeights, ASoftmaxLoss):
    """IR-A-Softmax: A-Softmax whose class weights are the normalised centers.

    Args: those of :class:`ASoftmaxLoss` plus ``update``, ``momentum``, ``alpha``
    (see :class:`IRSoftmaxLoss`).
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
        update: str = "ema",
        momentum: float = 0.9,
        alpha: float = 0.5,
    ) -> None:
        super().__init__(
            num_classes, feat_dim, m, scale, lambda_base, lambda_gamma, lambda_power, lambda_min
        )
        self._setup_tracker(update, momentum, alpha)


class IRAMSoftmaxLoss(CenterWeights, AMSoftmaxLoss):
    """IR-AM-Softmax: CosFace whose class weights are the normalised centers.

    Args: those of :class:`AMSoftmaxLoss` plus ``update``, ``momentum``, ``alpha``.
    """

    def __init__(
        self,
        num_classes: int,
        feat_dim: int,
        scale: float = 30.0,
        m: float = 0.35,
        update: str = "ema",
        momentum: float = 0.9,
        alpha: float = 0.5,
    ) -> None:
        super().__init__(num_classes, feat_dim, scale, m)
        self._setup_tracker(update, momentum, alpha)


class IRArcFaceLoss(CenterWeights, ArcFaceLoss):
    """IR-ArcFace: ArcFace whose class weights are the normalised centers.

    Args: those of :class:`ArcFaceLoss` plus ``update``, ``momentum``, ``alpha``.
    """

    def __init__(
        self,
        num_classes: int,
        feat_dim: int,
        scale: float = 30.0,
        m: float = 0.5,
        update: str = "ema",
        momentum: float = 0.9,
        alpha: float = 0.5,
    ) -> None:
        super().__init__(num_classes, feat_dim, scale, m)
        self._setup_tracker(update, momentum, alpha)


def _tracker_kwargs(cfg) -> dict:
    ir = cfg.loss.ir
    return {"update": str(ir.rule), "momentum": float(ir.momentum), "alpha": float(ir.alpha)}


LOSSES.add(
    "ir_softmax",
    IRSoftmaxLoss,
    lambda cfg: {"label_smooth": bool(cfg.loss.softmax.label_smooth), **_tracker_kwargs(cfg)},
)
LOSSES.add(
    "ir_a_softmax", IRASoftmaxLoss, lambda cfg: {**_sphere_kwargs(cfg), **_tracker_kwargs(cfg)}
)
LOSSES.add(
    "ir_am_softmax", IRAMSoftmaxLoss, lambda cfg: {**_am_kwargs(cfg), **_tracker_kwargs(cfg)}
)
LOSSES.add("ir_arcface", IRArcFaceLoss, lambda cfg: {**_am_kwargs(cfg), **_tracker_kwargs(cfg)})
