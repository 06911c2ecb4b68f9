"""Hook points of the training loop and the order hooks run in.

A hook is called at six points (``before_train``, ``before_epoch``,
``before_step``, ``after_step``, ``after_epoch``, ``after_train``) and reaches the
engine through ``self.trainer`` (a weak reference proxy). Stateful hooks
implement ``state_dict`` / ``load_state_dict``; the checkpoint stores every
hook's state under ``hook.name`` and resuming restores it before training goes on.

Engine attributes hooks may read:

* ``epoch`` (0-based), ``max_epoch``, ``batch_idx``, ``iter`` (global step),
  ``num_batches``;
* ``model`` (backbone -> (B, D) embeddings), ``criterion`` (the loss),
  ``optimizer``, ``scheduler``, ``datamanager``, ``save_dir``, ``writer``
  (tensorboard SummaryWriter or None), ``device``, ``is_main_process``;
* ``step_outputs`` after each step: ``features`` (B, D) detached embeddings,
  ``targets`` (B,) labels, ``output`` (the loss's LossOutput);
* ``num_classes`` and ``class_counts`` ((C,) training images per class);
* ``extract_train_embeddings()`` -> ``(features (N, D), pids (N,))`` over the
  whole training set, without augmentation, in eval mode.
"""

from __future__ import annotations

import weakref
from typing import Any

# Hooks run in ascending priority at every hook point. The order is part of the
# contract:
#   state updates (centers, clusters) come right after the optimizer step so
#   that everything later sees the updated state;
PRIORITY_STATE = 10
#   diagnostics read the (updated) weights and centers;
PRIORITY_DIAGNOSTICS = 30
#   the checkpoint is written before evaluation, so a crash while evaluating
#   never loses a finished epoch, and it holds the updated hook states;
PRIORITY_CHECKPOINT = 50
#   evaluation after the checkpoint;
PRIORITY_EVALUATION = 60
#   logging last, so it can report what the others produced.
PRIORITY_LOGGING = 90


class HookBase:
    """Base class for engine hooks; override any subset of the methods."""

    #: Position in the hook order (see module docstring).
    priority: int = PRIORITY_DIAGNOSTICS

    @property
    def name(self) -> str:
        """Key of this hook's state in checkpoints (unique per engine)."""
        return type(self).__name__

    @property
    def trainer(self) -> Any:
        return self._trainer

    @trainer.setter
    def trainer(self, engine: Any) -> None:
        self._trainer = weakref.proxy(engine)

    def before_train(self) -> None:
        """Called once before the first training epoch (also after a resume)."""

    def after_train(self) -> None:
        """Called once after the last epoch."""

    def before_epoch(self) -> None:
        """Called at the start of every epoch."""

    def after_epoch(self) -> None:
        """Called at the end of every epoch, after the lr scheduler step."""

    def before_step(self) -> None:
        """Called before every training iteration."""

    def after_step(self) -> None:
        """Called after every optimizer step (``trainer.step_outputs`` is set)."""

    def state_dict(self) -> dict:
        """State saved in checkpoints; stateless hooks return {}."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""
