"""Per-query ranks of the positives, chunk by chunk, without full sorts.

The core of :func:`reid_ir.evaluation.retrieval.evaluate`: ranking rule and
protocol are described there.

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
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from reid_ir.evaluation.sort_keys import float_order_bits, key_layout, pack_codes

logger = logging.getLogger(__name__)

# Distance entries per chunk buffer (32 MB of float32): bounds memory at any gallery size.
_CHUNK_ELEMENTS = 1 << 23
# About this many negatives per query are sorted; positives ranked beyond them are
# ranked by counting the smaller distances in their row instead.
HEAD_CANDIDATES = 128


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
    the positive's distance counts valid negatives. Ties go to the smaller
    gallery index, so an item before the positive's column ``c`` counts when
    ``<= v`` and one after it when ``< v``: one pass over the row.
    """
    out = np.empty(len(rows), np.int64)
    buf = np.empty(dist.shape[1], bool)
    for t in range(len(rows)):
        row, v, c = dist[rows[t]], vals[t], cols[t]
        out[t] = np.count_nonzero(np.less_equal(row[:c], v, out=buf[:c])) + np.count_nonzero(
            np.less(row[c:], v, out=buf[c:])
        )
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
