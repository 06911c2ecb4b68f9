"""Training images per class are counted in one place, from the train loader's dataset."""

from types import SimpleNamespace

import torch

from reid_ir.data.build import train_class_counts


def _manager(pids, num_classes):
    dataset = SimpleNamespace(train=[(f"{i}.jpg", pid, 0) for i, pid in enumerate(pids)])
    return SimpleNamespace(
        train_loader=SimpleNamespace(dataset=dataset), num_train_pids=num_classes
    )


def test_counts_cover_every_class_including_those_without_images():
    counts = train_class_counts(_manager([0, 2, 2, 1, 2], num_classes=5))
    assert counts.dtype == torch.int64 and counts.tolist() == [1, 1, 3, 0, 0]


def test_a_manager_without_a_train_loader_counts_zero_images():
    manager = SimpleNamespace(train_loader=None, num_train_pids=3)
    assert train_class_counts(manager).tolist() == [0, 0, 0]
