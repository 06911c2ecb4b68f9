"""Plain softmax cross-entropy over a learned linear classifier."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reid_ir.errors import ConfigError
from reid_ir.losses.base import LossOutput, ReidLoss
from reid_ir.losses.registry import LOSSES

#: torchreid's label smoothing (``CrossEntropyLoss(label_smooth=True)``).
TORCHREID_EPSILON = 0.1


def label_smooth_epsilon(value) -> float:
    """The label smoothing epsilon of a config or an argument.

    Args:
        value: a config (``loss.label_smooth``, or 0 when torchreid's switch
            ``loss.softmax.label_smooth`` is False), a float epsilon in [0, 1), or
            a bool as torchreid's ``CrossEntropyLoss`` takes it (True: 0.1).
    """
    if hasattr(value, "loss"):
        return float(value.loss.label_smooth) if value.loss.softmax.label_smooth else 0.0
    if isinstance(value, bool):
        return TORCHREID_EPSILON if value else 0.0
    epsilon = float(value)
    if not 0.0 <= epsilon < 1.0:
        raise ConfigError(f"loss.label_smooth must be in [0, 1), got {epsilon}")
    return epsilon


def label_smoothed_cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    epsilon: float = 0.1,
    weight: torch.Tensor | None = None,
    num_classes: int | None = None,
    return_log_probs: bool = False,
):
    """Cross-entropy with label smoothing, as torchreid's ``CrossEntropyLoss``.

    ``loss_i = -(1 - eps) log p_iy - eps / C sum_{j < C} log p_ij``, with the
    softmax p over all columns of ``logits``.

    Args:
        logits: (B, C') scores; the first C = ``num_classes`` columns are classes,
            any further ones (UNPG's shared column) only join the softmax.
        targets: (B,) class indices.
        epsilon: smoothing; 0 gives plain cross-entropy.
        weight: optional (C,) per-class weights (weighted by the target class).
        num_classes: C (default: every column).
        return_log_probs: also return the (B, C') log-probabilities.

    Returns:
        Scalar loss (and the log-probabilities).
    """
    log_probs = F.log_softmax(logits, dim=1)
    nll = -log_probs.gather(1, targets.unsqueeze(1)).squeeze(1)
    if epsilon == 0:
        per_sample = nll
    else:
        classes = log_probs if num_classes is None else log_probs[:, :num_classes]
        per_sample = (1 - epsilon) * nll - epsilon * classes.mean(dim=1)
    if weight is None:
        loss = per_sample.mean()
    else:
        w = weight[targets]
        loss = (w * per_sample).sum() / w.sum()
    return (loss, log_probs) if return_log_probs else loss


def _softmax_kwargs(cfg) -> dict:
    return {"label_smooth": label_smooth_epsilon(cfg)}


@LOSSES.register("softmax", _softmax_kwargs)
class SoftmaxLoss(ReidLoss):
    """Linear classifier + (label-smoothed) cross-entropy.

    Args:
        num_classes: C.
        feat_dim: D.
        label_smooth: label smoothing epsilon (True: torchreid's 0.1).
    """

    def __init__(self, num_classes: int, feat_dim: int, label_smooth: float = 0.1) -> None:
        super().__init__()
        self.classifier = nn.Linear(feat_dim, num_classes)
        nn.init.normal_(self.classifier.weight, 0, 0.01)
        nn.init.zeros_(self.classifier.bias)
        self.epsilon = label_smooth_epsilon(label_smooth)

    def forward(self, features: torch.Tensor, targets: torch.Tensor) -> LossOutput:
        """Args: features (B, D), targets (B,). Returns loss and (B, C) logits."""
        logits = self.classifier(features)
        return LossOutput(label_smoothed_cross_entropy(logits, targets, self.epsilon), logits)

    def class_weight(self) -> torch.Tensor:
        """(C, D) rows of the linear classifier."""
        return self.classifier.weight
