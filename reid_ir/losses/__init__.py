"""Losses: one registry (``LOSSES``), one module per loss family.

Every registered ``loss.name`` (tests/test_registry.py checks this table against
``LOSSES.names()``):

| ``loss.name``                                          | module          |
|--------------------------------------------------------|-----------------|
| softmax                                                | ``softmax.py``  |
| softmax_triplet, triplet                               | ``triplet.py``  |
| norm_softmax, a_softmax, am_softmax, arcface           | ``margin.py``   |
| ir_softmax, ir_a_softmax, ir_am_softmax, ir_arcface    | ``ir.py``       |
| weighted_softmax                                       | ``weighted.py`` |
| clmle                                                  | ``clmle.py``    |
| unpg_norm_softmax, unpg_a_softmax, unpg_am_softmax,    | ``unpg.py``     |
| unpg_arcface, unpg_ir_a_softmax, unpg_ir_am_softmax,   | ``unpg.py``     |
| unpg_ir_arcface                                        | ``unpg.py``     |

``unpg_<head>`` is registered for every cosine head imported before
:func:`~reid_ir.losses.unpg.register_unpg_variants` runs (at the end of this
module); a head registered later gets its twin by calling it again.

Importing this package registers every loss.
"""

# Registration side effects: each module adds its entries to LOSSES.
from reid_ir.losses import clmle, ir, margin, softmax, triplet, weighted  # noqa: F401
from reid_ir.losses.base import LossOutput, ReidLoss
from reid_ir.losses.registry import LOSSES, build_loss, build_loss_from_cfg, loss_kwargs
from reid_ir.losses.unpg import register_unpg_variants

register_unpg_variants()  # after every head is imported: unpg_<name> for each cosine head

__all__ = ["LOSSES", "LossOutput", "ReidLoss", "build_loss", "build_loss_from_cfg", "loss_kwargs"]
