"""Batch-hard triplet loss: with softmax (BoT / torchreid's ``triplet`` engine) or beside any head.

* ``softmax_triplet`` (alias ``triplet``, torchreid's name): ``weight_x`` x
  label-smoothed softmax + ``weight_t`` x triplet, both 1 by default (the BoT
  recipe; ``loss.triplet.weight_x`` / ``weight_t``);
* ``loss.triplet.weight`` > 0 adds ``weight`` x triplet to any other
  ``loss.name`` (:class:`WithTriplet`, built by ``build_loss_from_cfg``).

The triplet term needs positives in the batch: use ``sampler.train_sampler:
RandomIdentitySampler`` (P identities x K images).
"""

from __future__ import annotations

import torch

from reid_ir.errors import ConfigError
from reid_ir.losses.base import LossOutput, ReidLoss
from reid_ir.losses.registry import LOSSES
from reid_ir.losses.softmax import SoftmaxLoss, label_smooth_epsilon


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
        "label_smooth": label_smooth_epsilon(cfg),
        "margin": float(cfg.loss.triplet.margin),
        "weight_t": float(cfg.loss.triplet.weight_t),
        "weight_x": float(cfg.loss.triplet.weight_x),
    }


class WithTriplet(ReidLoss):
    """A loss plus ``weight`` x batch-hard triplet on the same features.

    Args:
        loss: any reid_ir loss (its logits, terms, state and class weights pass through).
        margin: triplet margin.
        weight: weight of the triplet term.
    """

    def __init__(self, loss: ReidLoss, margin: float = 0.3, weight: float = 1.0) -> None:
        super().__init__()
        if weight <= 0:
            raise ConfigError(f"loss.triplet.weight must be > 0 to add a triplet term, got {weight}")
        self.loss, self.margin, self.weight = loss, float(margin), float(weight)

    def forward(self, features: torch.Tensor, targets: torch.Tensor) -> LossOutput:
        """Args: features (B, D), targets (B,). Returns the sum, the loss's logits and terms."""
        out = self.loss(features, targets)
        trip = batch_hard_triplet(features, targets, self.margin)
        terms = {**out.terms, "cls": out.loss.detach(), "triplet": trip.detach()}
        return LossOutput(out.loss + self.weight * trip, out.logits, terms)

    def class_weight(self) -> torch.Tensor | None:
        return self.loss.class_weight()

    def start_epoch(self) -> None:
        self.loss.start_epoch()


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
        label_smooth: float = 0.1,
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
