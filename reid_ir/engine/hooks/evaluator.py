"""Evaluates on the target datasets periodically and after the last epoch."""

from __future__ import annotations

from reid_ir.engine.hooks.base import PRIORITY_EVALUATION, HookBase
from reid_ir.evaluation.settings import EvalSettings


class EvaluationHook(HookBase):
    """Calls ``trainer.test(settings)`` like torchreid's ``run`` does.

    Args:
        eval_freq: evaluate every this many epochs (-1: only after the last).
        start_eval: no periodic evaluation before this epoch.
        settings: how to evaluate (metric, ranks, rerank, backend, ...).
    """

    priority = PRIORITY_EVALUATION

    def __init__(
        self, eval_freq: int = -1, start_eval: int = 0, settings: EvalSettings | None = None
    ) -> None:
        self.eval_freq, self.start_eval = eval_freq, start_eval
        self.settings = settings or EvalSettings()

    def _due(self) -> bool:
        done = self.trainer.epoch + 1
        if done == self.trainer.max_epoch:
            return True
        return self.eval_freq > 0 and done >= self.start_eval and done % self.eval_freq == 0

    def after_epoch(self) -> None:
        if self._due():
            self.trainer.test(self.settings, save_dir=self.trainer.save_dir)
