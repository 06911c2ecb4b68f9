"""Writes a checkpoint every ``period`` epochs, after the last one, and optionally within epochs."""

from __future__ import annotations

from pathlib import Path

import torch

from reid_ir.engine import checkpoint as ckpt_io
from reid_ir.engine.hooks.base import PRIORITY_CHECKPOINT, HookBase
from reid_ir.errors import NonFiniteLossError


class CheckpointHook(HookBase):
    """Saves ``trainer.checkpoint_state()`` atomically under ``save_dir/checkpoints`` (rank 0 writes).

    Every rank takes part (the state gathers every rank's RNG state); only rank
    0 writes the file. A state whose parameters are NaN/inf is never written,
    so the last checkpoint on disk is always a good one.

    Args:
        period: save every this many epochs (the last epoch is always saved).
        keep: older end-of-epoch checkpoints kept besides the newest (0: all).
        iter_period: also save every this many iterations within an epoch
            (0: never); only the newest such checkpoint is kept.
    """

    priority = PRIORITY_CHECKPOINT

    def __init__(self, period: int = 1, keep: int = 2, iter_period: int = 0) -> None:
        if period < 1:
            raise ValueError(f"train.checkpoint_period must be >= 1, got {period}")
        if iter_period < 0:
            raise ValueError(f"train.checkpoint_iters must be >= 0, got {iter_period}")
        self.period, self.keep, self.iter_period = period, keep, iter_period
        self.last_path: Path | None = None

    def after_step(self) -> None:
        t = self.trainer
        done = t.batch_idx + 1
        if self.iter_period and done % self.iter_period == 0 and done < t.num_batches:
            self._save(batch=done)

    def after_epoch(self) -> None:
        t = self.trainer
        done = t.epoch + 1
        if done % self.period == 0 or done == t.max_epoch:
            self._save(batch=0)

    def _save(self, batch: int) -> None:
        t = self.trainer
        state = t.checkpoint_state(batch=batch)
        bad = [
            f"{what}.{name}"
            for what in ("model", "criterion")
            for name, v in state[what].items()
            if torch.is_floating_point(v) and not bool(torch.isfinite(v).all())
        ]
        if bad:
            where = f"iteration {batch} of epoch {t.epoch + 1}" if batch else f"epoch {t.epoch + 1}"
            raise NonFiniteLossError(
                f"after {where} the weights hold NaN/inf ({bad[:3]}); not saving, so the last good "
                f"checkpoint in {t.save_dir}/checkpoints is kept. Try a lower train.lr, then --resume."
            )
        if t.is_main_process:
            epoch = t.epoch + 1
            self.last_path = ckpt_io.save_checkpoint(
                state, Path(t.save_dir) / "checkpoints", epoch, keep=self.keep, iteration=batch
            )
