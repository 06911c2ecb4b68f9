"""The hooks every training run has: checkpointing, evaluation, logging."""

from __future__ import annotations

from reid_ir.engine.hooks.checkpointer import CheckpointHook
from reid_ir.engine.hooks.evaluator import EvaluationHook
from reid_ir.engine.hooks.train_logger import TrainLoggerHook


def ensure_default_hooks(
    engine, print_freq: int, start_eval: int, eval_freq: int, eval_kwargs: dict
) -> None:
    """Register the default hooks ``engine`` does not have yet (torchreid-style ``run`` calls)."""
    missing = []
    if engine.find_hook(CheckpointHook) is None:
        missing.append(CheckpointHook())
    if engine.find_hook(EvaluationHook) is None:
        kwargs = {k: v for k, v in eval_kwargs.items() if k != "visrank"}
        missing.append(
            EvaluationHook(eval_freq=eval_freq, start_eval=start_eval, test_kwargs=kwargs)
        )
    if engine.find_hook(TrainLoggerHook) is None:
        missing.append(TrainLoggerHook(print_freq=print_freq))
    engine.register_hooks(missing)
