"""CenterTrackerHook: the epoch-level schedule of an IR loss's class centers.

The loss keeps its centers current itself (``reid_ir.losses.centers``): every
training forward updates the batch's classes, and the engine calls the loss's
``start_epoch`` at the start of each epoch. Like mmengine's ``EMAHook`` this
hook is built from the loss it serves (:func:`center_tracker_hooks`) and owns no
model state; it only does what needs the training set or the checkpoint:

* ``after_epoch`` (``exact`` rule): recompute every class mean over the training
  set with the current network (skipped after the last epoch, whose centers
  would never be used);
* ``state_dict``: a copy of the centers and their rule in the checkpoint's hook
  states (the bank's buffers are also in the loss's own state_dict).

Order (``PRIORITY_STATE``): runs before the diagnostics, the checkpoint and the
evaluation, so all of them see the updated centers.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from reid_ir.engine.hooks.base import PRIORITY_STATE, HookBase
from reid_ir.losses.centers import CenterBank

logger = logging.getLogger(__name__)


class CenterTrackerHook(HookBase):
    """Epoch-level schedule of one :class:`CenterBank` (owned by the loss).

    Args:
        bank: the centers, with their rule.
    """

    priority = PRIORITY_STATE

    def __init__(self, bank: CenterBank) -> None:
        self.bank = bank

    @property
    def centers(self) -> torch.Tensor:
        """(C, D) the tracked centers (the bank's buffer, not a copy)."""
        return self.bank.centers

    @torch.no_grad()
    def recompute(self) -> None:
        """Set every center to its exact class mean over the training set."""
        features, pids = self.trainer.extract_train_embeddings()
        self.bank.recompute(features, pids)

    def after_epoch(self) -> None:
        if self.bank.rule == "exact" and self.trainer.epoch + 1 < self.trainer.max_epoch:
            self.recompute()

    def state_dict(self) -> dict:
        return {"centers": self.centers.detach().clone(), "seen": self.bank.seen.clone(), "rule": self.bank.rule}

    def load_state_dict(self, state: dict) -> None:
        centers = state["centers"]
        if centers.shape != self.centers.shape:
            raise ValueError(
                f"checkpoint holds centers of shape {tuple(centers.shape)}, this loss has {tuple(self.centers.shape)}"
            )
        if state.get("rule", self.bank.rule) != self.bank.rule:
            logger.warning(
                "checkpoint centers were tracked with rule %r, continuing with %r",
                state["rule"],
                self.bank.rule,
            )
        self.centers.copy_(centers)
        if "seen" in state:
            self.bank.seen.copy_(state["seen"])


def center_tracker_hooks(criterion: nn.Module) -> list[CenterTrackerHook]:
    """One :class:`CenterTrackerHook` for the center bank of ``criterion`` (also inside wrappers).

    Raises:
        ValueError: more than one bank (hook names must be unique).
    """
    banks = [m for m in criterion.modules() if isinstance(m, CenterBank)]
    if len(banks) > 1:
        raise ValueError(f"{type(criterion).__name__} holds {len(banks)} center banks; one is supported")
    return [CenterTrackerHook(bank) for bank in banks]
