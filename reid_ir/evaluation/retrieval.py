"""Exact CMC / mAP / mINP for person re-ID, chunked and without full sorts.

Protocol (Market-1501, as torchreid's ``eval_market1501``): for each query,
gallery items with the same pid *and* the same camera are ignored; gallery
items with pid -1 (junk) are ignored for every query; pid 0 (distractors) are
ordinary negatives. A query without any valid match is skipped and counted,
not an error.

Ranking rule: gallery items are ordered by distance, equal distances by
gallery index (a stable sort). Without ties this is exactly torchreid's order;
with ties torchreid's ``np.argsort`` (not stable) is implementation-defined.

The ranking itself (chunks, head sort, counting) is :mod:`reid_ir.evaluation.ranking`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from reid_ir.evaluation.ranking import RankStats, compute_rank_stats
from reid_ir.evaluation.search import DistanceRows, as_feature_matrix, normalize_features

logger = logging.getLogger(__name__)

JUNK_PID = -1


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
