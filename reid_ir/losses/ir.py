"""IR-Softmax (Zhu et al., 2020, arXiv 2011.11155): class weights = class centers.

Under imbalance the learned weight w_c of a tail class drifts away from the
center of its features. IR-Softmax removes the learned weights: each class's
weight *is* its feature center c_c, kept by a :class:`~reid_ir.losses.centers.CenterBank`
that the loss updates itself after every training forward (rule ``loss.ir.rule``;
see ``reid_ir.losses.centers`` and ``docs/losses.md``). The centers get no
gradient, move with ``.to(device)`` and are saved in the loss's state_dict, so an
IR loss trains in a plain PyTorch loop as it does in the engine (call
:meth:`start_epoch` at each epoch's start, which the ``epoch_mean`` rule needs).

============== ==========================================================
``loss.name``  logits
============== ==========================================================
ir_softmax     <x, c_y> (no bias), label-smoothed cross-entropy
ir_a_softmax   A-Softmax with w = c / |c|
ir_am_softmax  AM-Softmax (CosFace) with w = c / |c|
ir_arcface     ArcFace with w = c / |c|
============== ==========================================================

Every IR head is :class:`CenterWeights` put in front of its learned-weight twin:
a new IR head is one line of class statement.
"""

from __future__ import annotations

from typing import Any

import torch

from reid_ir.losses.base import LossOutput, ReidLoss
from reid_ir.losses.centers import CenterBank
from reid_ir.losses.margin import (
    AMSoftmaxLoss,
    ArcFaceLoss,
    ASoftmaxLoss,
    am_kwargs,
    arcface_kwargs,
    sphere_kwargs,
)
from reid_ir.losses.registry import LOSSES
from reid_ir.losses.softmax import label_smooth_epsilon, label_smoothed_cross_entropy


class CenterWeights:
    """Mixin: the class weights are the centers of a :class:`CenterBank` the loss keeps current.

    Put it before the head in the bases. It takes the center keyword
    arguments (``rule``, ``momentum``, ``alpha``) and passes the rest to the head.

    Args:
        num_classes: C.
        feat_dim: D.
        rule, momentum, alpha: see :class:`CenterBank`.
        class_counts: unused (accepted so every loss builds from the same arguments).
        **head_kwargs: the head's own arguments (scale, m, label_smooth, ...).
    """

    bank: CenterBank

    def __init__(
        self,
        num_classes: int,
        feat_dim: int,
        rule: str = "ema",
        momentum: float = 0.9,
        alpha: float = 0.5,
        class_counts: torch.Tensor | None = None,
        **head_kwargs: Any,
    ) -> None:
        self._center_args = (rule, momentum, alpha)
        super().__init__(num_classes, feat_dim, **head_kwargs)

    def _build_class_weight(self) -> None:
        self.bank = CenterBank(self.num_classes, self.feat_dim, *self._center_args)

    def class_weight(self) -> torch.Tensor:
        """(C, D) tracked class centers (the class weights)."""
        return self.bank.centers

    def fixed_unit_weight(self) -> torch.Tensor:
        """(C, D) the unit-norm centers: the class weights, without gradient."""
        return self.bank.unit_centers()

    def unit_cosines(self, unit_features: torch.Tensor) -> torch.Tensor:
        """(B, C) cosines of unit-norm (B, D) features with the unit-norm centers."""
        return unit_features @ self.fixed_unit_weight().t()

    def after_forward(self, features: torch.Tensor, targets: torch.Tensor) -> None:
        """The head's per-step state, then (training only) the centers see this batch."""
        super().after_forward(features, targets)
        if self.training:
            self.bank.update(features, targets)

    def start_epoch(self) -> None:
        """A new epoch's averaging window for the centers (``epoch_mean``)."""
        self.bank.start_epoch()


class IRSoftmaxLoss(CenterWeights, ReidLoss):
    """IR-Softmax: logits x . c_j over the tracked centers (no bias), label-smoothed CE.

    Args: ``num_classes``, ``feat_dim``, the center arguments of
    :class:`CenterWeights`, and ``label_smooth`` (epsilon, or True for 0.1).
    """

    def __init__(
        self,
        num_classes: int,
        feat_dim: int,
        label_smooth: float = 0.1,
        rule: str = "ema",
        momentum: float = 0.9,
        alpha: float = 0.5,
        class_counts: torch.Tensor | None = None,
    ) -> None:
        ReidLoss.__init__(self)
        self.num_classes, self.feat_dim = num_classes, feat_dim
        self._center_args = (rule, momentum, alpha)
        self.epsilon = label_smooth_epsilon(label_smooth)
        self._build_class_weight()

    def forward(self, features: torch.Tensor, targets: torch.Tensor) -> LossOutput:
        """Args: features (B, D), targets (B,). Returns the loss and (B, C) logits."""
        # a copy: after_forward updates the bank in place before the backward reads it
        logits = features @ self.bank.centers.clone().t()
        loss = label_smoothed_cross_entropy(logits, targets, self.epsilon)
        self.after_forward(features, targets)
        return LossOutput(loss, logits)


class IRASoftmaxLoss(CenterWeights, ASoftmaxLoss):
    """IR-A-Softmax: A-Softmax whose class weights are the normalised centers."""


class IRAMSoftmaxLoss(CenterWeights, AMSoftmaxLoss):
    """IR-AM-Softmax: CosFace whose class weights are the normalised centers."""


class IRArcFaceLoss(CenterWeights, ArcFaceLoss):
    """IR-ArcFace: ArcFace whose class weights are the normalised centers."""


def center_kwargs(cfg) -> dict:
    """The center arguments of :class:`CenterWeights` from ``loss.ir``."""
    ir = cfg.loss.ir
    return {"rule": str(ir.rule), "momentum": float(ir.momentum), "alpha": float(ir.alpha)}


LOSSES.add(
    "ir_softmax",
    IRSoftmaxLoss,
    lambda cfg: {"label_smooth": label_smooth_epsilon(cfg), **center_kwargs(cfg)},
)
LOSSES.add("ir_a_softmax", IRASoftmaxLoss, lambda cfg: {**sphere_kwargs(cfg), **center_kwargs(cfg)})
LOSSES.add("ir_am_softmax", IRAMSoftmaxLoss, lambda cfg: {**am_kwargs(cfg), **center_kwargs(cfg)})
LOSSES.add("ir_arcface", IRArcFaceLoss, lambda cfg: {**arcface_kwargs(cfg), **center_kwargs(cfg)})
