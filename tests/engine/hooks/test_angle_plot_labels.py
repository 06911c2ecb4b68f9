"""The weight-center angle plot names the loss as the config does and draws its head/tail line
between two columns of points, never on one."""

from __future__ import annotations

import matplotlib.axes
import numpy as np
import torch

from reid_ir.config import load_cfg
from reid_ir.engine.builder import build_hooks
from reid_ir.engine.hooks import weight_center_angle
from reid_ir.losses import build_loss
from reid_ir.reports.plots import plot_angle_vs_count


class _Trainer:
    def __init__(self, criterion, save_dir, class_counts):
        self.criterion, self.save_dir, self.writer = criterion, str(save_dir), None
        self.class_counts, self.num_classes = class_counts, len(class_counts)
        self.epoch, self.is_main_process, self.step_outputs = 0, True, {}


def test_the_plot_title_is_the_config_loss_name_not_the_class_name(tmp_path, monkeypatch):
    titles = []
    monkeypatch.setattr(
        weight_center_angle, "plot_angle_vs_count", lambda *a, **k: titles.append(k["title"])
    )
    cfg = load_cfg(None, ["loss.name", "ir_am_softmax"])
    counts = torch.tensor([4, 3, 2, 1])
    criterion = build_loss("ir_am_softmax", num_classes=4, feat_dim=8, class_counts=counts)
    (hook,) = [
        h
        for h in build_hooks(cfg, criterion)
        if isinstance(h, weight_center_angle.WeightCenterAngleHook)
    ]
    trainer = _Trainer(criterion, tmp_path, counts)
    hook.trainer = trainer
    hook.before_epoch()
    trainer.step_outputs = {"features": torch.randn(8, 8), "targets": torch.arange(8) % 4}
    hook.after_step()
    hook.after_epoch()
    assert titles == ["ir_am_softmax, epoch 1"]


def test_the_head_tail_line_sits_between_columns(tmp_path, monkeypatch):
    lines = []
    axvline = matplotlib.axes.Axes.axvline
    monkeypatch.setattr(
        matplotlib.axes.Axes,
        "axvline",
        lambda self, x=0, *a, **k: lines.append(x) or axvline(self, x, *a, **k),
    )
    counts = np.array([1, 1, 2, 2, 4, 4, 8, 16])
    angles = np.linspace(10, 80, len(counts))
    # head: >= 4 images (the quantile fell on a count, as it does with ties)
    plot_angle_vs_count(angles, counts, tmp_path / "a.png", head_min_images=4.0)
    (x,) = lines
    assert 2 < x < 4 and x not in counts
