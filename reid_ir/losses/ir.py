"""IR-Softmax (Zhu et al., 2020, arXiv 2011.11155): class weights = class centers.

Under imbalance the learned weight w_c of a tail class drifts away from the
center of its features. IR-Softmax removes the learned weights: each class's
weight *is* its feature center c_c, kept by a :class:`~reid_ir.losses.centers.CenterBank`
that the loss updates itself after every training forward (rule ``loss.ir.rule``;
see ``reid_ir.losses.centers`` and ``docs/losses.md``). The centers get no
gradient, move with ``.to(device)`` and are saved in the loss's state_dict, so an
IR loss trains in a plain PyTorch loop as it does in the engine (call
:meth:`start_epoch` at each epoch's start, which the ``epoch_mean`` and
``count_ema`` rules and the warm-up need).

Warm-up (``loss.ir.warmup_epochs`` N > 0): for the first N epochs the head
classifies with learned class weights, as its twin (e.g. am_softmax) does, while
the centers are tracked from the same features; from epoch N + 1 on the centers
are the weights (the learned ones get no more gradient). It gives the centers a
network whose features already separate identities, as the paper's fine-tuned
backbones did.

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
from torch import nn

from reid_ir.errors import ConfigError
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
    arguments (``rule``, ``momentum``, ``alpha``, ``epoch_momentum``, ``warmup_epochs``) and passes the
    rest to the head.

    Args:
        num_classes: C.
        feat_dim: D.
        rule, momentum, alpha, epoch_momentum: see :class:`CenterBank`.
        warmup_epochs: epochs that classify with learned weights before the centers
            take over (0: centers from the first step).
        class_counts: unused (accepted so every loss builds from the same arguments).
        **head_kwargs: the head's own arguments (scale, m, label_smooth, ...).

    Attributes:
        bank: the tracked centers.
        weight: (C, D) learned class weights of the warm-up (only when ``warmup_epochs`` > 0).
        epochs_started: () long buffer, epochs begun (:meth:`start_epoch`); checkpointed.
    """

    bank: CenterBank

    def __init__(
        self,
        num_classes: int,
        feat_dim: int,
        rule: str = "ema",
        momentum: float = 0.9,
        alpha: float = 0.5,
        epoch_momentum: float = 0.5,
        warmup_epochs: int = 0,
        class_counts: torch.Tensor | None = None,
        **head_kwargs: Any,
    ) -> None:
        self._set_center_args(rule, momentum, alpha, epoch_momentum, warmup_epochs)
        super().__init__(num_classes, feat_dim, **head_kwargs)

    def _set_center_args(self, rule, momentum, alpha, epoch_momentum, warmup_epochs) -> None:
        self._center_args = (rule, momentum, alpha, epoch_momentum)
        self.warmup_epochs = check_warmup(warmup_epochs)

    def _build_class_weight(self) -> None:
        self.bank = CenterBank(self.num_classes, self.feat_dim, *self._center_args)
        self.register_buffer("epochs_started", torch.zeros((), dtype=torch.long))
        self._epochs_seen = 0  # host-side copy of epochs_started
        if self.warmup_epochs:
            self.weight = nn.Parameter(torch.empty(self.num_classes, self.feat_dim))
            nn.init.normal_(self.weight, 0.0, 0.01)

    @property
    def uses_centers(self) -> bool:
        """True once the warm-up is over (always without one). Read from a host-side copy of
        ``epochs_started`` so a step on the GPU does not wait for the device."""
        return not self.warmup_epochs or self._epochs_seen > self.warmup_epochs

    def class_weight(self) -> torch.Tensor:
        """(C, D) the class weights: tracked centers, or the learned weights during the warm-up."""
        return self.bank.centers if self.uses_centers else self.weight

    def fixed_unit_weight(self) -> torch.Tensor | None:
        """(C, D) the unit-norm centers (no gradient); None during the warm-up (learned weights)."""
        return self.bank.unit_centers() if self.uses_centers else None

    def unit_cosines(self, unit_features: torch.Tensor) -> torch.Tensor:
        """(B, C) cosines of unit-norm (B, D) features with the unit-norm class weights."""
        if not self.uses_centers:
            return super().unit_cosines(unit_features)
        return unit_features @ self.fixed_unit_weight().t()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # checkpoints written before the warm-up existed have no epoch count: keep ours (0)
        state_dict.setdefault(prefix + "epochs_started", self.epochs_started.clone())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._epochs_seen = int(self.epochs_started)

    def after_forward(self, features: torch.Tensor, targets: torch.Tensor) -> None:
        """The head's per-step state, then (training only) the centers see this batch."""
        super().after_forward(features, targets)
        if self.training:
            self.bank.update(features, targets)

    def start_epoch(self) -> None:
        """A new epoch: the centers' window (``epoch_mean``, ``count_ema``) and the warm-up's count."""
        self.bank.start_epoch()
        self.epochs_started += 1
        self._epochs_seen += 1


class IRSoftmaxLoss(CenterWeights, ReidLoss):
    """IR-Softmax: logits x . c_j over the tracked centers (no bias), label-smoothed CE.

    Args: ``num_classes``, ``feat_dim``, the center arguments of
    :class:`CenterWeights`, and ``label_smooth`` (epsilon, or True for 0.1).
    During a warm-up the logits are x . w_j with learned w.
    """

    def __init__(
        self,
        num_classes: int,
        feat_dim: int,
        label_smooth: float = 0.1,
        rule: str = "ema",
        momentum: float = 0.9,
        alpha: float = 0.5,
        epoch_momentum: float = 0.5,
        warmup_epochs: int = 0,
        class_counts: torch.Tensor | None = None,
    ) -> None:
        ReidLoss.__init__(self)
        self.num_classes, self.feat_dim = num_classes, feat_dim
        self._set_center_args(rule, momentum, alpha, epoch_momentum, warmup_epochs)
        self.epsilon = label_smooth_epsilon(label_smooth)
        self._build_class_weight()

    def forward(self, features: torch.Tensor, targets: torch.Tensor) -> LossOutput:
        """Args: features (B, D), targets (B,). Returns the loss and (B, C) logits."""
        # centers: a copy, as after_forward updates the bank in place before the backward reads it
        weight = self.bank.centers.clone() if self.uses_centers else self.weight
        logits = features @ weight.t()
        loss = label_smoothed_cross_entropy(logits, targets, self.epsilon)
        self.after_forward(features, targets)
        return LossOutput(loss, logits)


class IRASoftmaxLoss(CenterWeights, ASoftmaxLoss):
    """IR-A-Softmax: A-Softmax whose class weights are the normalised centers."""


class IRAMSoftmaxLoss(CenterWeights, AMSoftmaxLoss):
    """IR-AM-Softmax: CosFace whose class weights are the normalised centers."""


class IRArcFaceLoss(CenterWeights, ArcFaceLoss):
    """IR-ArcFace: ArcFace whose class weights are the normalised centers."""


def check_warmup(warmup_epochs: int) -> int:
    """``loss.ir.warmup_epochs`` as an int >= 0.

    Raises:
        ConfigError: a negative or fractional count.
    """
    if int(warmup_epochs) != warmup_epochs or warmup_epochs < 0:
        raise ConfigError(f"loss.ir.warmup_epochs must be an integer >= 0, got {warmup_epochs!r}")
    return int(warmup_epochs)


def center_kwargs(cfg) -> dict:
    """The center arguments of :class:`CenterWeights` from ``loss.ir``."""
    ir = cfg.loss.ir
    return {"rule": str(ir.rule), "momentum": float(ir.momentum), "alpha": float(ir.alpha),
            "epoch_momentum": float(ir.epoch_momentum), "warmup_epochs": int(ir.warmup_epochs)}


LOSSES.add(
    "ir_softmax",
    IRSoftmaxLoss,
    lambda cfg: {"label_smooth": label_smooth_epsilon(cfg), **center_kwargs(cfg)},
)
LOSSES.add("ir_a_softmax", IRASoftmaxLoss, lambda cfg: {**sphere_kwargs(cfg), **center_kwargs(cfg)})
LOSSES.add("ir_am_softmax", IRAMSoftmaxLoss, lambda cfg: {**am_kwargs(cfg), **center_kwargs(cfg)})
LOSSES.add("ir_arcface", IRArcFaceLoss, lambda cfg: {**arcface_kwargs(cfg), **center_kwargs(cfg)})
