"""Fixtures shared by tests in more than one folder."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F


def _blobs(num_classes=5, per_class=(1, 3, 8, 20, 40), modes=3, dim=8, seed=0):
    """Unit features: class c has per_class[c] images spread over `modes` tight modes."""
    g = torch.Generator().manual_seed(seed)
    feats, pids = [], []
    for c in range(num_classes):
        centers = F.normalize(torch.randn(modes, dim, generator=g), dim=1)
        n = per_class[c]
        which = torch.arange(n) % modes
        feats.append(centers[which] + 0.05 * torch.randn(n, dim, generator=g))
        pids.append(torch.full((n,), c))
    perm = torch.randperm(sum(per_class), generator=g)
    return torch.cat(feats)[perm], torch.cat(pids)[perm]


@pytest.fixture
def blobs():
    """``blobs(num_classes=5, per_class=(1, 3, 8, 20, 40), modes=3, dim=8, seed=0)``:
    (N, dim) features near unit length and (N,) pids, class c with per_class[c] images
    in ``modes`` tight clusters (the clustering tests' data)."""
    return _blobs
