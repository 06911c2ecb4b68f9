"""Feature extraction and evaluation of :class:`~reid_ir.engine.engine.ReidEngine` (a mixin).

Evaluation runs on rank 0 only; under torch.distributed the other ranks wait
for rank 0's results, which every rank then returns (so hooks see the same
metrics everywhere). Features are checked before they reach the evaluator:
NaN/inf embeddings stop with an error naming the images.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from reid_ir.engine import distributed as dist_utils
from reid_ir.errors import ConfigError, DataError, NonFiniteFeaturesError
from reid_ir.evaluation import evaluate
from reid_ir.evaluation.settings import EvalSettings
from reid_ir.reports import write_evaluation

logger = logging.getLogger(__name__)


class EvaluationMixin:
    """``test()``, feature extraction and the kNC accuracy.

    Needs ``model``, loaders, hooks, ``device`` and ``eval_autocast()`` (the engine's).
    """

    @torch.no_grad()
    def extract_features_from_loader(
        self, loader: DataLoader, desc: str = "features", with_paths: bool = False
    ) -> tuple:
        """Embeddings of every image of ``loader`` in eval mode.

        Returns:
            features (N, D) float32 on CPU, pids (N,), camids (N,)
            (and the N image paths when ``with_paths``).
        """
        was_training = self.model.training
        self.model.eval()
        feats, pids, camids, paths = [], [], [], []
        # the bar only on a terminal (tqdm's disable=None), so piped output stays plain log lines
        bar_off = None if self.is_main_process else True
        for data in tqdm(loader, desc=desc, leave=False, disable=bar_off):
            imgs, pid, camid = self.parse_data_for_eval(data)
            with self.eval_autocast():
                feats.append(self.model(imgs.to(self.device, non_blocking=True)).float().cpu())
            pids.append(np.asarray(pid))
            camids.append(np.asarray(camid))
            paths.extend(data.get("impath", []) if isinstance(data, dict) else [])
        self.model.train(was_training)
        if not feats:
            raise DataError(f"{desc}: the data loader yielded no images")
        out = (torch.cat(feats), np.concatenate(pids), np.concatenate(camids))
        return (*out, paths) if with_paths else out

    def extract_train_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings of the whole training set, no augmentation, eval mode.

        Returns:
            features (N, D) on ``self.device``, pids (N,) long on ``self.device``.
        """
        dataset = copy.copy(self.train_loader.dataset)
        dataset.transform = self.datamanager.transform_te
        dataset.k_tfm = 1
        loader = DataLoader(
            dataset,
            batch_size=self.test_batch_size,
            shuffle=False,
            num_workers=self.train_loader.num_workers,
        )
        feats, pids, _ = self.extract_features_from_loader(loader, desc="train embeddings")
        return feats.to(self.device), torch.as_tensor(pids, dtype=torch.long, device=self.device)

    @property
    def test_batch_size(self) -> int:
        loaders = next(iter(self.test_loader.values()), {})
        loader = loaders.get("query") if loaders else None
        return loader.batch_size if loader is not None else 100

    def _features(self, loader: DataLoader, desc: str) -> tuple:
        feats, pids, camids, paths = self.extract_features_from_loader(
            loader, desc, with_paths=True
        )
        bad = (~torch.isfinite(feats).all(dim=1)).nonzero().flatten().tolist()
        if bad:
            examples = [paths[i] for i in bad[:3]] if paths else bad[:3]
            raise NonFiniteFeaturesError(
                f"{desc}: the model gave NaN/inf embeddings for {len(bad)} of {len(feats)} images "
                f"(e.g. {examples}) at epoch {int(self.epoch) + 1}; its weights have diverged. "
                "Resume from an earlier checkpoint with a lower train.lr, or check model.load_weights."
            )
        return feats, pids, camids

    def knc_accuracy(self, k: int) -> dict | None:
        """Closed-set kNC accuracy on the training identities with the loss's clusters (CLMLE).

        Returns:
            ``{"knc_accuracy": float, "knc_k": k, "knc_images": N}`` or None when
            the loss holds no :class:`~reid_ir.losses.clusters.ClusterBank` with clusters.
        """
        from reid_ir.evaluation.knc import knc_accuracy
        from reid_ir.losses.clusters import ClusterBank

        bank = next((m for m in self.criterion.modules() if isinstance(m, ClusterBank)), None)
        if bank is None or not bank.has_clusters:
            logger.warning(
                "test.knc is on but the loss keeps no clusters (only clmle does); no kNC accuracy"
            )
            return None
        feats, pids = self.extract_train_embeddings()
        acc = knc_accuracy(feats.cpu(), pids.cpu(), bank.centroids, bank.centroid_labels, k=k)
        logger.info(
            "kNC accuracy on the %d training images (%d clusters, k=%d): %.1f%%",
            len(pids),
            len(bank.centroid_labels),
            k,
            100 * acc,
        )
        return {"knc_accuracy": acc, "knc_k": int(k), "knc_images": len(pids)}

    def test(
        self,
        settings: EvalSettings | None = None,
        save_dir: str = "",
        visrank: bool = False,
        use_metric_cuhk03: bool = False,
        **changes,
    ) -> dict:
        """Evaluate on every target dataset with reid_ir's evaluator (rank 0 only).

        Writes ``metrics/<target>_epoch_XXX.json`` and a CMC plot per target
        under ``save_dir``. With ``settings.knc`` the kNC accuracy on the training
        identities (CLMLE's clusters) is added to every target's metrics.

        Args:
            settings: how to evaluate (default: :class:`EvalSettings`' defaults).
            save_dir: where metrics, plots and ranked lists go (default: the engine's).
            visrank: also write ranked lists of ``visrank_num`` queries.
            use_metric_cuhk03: torchreid's option; not supported.
            **changes: settings fields to change (torchreid's ``test(dist_metric=...)`` calls).

        Returns:
            ``{target: metrics dict}``, the same on every rank.
        """
        if use_metric_cuhk03:
            raise ConfigError("cuhk03.use_metric_cuhk03 is not supported by reid_ir's evaluator")
        settings = dataclasses.replace(settings or EvalSettings(), **changes)
        results: dict = {}
        if self.is_main_process:
            results = self._evaluate_targets(Path(save_dir or self.save_dir), visrank, settings)
        results = dist_utils.broadcast_object(results)
        self.last_metrics = results
        return results

    def _evaluate_targets(self, save_dir: Path, visrank: bool, settings: EvalSettings) -> dict:
        extra = self.knc_accuracy(settings.knc_k) if settings.knc else None
        ranks = settings.ranks
        results = {}
        epoch = int(self.epoch) + 1 if self.max_epoch else 0
        for name, loaders in self.test_loader.items():
            qf, q_pids, q_camids = self._features(loaders["query"], f"{name} query")
            gf, g_pids, g_camids = self._features(loaders["gallery"], f"{name} gallery")
            if self.device.type == "cuda":  # the torch search backend then runs on the GPU
                qf, gf = qf.to(self.device), gf.to(self.device)
            metrics = evaluate(
                qf, gf, q_pids, g_pids, q_camids, g_camids, **settings.evaluate_kwargs()
            )
            metrics.update({"dataset": name, "epoch": epoch, **(extra or {})})
            results[name] = metrics
            logger.info(
                "%s epoch %d: mAP %.1f%%  %s",
                name,
                epoch,
                100 * metrics["mAP"],
                "  ".join(f"rank-{r} {100 * metrics[f'rank{r}']:.1f}%" for r in ranks),
            )
            stem = f"{name}_epoch_{epoch:03d}"
            write_evaluation(metrics, save_dir / "metrics", stem, title=f"{name}, epoch {epoch}")
            if self.writer is not None:
                self.writer.add_scalar(f"Test/{name}/rank1", metrics["rank1"], epoch)
                self.writer.add_scalar(f"Test/{name}/mAP", metrics["mAP"], epoch)
                if extra:
                    self.writer.add_scalar("Test/knc_accuracy", extra["knc_accuracy"], epoch)
            if visrank:
                self._write_visrank(name, qf, gf, save_dir, settings)
        return results

    def _write_visrank(self, name, qf, gf, save_dir, settings: EvalSettings) -> None:
        from reid_ir.evaluation import write_ranked_results

        dataset = self.datamanager.fetch_test_loaders(name)
        write_ranked_results(
            qf,
            gf,
            dataset[0],
            dataset[1],
            Path(save_dir) / f"visrank_{name}",
            topk=settings.visrank_topk,
            num_queries=getattr(self, "visrank_num", 20),
            metric=settings.dist_metric,
            normalize=settings.normalize_feature,
        )
