"""ClusterBank: per-class spherical k-means, padding, checks, and identical clusters on every rank."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reid_ir.losses.clusters import (
    ClusterBank,
    cluster_per_class,
    num_clusters_for,
    pad_centroids,
)


def test_cluster_count_rule_gives_small_classes_fewer_clusters():
    assert num_clusters_for(1, 3, 4) == 1
    assert num_clusters_for(7, 3, 4) == 1
    assert num_clusters_for(8, 3, 4) == 2
    assert num_clusters_for(100, 3, 4) == 3
    assert num_clusters_for(2, 3, 1) == 2
    assert num_clusters_for(0, 3, 1) == 0


def test_clusters_are_unit_sorted_by_class_and_assign_each_image_to_its_nearest_own_centroid(blobs):
    feats, pids = blobs()
    cents, labels, assign = cluster_per_class(
        feats, pids, max_clusters=3, min_cluster_size=2, seed=1
    )
    assert torch.allclose(cents.norm(dim=1), torch.ones(len(cents)), atol=1e-5)
    assert torch.equal(labels, labels.sort().values)
    counts = torch.bincount(labels, minlength=5).tolist()
    assert counts[0] == 1  # a single image -> one cluster
    assert counts[1] == 1  # 3 images, min size 2 -> one cluster
    assert counts[4] == 3
    assert torch.equal(labels[assign], pids)  # every image sits in a cluster of its own class
    x = F.normalize(feats, dim=1)
    for i in range(len(pids)):  # brute-force check of the assignment rule
        own = (labels == pids[i]).nonzero().squeeze(1)
        assert assign[i] == own[(x[i] @ cents[own].t()).argmax()]
    assert torch.bincount(assign, minlength=len(cents)).min() >= 1  # no empty cluster kept


def test_clustering_is_deterministic_for_a_seed(blobs):
    feats, pids = blobs()
    a = cluster_per_class(feats, pids, 3, 1, seed=7)
    b = cluster_per_class(feats, pids, 3, 1, seed=7)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


def test_pad_centroids_places_each_class_in_its_row_and_masks_padding():
    cents = F.normalize(torch.randn(4, 3), dim=1)
    labels = torch.tensor([0, 0, 2, 2])
    padded, valid = pad_centroids(cents, labels, num_classes=3)
    assert padded.shape == (3, 2, 3) and valid.tolist() == [
        [True, True],
        [False, False],
        [True, True],
    ]
    assert torch.equal(padded[2, 1], cents[3]) and torch.equal(padded[1], torch.zeros(2, 3))


def test_bank_refresh_holds_cluster_per_class_result_with_its_settings(blobs):
    feats, pids = blobs()
    bank = ClusterBank(
        num_classes=5, clusters_per_class=3, min_cluster_size=2, kmeans_iters=10, seed=4
    )
    bank.refresh(feats, pids, epochs_done=3)
    expected = cluster_per_class(feats, pids, 3, 2, niter=10, seed=4)
    for got, ref in zip(
        (bank.centroids, bank.centroid_labels, bank.assignments), expected, strict=True
    ):
        assert torch.equal(got, ref)
    assert bank.refreshed_epoch == 3
    padded, valid = bank.padded(dtype=torch.float64)
    assert padded.dtype == torch.float64 and valid.sum() == len(bank.centroids)
    assert bank.padded(dtype=torch.float64)[0] is padded  # cached until the next refresh


def test_cluster_state_round_trip_restores_the_same_clusters(blobs):
    feats, pids = blobs()
    bank = ClusterBank(num_classes=5, clusters_per_class=3, min_cluster_size=2)
    bank.refresh(feats, pids, epochs_done=1)
    state = bank.cluster_state()
    assert set(state) == {
        "centroids",
        "centroid_labels",
        "assignments",
        "refreshed_epoch",
        "num_classes",
    }
    restored = ClusterBank(num_classes=5)
    restored.load_cluster_state(state)
    for name in ("centroids", "centroid_labels", "assignments"):
        assert torch.equal(getattr(restored, name), getattr(bank, name))
    assert restored.refreshed_epoch == 1
    assert ClusterBank(num_classes=5).cluster_state() == {}


def test_set_clusters_refuses_labels_out_of_range_or_unsorted():
    bank = ClusterBank(num_classes=2)
    cents = F.normalize(torch.randn(2, 3), dim=1)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        bank.set_clusters(cents, torch.tensor([0, 2]), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="ascending"):
        bank.set_clusters(cents, torch.tensor([1, 0]), torch.zeros(0, dtype=torch.long))


def test_clusters_for_another_class_count_are_refused(blobs):
    feats, pids = blobs()
    bank = ClusterBank(num_classes=5)
    bank.refresh(feats, pids)
    with pytest.raises(ValueError, match="5 classes"):
        ClusterBank(num_classes=6).load_cluster_state(bank.cluster_state())


def test_padded_before_any_clustering_says_what_to_do():
    with pytest.raises(RuntimeError, match="refresh"):
        ClusterBank(num_classes=2).padded()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _distributed_worker(rank: int, world: int, port: int, out_dir: str, data: list) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        feats, pids = data[rank]  # ranks see different features; rank 0's clusters must win
        bank = ClusterBank(num_classes=5, clusters_per_class=3, min_cluster_size=2)
        bank.refresh(feats, pids)
        torch.save(bank.cluster_state(), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_distributed_ranks_hold_rank0_clusters(tmp_path, blobs):
    torch.multiprocessing.spawn(
        _distributed_worker,
        args=(2, _free_port(), str(tmp_path), [blobs(seed=r) for r in range(2)]),
        nprocs=2,
        join=True,
    )
    s0, s1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    expected = cluster_per_class(*blobs(seed=0), 3, 2)
    for name, ref in zip(("centroids", "centroid_labels", "assignments"), expected, strict=True):
        assert torch.equal(s0[name], s1[name])
        assert torch.equal(s0[name], ref)
    assert np.isfinite(s1["centroids"].numpy()).all()
