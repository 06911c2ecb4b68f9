"""The one list of the hooks a run has, in run order (:func:`standard_hooks`).

``builder.build_hooks(cfg, criterion)`` fills its arguments from a config; an engine built
without a hook list uses it with ``run()``'s arguments.
"""

from __future__ import annotations

from torch import nn

from reid_ir.engine.hooks.base import HookBase
from reid_ir.engine.hooks.center_tracker import center_tracker_hooks
from reid_ir.engine.hooks.checkpoint_hook import CheckpointHook
from reid_ir.engine.hooks.clusters import cluster_hooks
from reid_ir.engine.hooks.evaluator import EvaluationHook
from reid_ir.engine.hooks.grad_scaler import GradScalerHook
from reid_ir.engine.hooks.train_logger import TrainLoggerHook
from reid_ir.engine.hooks.weight_center_angle import WeightCenterAngleHook
from reid_ir.evaluation.settings import EvalSettings


def standard_hooks(
    criterion: nn.Module,
    *,
    grad_scaler: bool = False,
    weight_center_angle: bool = False,
    head_quantile: float = 0.5,
    loss_name: str = "",
    checkpoint_period: int = 1,
    keep_checkpoints: int = 2,
    checkpoint_iters: int = 0,
    eval_freq: int = -1,
    start_eval: int = 0,
    eval_settings: EvalSettings | None = None,
    print_freq: int = 20,
) -> list[HookBase]:
    """Every hook of a training run, in the order they run at each hook point.

    Args:
        criterion: the loss; the hooks that read or checkpoint its state are built from it.
        grad_scaler: float16 autocast is on (the engine's GradScaler is enabled).
        weight_center_angle: write the classifier weight / class center angle diagnostics.
        head_quantile: class-size quantile splitting head and tail classes in those diagnostics.
        loss_name: the loss's registry name, for the diagnostics' plot titles.
        checkpoint_period, keep_checkpoints, checkpoint_iters: see :class:`CheckpointHook`.
        eval_freq, start_eval, eval_settings: see :class:`EvaluationHook`.
        print_freq: log every this many iterations.
    """
    return [
        # IR heads: checkpoints the loss's center bank and checks it after resuming
        *center_tracker_hooks(criterion),
        # CLMLE: refreshes the loss's cluster bank every few epochs and checkpoints it
        *cluster_hooks(criterion),
        # float16 AMP: the engine's loss scale goes into the checkpoint
        *([GradScalerHook()] if grad_scaler else []),
        # diagnostics read the updated weights and centers
        *(
            [WeightCenterAngleHook(head_quantile, loss_name=loss_name)]
            if weight_center_angle
            else []
        ),
        # checkpoint before evaluating, so a crash while evaluating keeps the finished epoch
        CheckpointHook(checkpoint_period, keep_checkpoints, checkpoint_iters),
        # evaluation every eval_freq epochs from start_eval, and after the last epoch
        EvaluationHook(eval_freq, start_eval, eval_settings),
        # logging last: it reports what the others produced
        TrainLoggerHook(print_freq),
    ]
