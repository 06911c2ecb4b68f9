"""CenterTrackerHook: keeps an IR loss's class centers up to date.

Order (``PRIORITY_STATE``): runs right after the optimizer step, before the
diagnostics, the checkpoint and the evaluation, so all of them see the updated
centers.

* ``before_train``: if the centers were never initialised (a fresh run, not a
  resume), set them to the class means of the initial network in one pass over
  the training set (``trainer.extract_train_embeddings()``).
* ``after_step``: update the batch's classes from ``trainer.step_outputs``
  (``ema`` or ``center_loss``; O(B x D), see ``reid_ir.losses.centers``).
* ``after_epoch`` (``exact`` rule): recompute every class mean over the
  training set with the current network (skipped after the last epoch, whose
  centers would never be used).

Under torch.distributed every rank ends each step with identical centers:
per-class sums and counts are all-reduced before they are applied.
"""

from __future__ import annotations

import logging

import torch

from reid_ir.engine.hooks.base import PRIORITY_STATE, HookBase
from reid_ir.losses.centers import UPDATE_RULES, CenterBank, class_means

logger = logging.getLogger(__name__)


class CenterTrackerHook(HookBase):
    """Tracks class centers in ``bank`` by a configurable rule.

    Args:
        bank: the centers to maintain (owned by the loss).
        update: ``ema`` (c <- mu c + (1 - mu) batch mean), ``center_loss``
            (c <- c - alpha sum(c - x) / (1 + n)) or ``exact`` (class means
            recomputed over the training set every epoch).
        momentum: ema momentum mu.
        alpha: center_loss step alpha.
    """

    priority = PRIORITY_STATE

    def __init__(
        self, bank: CenterBank, update: str = "ema", momentum: float = 0.9, alpha: float = 0.5
    ) -> None:
        if update not in UPDATE_RULES:
            raise ValueError(f"unknown center update rule {update!r}; known: {list(UPDATE_RULES)}")
        self.bank, self.update, self.momentum, self.alpha = (
            bank,
            update,
            float(momentum),
            float(alpha),
        )

    @property
    def centers(self) -> torch.Tensor:
        """(C, D) the tracked centers (the bank's buffer, not a copy)."""
        return self.bank.centers

    @torch.no_grad()
    def recompute(self) -> None:
        """Set every center to its exact class mean over the training set."""
        features, pids = self.trainer.extract_train_embeddings()
        means, counts = class_means(
            features.to(self.centers), pids.to(self.centers.device), self.bank.num_classes
        )
        seen = (counts > 0).unsqueeze(1)
        self.centers.copy_(torch.where(seen, means, self.centers))
        self.bank.initialized.fill_(True)

    def before_train(self) -> None:
        if bool(self.bank.initialized):
            logger.info("class centers already initialised (resumed); not recomputing them")
            return
        logger.info("initialising %d class centers from the initial network", self.bank.num_classes)
        self.recompute()

    def after_step(self) -> None:
        if self.update == "exact":
            return
        out = self.trainer.step_outputs
        self.bank.update(out["features"], out["targets"], self.update, self.momentum, self.alpha)

    def after_epoch(self) -> None:
        if self.update == "exact" and self.trainer.epoch + 1 < self.trainer.max_epoch:
            self.recompute()

    def state_dict(self) -> dict:
        return {
            "centers": self.centers.detach().clone(),
            "initialized": bool(self.bank.initialized),
            "update": self.update,
        }

    def load_state_dict(self, state: dict) -> None:
        centers = state["centers"]
        if centers.shape != self.centers.shape:
            raise ValueError(
                f"checkpoint holds centers of shape {tuple(centers.shape)}, this loss has {tuple(self.centers.shape)}"
            )
        if state.get("update", self.update) != self.update:
            logger.warning(
                "checkpoint centers were tracked with rule %r, continuing with %r",
                state["update"],
                self.update,
            )
        self.centers.copy_(centers)
        self.bank.initialized.fill_(bool(state["initialized"]))
