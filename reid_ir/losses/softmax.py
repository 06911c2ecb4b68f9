"""Plain softmax cross-entropy over a learned linear classifier."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reid_ir.losses.base import LossOutput, ReidLoss
from reid_ir.losses.registry import LOSSES


def label_smoothed_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, epsilon: float = 0.1, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy with label smoothing, as torchreid's ``CrossEntropyLoss``.

    Args:
        logits: (B, C) scores.
        targets: (B,) class indices.
        epsilon: smoothing; 0 gives plain cross-entropy.
        weight: optional (C,) per-class weights (weighted by the target class).

    Returns:
        Scalar loss.
    """
    log_probs = F.log_softmax(logits, dim=1)
    nll = -log_probs.gather(1, targets.unsqueeze(1)).squeeze(1)
    per_sample = nll if epsilon == 0 else (1 - epsilon) * nll - epsilon * log_probs.mean(dim=1)
    if weight is None:
        return per_sample.mean()
    w = weight[targets]
    return (w * per_sample).sum() / w.sum()


def _softmax_kwargs(cfg) -> dict:
    return {"label_smooth": bool(cfg.loss.softmax.label_smooth)}


@LOSSES.register("softmax", _softmax_kwargs)
class SoftmaxLoss(ReidLoss):
    """Linear classifier + (label-smoothed) cross-entropy.

    Args:
        num_classes: C.
        feat_dim: D.
        label_smooth: use label smoothing with epsilon 0.1.
    """

    def __init__(self, num_classes: int, feat_dim: int, label_smooth: bool = True) -> None:
        super().__init__()
        self.classifier = nn.Linear(feat_dim, num_classes)
        nn.init.normal_(self.classifier.weight, 0, 0.01)
        nn.init.zeros_(self.classifier.bias)
        self.epsilon = 0.1 if label_smooth else 0.0

    def forward(self, features: torch.Tensor, targets: torch.Tensor) -> LossOutput:
        """Args: features (B, D), targets (B,). Returns loss and (B, C) logits."""
        logits = self.classifier(features)
        return LossOutput(label_smoothed_cross_entropy(logits, targets, self.epsilon), logits)

    def class_weight(self) -> torch.Tensor:
        """(C, D) rows of the linear classifier."""
        return self.classifier.weight
