"""Keeps the engine's float16 loss scale in the checkpoint (``train.amp`` on GPUs without bf16)."""

from __future__ import annotations

from reid_ir.engine.hooks.base import PRIORITY_STATE, HookBase


class GradScalerHook(HookBase):
    """Saves and restores ``trainer.scaler`` (a ``torch.amp.GradScaler``) with the checkpoint.

    The engine registers it only when the scaler is enabled (float16 autocast),
    so a resumed run continues with the loss scale it had reached instead of
    starting again at 2**16 and skipping steps until the scale comes back down.
    It schedules nothing: the scaler belongs to the engine.
    """

    priority = PRIORITY_STATE

    def state_dict(self) -> dict:
        """The scaler's state: scale, growth tracker and its settings."""
        return self.trainer.scaler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Restore the scaler's state saved by :meth:`state_dict`."""
        self.trainer.scaler.load_state_dict(state)
