"""ReidEngine: torchreid's Engine with hook points, our losses and our evaluator.

``engine.run(save_dir=..., max_epoch=...)`` behaves as torchreid users expect.
The loop, with hook points in capitals::

    BEFORE_TRAIN
    for epoch in range(start_epoch, max_epoch):
        BEFORE_EPOCH
        for batch in train_loader:
            BEFORE_STEP
            features = model(images); out = criterion(features, pids)
            backward; optimizer.step()
            AFTER_STEP            (trainer.step_outputs is set)
        scheduler.step()
        AFTER_EPOCH               (state hooks -> diagnostics -> checkpoint -> evaluation -> logging)
    AFTER_TRAIN

Hooks run in ascending ``priority`` (see ``hooks/base.py`` for the order and why).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from reid_ir import compat
from reid_ir.engine import checkpoint as ckpt_io
from reid_ir.engine.hooks.base import HookBase
from reid_ir.evaluation import evaluate
from reid_ir.reports import write_evaluation

logger = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or inf; the last good checkpoint is kept."""


class ReidEngine(compat.engine.Engine):
    """Trains a backbone (images -> embeddings) with a reid_ir loss.

    Args:
        datamanager: torchreid ``ImageDataManager`` (see ``reid_ir.data.build``).
        model: backbone returning (B, D) embeddings (``reid_ir.models``).
        criterion: a ``ReidLoss``; its parameters (classifier) must be in ``optimizer``.
        optimizer: optimizer over model and criterion parameters.
        scheduler: lr scheduler stepped once per epoch, or None.
        use_gpu: use CUDA when available.
        hooks: extra hooks; the criterion's own ``hooks()`` are added too.
        stop_on_nan: raise :class:`NonFiniteLossError` on a NaN/inf loss.
    """

    def __init__(
        self,
        datamanager,
        model: nn.Module,
        criterion: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler=None,
        use_gpu: bool = True,
        hooks: Iterable[HookBase] = (),
        stop_on_nan: bool = True,
    ) -> None:
        super().__init__(datamanager, use_gpu)
        self.device = torch.device("cuda" if self.use_gpu else "cpu")
        self.model = model.to(self.device)
        self.criterion = criterion.to(self.device)
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.register_model("model", model, optimizer, scheduler)
        self.stop_on_nan = stop_on_nan
        self.save_dir = "log"
        self.max_epoch = 0
        self.start_epoch = 0
        self.iter = 0
        self.batch_idx = 0
        self.num_batches = len(self.train_loader) if self.train_loader is not None else 0
        self.step_outputs: dict = {}
        self.last_metrics: dict = {}
        self.resumed_from: str | None = None
        self.is_main_process = not (torch.distributed.is_available() and torch.distributed.is_initialized()) or (
            torch.distributed.get_rank() == 0
        )
        train_items = self.train_loader.dataset.train if self.train_loader is not None else []
        pids = np.asarray([item[1] for item in train_items], dtype=np.int64)
        self.num_classes = datamanager.num_train_pids
        self.class_counts = torch.from_numpy(np.bincount(pids, minlength=self.num_classes))
        self._hooks: list[HookBase] = []
        self.train_time = 0.0
        self.register_hooks([*getattr(criterion, "hooks", list)(), *hooks])

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
        test_only: bool = False,
        dist_metric: str = "euclidean",
        normalize_feature: bool = False,
        visrank: bool = False,
        visrank_topk: int = 10,
        use_metric_cuhk03: bool = False,
        ranks: Sequence[int] = (1, 5, 10, 20),
        rerank: bool = False,
    ) -> dict:
        """torchreid's ``Engine.run`` signature; trains with hooks, then evaluates.

        Returns:
            The metrics of the last evaluation, per target dataset.
        """
        from reid_ir.engine.hooks.defaults import ensure_default_hooks

        self.save_dir = str(save_dir)
        Path(self.save_dir).mkdir(parents=True, exist_ok=True)
        eval_kwargs = {
            "dist_metric": dist_metric,
            "normalize_feature": normalize_feature,
            "ranks": tuple(ranks),
            "rerank": rerank,
            "visrank": visrank,
            "visrank_topk": visrank_topk,
        }
        if test_only:
            return self.test(save_dir=save_dir, **eval_kwargs)
        ensure_default_hooks(self, print_freq=print_freq, start_eval=start_eval, eval_freq=eval_freq, eval_kwargs=eval_kwargs)
        if self.writer is None and self.is_main_process:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=self.save_dir)
        self.max_epoch = max_epoch
        self.start_epoch = max(start_epoch, self.start_epoch)
        self.fixbase_epoch, self.open_layers = fixbase_epoch, list(open_layers or [])
        logger.info("start training: epochs %d..%d, %d iterations each", self.start_epoch + 1, max_epoch, self.num_batches)
        self._call_hooks("before_train")
        try:
            for self.epoch in range(self.start_epoch, self.max_epoch):
                tic = time.time()
                self._call_hooks("before_epoch")
                self.train(print_freq=print_freq, fixbase_epoch=fixbase_epoch, open_layers=open_layers)
                self.train_time += time.time() - tic
                self._call_hooks("after_epoch")
            if self.start_epoch >= self.max_epoch > 0 and not self.last_metrics:
                # resumed from the last epoch's checkpoint (e.g. killed while evaluating)
                from reid_ir.engine.hooks.evaluator import EvaluationHook

                hook = self.find_hook(EvaluationHook)
                self.epoch = self.max_epoch - 1
                self.test(save_dir=self.save_dir, **(hook.test_kwargs if hook else eval_kwargs))
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
                raise ValueError(f"train.open_layers names {unknown}, which the model does not have")
            self.model.eval()
            for p in self.model.parameters():
                p.requires_grad_(False)
            for n in names:
                layer = getattr(backbone, n, None) or getattr(self.model, n)
                layer.train()
                for p in layer.parameters():
                    p.requires_grad_(True)
            logger.info("fixbase epoch %d/%d: training only %s and the loss", self.epoch + 1, fixbase_epoch, open_layers)
        else:
            self.model.train()
            for p in self.model.parameters():
                p.requires_grad_(True)
        self.criterion.train()

    def train(self, print_freq: int = 10, fixbase_epoch: int = 0, open_layers: Sequence[str] | None = None) -> None:
        """One epoch over the training loader, with step hooks."""
        self._set_trainable(fixbase_epoch, open_layers)
        sampler = getattr(self.train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.epoch)
        self.num_batches = len(self.train_loader)
        for self.batch_idx, data in enumerate(self.train_loader):
            self._call_hooks("before_step")
            self.step_summary = self.forward_backward(data)
            self.iter += 1
            self._call_hooks("after_step")
        if self.scheduler is not None:
            self.scheduler.step()

    def forward_backward(self, data: dict) -> dict:
        """One optimisation step; sets ``self.step_outputs``; returns scalars to log."""
        imgs, pids = self.parse_data_for_train(data)
        imgs, pids = imgs.to(self.device, non_blocking=True), pids.to(self.device, non_blocking=True)
        features = self.model(imgs)
        out = self.criterion(features, pids)
        loss_value = out.loss.detach()
        if self.stop_on_nan and not torch.isfinite(loss_value):
            raise NonFiniteLossError(
                f"loss is {loss_value.item()} at epoch {self.epoch + 1}, iteration {self.batch_idx + 1}; "
                f"stopped before the optimizer step (the last good checkpoint in {self.save_dir}/checkpoints is kept). "
                "Try a lower train.lr or check the loss's scale/margin."
            )
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        self.optimizer.step()
        self.step_outputs = {"features": features.detach(), "targets": pids, "output": out}
        summary = {"loss": loss_value.item()}
        summary.update({k: float(v) for k, v in out.terms.items()})
        if out.logits is not None:
            summary["acc"] = compat.metrics.accuracy(out.logits.detach(), pids)[0].item()
        return summary

    # -------------------------------------------------------------- features
    @torch.no_grad()
    def extract_features_from_loader(self, loader: DataLoader, desc: str = "features") -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """Embeddings of every image of ``loader`` in eval mode.

        Returns:
            features (N, D) float32 on CPU, pids (N,), camids (N,).
        """
        was_training = self.model.training
        self.model.eval()
        feats, pids, camids = [], [], []
        for data in tqdm(loader, desc=desc, leave=False, disable=not self.is_main_process):
            imgs, pid, camid = self.parse_data_for_eval(data)
            feats.append(self.model(imgs.to(self.device)).float().cpu())
            pids.append(np.asarray(pid))
            camids.append(np.asarray(camid))
        self.model.train(was_training)
        if not feats:
            raise ValueError(f"{desc}: the data loader yielded no images")
        return torch.cat(feats), np.concatenate(pids), np.concatenate(camids)

    def extract_train_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings of the whole training set, no augmentation, eval mode.

        Returns:
            features (N, D) on ``self.device``, pids (N,) long on ``self.device``.
        """
        dataset = copy.copy(self.train_loader.dataset)
        dataset.transform = self.datamanager.transform_te
        dataset.k_tfm = 1
        loader = DataLoader(dataset, batch_size=self.test_batch_size, shuffle=False, num_workers=self.train_loader.num_workers)
        feats, pids, _ = self.extract_features_from_loader(loader, desc="train embeddings")
        return feats.to(self.device), torch.as_tensor(pids, dtype=torch.long, device=self.device)

    @property
    def test_batch_size(self) -> int:
        loaders = next(iter(self.test_loader.values()), {})
        loader = loaders.get("query") if loaders else None
        return loader.batch_size if loader is not None else 100

    # ------------------------------------------------------------- evaluation
    def test(
        self,
        dist_metric: str = "euclidean",
        normalize_feature: bool = False,
        visrank: bool = False,
        visrank_topk: int = 10,
        save_dir: str = "",
        use_metric_cuhk03: bool = False,
        ranks: Sequence[int] = (1, 5, 10, 20),
        rerank: bool = False,
        **evaluate_kwargs,
    ) -> dict:
        """Evaluate on every target dataset with reid_ir's evaluator.

        Writes ``metrics/<target>_epoch_XXX.json`` and a CMC plot per target
        under ``save_dir``. Returns ``{target: metrics dict}``.
        """
        if use_metric_cuhk03:
            raise ValueError("cuhk03.use_metric_cuhk03 is not supported by reid_ir's evaluator")
        save_dir = Path(save_dir or self.save_dir)
        results = {}
        for name, loaders in self.test_loader.items():
            qf, q_pids, q_camids = self.extract_features_from_loader(loaders["query"], f"{name} query")
            gf, g_pids, g_camids = self.extract_features_from_loader(loaders["gallery"], f"{name} gallery")
            metrics = evaluate(
                qf, gf, q_pids, g_pids, q_camids, g_camids,
                metric=dist_metric, ranks=tuple(ranks), normalize=normalize_feature, rerank=rerank,
                **evaluate_kwargs,
            )
            metrics.update({"dataset": name, "epoch": int(self.epoch) + 1 if self.max_epoch else 0})
            results[name] = metrics
            logger.info(
                "%s epoch %d: mAP %.1f%%  %s", name, metrics["epoch"], 100 * metrics["mAP"],
                "  ".join(f"rank-{r} {100 * metrics[f'rank{r}']:.1f}%" for r in ranks),
            )
            if self.is_main_process:
                stem = f"{name}_epoch_{metrics['epoch']:03d}"
                write_evaluation(metrics, save_dir / "metrics", stem, title=f"{name}, epoch {metrics['epoch']}")
                if self.writer is not None:
                    self.writer.add_scalar(f"Test/{name}/rank1", metrics["rank1"], metrics["epoch"])
                    self.writer.add_scalar(f"Test/{name}/mAP", metrics["mAP"], metrics["epoch"])
                if visrank:
                    self._write_visrank(name, qf, gf, save_dir, visrank_topk, dist_metric, normalize_feature)
        self.last_metrics = results
        return results

    def _write_visrank(self, name, qf, gf, save_dir, topk, metric, normalize) -> None:
        from reid_ir.evaluation import write_ranked_results

        dataset = self.datamanager.fetch_test_loaders(name)
        write_ranked_results(
            qf, gf, dataset[0], dataset[1], Path(save_dir) / f"visrank_{name}",
            topk=topk, num_queries=getattr(self, "visrank_num", 20), metric=metric, normalize=normalize,
        )

    # ------------------------------------------------------------ checkpoints
    def checkpoint_state(self) -> dict:
        """Everything needed to continue training exactly where it is now."""
        return {
            "epoch": self.epoch + 1,
            "iter": self.iter,
            "model": self.model.state_dict(),
            "criterion": self.criterion.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "hooks": {h.name: h.state_dict() for h in self._hooks},
            "rng": ckpt_io.capture_rng_state(),
            "train_time": getattr(self, "train_time", 0.0),
        }

    def resume(self, path: str) -> int:
        """Restore model, loss, optimizer, scheduler, hooks and RNG states.

        Everything is read and validated before anything is changed, so a bad
        checkpoint leaves the engine untouched.

        Returns:
            The epoch to start from (epochs already done).
        """
        state = ckpt_io.load_checkpoint(path)
        where = state["path"]
        ckpt_io.check_state_dict_compatible(self.model, state["model"], "model", where)
        ckpt_io.check_state_dict_compatible(self.criterion, state.get("criterion", {}), "loss", where)
        hook_states = state["hooks"]
        self.model.load_state_dict(state["model"])
        self.criterion.load_state_dict(state.get("criterion", {}))
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        for hook in self._hooks:
            if hook.name in hook_states:
                hook.load_state_dict(hook_states[hook.name])
            elif hook.state_dict():
                logger.warning("checkpoint %s has no state for hook %s; it keeps its fresh state", where, hook.name)
        ckpt_io.restore_rng_state(state["rng"])
        self.start_epoch = self.epoch = int(state["epoch"])
        self.iter = int(state.get("iter", 0))
        self.train_time = float(state.get("train_time", 0.0))
        self.resumed_from = where
        logger.info("resumed from %s (%d epochs done)", where, self.start_epoch)
        return self.start_epoch
