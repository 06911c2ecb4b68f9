"""Class-weighted softmax cross-entropy, a classic imbalance baseline.

Each sample's loss is weighted by its class's weight

* ``inverse``:   w_c = n_c ** -beta  (beta = 1: inverse frequency, 0.5: square root);
* ``effective``: w_c = 1 / E_c with E_c = (1 - gamma ** n_c) / (1 - gamma), the
  effective number of samples (Cui et al., CVPR 2019);

normalised so that the weights average 1 over the classes, and the batch loss
is the weighted mean sum_i w_{y_i} l_i / sum_i w_{y_i} (as ``F.cross_entropy``
with ``weight``).
"""

from __future__ import annotations

import torch

from reid_ir.errors import ConfigError
from reid_ir.losses.base import LossOutput
from reid_ir.losses.registry import LOSSES
from reid_ir.losses.softmax import SoftmaxLoss, label_smooth_epsilon, label_smoothed_cross_entropy

WEIGHT_RULES = ("inverse", "effective")


def class_balance_weights(
    class_counts: torch.Tensor, rule: str = "inverse", beta: float = 1.0, gamma: float = 0.999
) -> torch.Tensor:
    """Per-class loss weights from training-image counts, mean 1.

    Args:
        class_counts: (C,) images per class (every count >= 1).
        rule: ``inverse`` or ``effective``.
        beta: exponent of the inverse rule.
        gamma: effective-number hyper-parameter in [0, 1).

    Returns:
        (C,) float32 weights.
    """
    counts = torch.as_tensor(class_counts, dtype=torch.float64)
    if counts.ndim != 1 or (counts < 1).any():
        raise ValueError("class_counts must be a (C,) tensor of positive image counts")
    if rule == "inverse":
        weights = counts ** (-beta)
    elif rule == "effective":
        if not 0.0 <= gamma < 1.0:
            raise ConfigError(f"effective-number gamma must be in [0, 1), got {gamma}")
        weights = (1.0 - gamma) / (1.0 - gamma**counts)
    else:
        raise ConfigError(f"unknown class weight rule {rule!r}; known: {list(WEIGHT_RULES)}")
    return (weights * (len(weights) / weights.sum())).to(torch.float32)


class WeightedSoftmaxLoss(SoftmaxLoss):
    """Linear classifier + class-weighted (label-smoothed) cross-entropy.

    Args:
        num_classes: C.
        feat_dim: D.
        class_counts: (C,) training images per class (passed by ``build_loss``).
        rule: ``inverse`` or ``effective``.
        beta: exponent of the inverse rule.
        gamma: effective-number hyper-parameter.
        label_smooth: label smoothing epsilon (True: 0.1).
    """

    def __init__(
        self,
        num_classes: int,
        feat_dim: int,
        class_counts: torch.Tensor | None = None,
        rule: str = "inverse",
        beta: float = 1.0,
        gamma: float = 0.999,
        label_smooth: float = 0.1,
    ) -> None:
        super().__init__(num_classes, feat_dim, label_smooth)
        if class_counts is None:
            raise ValueError("weighted_softmax needs class_counts (training images per class)")
        if len(class_counts) != num_classes:
            raise ValueError(
                f"class_counts has {len(class_counts)} entries for {num_classes} classes"
            )
        self.rule, self.beta, self.gamma = rule, beta, gamma
        self.register_buffer("loss_weights", class_balance_weights(class_counts, rule, beta, gamma))

    def forward(self, features: torch.Tensor, targets: torch.Tensor) -> LossOutput:
        """Args: features (B, D), targets (B,). Returns the weighted loss and (B, C) logits."""
        logits = self.classifier(features)
        loss = label_smoothed_cross_entropy(logits, targets, self.epsilon, weight=self.loss_weights)
        return LossOutput(loss, logits)


def _weighted_kwargs(cfg) -> dict:
    w = cfg.loss.weighted
    return {
        "rule": str(w.rule),
        "beta": float(w.beta),
        "gamma": float(w.gamma),
        "label_smooth": label_smooth_epsilon(cfg),
    }


LOSSES.add("weighted_softmax", WeightedSoftmaxLoss, _weighted_kwargs)
