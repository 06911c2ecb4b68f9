"""Softmax + batch-hard triplet loss (torchreid's ``triplet`` engine)."""

from __future__ import annotations

import torch

from reid_ir.losses.base import LossOutput, ReidLoss
from reid_ir.losses.registry import LOSSES
from reid_ir.losses.softmax import SoftmaxLoss


def batch_hard_triplet(features: torch.Tensor, targets: torch.Tensor, margin: float) -> torch.Tensor:
    """Batch-hard triplet loss on euclidean distances (Hermans et al., 2017).

    Args:
        features: (B, D) embeddings.
        targets: (B,) labels.
        margin: hinge margin.

    Returns:
        Scalar loss; 0 when the batch has no positive or no negative pair.
    """
    dist = torch.cdist(features, features).clamp_min(1e-12)
    same = targets.unsqueeze(0) == targets.unsqueeze(1)
    eye = torch.eye(len(targets), dtype=torch.bool, device=features.device)
    pos_mask = same & ~eye
    has_pos = pos_mask.any(1)
    has_neg = (~same).any(1)
    valid = has_pos & has_neg
    if not valid.any():
        return features.sum() * 0.0
    hardest_pos = dist.masked_fill(~pos_mask, float("-inf")).amax(1)
    hardest_neg = dist.masked_fill(same, float("inf")).amin(1)
    return torch.relu(hardest_pos - hardest_neg + margin)[valid].mean()


def _triplet_kwargs(cfg) -> dict:
    return {
        "label_smooth": bool(cfg.loss.softmax.label_smooth),
        "margin": float(cfg.loss.triplet.margin),
        "weight_t": float(cfg.loss.triplet.weight_t),
        "weight_x": float(cfg.loss.triplet.weight_x),
    }


class SoftmaxTripletLoss(ReidLoss):
    """``weight_x`` x softmax cross-entropy + ``weight_t`` x batch-hard triplet.

    Use with ``sampler.train_sampler: RandomIdentitySampler`` so each batch
    holds positives. Registered as ``softmax_triplet`` and under torchreid's
    name ``triplet`` (same weights semantics as torchreid's ImageTripletEngine).

    Args:
        num_classes: C.
        feat_dim: D.
        label_smooth: label smoothing of the softmax term.
        margin: triplet margin.
        weight_t: weight of the triplet term.
        weight_x: weight of the cross-entropy term.
    """

    def __init__(
        self,
        num_classes: int,
        feat_dim: int,
        label_smooth: bool = True,
        margin: float = 0.3,
        weight_t: float = 1.0,
        weight_x: float = 1.0,
    ) -> None:
        super().__init__()
        self.softmax = SoftmaxLoss(num_classes, feat_dim, label_smooth)
        self.margin, self.weight_t, self.weight_x = margin, weight_t, weight_x

    def forward(self, features: torch.Tensor, targets: torch.Tensor) -> LossOutput:
        """Args: features (B, D), targets (B,). Returns loss, (B, C) logits, both terms."""
        xent = self.softmax(features, targets)
        trip = batch_hard_triplet(features, targets, self.margin)
        loss = self.weight_x * xent.loss + self.weight_t * trip
        return LossOutput(loss, xent.logits, {"xent": xent.loss.detach(), "triplet": trip.detach()})

    def class_weight(self) -> torch.Tensor:
        return self.softmax.class_weight()


LOSSES.add("softmax_triplet", SoftmaxTripletLoss, _triplet_kwargs)
LOSSES.add("triplet", SoftmaxTripletLoss, _triplet_kwargs)
