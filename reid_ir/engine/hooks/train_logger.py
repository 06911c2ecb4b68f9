"""Progress bar, periodic log lines, tensorboard scalars and a JSON-lines log."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

from tqdm import tqdm

from reid_ir.engine.hooks.base import PRIORITY_LOGGING, HookBase

logger = logging.getLogger("reid_ir.train")


class TrainLoggerHook(HookBase):
    """Shows training progress and records per-epoch averages in ``train_log.jsonl``.

    Its running sums are part of checkpoints, so a resumed epoch still reports
    the average over all its iterations. On resume, records of epochs after the
    checkpoint (from the interrupted attempt) are dropped from
    ``train_log.jsonl``, and the checkpoint's own epoch is recorded if the
    interrupted run died before logging it, so every epoch appears once.

    The ``lr`` of a record is the one the epoch ran at (read before the epoch; the
    scheduler steps at its end, before ``after_epoch``).

    Args:
        print_freq: log a line every this many iterations.
        progress_bar: show a tqdm bar over each epoch's iterations when stderr is a
            terminal (piped or redirected output gets the log lines only).
    """

    priority = PRIORITY_LOGGING

    def __init__(self, print_freq: int = 20, progress_bar: bool = True) -> None:
        self.print_freq = max(1, print_freq)
        self.progress_bar = progress_bar
        self._bar = None
        self._sums: dict[str, float] = {}
        self._count = 0
        self._counted_iter = -1
        self._restored = False
        self._lr: float | None = None

    @property
    def log_path(self) -> Path:
        return Path(self.trainer.save_dir) / "train_log.jsonl"

    def before_train(self) -> None:
        t = self.trainer
        if not (t.resumed_from and t.is_main_process and self.log_path.is_file()):
            return
        lines = self.log_path.read_text(encoding="utf-8").splitlines()
        kept = [
            line
            for line in lines
            if line.strip() and json.loads(line).get("epoch", 0) <= t.start_epoch
        ]
        logged = max((json.loads(line).get("epoch", 0) for line in kept), default=0)
        if logged < t.start_epoch and not t.start_batch and self._count:
            # killed after the epoch's checkpoint but before its log line (e.g. while evaluating)
            means = {k: v / self._count for k, v in self._sums.items()}
            lr = self._lr if self._lr is not None else t.optimizer.param_groups[-1]["lr"]
            kept.append(json.dumps({"epoch": t.start_epoch, "lr": lr, **means}))
        if kept != lines:
            self.log_path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def before_epoch(self) -> None:
        t = self.trainer
        if not (self._restored and t.epoch == t.start_epoch and t.start_batch):
            self._sums, self._count = {}, 0
        self._restored = False
        self._tic = time.time()
        self._lr = t.optimizer.param_groups[-1]["lr"]  # the scheduler steps before after_epoch
        if self.progress_bar and t.is_main_process and _is_terminal(sys.stderr):
            self._bar = tqdm(
                total=len(t.train_loader), desc=f"epoch {t.epoch + 1}/{t.max_epoch}", leave=False
            )

    def after_step(self) -> None:
        t = self.trainer
        summary = t.step_summary
        self._count += 1
        self._counted_iter = t.iter
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
            logger.debug(
                "epoch %d iter %d/%d %s", t.epoch + 1, t.batch_idx + 1, t.num_batches, summary
            )

    def after_epoch(self) -> None:
        t = self.trainer
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        means = {k: v / max(1, self._count) for k, v in self._sums.items()}
        record = {
            "epoch": t.epoch + 1,
            "seconds": round(time.time() - self._tic, 2),
            "lr": self._lr if self._lr is not None else t.optimizer.param_groups[-1]["lr"],
            **means,
        }
        logger.info(
            "epoch %d/%d  %s",
            t.epoch + 1,
            t.max_epoch,
            "  ".join(f"{k} {v:.4g}" for k, v in record.items() if k != "epoch"),
        )
        if t.is_main_process:
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def state_dict(self) -> dict:
        sums, count = dict(self._sums), self._count
        t = getattr(self, "_trainer", None)
        if (
            t is not None
            and getattr(t, "iter", -1) != self._counted_iter
            and getattr(t, "step_summary", None)
        ):
            # a mid-epoch checkpoint runs before this hook's after_step: count the step it holds
            count += 1
            for k, v in t.step_summary.items():
                sums[k] = sums.get(k, 0.0) + v
        return {"sums": sums, "count": count, "lr": self._lr}

    def load_state_dict(self, state: dict) -> None:
        self._sums, self._count = dict(state.get("sums", {})), int(state.get("count", 0))
        self._lr = state.get("lr")
        self._restored = True


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed
        return False
