"""WeightCenterAngleHook: IR-Softmax's diagnostic, for every head.

Zhu et al. (2020) show that under imbalance the classifier weight w_c of a
tail class drifts away from the center of its class's features. Every epoch
this hook measures, per class, the angle between w_c (``criterion.class_weight()``)
and the class's feature center, and relates it to the class's training-image
count:

* ``<save_dir>/diagnostics/angles_epoch_XXX.csv``: class, train_images,
  epoch_images, angle_deg;
* ``<save_dir>/diagnostics/angles_epoch_XXX.png``: angle vs image count;
* tensorboard scalars ``Diagnostics/angle_{all,head,tail}`` (mean angle in
  degrees; head = classes with at least the ``head_quantile`` quantile of counts).

The feature centers come for free: the training batches' detached embeddings
(``trainer.step_outputs``) are summed per class with ``index_add_`` during the
epoch (O(B x D) per step, no extra pass over the training set), so a center is
the mean embedding of the class over the epoch, as the network saw it.
Order (``PRIORITY_DIAGNOSTICS``): after the state hooks (IR centers updated),
before the checkpoint.
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from reid_ir.engine.hooks.base import PRIORITY_DIAGNOSTICS, HookBase
from reid_ir.reports.plots import plot_angle_vs_count

logger = logging.getLogger(__name__)


def weight_center_angles(weight: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """Angle in degrees between each class weight and its center.

    Args:
        weight: (C, D) class weights.
        centers: (C, D) feature centers (zero rows: class not seen).

    Returns:
        (C,) float64 angles in [0, 180]; NaN for zero-norm rows.
    """
    w, c = weight.detach().double(), centers.detach().double()
    cos = (F.normalize(w, dim=1) * F.normalize(c, dim=1)).sum(1).clamp(-1.0, 1.0)
    angles = torch.rad2deg(torch.acos(cos))
    valid = (w.norm(dim=1) > 0) & (c.norm(dim=1) > 0)
    return torch.where(valid, angles, torch.full_like(angles, math.nan))


def head_tail_summary(
    angles: torch.Tensor, class_counts: torch.Tensor, head_quantile: float = 0.8
) -> dict:
    """Mean angle of all, head and tail classes (NaN angles ignored).

    Head classes have at least the ``head_quantile`` quantile of image counts;
    the rest are tail classes. A group with no valid angle gives NaN.

    Args:
        angles: (C,) degrees.
        class_counts: (C,) training images per class.
        head_quantile: quantile in [0, 1].

    Returns:
        ``{"all": float, "head": float, "tail": float, "head_min_images": float}``.
    """
    counts = class_counts.detach().double().cpu()
    angles = angles.detach().double().cpu()
    threshold = torch.quantile(counts, head_quantile).item()
    head = counts >= threshold

    def mean(mask: torch.Tensor) -> float:
        values = angles[mask & ~torch.isnan(angles)]
        return values.mean().item() if len(values) else math.nan

    return {
        "all": mean(torch.ones_like(head)),
        "head": mean(head),
        "tail": mean(~head),
        "head_min_images": threshold,
    }


def write_angles_csv(
    path: str | Path, angles: torch.Tensor, class_counts: torch.Tensor, epoch_counts: torch.Tensor
) -> Path:
    """One row per class: class, train_images, epoch_images, angle_deg (empty when undefined)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    rows = zip(angles.tolist(), class_counts.tolist(), epoch_counts.tolist(), strict=True)
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["class", "train_images", "epoch_images", "angle_deg"])
        for c, (angle, n_train, n_epoch) in enumerate(rows):
            writer.writerow(
                [c, int(n_train), int(n_epoch), "" if math.isnan(angle) else f"{angle:.4f}"]
            )
    tmp.replace(path)
    return path


class WeightCenterAngleHook(HookBase):
    """Per-epoch angle between each class weight and its feature center.

    Args:
        head_quantile: classes with at least this quantile of image counts are "head".
        subdir: output folder under ``trainer.save_dir``.
        plot: also write the PNG scatter plot.
        loss_name: the loss's name in the plot titles (``loss.name``; default: its class name).
    """

    priority = PRIORITY_DIAGNOSTICS

    def __init__(
        self,
        head_quantile: float = 0.8,
        subdir: str = "diagnostics",
        plot: bool = True,
        loss_name: str = "",
    ) -> None:
        if not 0.0 <= head_quantile <= 1.0:
            raise ValueError(f"head_quantile must be in [0, 1], got {head_quantile}")
        self.head_quantile, self.subdir, self.plot = head_quantile, subdir, plot
        self.loss_name = loss_name
        self._sums: torch.Tensor | None = None
        self._counts: torch.Tensor | None = None
        self._warned = False
        self.last_angles: torch.Tensor | None = None
        self.last_summary: dict = {}

    def before_epoch(self) -> None:
        self._sums = self._counts = None

    @torch.no_grad()
    def after_step(self) -> None:
        out = self.trainer.step_outputs
        features, targets = out["features"].detach().float(), out["targets"]
        if self._sums is None:
            num_classes = int(self.trainer.num_classes)
            self._sums = features.new_zeros(num_classes, features.shape[1])
            self._counts = features.new_zeros(num_classes)
        self._sums.index_add_(0, targets, features)
        self._counts.index_add_(0, targets, features.new_ones(len(targets)))

    def _class_weight(self) -> torch.Tensor | None:
        weight = getattr(self.trainer.criterion, "class_weight", lambda: None)()
        if weight is None or tuple(weight.shape) != tuple(self._sums.shape):
            if not self._warned:
                got = None if weight is None else tuple(weight.shape)
                logger.warning(
                    "weight-center angle diagnostics skipped: the loss's class_weight() is %s, expected shape %s",
                    got,
                    tuple(self._sums.shape),
                )
                self._warned = True
            return None
        return weight

    @torch.no_grad()
    def after_epoch(self) -> None:
        if self._sums is None:
            return
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self._sums)
            dist.all_reduce(self._counts)
        weight = self._class_weight()
        if weight is None:
            return
        centers = self._sums / self._counts.clamp_min(1).unsqueeze(1)
        angles = weight_center_angles(weight.to(centers), centers).cpu()
        class_counts = torch.as_tensor(self.trainer.class_counts).cpu()
        summary = head_tail_summary(angles, class_counts, self.head_quantile)
        self.last_angles, self.last_summary = angles, summary
        epoch = int(self.trainer.epoch) + 1
        logger.info(
            "epoch %d weight-center angle [deg]: all %.2f  head %.2f  tail %.2f",
            epoch,
            summary["all"],
            summary["head"],
            summary["tail"],
        )
        if not getattr(self.trainer, "is_main_process", True):
            return
        out_dir = Path(self.trainer.save_dir) / self.subdir
        stem = f"angles_epoch_{epoch:03d}"
        write_angles_csv(out_dir / f"{stem}.csv", angles, class_counts, self._counts.cpu())
        if self.plot:
            loss_name = self.loss_name or type(self.trainer.criterion).__name__
            plot_angle_vs_count(
                angles.numpy(),
                class_counts.numpy(),
                out_dir / f"{stem}.png",
                title=f"{loss_name}, epoch {epoch}",
                head_min_images=summary["head_min_images"],
            )
        writer = getattr(self.trainer, "writer", None)
        if writer is not None:
            for group in ("all", "head", "tail"):
                if not math.isnan(summary[group]):
                    writer.add_scalar(f"Diagnostics/angle_{group}", summary[group], epoch)

