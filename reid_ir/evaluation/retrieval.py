"""Exact CMC / mAP / mINP for person re-ID, chunked and without full sorts.

Protocol (Market-1501, as torchreid's ``eval_market1501``): for each query,
gallery items with the same pid *and* the same camera are ignored; gallery
items with pid -1 (junk) are ignored for every query; pid 0 (distractors) are
ordinary negatives. A query without any valid match is skipped and counted,
not an error.

Ranking rule: gallery items are ordered by distance, equal distances by
gallery index (a stable sort). Without ties this is exactly torchreid's order;
with ties torchreid's ``np.argsort`` (not stable) is implementation-defined.

How it stays fast and exact: queries are processed in chunks (at most 2**23
distances each). For a chunk the distance rows are computed into a reused
buffer; each query's positives are known from the labels, so the positives'
distances are read first and positives and ignored items are then set to +inf.
A positive's rank (0-based, among valid items) is the number of valid
negatives with a smaller (distance, index) key plus the positives before it:

* head: about ``HEAD_CANDIDATES`` negatives per query (up to a threshold
  estimated from a column sample, never past the hardest positive) are
  extracted and sorted once per chunk as packed (row, distance, index) uint64
  keys; positives inside the head are ranked by binary search;
* deep positives (beyond the head; a real model has a long tail of them) are
  ranked by counting the smaller distances in their row.

No full q x g matrix, no float64 copy and no full argsort; the work per query
is about ``num_gallery x (1 + deep positives)`` comparisons. Rows of a chunk are
ranked in ``torch.get_num_threads()`` threads.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from reid_ir.evaluation.search import (
    DistanceRows,
    as_feature_matrix,
    float_order_bits,
    key_layout,
    normalize_features,
    pack_codes,
)

logger = logging.getLogger(__name__)

JUNK_PID = -1
# Distance entries per chunk buffer (32 MB of float32): bounds memory at any gallery size.
_CHUNK_ELEMENTS = 1 << 23
# About this many negatives per query are sorted; positives ranked beyond them are
# ranked by counting the smaller distances in their row instead.
HEAD_CANDIDATES = 128


def as_labels(x: Any, name: str, length: int | None = None) -> np.ndarray:
    """Validate a 1-D integer label array (pids or camids) and return int64.

    Raises:
        ValueError: not 1-D, not integer-valued, or not of ``length`` items.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} must hold integers")
    elif arr.dtype.kind not in "iub":
        raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
    if length is not None and len(arr) != length:
        raise ValueError(f"{name} must have {length} items (one per row), got {len(arr)}")
    return arr.astype(np.int64)


class _SamePid:
    """For every query, the gallery items with its pid, split by camera.

    Stored as flat arrays ordered by query (CSR): ``cols[ptr[i]:ptr[i+1]]`` are
    the gallery indices with query i's pid, ``pos`` says whether each is a
    positive (other camera) or ignored (same camera).
    """

    def __init__(
        self, q_pids: np.ndarray, g_pids: np.ndarray, q_camids: np.ndarray, g_camids: np.ndarray
    ) -> None:
        order = np.argsort(g_pids, kind="stable")
        sorted_pids = g_pids[order]
        lo = np.searchsorted(sorted_pids, q_pids, side="left")
        cnt = np.searchsorted(sorted_pids, q_pids, side="right") - lo
        self.ptr = np.concatenate([[0], np.cumsum(cnt)])
        within = np.arange(self.ptr[-1]) - np.repeat(self.ptr[:-1], cnt)
        self.cols = order[np.repeat(lo, cnt) + within]
        rows = np.repeat(np.arange(len(q_pids)), cnt)
        self.rows = rows
        self.pos = g_camids[self.cols] != q_camids[rows]

    def chunk(self, start: int, end: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows relative to ``start``, gallery cols, positive flags) of queries start:end."""
        a, b = self.ptr[start], self.ptr[end]
        return self.rows[a:b] - start, self.cols[a:b], self.pos[a:b]


class RankStats:
    """Per-query rank statistics, filled chunk by chunk.

    Attributes (arrays of num_query items):
        first: 0-based rank of the first positive among valid items (-1: skipped).
        ap: average precision. inp: inverse negative penalty (positives / rank of
        the last positive). npos: number of positives (0: skipped).
    """

    def __init__(
        self, q_pids: np.ndarray, g_pids: np.ndarray, q_camids: np.ndarray, g_camids: np.ndarray
    ) -> None:
        nq = len(q_pids)
        self.num_gallery = len(g_pids)
        self.same = _SamePid(q_pids, g_pids, q_camids, g_camids)
        self.first = np.full(nq, -1, np.int64)
        self.ap = np.zeros(nq, np.float64)
        self.inp = np.zeros(nq, np.float64)
        self.npos = np.zeros(nq, np.int64)

    def add(self, start: int, dist: np.ndarray, mask: np.ndarray | None = None) -> None:
        """Rank the positives of queries ``start : start + len(dist)``.

        Args:
            start: index of the chunk's first query.
            dist: distances (n, num_gallery), float32 or float64; overwritten.
            mask: optional bool buffer with at least n x num_gallery items.
        """
        n, g = dist.shape
        rows, cols, pos = self.same.chunk(start, start + n)
        p_rows, p_cols = rows[pos], cols[pos]
        p_vals = dist[p_rows, p_cols]
        if not np.isfinite(p_vals).all():
            raise ValueError("distances overflow float32: scale the features down")
        # positives are ranked from their own list; ignored items must never count
        dist[rows, cols] = np.inf
        # positives of each row in ranking order: (distance, gallery index)
        order = np.lexsort((p_cols, p_vals, p_rows))
        p_rows, p_cols, p_vals = p_rows[order], p_cols[order], p_vals[order]
        npos = np.bincount(p_rows, minlength=n)
        p_start = np.concatenate([[0], np.cumsum(npos)])
        j = np.arange(len(p_rows)) - p_start[p_rows]  # index among the row's positives
        thr = np.full(n, -np.inf, dtype=dist.dtype)
        thr[npos > 0] = p_vals[p_start[1:][npos > 0] - 1]  # hardest positive
        head = np.minimum(thr, _head_threshold(dist))
        in_head = p_vals <= head[p_rows]
        # valid negatives ranked before some head positive, sorted with packed keys
        m = np.less_equal(dist, head[:, None], out=None if mask is None else mask[:n])
        flat = np.flatnonzero(m)
        n_rows = flat // g
        before = _negatives_before(
            n, g, n_rows, flat - n_rows * g, dist.reshape(-1)[flat],
            p_rows[in_head], p_cols[in_head], p_vals[in_head],
        )  # fmt: skip
        rank = np.empty(len(p_rows), np.int64)
        rank[in_head] = before
        deep = np.flatnonzero(~in_head)
        if len(deep):
            rank[deep] = _count_before(dist, p_rows[deep], p_cols[deep], p_vals[deep])
        rank += j  # valid items before a positive: negatives plus earlier positives
        ap = np.bincount(p_rows, weights=(j + 1) / (rank + 1.0), minlength=n)
        ok = npos > 0
        sl = slice(start, start + n)
        self.npos[sl] = npos
        first = np.full(n, -1, np.int64)
        first[ok] = rank[p_start[:-1][ok]]
        self.first[sl] = first
        self.ap[sl][ok] = ap[ok] / npos[ok]
        self.inp[sl][ok] = npos[ok] / (rank[p_start[1:][ok] - 1] + 1.0)


def _head_threshold(dist: np.ndarray) -> np.ndarray:
    """Per row, about the HEAD_CANDIDATES-th smallest distance (from a column sample).

    Negatives up to it are sorted; positives beyond it are ranked by counting.
    The sample is 8 evenly spaced blocks of 64 columns (cheap to read and to
    sort); it only steers the work split, never the result.
    """
    n, g = dist.shape
    if g <= 2048:
        sample = dist
    else:
        starts = np.linspace(0, g - 64, 8).astype(np.int64)
        sample = np.concatenate([dist[:, b : b + 64] for b in starts], axis=1)
    k = HEAD_CANDIDATES * sample.shape[1] // g
    if k >= sample.shape[1]:
        return np.full(n, np.inf, dtype=dist.dtype)
    return np.partition(sample, k, axis=1)[:, k] if g <= 2048 else np.sort(sample, axis=1)[:, k]


def _order_codes(values: np.ndarray) -> np.ndarray:
    """uint64 codes (< 2**32) ordered like ``values`` (float32 bits, or dense float64 ranks)."""
    if values.dtype == np.float32:
        return float_order_bits(values)
    return np.unique(values + 0.0, return_inverse=True)[1].astype(np.uint64).reshape(-1)


def _negatives_before(n, g, n_rows, n_cols, n_vals, p_rows, p_cols, p_vals):
    """For each positive, the number of listed negatives of its row with a smaller
    (distance, index) key; the lists hold every negative that can precede it."""
    col_bits, _ = key_layout(g)
    codes = _order_codes(np.concatenate([n_vals, p_vals]))
    n_keys = pack_codes(n_rows, codes[: len(n_vals)], n_cols, col_bits)
    n_keys.sort()
    p_keys = pack_codes(p_rows, codes[len(n_vals) :], p_cols, col_bits)
    row_start = p_rows.astype(np.uint64) << np.uint64(32 + col_bits)
    return np.searchsorted(n_keys, p_keys) - np.searchsorted(n_keys, row_start)


def _count_before(dist, rows, cols, vals):
    """Valid negatives before each (deep) positive, by comparing against its whole row.

    ``dist`` holds +inf at positives and ignored items, so counting values below
    the positive's distance counts valid negatives; equal distances count when
    their gallery index is smaller.
    """
    out = np.empty(len(rows), np.int64)
    buf = np.empty(dist.shape[1], bool)
    for t in range(len(rows)):
        row, v = dist[rows[t]], vals[t]
        below = np.count_nonzero(np.less(row, v, out=buf))
        ties = np.count_nonzero(np.less_equal(row, v, out=buf)) - below
        if ties:
            below += np.count_nonzero(np.flatnonzero(row == v) < cols[t])
        out[t] = below
    return out


def chunk_rows(chunk_size: int, num_gallery: int) -> int:
    """Queries per chunk: at most ``chunk_size`` and at most 2**23 distances per chunk."""
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    _, max_rows = key_layout(num_gallery)
    return max(1, min(int(chunk_size), max_rows, _CHUNK_ELEMENTS // num_gallery))


def compute_rank_stats(
    rows: Any,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    chunk_size: int = 1024,
    dtype: Any = np.float32,
    workers: int | None = None,
) -> RankStats:
    """Run :class:`RankStats` over a distance-row provider.

    Args:
        rows: object with ``shape`` (num_query, num_gallery) and
            ``rows(start, end, out) -> (end - start, num_gallery) array``.
        q_pids, g_pids, q_camids, g_camids: int64 labels (junk already removed
            from the gallery).
        chunk_size: most queries per chunk.
        dtype: dtype of the row buffer (float32, or float64 for such distmats).
        workers: threads ranking one chunk's rows (default: torch's intra-op
            thread count, so the same cores as the distance computation).
    """
    nq, ng = rows.shape
    step = chunk_rows(chunk_size, ng)
    stats = RankStats(q_pids, g_pids, q_camids, g_camids)
    buf = np.empty((min(step, nq), ng), dtype)
    mask = np.empty((min(step, nq), ng), bool)
    workers = max(1, torch.get_num_threads() if workers is None else int(workers))
    pool = ThreadPoolExecutor(workers) if workers > 1 else None
    try:
        for s in range(0, nq, step):
            e = min(nq, s + step)
            dist = rows.rows(s, e, out=buf)
            cuts = np.linspace(0, e - s, min(workers, e - s) + 1).astype(int)
            parts = [
                (s + a, dist[a:b], mask[a:b]) for a, b in zip(cuts[:-1], cuts[1:], strict=True)
            ]
            if pool is None or len(parts) == 1:
                for part in parts:
                    stats.add(*part)
            else:  # numpy releases the GIL in the heavy steps; rows are independent
                for fut in [pool.submit(stats.add, *part) for part in parts]:
                    fut.result()
            logger.debug("ranked queries %d-%d of %d", s, e, nq)
    finally:
        if pool is not None:
            pool.shutdown()
    return stats


def summarize(
    stats: RankStats, ranks: Sequence[int] = (1, 5, 10, 20), max_rank: int = 50
) -> dict[str, Any]:
    """Turn per-query statistics into the metrics dict (plain Python types).

    CMC has ``min(max_rank, num_gallery)`` entries (torchreid clips the same way);
    ``rank{k}`` is the fraction of valid queries whose first match is within the
    top k.
    """
    valid = stats.npos > 0
    nv = int(valid.sum())
    nskip = int(len(valid) - nv)
    length = min(int(max_rank), stats.num_gallery)
    first = stats.first[valid]
    out: dict[str, Any] = {}
    if nv == 0:
        logger.warning("no query has a valid match in the gallery; metrics are 0")
        cmc = np.zeros(length)
        out.update({f"rank{k}": 0.0 for k in ranks})
        mAP = mINP = 0.0
    else:
        hist = np.bincount(first[first < length], minlength=length)
        cmc = np.cumsum(hist) / nv
        out.update({f"rank{k}": float(np.count_nonzero(first < k) / nv) for k in ranks})
        mAP, mINP = float(stats.ap[valid].mean()), float(stats.inp[valid].mean())
    if nskip:
        logger.info("%d of %d queries have no valid match and were skipped", nskip, len(valid))
    out.update(
        {
            "cmc": [float(x) for x in cmc],
            "mAP": mAP,
            "mINP": mINP,
            "num_valid_queries": nv,
            "num_skipped_queries": nskip,
        }
    )
    return out


def _check_ranks(ranks: Sequence[int], max_rank: int) -> tuple[int, ...]:
    if int(max_rank) < 1:
        raise ValueError(f"max_rank must be a positive integer, got {max_rank!r}")
    try:
        out = tuple(int(k) for k in ranks)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"ranks must be a sequence of positive integers, got {ranks!r}") from exc
    if not out or min(out) < 1:
        raise ValueError(f"ranks must be a non-empty sequence of positive integers, got {ranks!r}")
    return out


class _MatrixRows:
    """Row provider over a given distance matrix, restricted to some columns."""

    def __init__(self, distmat: np.ndarray, keep: np.ndarray) -> None:
        self.distmat, self.keep = distmat, keep
        self.all_cols = bool(keep.all())
        self.shape = (distmat.shape[0], int(keep.sum()))

    def rows(self, start: int, end: int, out: np.ndarray) -> np.ndarray:
        buf = out[: end - start]
        block = self.distmat[start:end]
        np.copyto(buf, block if self.all_cols else block[:, self.keep], casting="unsafe")
        return buf


def evaluate_rank(
    distmat: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    max_rank: int = 50,
    chunk_size: int = 1024,
) -> tuple[np.ndarray, float]:
    """Drop-in for ``torchreid.reid.metrics.evaluate_rank`` (Market-1501 protocol).

    Args:
        distmat: distances (num_query, num_gallery), numpy or torch; float64
            input is ranked in float64.
        q_pids: (num_query,) query identities. g_pids: (num_gallery,).
        q_camids: (num_query,) query cameras. g_camids: (num_gallery,).
        max_rank: largest CMC rank (clipped to the number of non-junk gallery items).
        chunk_size: most queries ranked at a time.

    Returns:
        ``(cmc, mAP)``: cmc (min(max_rank, num_gallery),) float32 and mAP as a
        float, the same as torchreid's ``evaluate_rank(..., use_cython=False)``
        whenever every query is valid and there is no junk; otherwise queries
        without a valid match are skipped and junk (pid -1) is ignored.
    """
    if isinstance(distmat, torch.Tensor):
        distmat = distmat.detach().cpu().numpy()
    distmat = np.asarray(distmat)
    if distmat.ndim != 2 or distmat.size == 0:
        raise ValueError(f"distmat must be a non-empty 2-D array, got shape {distmat.shape}")
    if distmat.dtype.kind not in "fiu":
        raise ValueError(f"distmat must hold real numbers, got dtype {distmat.dtype}")
    nq, ng = distmat.shape
    q_pids, q_camids = as_labels(q_pids, "q_pids", nq), as_labels(q_camids, "q_camids", nq)
    g_pids, g_camids = as_labels(g_pids, "g_pids", ng), as_labels(g_camids, "g_camids", ng)
    _check_ranks((1,), max_rank)
    if not np.all(np.isfinite(distmat)):
        raise ValueError("distmat contains NaN or inf values")
    keep = g_pids != JUNK_PID
    if not keep.any():
        raise ValueError("g_pids: every gallery item is junk (pid -1)")
    dtype = np.float64 if distmat.dtype == np.float64 else np.float32
    stats = compute_rank_stats(
        _MatrixRows(distmat, keep),
        q_pids,
        g_pids[keep],
        q_camids,
        g_camids[keep],
        chunk_size,
        dtype,
    )
    res = summarize(stats, (1,), max_rank)
    return np.asarray(res["cmc"], dtype=np.float32), res["mAP"]


def evaluate(
    qf: Any,
    gf: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    metric: str = "euclidean",
    ranks: Sequence[int] = (1, 5, 10, 20),
    backend: str = "auto",
    max_rank: int = 50,
    chunk_size: int = 1024,
    rerank: bool = False,
    rerank_k1: int = 20,
    rerank_k2: int = 6,
    rerank_lambda: float = 0.3,
    normalize: bool = False,
) -> dict[str, Any]:
    """Evaluate retrieval from features: CMC, rank-k, mAP and mINP.

    Distances are torchreid's: squared L2 for ``"euclidean"``, ``1 - cos`` for
    ``"cosine"``, in float32. Gallery items with pid -1 are dropped first.

    Args:
        qf: query features (num_query, d), torch tensor or numpy array.
        gf: gallery features (num_gallery, d).
        q_pids: (num_query,) ints. g_pids: (num_gallery,) ints (-1 = junk, 0 = distractor).
        q_camids: (num_query,) ints. g_camids: (num_gallery,) ints.
        metric: ``"euclidean"`` or ``"cosine"``.
        ranks: CMC ranks reported as ``rank{k}``.
        backend: ``"auto"``, ``"faiss"`` or ``"torch"`` (see reid_ir.evaluation.search).
        max_rank: length of the reported CMC curve (clipped to the gallery size).
        chunk_size: most queries per chunk (also bounded so a chunk holds at
            most 2**23 distances).
        rerank: apply k-reciprocal re-ranking (Zhong et al., 2017) first.
        rerank_k1, rerank_k2, rerank_lambda: re-ranking parameters.
        normalize: L2-normalise features first (torchreid's ``normalize_feature``).

    Returns:
        Dict with ``cmc`` (list of floats), ``rank1``, ``rank5``, ..., ``mAP``,
        ``mINP``, ``num_valid_queries``, ``num_skipped_queries``, ``num_query``,
        ``num_gallery`` (without junk), ``num_junk``, ``metric``, ``backend``
        and ``rerank``.
    """
    qf, gf = as_feature_matrix(qf, "qf"), as_feature_matrix(gf, "gf")
    if qf.shape[1] != gf.shape[1]:
        raise ValueError(
            f"qf and gf must have the same feature size, got {qf.shape[1]} and {gf.shape[1]}"
        )
    nq, ng = qf.shape[0], gf.shape[0]
    q_pids, q_camids = as_labels(q_pids, "q_pids", nq), as_labels(q_camids, "q_camids", nq)
    g_pids, g_camids = as_labels(g_pids, "g_pids", ng), as_labels(g_camids, "g_camids", ng)
    ranks = _check_ranks(ranks, max_rank)
    keep = g_pids != JUNK_PID
    if not keep.any():
        raise ValueError("g_pids: every gallery item is junk (pid -1)")
    if not keep.all():
        gf = gf.index_select(0, torch.from_numpy(np.flatnonzero(keep)).to(gf.device))
        g_pids, g_camids = g_pids[keep], g_camids[keep]
    if normalize:
        qf, gf = normalize_features(qf), normalize_features(gf)
    if rerank:
        from reid_ir.evaluation.rerank import KReciprocalRows

        rows: Any = KReciprocalRows(
            qf, gf, metric, rerank_k1, rerank_k2, rerank_lambda, backend, chunk_size
        )
    else:
        rows = DistanceRows(qf, gf, metric, backend)
    stats = compute_rank_stats(rows, q_pids, g_pids, q_camids, g_camids, chunk_size)
    out = summarize(stats, ranks, max_rank)
    out.update(
        {
            "num_query": int(nq),
            "num_gallery": int(keep.sum()),
            "num_junk": int(ng - keep.sum()),
            "metric": metric,
            "backend": rows.backend,
            "rerank": bool(rerank),
        }
    )
    return out
