"""ReidEngine: torchreid's Engine with hook points, our losses and our evaluator.

``engine.run(save_dir=..., max_epoch=...)`` behaves as torchreid users expect.
The loop, with hook points in capitals::

    BEFORE_TRAIN
    for epoch in range(start_epoch, max_epoch):
        BEFORE_EPOCH
        for batch in train_loader:       (a mid-epoch resume skips the batches already done)
            BEFORE_STEP
            features = model(images)      (under autocast with ``amp``)
            out = criterion(features.float(), pids)   (always float32)
            backward (scaled with fp16); stop if the loss is NaN/inf (on any rank);
            optimizer.step()
            AFTER_STEP            (trainer.step_outputs is set; state hooks -> iteration checkpoint)
        scheduler.step()
        AFTER_EPOCH               (state hooks -> diagnostics -> checkpoint -> evaluation -> logging)
    AFTER_TRAIN

Hooks run in ascending ``priority`` (see ``hooks/base.py`` for the order and why).

Mixed precision (``amp``): the backbone's forward runs under ``torch.autocast``
(bfloat16 on the CPU and on GPUs that support it, float16 with a GradScaler on
the others); the loss always sees float32 features, outside autocast, so the
margin heads, the IR centers and UNPG's filter compute in float32.
``channels_last`` stores the backbone's weights and the input images in NHWC.
One host sync per step: the loss, its terms and the accuracy come back in one
transfer, which both the NaN check and the logging read.

Distributed (``torchrun``): the backbone runs in DistributedDataParallel, the
loss's parameters are averaged after the backward, BatchNorm buffers are taken
from rank 0 at the end of every epoch, and evaluation runs on rank 0 (see
``reid_ir.engine.distributed``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from reid_ir import compat
from reid_ir.data.build import train_class_counts
from reid_ir.engine import checkpoint as ckpt_io
from reid_ir.engine import distributed as dist_utils
from reid_ir.engine.evaluation import EvaluationMixin
from reid_ir.engine.hooks.base import HookBase
from reid_ir.engine.hooks.evaluator import EvaluationHook
from reid_ir.engine.hooks.standard import standard_hooks
from reid_ir.engine.hooks.train_logger import TrainLoggerHook
from reid_ir.errors import ConfigError, NonFiniteFeaturesError, NonFiniteLossError
from reid_ir.evaluation.settings import EvalSettings

logger = logging.getLogger(__name__)

__all__ = ["NonFiniteFeaturesError", "NonFiniteLossError", "ReidEngine"]


def amp_dtype(device: torch.device) -> torch.dtype:
    """The autocast dtype of ``train.amp`` on ``device``.

    bfloat16 on the CPU and on GPUs that support it (no loss scaling needed);
    float16 on older GPUs (then the engine scales the loss with a GradScaler).
    """
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


class ReidEngine(EvaluationMixin, compat.engine.Engine):
    """Trains a backbone (images -> embeddings) with a reid_ir loss.

    Args:
        datamanager: torchreid ``ImageDataManager`` (see ``reid_ir.data.build``).
        model: backbone returning (B, D) embeddings (``reid_ir.models``).
        criterion: a ``ReidLoss``; its parameters (classifier) must be in ``optimizer``.
        optimizer: optimizer over model and criterion parameters.
        scheduler: lr scheduler stepped once per epoch, or None.
        use_gpu: use CUDA when available.
        hooks: every hook of the run (``builder.build_hooks``); None: the standard list
            (``hooks/standard.py``), scheduled by ``run()``'s arguments.
        class_counts: (C,) training images per class, as the loss was built with;
            None: counted here (``reid_ir.data.build.train_class_counts``).
        stop_on_nan: raise :class:`NonFiniteLossError` on a NaN/inf loss.
        amp: run the backbone under autocast (see :func:`amp_dtype`); the loss stays float32.
        channels_last: keep the backbone's weights and the input images in NHWC.
    """

    def __init__(
        self,
        datamanager,
        model: nn.Module,
        criterion: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler=None,
        use_gpu: bool = True,
        hooks: Iterable[HookBase] | None = None,
        class_counts: torch.Tensor | None = None,
        stop_on_nan: bool = True,
        amp: bool = False,
        channels_last: bool = False,
    ) -> None:
        super().__init__(datamanager, use_gpu)
        self.device = torch.device("cuda" if self.use_gpu else "cpu")
        self.channels_last = bool(channels_last)
        self.model = model.to(self.device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.amp_dtype: torch.dtype | None = amp_dtype(self.device) if amp else None
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp_dtype == torch.float16
        )
        self.criterion = criterion.to(self.device)
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.register_model("model", model, optimizer, scheduler)
        self.stop_on_nan = stop_on_nan
        self.save_dir = "log"
        self.max_epoch = 0
        self.start_epoch = 0
        self.start_batch = 0  # batches of epoch start_epoch already done (mid-epoch resume)
        self.iter = 0
        self.batch_idx = 0
        self.num_batches = len(self.train_loader) if self.train_loader is not None else 0
        self.step_outputs: dict = {}
        self.last_metrics: dict = {}
        self.resumed_from: str | None = None
        self.run_meta: dict = {}  # settings a checkpoint must agree with (set by the builder)
        self.rank, self.world_size = dist_utils.get_rank(), dist_utils.get_world_size()
        self.is_main_process = self.rank == 0
        self.num_classes = datamanager.num_train_pids
        if class_counts is None:
            class_counts = train_class_counts(datamanager)
        self.class_counts = class_counts
        self._hooks: list[HookBase] = []
        self._train_model: nn.Module = self.model  # DDP wrapper when distributed
        self._trainable_key: tuple | None = None
        self._criterion_params = [p for p in self.criterion.parameters() if p.requires_grad]
        self.train_time = 0.0
        self._hooks_from_run = hooks is None
        if hooks is None:
            hooks = standard_hooks(self.criterion, grad_scaler=self.scaler.is_enabled())
        self.register_hooks(hooks)
        if dist_utils.is_distributed():
            dist_utils.broadcast_module(self.model)
            dist_utils.broadcast_module(self.criterion)

    def autocast(self) -> contextlib.AbstractContextManager:
        """``torch.autocast`` on this engine's device with ``amp``; a no-op context without it."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def eval_autocast(self) -> contextlib.AbstractContextManager:
        """Autocast for feature extraction: :meth:`autocast` on CUDA; float32 on the CPU.

        On the CPU bf16 embeddings would round distances to 8 bits of mantissa and
        create rank ties, for little gain in a pass without backward.
        """
        return self.autocast() if self.device.type == "cuda" else contextlib.nullcontext()

    # ------------------------------------------------------------------ hooks
    @property
    def hooks(self) -> list[HookBase]:
        """Registered hooks in the order they run."""
        return list(self._hooks)

    def register_hooks(self, hooks: Iterable[HookBase]) -> None:
        """Add hooks; keeps them sorted by priority (stable for equal priorities)."""
        for hook in hooks:
            if any(h.name == hook.name for h in self._hooks):
                raise ValueError(f"a hook named {hook.name!r} is already registered")
            hook.trainer = self
            self._hooks.append(hook)
        self._hooks.sort(key=lambda h: h.priority)

    def find_hook(self, cls: type) -> HookBase | None:
        """The first registered hook that is an instance of ``cls``."""
        return next((h for h in self._hooks if isinstance(h, cls)), None)

    def _call_hooks(self, point: str) -> None:
        for hook in self._hooks:
            getattr(hook, point)()

    # ---------------------------------------------------------------- training
    def run(
        self,
        save_dir: str = "log",
        max_epoch: int = 0,
        start_epoch: int = 0,
        print_freq: int = 10,
        fixbase_epoch: int = 0,
        open_layers: Sequence[str] | None = None,
        start_eval: int = 0,
        eval_freq: int = -1,
        evaluate: bool = False,
        visrank: bool = False,
        eval_settings: EvalSettings | None = None,
    ) -> dict:
        """Trains with hooks, then evaluates; or only evaluates.

        The training arguments are torchreid's ``Engine.run`` ones (``train.*`` keys);
        the evaluation ones are named as the config names them (``test.*``), the settings
        in one object (``builder.engine_run_kwargs`` maps a config to all of them).

        Args:
            save_dir: the run folder (``data.save_dir``).
            max_epoch, start_epoch, print_freq, fixbase_epoch, open_layers: ``train.*``.
            start_eval, eval_freq: ``test.*``: when the standard evaluation hook of an engine
                built without a hook list evaluates (``build_engine``'s hooks have the config's).
            evaluate: ``test.evaluate``: evaluate only (:meth:`test`), no training.
            visrank: ``test.visrank``: with ``evaluate``, also write ranked-result images.
            eval_settings: how to evaluate (``EvalSettings.from_cfg(cfg)``; None: its defaults):
                with ``evaluate``, and, like ``eval_freq``, in that standard hook.

        Returns:
            The metrics of the last evaluation, per target dataset.
        """
        self.save_dir = str(save_dir)
        Path(self.save_dir).mkdir(parents=True, exist_ok=True)
        settings = eval_settings or EvalSettings()
        if evaluate:
            return self.test(settings, save_dir=save_dir, visrank=visrank)
        if self._hooks_from_run:  # no hook list given: run()'s arguments schedule the standard ones
            evaluation = self.find_hook(EvaluationHook)
            evaluation.eval_freq, evaluation.start_eval = eval_freq, start_eval
            evaluation.settings = settings
            self.find_hook(TrainLoggerHook).print_freq = max(1, print_freq)
        if self.writer is None and self.is_main_process:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=self.save_dir)
        self.max_epoch = max_epoch
        if start_epoch > self.start_epoch:
            self.start_epoch, self.start_batch = start_epoch, 0
        self.fixbase_epoch, self.open_layers = fixbase_epoch, list(open_layers or [])
        logger.info(
            "start training: epochs %d..%d, %d iterations each",
            self.start_epoch + 1,
            max_epoch,
            self.num_batches,
        )
        self._call_hooks("before_train")
        try:
            for epoch in range(self.start_epoch, self.max_epoch):
                self.epoch = epoch
                tic = time.time()
                self._call_hooks("before_epoch")
                skip = self.start_batch if self.epoch == self.start_epoch else 0
                self.train(
                    print_freq=print_freq,
                    fixbase_epoch=fixbase_epoch,
                    open_layers=open_layers,
                    skip_batches=skip,
                )
                self.train_time += time.time() - tic
                self._call_hooks("after_epoch")
            if self.start_epoch >= self.max_epoch > 0 and not self.last_metrics:
                # resumed from the last epoch's checkpoint (e.g. killed while evaluating)
                hook = self.find_hook(EvaluationHook)
                self.epoch = self.max_epoch - 1
                self.test(hook.settings if hook else settings, save_dir=self.save_dir)
            self._call_hooks("after_train")
        finally:
            if self.writer is not None:
                self.writer.flush()
        return self.last_metrics

    def _set_trainable(self, fixbase_epoch: int, open_layers: Sequence[str] | None) -> None:
        """Fixbase epochs train only ``open_layers`` (the loss's classifier is always open)."""
        backbone = getattr(self.model, "backbone", self.model)
        if (self.epoch + 1) <= fixbase_epoch and open_layers:
            names = [n for n in open_layers if n != "classifier"]
            unknown = [n for n in names if not hasattr(backbone, n) and not hasattr(self.model, n)]
            if unknown:
                raise ConfigError(
                    f"train.open_layers names {unknown}, which the model does not have"
                )
            self.model.eval()
            for p in self.model.parameters():
                p.requires_grad_(False)
            for n in names:
                layer = getattr(backbone, n, None) or getattr(self.model, n)
                layer.train()
                for p in layer.parameters():
                    p.requires_grad_(True)
            logger.info(
                "fixbase epoch %d/%d: training only %s and the loss",
                self.epoch + 1,
                fixbase_epoch,
                open_layers,
            )
        else:
            self.model.train()
            for p in self.model.parameters():
                p.requires_grad_(True)
        self.criterion.train()
        key = tuple(p.requires_grad for p in self.model.parameters())
        if key != self._trainable_key:  # (re-)wrap for DDP when the trainable set changes
            self._train_model = dist_utils.wrap_ddp(self.model, self.device)
            self._trainable_key = key
        self._criterion_params = [p for p in self.criterion.parameters() if p.requires_grad]

    def _epoch_loader(self, skip_batches: int) -> DataLoader:
        """This epoch's loader: sampler and worker seeds set from (seed, epoch, rank); resumed batches skipped."""
        loader = self.train_loader
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.epoch)
        if getattr(loader, "generator", None) is not None:
            seed = getattr(sampler, "seed", 0)
            loader.generator.manual_seed(
                dist_utils.rank_seed(seed * 100003 + self.epoch, self.rank)
            )
        if not skip_batches:
            return loader
        indices = list(sampler)[skip_batches * loader.batch_size :]
        logger.info(
            "resuming epoch %d at iteration %d/%d",
            self.epoch + 1,
            skip_batches + 1,
            self.num_batches,
        )
        return DataLoader(
            loader.dataset,
            sampler=indices,
            batch_size=loader.batch_size,
            shuffle=False,
            num_workers=loader.num_workers,
            pin_memory=loader.pin_memory,
            drop_last=loader.drop_last,
            collate_fn=loader.collate_fn,
            generator=loader.generator,
            worker_init_fn=loader.worker_init_fn,
        )

    def train(
        self,
        print_freq: int = 10,
        fixbase_epoch: int = 0,
        open_layers: Sequence[str] | None = None,
        skip_batches: int = 0,
    ) -> None:
        """One epoch over the training loader, with step hooks.

        Args:
            print_freq: unused (the logging hook has its own); torchreid's signature.
            fixbase_epoch: epochs that train only ``open_layers``.
            open_layers: layers trained in the fixbase epochs.
            skip_batches: batches of this epoch already done (mid-epoch resume).
        """
        self._set_trainable(fixbase_epoch, open_layers)
        if not skip_batches:  # a mid-epoch resume continues the epoch's state (IR centers' window)
            getattr(self.criterion, "start_epoch", lambda: None)()
        self.num_batches = len(self.train_loader)
        for batch_idx, data in enumerate(self._epoch_loader(skip_batches), start=skip_batches):
            self.batch_idx = batch_idx
            self._call_hooks("before_step")
            self.step_summary = self.forward_backward(data)
            self.iter += 1
            self._call_hooks("after_step")
        if self.scheduler is not None:
            self.scheduler.step()
        dist_utils.broadcast_module(
            self.model, buffers_only=True
        )  # BN statistics of rank 0 everywhere

    def forward_backward(self, data: dict) -> dict:
        """One optimisation step; sets ``self.step_outputs``; returns scalars to log.

        The backbone runs under :meth:`autocast`; its features are cast to
        float32 and the loss is computed outside autocast. The loss, its terms
        and the accuracy reach the host in one transfer after the backward,
        before the optimizer step (which a NaN/inf loss prevents).
        """
        imgs, pids = self.parse_data_for_train(data)
        imgs, pids = (
            imgs.to(self.device, non_blocking=True),
            pids.to(self.device, non_blocking=True),
        )
        if self.channels_last:
            imgs = imgs.contiguous(memory_format=torch.channels_last)
        with self.autocast():
            features = self._train_model(imgs)
        features = features.float()  # the loss (margins, centers, UNPG's filter) in float32
        out = self.criterion(features, pids)
        self.optimizer.zero_grad(set_to_none=True)
        # nothing to differentiate: a loss without parameters (IR) while fixbase freezes the
        # backbone; the loss still updated its own state (centers) in its forward
        trains = out.loss.requires_grad
        if trains:
            self.scaler.scale(out.loss).backward()
        elif not getattr(self, "_warned_no_grad", False):
            logger.info(
                "epoch %d: nothing trainable reaches the loss (frozen backbone, loss without "
                "parameters): steps update the loss's state only", self.epoch + 1,
            )
            self._warned_no_grad = True
        names, values = self._step_scalars(out, pids)
        loss_value = values[0]
        finite = bool(np.isfinite(loss_value))
        if self.stop_on_nan and not dist_utils.all_true(finite):
            where = f"{loss_value}" if not finite else "NaN/inf on another rank"
            raise NonFiniteLossError(
                f"loss is {where} at epoch {self.epoch + 1}, iteration {self.batch_idx + 1}; "
                f"stopped before the optimizer step (the last good checkpoint in {self.save_dir}/checkpoints is kept). "
                "Try a lower train.lr or check the loss's scale/margin, then --resume."
            )
        if trains:
            dist_utils.average_gradients(self._criterion_params)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.step_outputs = {"features": features.detach(), "targets": pids, "output": out}
        return dict(zip(names, values, strict=True))

    def _step_scalars(self, out, pids: torch.Tensor) -> tuple[list[str], list[float]]:
        """Names and values of the loss, its terms and the accuracy: one host transfer.

        Returns:
            ``(["loss", *term names, "acc"?], floats)``; the accuracy (percent, top-1)
            only where the loss has logits.
        """
        names = ["loss", *out.terms]
        scalars = [out.loss, *out.terms.values()]
        if out.logits is not None:
            names.append("acc")
            scalars.append(compat.metrics.accuracy(out.logits.detach(), pids)[0])
        device = out.loss.device
        stacked = torch.stack(
            [torch.as_tensor(v, device=device).detach().reshape(()).float() for v in scalars]
        )
        return names, stacked.tolist()

    # ------------------------------------------------------------ checkpoints
    def checkpoint_state(self, batch: int = 0) -> dict:
        """Everything needed to continue training exactly where it is now.

        Collective under torch.distributed (every rank's RNG state is gathered):
        call it on every rank.

        Args:
            batch: batches done in the current epoch (0: at the end of the epoch).
        """
        rng_ranks = (
            dist_utils.all_gather_object(ckpt_io.capture_rng_state())
            if self.world_size > 1
            else None
        )
        return ckpt_io.engine_state(self, batch=batch, rng_ranks=rng_ranks)

    def resume(self, path: str) -> int:
        """Restore model, loss, optimizer, scheduler, hooks and RNG states.

        Everything is read and validated before anything is changed, and a
        failure half-way puts the previous state back, so a bad checkpoint
        leaves the engine untouched.

        Returns:
            The epoch to start from (epochs already done).
        """
        state = ckpt_io.restore_engine(self, path, rank=self.rank, world_size=self.world_size)
        self.start_epoch = self.epoch = int(state["epoch"])
        self.start_batch = int(state.get("batch", 0))
        self.iter = int(state.get("iter", 0))
        self.train_time = float(state.get("train_time", 0.0))
        self.resumed_from = state["path"]
        where = (
            f" and {self.start_batch} iterations of epoch {self.start_epoch + 1}"
            if self.start_batch
            else ""
        )
        logger.info(
            "resumed from %s (%d epochs done%s)", self.resumed_from, self.start_epoch, where
        )
        return self.start_epoch
