"""WeightCenterAngleHook: angles, CSV, PNG and tensorboard scalars from the epoch's batches."""

import csv
import math

import pytest
import torch

from reid_ir.config import get_cfg
from reid_ir.engine.hooks.base import PRIORITY_DIAGNOSTICS, PRIORITY_STATE
from reid_ir.engine.hooks.weight_center_angle import (
    WeightCenterAngleHook,
    head_tail_summary,
    weight_center_angles,
)
from reid_ir.losses import build_loss

C, D = 6, 4


class Writer:
    def __init__(self):
        self.scalars = {}

    def add_scalar(self, tag, value, step):
        self.scalars[(tag, step)] = value


class FakeTrainer:
    def __init__(self, criterion, save_dir, class_counts, writer=None, main=True):
        self.criterion, self.save_dir, self.writer = criterion, str(save_dir), writer
        self.class_counts, self.num_classes = class_counts, len(class_counts)
        self.epoch, self.is_main_process, self.step_outputs = 0, main, {}


def _epoch(hook, trainer, batches):
    hook.before_epoch()
    for x, y in batches:
        trainer.step_outputs = {"features": x, "targets": y}
        hook.after_step()
    hook.after_epoch()


def test_angles_are_degrees_between_rows_and_nan_for_unseen_classes():
    w = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [2.0, 2.0]])
    c = torch.tensor([[3.0, 0.0], [0.0, 5.0], [-1.0, 0.0], [0.0, 0.0]])
    angles = weight_center_angles(w, c)
    torch.testing.assert_close(angles[:3], torch.tensor([0.0, 90.0, 180.0], dtype=torch.float64))
    assert math.isnan(angles[3])


def test_head_tail_summary_splits_by_count_quantile():
    angles = torch.tensor([1.0, 2.0, 10.0, 20.0, math.nan])
    counts = torch.tensor([50, 40, 2, 1, 1])
    s = head_tail_summary(angles, counts, head_quantile=0.6)
    assert s["head_min_images"] == pytest.approx(torch.quantile(counts.double(), 0.6).item())
    assert s["head"] == pytest.approx(1.5) and s["tail"] == pytest.approx(15.0)
    assert s["all"] == pytest.approx(33.0 / 4)


def test_hook_writes_csv_png_and_scalars_from_the_epochs_batches(tmp_path):
    torch.manual_seed(0)
    loss = build_loss("softmax", num_classes=C, feat_dim=D)
    counts = torch.tensor([30, 20, 10, 5, 2, 1])
    writer = Writer()
    trainer = FakeTrainer(loss, tmp_path, counts, writer)
    hook = WeightCenterAngleHook(head_quantile=0.5)
    hook.trainer = trainer
    x = torch.randn(40, D)
    y = torch.arange(40) % (C - 1)  # class 5 never appears in this epoch
    _epoch(hook, trainer, [(x[:20], y[:20]), (x[20:], y[20:])])

    centers = torch.stack([x[y == c].mean(0) for c in range(C - 1)])
    expected = weight_center_angles(loss.classifier.weight[: C - 1], centers)
    torch.testing.assert_close(hook.last_angles[: C - 1], expected)
    assert math.isnan(hook.last_angles[C - 1])

    rows = list(csv.DictReader(open(tmp_path / "diagnostics" / "angles_epoch_001.csv")))
    assert [int(r["train_images"]) for r in rows] == counts.tolist()
    assert [int(r["epoch_images"]) for r in rows] == [8, 8, 8, 8, 8, 0]
    assert float(rows[0]["angle_deg"]) == pytest.approx(expected[0].item(), abs=1e-3)
    assert rows[-1]["angle_deg"] == ""
    png = tmp_path / "diagnostics" / "angles_epoch_001.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for group in ("all", "head", "tail"):
        assert writer.scalars[(f"Diagnostics/angle_{group}", 1)] == pytest.approx(
            hook.last_summary[group]
        )


def test_ir_head_weights_are_their_centers_so_the_angle_is_zero(tmp_path):
    loss = build_loss("ir_am_softmax", num_classes=C, feat_dim=D)  # epoch_mean centers
    counts = torch.full((C,), 4)
    trainer = FakeTrainer(loss, tmp_path, counts)
    hook = WeightCenterAngleHook()
    hook.trainer = trainer
    x, y = torch.randn(24, D), torch.arange(24) % C
    hook.before_epoch()
    loss.start_epoch()
    loss(x, y)  # the loss updates its centers in its forward
    trainer.step_outputs = {"features": x, "targets": y}
    hook.after_step()
    hook.after_epoch()
    assert torch.all(hook.last_angles < 0.1)


def test_only_the_main_process_writes_files(tmp_path):
    loss = build_loss("softmax", num_classes=C, feat_dim=D)
    trainer = FakeTrainer(loss, tmp_path, torch.ones(C, dtype=torch.long), main=False)
    hook = WeightCenterAngleHook()
    hook.trainer = trainer
    _epoch(hook, trainer, [(torch.randn(12, D), torch.arange(12) % C)])
    assert hook.last_angles is not None and not (tmp_path / "diagnostics").exists()


def test_losses_without_class_weights_are_skipped_with_a_warning(tmp_path, caplog):
    class NoWeights(torch.nn.Module):
        def class_weight(self):
            return None

    trainer = FakeTrainer(NoWeights(), tmp_path, torch.ones(C, dtype=torch.long))
    hook = WeightCenterAngleHook()
    hook.trainer = trainer
    _epoch(hook, trainer, [(torch.randn(6, D), torch.arange(6))])
    assert "skipped" in caplog.text and not (tmp_path / "diagnostics").exists()


def test_build_hooks_adds_the_diagnostics_the_config_asks_for():
    from reid_ir.engine.builder import build_hooks

    cfg = get_cfg()
    loss = build_loss("softmax", num_classes=3, feat_dim=4)
    (hook,) = [h for h in build_hooks(cfg, loss) if isinstance(h, WeightCenterAngleHook)]
    assert hook.priority == PRIORITY_DIAGNOSTICS > PRIORITY_STATE
    assert hook.head_quantile == cfg.diagnostics.head_quantile
    cfg.diagnostics.weight_center_angle = False
    assert not any(isinstance(h, WeightCenterAngleHook) for h in build_hooks(cfg, loss))


@pytest.mark.parametrize("loss_name", ["softmax", "ir_am_softmax", "clmle"])
def test_build_hooks_lists_every_hook_once_in_the_order_they_run(loss_name):
    from reid_ir.engine.builder import build_hooks
    from reid_ir.engine.hooks.center_tracker import CenterTrackerHook

    loss = build_loss(loss_name, num_classes=3, feat_dim=4, class_counts=torch.ones(3))
    hooks = build_hooks(get_cfg(), loss, grad_scaler=True)
    names = [type(h).__name__ for h in hooks]
    assert [h.priority for h in hooks] == sorted(h.priority for h in hooks), names
    assert len(set(names)) == len(names)
    assert names[-4:] == [
        "WeightCenterAngleHook",
        "CheckpointHook",
        "EvaluationHook",
        "TrainLoggerHook",
    ]
    assert "GradScalerHook" in names
    assert any(isinstance(h, CenterTrackerHook) for h in hooks) == loss_name.startswith("ir_")
    assert ("ClusterHook" in names) == (loss_name == "clmle")
