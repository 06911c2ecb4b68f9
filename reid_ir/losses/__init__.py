"""Losses: one registry (``LOSSES``), one module per loss family.

| ``loss.name``                    | module                 |
|----------------------------------|------------------------|
| softmax                          | ``softmax.py``         |
| softmax_triplet, triplet         | ``triplet.py``         |
| norm_softmax, a_softmax,         | ``margin.py``          |
| am_softmax, arcface              |                        |
| clmle                            | ``clmle.py``           |

Importing this package registers every loss.
"""

from reid_ir.losses import margin, softmax, triplet  # noqa: F401  (registration side effects)
from reid_ir.losses import clmle  # noqa: F401
from reid_ir.losses.base import LossOutput, ReidLoss
from reid_ir.losses.registry import LOSSES, build_loss, build_loss_from_cfg, loss_kwargs

__all__ = ["LOSSES", "LossOutput", "ReidLoss", "build_loss", "build_loss_from_cfg", "loss_kwargs"]
