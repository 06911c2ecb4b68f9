"""What every loss returns and the optional methods the engine looks for."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class LossOutput:
    """Result of a loss's forward pass.

    Attributes:
        loss: scalar tensor to back-propagate.
        logits: (B, C) class scores for training accuracy, or None when the loss
            has no classifier.
        terms: named scalar tensors logged beside the loss (e.g. ``{"triplet": t}``).
    """

    loss: torch.Tensor
    logits: torch.Tensor | None = None
    terms: dict[str, torch.Tensor] = field(default_factory=dict)


class ReidLoss(nn.Module):
    """Base class of reid_ir's losses.

    A loss maps a batch of embeddings (B, D) and identity labels (B,) to a
    :class:`LossOutput`. The classifier weights belong to the loss, not the
    backbone. Subclasses may override:

    * :meth:`class_weight` - the (C, D) matrix of per-class weight vectors
      (diagnostics plot the angle between each and its class's feature center);
    * :meth:`after_forward` - per-step state the loss keeps current itself
      (IR centers, SphereFace's annealing), called at the end of ``forward``;
    * :meth:`start_epoch` - called at the start of every epoch (the engine
      does; a plain training loop should too).
    """

    def forward(self, features: torch.Tensor, targets: torch.Tensor) -> LossOutput:  # pragma: no cover
        raise NotImplementedError

    def class_weight(self) -> torch.Tensor | None:
        """(C, D) class weight vectors, or None when the loss has none."""
        return None

    def after_forward(self, features: torch.Tensor, targets: torch.Tensor) -> None:
        """Update per-step state from a training batch: features (B, D), targets (B,). Default: none."""

    def start_epoch(self) -> None:
        """Per-epoch state (e.g. the IR centers' averaging window). Default: none."""
