"""k-nearest-cluster classifier: vote rule, array types, and minority classes vs nearest class mean."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from reid_ir.evaluation.knc import (
    class_means,
    knc_accuracy,
    knc_predict,
    ncm_accuracy,
    ncm_predict,
    per_class_accuracy,
)
from reid_ir.losses.clusters import cluster_per_class


def _brute_knc(x, cents, labels, k):
    """The documented vote rule, one query at a time."""
    x, cents = F.normalize(x, dim=1), F.normalize(cents, dim=1)
    out = []
    for q in x:
        ang = torch.acos((cents @ q).clamp(-1, 1))
        order = ang.argsort()[:k]
        a, lab = ang[order], labels[order]
        best, best_score = None, -math.inf
        for c in dict.fromkeys(lab.tolist()):  # classes in order of their nearest centroid
            far = a[lab == c].max()
            near_other = a[lab != c].min() if (lab != c).any() else torch.tensor(math.inf)
            score = float(near_other - far)
            if score > best_score:
                best, best_score = c, score
        out.append(best)
    return torch.tensor(out)


def test_vote_rule_matches_a_per_query_implementation():
    g = torch.Generator().manual_seed(0)
    cents = torch.randn(30, 5, generator=g)
    labels = torch.randint(0, 6, (30,), generator=g)
    x = torch.randn(200, 5, generator=g)
    for k in (1, 3, 7, 100):
        assert torch.equal(
            knc_predict(x, cents, labels, k), _brute_knc(x, cents, labels, min(k, 30))
        )


def test_k1_is_the_nearest_centroid_and_chunking_changes_nothing():
    g = torch.Generator().manual_seed(1)
    cents, labels, x = (
        torch.randn(12, 4, generator=g),
        torch.arange(12) % 4,
        torch.randn(50, 4, generator=g),
    )
    nearest = labels[(F.normalize(x, dim=1) @ F.normalize(cents, dim=1).t()).argmax(1)]
    assert torch.equal(knc_predict(x, cents, labels, k=1), nearest)
    assert torch.equal(
        knc_predict(x, cents, labels, k=5, chunk_size=7), knc_predict(x, cents, labels, k=5)
    )


def test_a_tight_minority_cluster_wins_against_a_majority_with_more_clusters_nearby():
    # query at 0 deg; minority centroid at 10 deg; majority centroids at -15, 20, 25 deg
    deg = torch.tensor([10.0, -15.0, 20.0, 25.0])
    cents = torch.stack([torch.cos(torch.deg2rad(deg)), torch.sin(torch.deg2rad(deg))], 1)
    labels = torch.tensor([1, 0, 0, 0])
    q = torch.tensor([[1.0, 0.0]])
    assert knc_predict(q, cents, labels, k=4).item() == 1  # a count vote would say 0


def test_numpy_in_numpy_out_and_accuracies_are_floats():
    rng = np.random.default_rng(0)
    x, cents = (
        rng.normal(size=(20, 3)).astype(np.float32),
        rng.normal(size=(6, 3)).astype(np.float32),
    )
    labels = np.arange(6) % 3
    pred = knc_predict(x, cents, labels, 3)
    assert isinstance(pred, np.ndarray) and pred.shape == (20,)
    assert isinstance(knc_predict(torch.from_numpy(x), cents, labels, 3), torch.Tensor)
    acc = knc_accuracy(x, pred, cents, labels, 3)
    assert isinstance(acc, float) and acc == 1.0
    means = class_means(x, labels[:20] if len(labels) >= 20 else np.arange(20) % 3, 3)
    assert isinstance(ncm_accuracy(x, np.arange(20) % 3, means), float)


def _circle(deg_centers, n, spread_deg, rng):
    """n points on the unit circle around the given centre angles (equal share each)."""
    centers = np.repeat(np.asarray(deg_centers, dtype=float), int(math.ceil(n / len(deg_centers))))[
        :n
    ]
    ang = np.deg2rad(centers + rng.normal(0.0, spread_deg, size=n))
    return np.stack([np.cos(ang), np.sin(ang)], 1).astype(np.float32)


def _toy_imbalanced(rng, n_major, n_minor):
    """Two bimodal majority classes; a unimodal minority class between the modes of each.

    The mean direction of a bimodal majority class lies between its modes,
    close to the minority class: the nearest-class-mean classifier gives the
    minority's near side to the majority, cluster centroids do not.
    """
    parts = [
        (_circle([0, 100], n_major, 6, rng), 0),  # majority, mean direction ~50 deg
        (_circle([62], n_minor, 5, rng), 1),  # minority
        (_circle([180, 280], n_major, 6, rng), 2),  # majority, mean ~230 deg
        (_circle([242], n_minor, 5, rng), 3),  # minority
    ]
    x = np.concatenate([p for p, _ in parts])
    y = np.concatenate([np.full(len(p), c) for p, c in parts])
    return x, y


def test_knc_beats_nearest_class_mean_on_minority_classes_of_a_toy_imbalanced_set():
    rng = np.random.default_rng(0)
    x_tr, y_tr = _toy_imbalanced(rng, n_major=300, n_minor=12)
    x_te, y_te = _toy_imbalanced(
        rng, n_major=300, n_minor=300
    )  # many test samples per minority class
    cents, cent_labels, _ = cluster_per_class(
        torch.from_numpy(x_tr), torch.from_numpy(y_tr), 3, 4, seed=0
    )
    knc = per_class_accuracy(knc_predict(x_te, cents.numpy(), cent_labels.numpy(), k=3), y_te, 4)
    ncm = per_class_accuracy(ncm_predict(x_te, class_means(x_tr, y_tr, 4)), y_te, 4)
    minority = [1, 3]
    assert knc[minority].min() > ncm[minority].max()
    assert knc[minority].mean() - ncm[minority].mean() > 0.05
    assert knc.mean() > ncm.mean()  # not bought with the majority classes
