"""cfg -> everything a run needs: seeds, data, model, loss, optimizer, hooks, engine.

This is the only module of the engine that reads the config; each function
maps config keys to the plain arguments of one component.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import torch
from torch import nn

from reid_ir import compat
from reid_ir.config import ConfigError
from reid_ir.data.build import build_datamanager, train_class_counts
from reid_ir.engine import distributed as dist_utils
from reid_ir.engine.engine import ReidEngine
from reid_ir.engine.hooks.base import HookBase
from reid_ir.engine.hooks.standard import standard_hooks
from reid_ir.evaluation.settings import EvalSettings
from reid_ir.losses import LOSSES, build_loss_from_cfg
from reid_ir.models import backbone_kwargs, build_backbone, load_model_weights

logger = logging.getLogger(__name__)


def set_random_seed(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch; optionally force deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def optimizer_kwargs(cfg: Any) -> dict:
    """Keyword arguments of torchreid's ``build_optimizer``."""
    return {
        "optim": cfg.train.optim,
        "lr": cfg.train.lr,
        "weight_decay": cfg.train.weight_decay,
        "momentum": cfg.sgd.momentum,
        "sgd_dampening": cfg.sgd.dampening,
        "sgd_nesterov": cfg.sgd.nesterov,
        "rmsprop_alpha": cfg.rmsprop.alpha,
        "adam_beta1": cfg.adam.beta1,
        "adam_beta2": cfg.adam.beta2,
        "staged_lr": cfg.train.staged_lr,
        "new_layers": list(cfg.train.new_layers),
        "base_lr_mult": cfg.train.base_lr_mult,
    }


def lr_scheduler_kwargs(cfg: Any) -> dict:
    """Keyword arguments of torchreid's ``build_lr_scheduler``."""
    return {
        "lr_scheduler": cfg.train.lr_scheduler,
        "stepsize": list(cfg.train.stepsize),
        "gamma": cfg.train.gamma,
        "max_epoch": cfg.train.max_epoch,
    }


def engine_run_kwargs(cfg: Any) -> dict:
    """Keyword arguments of ``ReidEngine.run``, each named as the config names it (no renaming)."""
    return {
        "save_dir": cfg.data.save_dir,
        "max_epoch": cfg.train.max_epoch,
        "start_epoch": cfg.train.start_epoch,
        "print_freq": cfg.train.print_freq,
        "fixbase_epoch": cfg.train.fixbase_epoch,
        "open_layers": list(cfg.train.open_layers),
        "start_eval": cfg.test.start_eval,
        "eval_freq": cfg.test.eval_freq,
        "evaluate": cfg.test.evaluate,
        "visrank": cfg.test.visrank,
        "eval_settings": EvalSettings.from_cfg(cfg),
    }


def run_meta(cfg: Any) -> dict:
    """Settings a checkpoint records; resuming checks them (see ``checkpoint.MUST_MATCH``)."""
    return {
        "model": cfg.model.name,
        "loss": cfg.loss.name,
        "sources": list(cfg.data.sources),
        "batch_size": cfg.train.batch_size,
        "train_sampler": cfg.sampler.train_sampler,
        "seed": cfg.train.seed,
        "world_size": dist_utils.get_world_size(),
    }


def warn_if_centers_never_take_over(cfg: Any, criterion: nn.Module) -> None:
    """Warn when an IR head's warm-up (``loss.ir.warmup_epochs``) lasts the whole run:
    the centers would never become the class weights (the run trains the learned-weight twin)."""
    warmups = [m.warmup_epochs for m in criterion.modules() if getattr(m, "warmup_epochs", 0)]
    if warmups and not cfg.test.evaluate and warmups[0] >= cfg.train.max_epoch:
        logger.warning(
            "loss.ir.warmup_epochs %d >= train.max_epoch %d: the IR centers never become the class "
            "weights, so this run trains the learned-weight head only", warmups[0], cfg.train.max_epoch,
        )


def check_names(cfg: Any) -> None:
    """Fail fast on an unknown loss or sampler name, before any data is read.

    Raises:
        ConfigError: naming the key, the value and the known names.
    """
    from reid_ir.data.samplers import SAMPLERS

    if cfg.loss.name not in LOSSES:
        try:
            LOSSES.get(cfg.loss.name)
        except KeyError as e:
            raise ConfigError(f"loss.name: {e.args[0]}") from None
    if cfg.sampler.train_sampler not in SAMPLERS:
        raise ConfigError(
            f"sampler.train_sampler: unknown sampler {cfg.sampler.train_sampler!r}; known samplers: {sorted(SAMPLERS)}"
        )


def build_hooks(cfg: Any, criterion: nn.Module, grad_scaler: bool = False) -> list[HookBase]:
    """Every hook of the run, in run order: ``hooks/standard.py``'s list with cfg's settings.

    Args:
        cfg: the run's config.
        criterion: the loss (hooks that read or checkpoint its state are built from it).
        grad_scaler: the engine scales float16 losses (``engine.scaler.is_enabled()``).
    """
    return standard_hooks(
        criterion,
        grad_scaler=grad_scaler,
        weight_center_angle=cfg.diagnostics.weight_center_angle,
        head_quantile=float(cfg.diagnostics.head_quantile),
        loss_name=cfg.loss.name,
        checkpoint_period=cfg.train.checkpoint_period,
        keep_checkpoints=cfg.train.keep_checkpoints,
        checkpoint_iters=cfg.train.checkpoint_iters,
        eval_freq=cfg.test.eval_freq,
        start_eval=cfg.test.start_eval,
        eval_settings=EvalSettings.from_cfg(cfg),
        print_freq=cfg.train.print_freq,
    )


class TrainableModules(nn.ModuleDict):
    """Backbone and loss under the names torchreid's optimizer options expect.

    ``train.staged_lr`` with ``new_layers: ['classifier']`` gives the loss (which
    holds the classifier) the full lr and the backbone ``base_lr_mult`` x lr.
    """

    def __init__(self, model: nn.Module, criterion: nn.Module) -> None:
        super().__init__({"backbone": model, "classifier": criterion})


def build_engine(cfg: Any) -> ReidEngine:
    """Build the engine of a run from cfg (seeds, data, model, loss, optimizer, hooks).

    Under torch.distributed every rank builds the same model and loss (same
    seed), then reseeds its RNGs with a seed of its own (different augmentations).
    """
    check_names(cfg)
    if cfg.train.num_threads > 0:
        torch.set_num_threads(cfg.train.num_threads)
    set_random_seed(cfg.train.seed, cfg.train.deterministic)
    use_gpu = bool(cfg.use_gpu and torch.cuda.is_available())
    datamanager = build_datamanager(cfg)
    model = build_backbone(**backbone_kwargs(cfg))
    if cfg.model.load_weights:
        load_model_weights(model, cfg.model.load_weights)
    class_counts = train_class_counts(datamanager)  # once: the loss and the engine's hooks
    criterion = build_loss_from_cfg(cfg, datamanager.num_train_pids, model.feat_dim, class_counts)
    warn_if_centers_never_take_over(cfg, criterion)
    optimizer = compat.optim.build_optimizer(
        TrainableModules(model, criterion), **optimizer_kwargs(cfg)
    )
    scheduler = compat.optim.build_lr_scheduler(optimizer, **lr_scheduler_kwargs(cfg))
    engine = ReidEngine(
        datamanager,
        model,
        criterion,
        optimizer,
        scheduler,
        use_gpu=use_gpu,
        hooks=[],
        class_counts=class_counts,
        stop_on_nan=cfg.train.stop_on_nan,
        amp=cfg.train.amp,
        channels_last=cfg.train.channels_last,
    )
    engine.register_hooks(build_hooks(cfg, criterion, grad_scaler=engine.scaler.is_enabled()))
    engine.visrank_num = cfg.test.visrank_num
    engine.run_meta = run_meta(cfg)
    engine.skipped_images = getattr(datamanager, "skipped_images", {})
    if dist_utils.is_distributed():
        set_random_seed(
            dist_utils.rank_seed(cfg.train.seed, dist_utils.get_rank()), cfg.train.deterministic
        )
    return engine
