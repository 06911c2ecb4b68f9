"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) on k-NN lists, not full sorts.

This computes what torchreid's ``re_ranking(q_g_dist, q_q_dist, g_g_dist, k1,
k2, lambda_value)`` computes when it is fed torchreid's distances (squared L2
or 1 - cos, which it squares once more and divides by each column's maximum),
but without any (q+g) x (q+g) matrix:

* the k1+1 nearest neighbours of every item among all query and gallery items
  come from an exact k-NN search (torch or faiss), together with each item's
  largest distance (the normaliser);
* the k-reciprocal sets and their expansion are built vectorised from those
  lists; the Gaussian-kernel weights V and the local query expansion over k2
  neighbours are sparse matrices;
* the Jaccard term and the final distance are produced for a chunk of queries
  at a time, as the evaluator asks for them.

Neighbour order follows the evaluator's rule (distance, then index); torchreid
sorts with ``np.argsort``, so both agree wherever distances do not tie.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from reid_ir.evaluation.search import (
    DistanceRows,
    as_feature_matrix,
    knn,
    normalize_features,
    resolve_backend,
    squared_norms,
)

logger = logging.getLogger(__name__)

# Jaccard contributions handled at once (bounds the temporary arrays).
_MAX_CONTRIBUTIONS = 1 << 22


def _check_params(k1: int, k2: int, lambda_value: float) -> None:
    if int(k1) < 1:
        raise ValueError(f"rerank_k1 must be a positive integer, got {k1!r}")
    if int(k2) < 1:
        raise ValueError(f"rerank_k2 must be a positive integer, got {k2!r}")
    if not 0.0 <= float(lambda_value) <= 1.0:
        raise ValueError(f"rerank_lambda must be in [0, 1], got {lambda_value!r}")


def _reciprocal(ranks: np.ndarray) -> np.ndarray:
    """mask[i, t]: item i is among the neighbours listed in row ranks[i, t].

    Args:
        ranks: (n, k) neighbour lists (row i starts with i's nearest items).

    Returns:
        Bool array (n, k).
    """
    n, k = ranks.shape
    out = np.empty((n, k), bool)
    step = max(1, (1 << 24) // (k * k))
    for s in range(0, n, step):
        e = min(n, s + step)
        out[s:e] = (ranks[ranks[s:e]] == np.arange(s, e)[:, None, None]).any(axis=2)
    return out


def k_reciprocal_sets(ranks: np.ndarray, k1: int) -> tuple[np.ndarray, np.ndarray]:
    """Expanded k-reciprocal neighbour sets (torchreid's loop, vectorised).

    Args:
        ranks: (n, >= k1 + 1) neighbour lists over the same n items.
        k1: k of the k-reciprocal sets (half-size sets use round(k1 / 2)).

    Returns:
        ``(rows, cols)`` int64: item ``rows[t]``'s expanded set contains
        ``cols[t]``; sorted by row then column, no duplicates.
    """
    n = ranks.shape[0]
    fwd = ranks[:, : k1 + 1]
    half = ranks[:, : int(np.around(k1 / 2.0)) + 1]
    recip = _reciprocal(fwd)
    h_recip = _reciprocal(half)
    kr = np.where(recip, fwd, -2)  # k-reciprocal set of i (-2: empty slot)
    h_sets = np.where(h_recip, half, -1)  # half-size reciprocal set of each item
    h_size = h_recip.sum(axis=1)
    parts = []
    step = max(1, (1 << 24) // (fwd.shape[1] ** 2 * half.shape[1]))
    for s in range(0, n, step):
        e = min(n, s + step)
        cand = h_sets[fwd[s:e]]  # (b, k1+1, h+1): candidates' half sets
        inter = (cand[:, :, :, None] == kr[s:e, None, None, :]).any(axis=3).sum(axis=2)
        ok = recip[s:e] & (inter > 2.0 / 3 * h_size[fwd[s:e]])
        grow = np.where(ok[:, :, None], cand, -1).reshape(e - s, -1)
        parts.append(np.concatenate([kr[s:e], grow], axis=1))
    sets = np.concatenate(parts)
    sets.sort(axis=1)
    keep = sets >= 0
    keep[:, 1:] &= sets[:, 1:] != sets[:, :-1]
    rows = np.repeat(np.arange(n), keep.sum(axis=1))
    return rows, sets[keep]


def _pair_distances(
    x: torch.Tensor, rows: np.ndarray, cols: np.ndarray, metric: str, norms: torch.Tensor | None
) -> np.ndarray:
    """Distances d(x[rows[t]], x[cols[t]]) in torchreid's formula, float32 (m,)."""
    out = np.empty(len(rows), np.float32)
    step = max(1, (1 << 24) // x.shape[1])
    for s in range(0, len(rows), step):
        r = torch.from_numpy(rows[s : s + step])
        c = torch.from_numpy(cols[s : s + step])
        dot = (x[r] * x[c]).sum(dim=1)
        if metric == "euclidean":
            d = norms[r] + norms[c] - 2 * dot
        else:
            d = 1 - dot
        out[s : s + step] = d.cpu().numpy()
    return out


def _expansion_distances(x, metric, rows, cols, ranks, knn_dist) -> np.ndarray:
    """d(x[rows[t]], x[cols[t]]): from the k-NN lists when there, else computed."""
    hit = ranks[rows] == cols[:, None]  # (pairs, kk)
    found = hit.any(axis=1)
    d = np.empty(len(rows), np.float32)
    d[found] = knn_dist[rows[found], hit[found].argmax(axis=1)]
    miss = ~found
    if miss.any():
        if metric == "cosine":
            d[miss] = _pair_distances(normalize_features(x), rows[miss], cols[miss], metric, None)
        else:
            d[miss] = _pair_distances(x, rows[miss], cols[miss], metric, squared_norms(x))
    return d


class KReciprocalRows:
    """Re-ranked query x gallery distances, served chunk by chunk.

    Args:
        qf: query features (num_query, d), float32 tensor.
        gf: gallery features (num_gallery, d), float32 tensor.
        metric: ``"euclidean"`` or ``"cosine"`` (torchreid's distances).
        k1, k2, lambda_value: re-ranking parameters (paper: 20, 6, 0.3).
        backend: ``"auto"``, ``"torch"`` or ``"faiss"`` for the k-NN search.
        chunk_size: most rows per distance chunk in the k-NN search.
    """

    def __init__(
        self,
        qf: torch.Tensor,
        gf: torch.Tensor,
        metric: str = "euclidean",
        k1: int = 20,
        k2: int = 6,
        lambda_value: float = 0.3,
        backend: str = "auto",
        chunk_size: int = 1024,
    ) -> None:
        _check_params(k1, k2, lambda_value)
        self.k1, self.k2, self.lambda_value = int(k1), int(k2), float(lambda_value)
        self.backend = resolve_backend(backend)
        self.num_query, self.num_gallery = int(qf.shape[0]), int(gf.shape[0])
        self.shape = (self.num_query, self.num_gallery)
        self._orig = DistanceRows(qf, gf, metric, self.backend)
        x = torch.cat([qf, gf])  # knn() applies the metric's own normalisation
        n = x.shape[0]
        # more neighbours than needed: their distances serve most expansion pairs
        kk = min(n, max(2 * self.k1 + 1, self.k2))
        logger.info("re-ranking: %d-NN search over %d items", kk, n)
        knn_dist, ranks, rowmax = knn(
            x, x, kk, metric, self.backend, chunk_size, return_rowmax=True
        )
        # torchreid divides squared distances by each column's max of squares
        scale = np.square(rowmax, dtype=np.float32)
        scale[scale <= 0] = 1.0
        self._scale = scale
        rows, cols = k_reciprocal_sets(ranks, self.k1)
        d = _expansion_distances(x, metric, rows, cols, ranks, knn_dist)
        w = np.exp(-(np.square(d) / scale[rows])).astype(np.float64)
        w /= np.bincount(rows, weights=w, minlength=n)[rows]
        v = sp.csr_matrix((w, (rows, cols)), shape=(n, n))
        if self.k2 != 1:  # local query expansion: mean of the k2 nearest items' rows
            k2 = min(self.k2, ranks.shape[1])
            avg = sp.csr_matrix(
                (
                    np.full(n * k2, 1.0 / k2),
                    (np.repeat(np.arange(n), k2), ranks[:, :k2].reshape(-1)),
                ),
                shape=(n, n),
            )
            v = (avg @ v).tocsr()
        v.eliminate_zeros()
        self._vq = v[: self.num_query].tocsr()
        self._vg = v[self.num_query :].tocsc()  # columns: which gallery items share a neighbour
        logger.info("re-ranking: %d non-zeros in the expanded neighbour weights", v.nnz)

    def rows(self, start: int, end: int, out: np.ndarray | None = None) -> np.ndarray:
        """Re-ranked distances of queries ``start:end``, array (end - start, num_gallery) float32."""
        return self._compute(np.arange(start, end), out)

    def take(self, index: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Re-ranked distances of the queries at ``index`` (1-D ints), (len(index), num_gallery)."""
        return self._compute(np.asarray(index, dtype=np.int64), out)

    def _compute(self, index: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        n = len(index)
        if out is None:
            out = np.empty((n, self.num_gallery), np.float32)
        buf = out[:n]
        # torchreid, in float32: (1 - o / (2 - o)) * (1 - lambda) + d^2 / scale * lambda
        self._orig.take(index, out=buf)
        np.square(buf, out=buf)
        buf /= self._scale[index, None]
        buf *= np.float32(self.lambda_value)
        jac = self._overlap(index).astype(np.float32)
        jac /= np.float32(2.0) - jac
        np.subtract(np.float32(1.0), jac, out=jac)
        jac *= np.float32(1.0 - self.lambda_value)
        buf += jac
        return buf

    def _overlap(self, index: np.ndarray) -> np.ndarray:
        """sum_k min(V[i, k], V[j, k]) for queries i in ``index``, all gallery j: (n, G) float64."""
        n, g = len(index), self.num_gallery
        vq = self._vq[index].tocoo()
        qi, k, u = vq.row, vq.col, vq.data
        ptr, gidx, gval = self._vg.indptr, self._vg.indices, self._vg.data
        lens = (ptr[k + 1] - ptr[k]).astype(np.int64)
        acc = np.zeros(n * g, np.float64)
        csum = np.cumsum(lens)
        s = 0
        while s < len(lens):
            base = csum[s - 1] if s else 0
            e = max(s + 1, int(np.searchsorted(csum, base + _MAX_CONTRIBUTIONS, side="right")))
            ln = lens[s:e]
            rep = np.repeat(np.arange(s, e), ln)
            off = ptr[k[rep]] + np.arange(len(rep)) - np.repeat(np.cumsum(ln) - ln, ln)
            contrib = np.minimum(u[rep], gval[off])
            acc += np.bincount(
                qi[rep].astype(np.int64) * g + gidx[off], weights=contrib, minlength=n * g
            )
            s = e
        return acc.reshape(n, g)


def re_ranking(
    qf: Any,
    gf: Any,
    metric: str = "euclidean",
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    backend: str = "auto",
    chunk_size: int = 1024,
    normalize: bool = False,
) -> np.ndarray:
    """Re-ranked query-gallery distance matrix from features.

    Equivalent to torchreid's ``re_ranking(compute_distance_matrix(qf, gf),
    compute_distance_matrix(qf, qf), compute_distance_matrix(gf, gf), k1, k2,
    lambda_value)``; memory grows with num_query x num_gallery (the result)
    rather than (num_query + num_gallery) ** 2.

    Args:
        qf: query features (num_query, d). gf: gallery features (num_gallery, d).
        metric: ``"euclidean"`` or ``"cosine"``.
        k1, k2, lambda_value: re-ranking parameters.
        backend: k-NN backend (``"auto"``, ``"torch"``, ``"faiss"``).
        chunk_size: most query rows per chunk.
        normalize: L2-normalise the features first.

    Returns:
        Array (num_query, num_gallery) float32.
    """
    qf, gf = as_feature_matrix(qf, "qf"), as_feature_matrix(gf, "gf")
    if normalize:
        qf, gf = normalize_features(qf), normalize_features(gf)
    rr = KReciprocalRows(qf, gf, metric, k1, k2, lambda_value, backend, chunk_size)
    out = np.empty(rr.shape, np.float32)
    step = max(1, min(chunk_size, (1 << 22) // rr.num_gallery))
    for s in range(0, rr.num_query, step):
        rr.rows(s, min(rr.num_query, s + step), out=out[s:])
    return out
