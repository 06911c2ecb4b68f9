"""Writes a checkpoint every ``period`` epochs and after the last one."""

from __future__ import annotations

from pathlib import Path

from reid_ir.engine import checkpoint as ckpt_io
from reid_ir.engine.hooks.base import PRIORITY_CHECKPOINT, HookBase


class CheckpointHook(HookBase):
    """Saves ``trainer.checkpoint_state()`` atomically under ``save_dir/checkpoints``.

    Args:
        period: save every this many epochs (the last epoch is always saved).
        keep: older checkpoints kept besides the newest (0: all).
    """

    priority = PRIORITY_CHECKPOINT

    def __init__(self, period: int = 1, keep: int = 2) -> None:
        if period < 1:
            raise ValueError(f"train.checkpoint_period must be >= 1, got {period}")
        self.period, self.keep = period, keep
        self.last_path: Path | None = None

    def after_epoch(self) -> None:
        t = self.trainer
        done = t.epoch + 1
        if not t.is_main_process or (done % self.period and done != t.max_epoch):
            return
        self.last_path = ckpt_io.save_checkpoint(
            t.checkpoint_state(), Path(t.save_dir) / "checkpoints", done, keep=self.keep
        )
