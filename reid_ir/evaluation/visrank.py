"""Ranked results to look at: one image per query plus an HTML index.

Each image shows, like torchreid's ``visualize_ranked_results``, the query
(black border) followed by its top-k gallery images, with a green border for
the right identity and red for a wrong one; each gallery image is captioned with
its rank, camera and distance to the query. Gallery items with the query's pid
and camera are skipped (as in evaluation); junk images (pid -1), which the
evaluation ignores, are shown greyed out with a grey border.

Cameras are shown as in the file names (``c1`` is torchreid's 0-based camid 0).
"""

from __future__ import annotations

import html
import logging
import os
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from reid_ir.evaluation.retrieval import JUNK_PID, as_labels
from reid_ir.evaluation.search import DistanceRows, as_feature_matrix, normalize_features

logger = logging.getLogger(__name__)

GREEN, RED, GREY, BLACK = (0, 255, 0), (0, 0, 255), (150, 150, 150), (0, 0, 0)  # BGR
BORDER = 10
GRID_SPACING = 10
QUERY_EXTRA_SPACING = 90


def topk_indices(
    qf: Any,
    gf: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    k: int = 10,
    query_indices: Sequence[int] | None = None,
    metric: str = "euclidean",
    normalize: bool = False,
    backend: str = "auto",
    rerank: bool = False,
    rerank_k1: int = 20,
    rerank_k2: int = 6,
    rerank_lambda: float = 0.3,
    return_distances: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Top-k gallery indices of some queries, in the evaluator's order.

    Gallery items with the query's pid and camera are skipped; junk (pid -1)
    is kept so that it can be shown. Order: distance, then gallery index.

    Args:
        qf: query features (num_query, d). gf: gallery features (num_gallery, d).
        q_pids, g_pids, q_camids, g_camids: 1-D int labels.
        k: gallery items per query.
        query_indices: queries to rank (default: all).
        metric, normalize, backend: as in :func:`reid_ir.evaluation.evaluate`.
        rerank, rerank_k1, rerank_k2, rerank_lambda: k-reciprocal re-ranking
            (computed over the gallery as given, junk included).
        return_distances: also return the distances of the listed items.

    Returns:
        Array (len(query_indices), k) int64 of gallery indices, -1 where a
        query has fewer than k candidates; with ``return_distances`` also the
        (len(query_indices), k) float64 distances (NaN where the index is -1).
    """
    qf, gf = as_feature_matrix(qf, "qf"), as_feature_matrix(gf, "gf")
    nq, ng = qf.shape[0], gf.shape[0]
    q_pids, q_camids = as_labels(q_pids, "q_pids", nq), as_labels(q_camids, "q_camids", nq)
    g_pids, g_camids = as_labels(g_pids, "g_pids", ng), as_labels(g_camids, "g_camids", ng)
    if int(k) < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    sel = np.arange(nq) if query_indices is None else np.asarray(query_indices, dtype=np.int64)
    if sel.ndim != 1 or (sel.size and (sel.min() < 0 or sel.max() >= nq)):
        raise ValueError(f"query_indices must be 1-D indices in [0, {nq}), got {query_indices!r}")
    if normalize:
        qf, gf = normalize_features(qf), normalize_features(gf)
    if rerank:
        from reid_ir.evaluation.rerank import KReciprocalRows

        rows: Any = KReciprocalRows(qf, gf, metric, rerank_k1, rerank_k2, rerank_lambda, backend)
    else:
        rows = DistanceRows(qf, gf, metric, backend)
    out = np.full((len(sel), int(k)), -1, np.int64)
    out_dist = np.full((len(sel), int(k)), np.nan)
    for s in range(0, len(sel), 64):
        idx = sel[s : s + 64]
        dist = rows.take(idx).astype(np.float64)
        same = (g_pids[None, :] == q_pids[idx, None]) & (g_camids[None, :] == q_camids[idx, None])
        dist[same] = np.inf
        order = np.argsort(dist, axis=1, kind="stable")[:, : int(k)]
        taken = np.take_along_axis(dist, order, axis=1)
        ok = np.isfinite(taken)
        out[s : s + len(idx)][:, : order.shape[1]] = np.where(ok, order, -1)
        out_dist[s : s + len(idx)][:, : order.shape[1]] = np.where(ok, taken, np.nan)
    return (out, out_dist) if return_distances else out


def camera_label(camid: int) -> str:
    """torchreid's 0-based camid as the file names write it: 0 -> ``c1``."""
    return f"c{int(camid) + 1}"


def _as_items(data: Any, name: str) -> list[tuple[Any, int, int]]:
    """(img_path, pid, camid) items from a torchreid list or dataset/loader."""
    if hasattr(data, "dataset") and hasattr(data.dataset, "data"):
        data = data.dataset.data
    elif hasattr(data, "data") and not isinstance(data, (list, tuple)):
        data = data.data
    try:
        items = [(it[0], int(it[1]), int(it[2])) for it in data]
    except (TypeError, IndexError, ValueError) as exc:
        raise ValueError(f"{name} must be a list of (img_path, pid, camid, ...) tuples") from exc
    if not items:
        raise ValueError(f"{name} must not be empty")
    return items


def _read(path: Any, width: int, height: int, missing: list[str]) -> np.ndarray:
    path = path[0] if isinstance(path, (list, tuple)) else path
    img = cv2.imread(os.fspath(path)) if path is not None else None
    if img is None:
        missing.append(str(path))
        img = np.full((height, width, 3), 200, np.uint8)
        cv2.putText(img, "missing", (4, height // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    return cv2.resize(img, (width, height))


def _cell(
    img: np.ndarray,
    color: tuple[int, int, int],
    width: int,
    height: int,
    grey: bool = False,
    caption: str = "",
) -> np.ndarray:
    if grey:
        g = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        img = cv2.cvtColor(g // 2 + 110, cv2.COLOR_GRAY2BGR)
    img = cv2.copyMakeBorder(img, BORDER, BORDER, BORDER, BORDER, cv2.BORDER_CONSTANT, value=color)
    img = cv2.resize(img, (width, height))  # resize back so every cell has the same size
    if caption and width >= 2 * BORDER + 24 and height >= 2 * BORDER + 16:
        # a white strip at the bottom, inside the border (cells too small for text get none)
        scale = max(0.25, min(0.4, width / 320))
        (tw, th), base = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        top = height - BORDER - th - base - 4
        img[top : height - BORDER, BORDER : width - BORDER] = 255
        cv2.putText(
            img, caption, (BORDER + 2, height - BORDER - base - 2), cv2.FONT_HERSHEY_SIMPLEX,
            scale, BLACK, 1, cv2.LINE_AA,
        )  # fmt: skip
    return img


def draw_ranked_row(
    query_item: tuple[Any, int, int],
    gallery_items: Sequence[tuple[Any, int, int]],
    width: int = 128,
    height: int = 256,
    missing: list[str] | None = None,
    distances: Sequence[float] | None = None,
) -> np.ndarray:
    """One query and its ranked gallery items side by side, BGR uint8 (height, W, 3).

    With ``distances`` (one per gallery item) every cell is captioned: the query with
    its camera (``q c1``), each gallery item with its rank, camera and distance
    (``#1 c2 0.52``).
    """
    missing = [] if missing is None else missing
    topk = len(gallery_items)
    grid = np.full(
        (height, (topk + 1) * width + topk * GRID_SPACING + QUERY_EXTRA_SPACING, 3), 255, np.uint8
    )
    labelled = distances is not None
    grid[:, :width] = _cell(
        _read(query_item[0], width, height, missing), BLACK, width, height,
        caption=f"q {camera_label(query_item[2])}" if labelled else "",
    )  # fmt: skip
    for r, (path, pid, cam) in enumerate(gallery_items, start=1):
        junk = pid == JUNK_PID
        color = GREY if junk else (GREEN if pid == query_item[1] else RED)
        start = r * width + r * GRID_SPACING + QUERY_EXTRA_SPACING
        caption = f"#{r} {camera_label(cam)} {distances[r - 1]:.3g}" if labelled else ""
        grid[:, start : start + width] = _cell(
            _read(path, width, height, missing), color, width, height, grey=junk, caption=caption
        )
    return grid


def write_ranked_results(
    qf: Any,
    gf: Any,
    query: Any,
    gallery: Any,
    save_dir: str | os.PathLike,
    topk: int = 10,
    num_queries: int = 20,
    metric: str = "euclidean",
    normalize: bool = False,
    backend: str = "auto",
    rerank: bool = False,
    rerank_k1: int = 20,
    rerank_k2: int = 6,
    rerank_lambda: float = 0.3,
    query_indices: Sequence[int] | None = None,
    width: int = 128,
    height: int = 256,
) -> str:
    """Write ranked-result images for some queries and an ``index.html``.

    Args:
        qf: query features (num_query, d). gf: gallery features (num_gallery, d).
        query: the query list as torchreid datasets store it, items
            ``(img_path, pid, camid, ...)``; a torchreid dataset or loader also works.
        gallery: the gallery list, same form.
        save_dir: output folder (created).
        topk: gallery images per query.
        num_queries: queries shown, spread evenly over the query list (ignored
            when ``query_indices`` is given).
        metric, normalize, backend, rerank, rerank_k1, rerank_k2, rerank_lambda:
            as in :func:`reid_ir.evaluation.evaluate`.
        query_indices: explicit queries to show.
        width, height: size of each image cell in pixels.

    Returns:
        Path of the written ``index.html``.
    """
    from reid_ir.reports.tables import write_text_atomic

    q_items, g_items = _as_items(query, "query"), _as_items(gallery, "gallery")
    if query_indices is None:
        n = max(1, min(int(num_queries), len(q_items)))
        query_indices = np.unique(np.linspace(0, len(q_items) - 1, n).round().astype(np.int64))
    sel = np.asarray(query_indices, dtype=np.int64)
    ranked, ranked_dist = topk_indices(
        qf,
        gf,
        [it[1] for it in q_items],
        [it[1] for it in g_items],
        [it[2] for it in q_items],
        [it[2] for it in g_items],
        k=topk,
        query_indices=sel,
        metric=metric,
        normalize=normalize,
        backend=backend,
        rerank=rerank,
        rerank_k1=rerank_k1,
        rerank_k2=rerank_k2,
        rerank_lambda=rerank_lambda,
        return_distances=True,
    )
    os.makedirs(save_dir, exist_ok=True)
    missing: list[str] = []
    rows_html = []
    for qi, gal, dist in zip(sel, ranked, ranked_dist, strict=True):
        q_path, q_pid, q_cam = q_items[qi]
        shown = [g_items[j] for j in gal if j >= 0]
        shown_dist = [float(d) for j, d in zip(gal, dist, strict=True) if j >= 0]
        grid = draw_ranked_row(q_items[qi], shown, width, height, missing, shown_dist)
        stem = os.path.splitext(os.path.basename(str(q_path)))[0]
        fname = f"{int(qi):05d}_{stem}.jpg"
        if not cv2.imwrite(os.path.join(save_dir, fname), grid):
            raise OSError(f"could not write {os.path.join(save_dir, fname)}")
        hits = [k for k, it in enumerate(shown, 1) if it[1] == q_pid]
        listing = " &middot; ".join(
            f"{r}. {camera_label(it[2])} {d:.4g}"
            for r, (it, d) in enumerate(zip(shown, shown_dist, strict=True), 1)
        )
        rows_html.append(
            f"<tr><td>{int(qi)}</td><td>{q_pid}</td><td>{camera_label(q_cam)}</td>"
            f"<td>{hits[0] if hits else '&gt;' + str(len(shown))}</td><td>{len(hits)}</td>"
            f'<td><a href="{html.escape(fname)}"><img src="{html.escape(fname)}" height="96"></a>'
            f"<br><small>{html.escape(str(q_path))}</small>"
            f"<br><small>rank. camera distance: {listing}</small></td></tr>"
        )
    if missing:
        logger.warning("visrank: %d images could not be read (first: %s)", len(missing), missing[0])
    page = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>Ranked results</title>'
        "<style>body{font-family:sans-serif}td{padding:4px;border-bottom:1px solid #ddd}</style>"
        "</head><body>\n"
        f"<h1>Ranked results</h1><p>metric: {html.escape(metric)}; top-{int(topk)}; "
        f"re-ranking: {'on' if rerank else 'off'}. Border: green = same identity, red = another "
        "identity, grey (image greyed) = junk. Each gallery image is captioned with its rank, "
        "camera (c1 as in the file names) and distance to the query. Same-identity, same-camera "
        "gallery images are skipped.</p>\n<table><tr><th>query</th><th>pid</th><th>camera</th><th>first match</th>"
        "<th>matches in top-k</th><th>ranked list</th></tr>\n"
        + "\n".join(rows_html)
        + "\n</table></body></html>\n"
    )
    path = write_text_atomic(os.path.join(save_dir, "index.html"), page)
    logger.info("visrank: wrote %d ranked lists to %s", len(sel), save_dir)
    return path
