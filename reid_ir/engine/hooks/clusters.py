"""ClusterHook: when a CLMLE loss's clusters are recomputed, and their checkpoint state.

The clusters themselves live in the loss (:class:`reid_ir.losses.clusters.ClusterBank`).
Like mmengine's ``EMAHook`` this hook is built from the loss it serves
(:func:`cluster_hooks`) and owns no state; it only schedules what needs the
training set or the checkpoint:

* ``before_train``: cluster only when the bank holds no clusters yet (a fresh
  run). A resumed run restores centroids and assignments from the checkpoint
  instead;
* ``after_epoch``: every ``refresh_epochs`` epochs (priority ``PRIORITY_STATE``,
  so the checkpoint written later in the same ``after_epoch`` holds the new
  clusters);
* ``state_dict`` / ``load_state_dict``: the bank's clusters, under this hook's
  name in the checkpoint's hook states.

The features come from ``trainer.extract_train_embeddings()``: (N, D) embeddings
and (N,) ids of the whole training set.
"""

from __future__ import annotations

import logging

from torch import nn

from reid_ir.engine.hooks.base import PRIORITY_STATE, HookBase
from reid_ir.losses.clusters import ClusterBank

logger = logging.getLogger(__name__)


class ClusterHook(HookBase):
    """Refresh schedule and checkpoint state of one :class:`ClusterBank` (owned by the loss).

    Args:
        bank: the clusters.
        refresh_epochs: re-cluster after every this many epochs (0: only at the
            start of a fresh run).
    """

    priority = PRIORITY_STATE

    def __init__(self, bank: ClusterBank, refresh_epochs: int = 1) -> None:
        self.bank = bank
        self.refresh_epochs = int(refresh_epochs)

    def refresh(self, epochs_done: int = -1) -> None:
        """Re-cluster the trainer's training-set embeddings.

        Args:
            epochs_done: training epochs finished by the current model (-1: unknown).
        """
        features, pids = self.trainer.extract_train_embeddings()
        self.bank.refresh(features, pids, epochs_done=epochs_done)

    def before_train(self) -> None:
        if self.bank.has_clusters:
            logger.info(
                "CLMLE clusters already present (restored from a checkpoint; computed after %d epochs)",
                self.bank.refreshed_epoch,
            )
            return
        self.refresh(epochs_done=int(getattr(self.trainer, "epoch", 0)))

    def after_epoch(self) -> None:
        if self.refresh_epochs > 0 and (int(self.trainer.epoch) + 1) % self.refresh_epochs == 0:
            self.refresh(epochs_done=int(self.trainer.epoch) + 1)

    def state_dict(self) -> dict:
        return self.bank.cluster_state()

    def load_state_dict(self, state: dict) -> None:
        self.bank.load_cluster_state(state)


def cluster_hooks(criterion: nn.Module) -> list[ClusterHook]:
    """One :class:`ClusterHook` for the cluster bank of ``criterion`` (also inside wrappers).

    The refresh period is the ``refresh_epochs`` attribute of the module that
    owns the bank (the CLMLE loss).

    Raises:
        ValueError: more than one bank (hook names must be unique), or a bank
            whose owner has no ``refresh_epochs``.
    """
    owned = [
        (owner, child)
        for owner in criterion.modules()
        for child in owner.children()
        if isinstance(child, ClusterBank)
    ]
    if isinstance(criterion, ClusterBank) or len(owned) > 1:
        count = len(owned) + isinstance(criterion, ClusterBank)
        raise ValueError(
            f"{type(criterion).__name__} holds {count} cluster banks; one, inside a loss, is supported"
        )
    hooks = []
    for owner, bank in owned:
        if not hasattr(owner, "refresh_epochs"):
            raise ValueError(
                f"{type(owner).__name__} owns a ClusterBank but has no refresh_epochs attribute"
            )
        hooks.append(ClusterHook(bank, owner.refresh_epochs))
    return hooks
