"""Progress bar, periodic log lines, tensorboard scalars and a JSON-lines log."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from tqdm import tqdm

from reid_ir.engine.hooks.base import PRIORITY_LOGGING, HookBase

logger = logging.getLogger("reid_ir.train")


class TrainLoggerHook(HookBase):
    """Shows training progress and records per-epoch averages.

    Args:
        print_freq: log a line every this many iterations.
        progress_bar: show a tqdm bar over each epoch's iterations.
    """

    priority = PRIORITY_LOGGING

    def __init__(self, print_freq: int = 20, progress_bar: bool = True) -> None:
        self.print_freq = max(1, print_freq)
        self.progress_bar = progress_bar
        self._bar = None

    def before_epoch(self) -> None:
        t = self.trainer
        self._sums: dict[str, float] = {}
        self._count = 0
        self._tic = time.time()
        if self.progress_bar and t.is_main_process:
            self._bar = tqdm(total=len(t.train_loader), desc=f"epoch {t.epoch + 1}/{t.max_epoch}", leave=False)

    def after_step(self) -> None:
        t = self.trainer
        summary = t.step_summary
        self._count += 1
        for k, v in summary.items():
            self._sums[k] = self._sums.get(k, 0.0) + v
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix({k: f"{v:.3f}" for k, v in summary.items()})
        if t.writer is not None:
            for k, v in summary.items():
                t.writer.add_scalar(f"Train/{k}", v, t.iter)
            t.writer.add_scalar("Train/lr", t.optimizer.param_groups[-1]["lr"], t.iter)
        if (t.batch_idx + 1) % self.print_freq == 0:
            logger.debug("epoch %d iter %d/%d %s", t.epoch + 1, t.batch_idx + 1, t.num_batches, summary)

    def after_epoch(self) -> None:
        t = self.trainer
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        means = {k: v / max(1, self._count) for k, v in self._sums.items()}
        record = {"epoch": t.epoch + 1, "seconds": round(time.time() - self._tic, 2), "lr": t.optimizer.param_groups[-1]["lr"], **means}
        logger.info("epoch %d/%d  %s", t.epoch + 1, t.max_epoch, "  ".join(f"{k} {v:.4g}" for k, v in record.items() if k != "epoch"))
        if t.is_main_process:
            with open(Path(t.save_dir) / "train_log.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
