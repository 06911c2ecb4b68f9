"""k-nearest-cluster (kNC) classification and the nearest-class-mean baseline.

Closed-set classification of embeddings into the training identities, by the
per-class cluster centroids CLMLE keeps (:class:`reid_ir.losses.clusters.ClusterBank`).
Pure functions: numpy arrays or torch tensors in, the same kind out.

Vote rule of :func:`knc_predict` (LMLE's local large-margin decision, Huang et
al., CVPR 2016, on angles): take the k centroids nearest to the query by
angle, ``theta_1 <= ... <= theta_k``. For each class c among them,

    score(c) = min_{j: label_j != c} theta_j  -  max_{j: label_j == c} theta_j

i.e. the angular gap between the class's farthest cluster in the neighbourhood
and the nearest cluster of any other class (+inf when all k clusters are of
class c). The prediction is the class with the largest score; ties go to the
class owning the nearer centroid. A minority class with one tight cluster
therefore wins its neighbourhood even when a majority class has many clusters
around it - a count vote would hand it to the majority. With k = 1 the rule is
the nearest-centroid classifier.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def _as_tensor(x: Any, dtype: torch.dtype | None = None) -> torch.Tensor:
    t = torch.as_tensor(x)
    return t if dtype is None else t.to(dtype)


def _like(result: torch.Tensor, reference: Any) -> Any:
    return result if isinstance(reference, torch.Tensor) else result.cpu().numpy()


def _angles(queries: torch.Tensor, refs: torch.Tensor) -> torch.Tensor:
    """(n, m) angles in radians between unit rows."""
    return torch.acos((queries @ refs.t()).clamp(-1.0, 1.0))


def knc_predict(
    features: Any, centroids: Any, centroid_labels: Any, k: int = 5, chunk_size: int = 4096
) -> Any:
    """Class of each query by its k nearest cluster centroids (see the module's vote rule).

    Args:
        features: (N, D) query embeddings (normalised here).
        centroids: (M, D) cluster centroids (normalised here).
        centroid_labels: (M,) class id of each centroid.
        k: neighbourhood size (capped at M).
        chunk_size: queries per chunk (bounds the (chunk, k, k) memory).

    Returns:
        (N,) predicted class ids, a tensor when ``features`` is one, else an array.
    """
    q = F.normalize(_as_tensor(features, torch.float32), dim=1)
    cents = F.normalize(_as_tensor(centroids, torch.float32).to(q.device), dim=1)
    labels = _as_tensor(centroid_labels, torch.long).to(q.device)
    if len(labels) == 0:
        raise ValueError("knc_predict needs at least one centroid")
    k = max(1, min(int(k), len(labels)))
    out = []
    for q_chunk in q.split(chunk_size):
        theta, idx = _angles(q_chunk, cents).topk(k, dim=1, largest=False)  # ascending angle
        lab = labels[idx]  # (n, k)
        same = lab.unsqueeze(2) == lab.unsqueeze(1)  # (n, k, k): j' has the class of j
        th = theta.unsqueeze(1).expand_as(same)
        farthest_same = th.masked_fill(~same, float("-inf")).amax(2)  # (n, k)
        nearest_other = th.masked_fill(same, float("inf")).amin(2)  # (n, k)
        score = nearest_other - farthest_same
        best = score.argmax(1)  # first maximum = the class of the nearer centroid
        out.append(lab.gather(1, best.unsqueeze(1)).squeeze(1))
    pred = torch.cat(out) if out else torch.zeros(0, dtype=torch.long)
    return _like(pred, features)


def class_means(features: Any, labels: Any, num_classes: int | None = None) -> Any:
    """(C, D) unit mean direction of each class's unit embeddings (zero rows for empty classes)."""
    x = F.normalize(_as_tensor(features, torch.float32), dim=1)
    y = _as_tensor(labels, torch.long).to(x.device)
    c = int(num_classes) if num_classes is not None else int(y.max()) + 1
    sums = x.new_zeros(c, x.shape[1]).index_add_(0, y, x)
    return _like(F.normalize(sums, dim=1), features)


def ncm_predict(features: Any, means: Any) -> Any:
    """Nearest-class-mean prediction: argmax cosine to the (C, D) class means -> (N,)."""
    q = F.normalize(_as_tensor(features, torch.float32), dim=1)
    m = F.normalize(_as_tensor(means, torch.float32).to(q.device), dim=1)
    return _like((q @ m.t()).argmax(1), features)


def _accuracy(pred: Any, labels: Any) -> float:
    p, y = _as_tensor(pred, torch.long), _as_tensor(labels, torch.long).to(_as_tensor(pred).device)
    return float((p == y).float().mean()) if len(y) else float("nan")


def knc_accuracy(
    features: Any, labels: Any, centroids: Any, centroid_labels: Any, k: int = 5
) -> float:
    """Closed-set accuracy of :func:`knc_predict`.

    Args:
        features: (N, D) embeddings.
        labels: (N,) true class ids (the ids of ``centroid_labels``).
        centroids: (M, D) cluster centroids.
        centroid_labels: (M,) class ids.
        k: neighbourhood size.

    Returns:
        Fraction of correct predictions in [0, 1] (NaN when N = 0).
    """
    return _accuracy(knc_predict(features, centroids, centroid_labels, k), labels)


def ncm_accuracy(features: Any, labels: Any, means: Any) -> float:
    """Closed-set accuracy of :func:`ncm_predict`."""
    return _accuracy(ncm_predict(features, means), labels)


def per_class_accuracy(pred: Any, labels: Any, num_classes: int | None = None) -> np.ndarray:
    """(C,) accuracy of each class (NaN for classes without samples)."""
    p, y = _as_tensor(pred, torch.long).cpu(), _as_tensor(labels, torch.long).cpu()
    c = int(num_classes) if num_classes is not None else int(y.max()) + 1
    total = torch.bincount(y, minlength=c).double()
    correct = torch.bincount(y[p == y], minlength=c).double()
    return (correct / total).numpy()  # 0/0 -> nan
