"""Search results as JSON and as an HTML page of thumbnails.

The page reuses visrank's rows (:func:`reid_ir.evaluation.visrank.draw_ranked_row`):
the query with a black border, then its top-k gallery images. When both query
and gallery names carry Market/Duke labels, borders are green (same identity),
red (another) or grey (junk), as in visrank; without labels every result gets a
neutral blue border. Similarities are listed under each row.
"""

from __future__ import annotations

import html
import json
import logging
import os
from collections.abc import Sequence

import cv2
import numpy as np

from reid_ir.evaluation import visrank
from reid_ir.reports.tables import write_text_atomic

logger = logging.getLogger(__name__)

NEUTRAL = (200, 120, 0)  # BGR blue: a result without labels to judge it by


def results_as_records(
    query_paths: Sequence[str], gallery_paths: Sequence[str], sims: np.ndarray, index: np.ndarray
) -> list[dict]:
    """``[{"query": path, "results": [{"rank", "path", "similarity", "index"}, ...]}, ...]``."""
    out = []
    for q, srow, irow in zip(query_paths, sims, index, strict=True):
        results = [
            {
                "rank": r,
                "path": gallery_paths[int(i)],
                "similarity": round(float(s), 6),
                "index": int(i),
            }
            for r, (s, i) in enumerate(zip(srow, irow, strict=True), start=1)
            if i >= 0
        ]
        out.append({"query": str(q), "results": results})
    return out


def write_results_json(path: str | os.PathLike, records: list[dict]) -> str:
    """Write :func:`results_as_records` output as JSON (atomically)."""
    return write_text_atomic(path, json.dumps(records, indent=1) + "\n")


def _thumb(
    path: str, color: tuple[int, int, int], width: int, height: int, missing: list[str]
) -> np.ndarray:
    img = cv2.imread(path)
    if img is None:
        missing.append(path)
        img = np.full((height, width, 3), 200, np.uint8)
    img = cv2.resize(img, (width, height))
    b = visrank.BORDER
    img = cv2.copyMakeBorder(img, b, b, b, b, cv2.BORDER_CONSTANT, value=color)
    return cv2.resize(img, (width, height))


def _neutral_row(
    query_path: str, gallery_paths: Sequence[str], width: int, height: int, missing: list[str]
) -> np.ndarray:
    """visrank's row layout: the query framed black, every result framed blue."""
    k = len(gallery_paths)
    grid = np.full(
        (height, (k + 1) * width + k * visrank.GRID_SPACING + visrank.QUERY_EXTRA_SPACING, 3),
        255,
        np.uint8,
    )
    grid[:, :width] = _thumb(query_path, visrank.BLACK, width, height, missing)
    for r, path in enumerate(gallery_paths, start=1):
        start = r * width + r * visrank.GRID_SPACING + visrank.QUERY_EXTRA_SPACING
        grid[:, start : start + width] = _thumb(path, NEUTRAL, width, height, missing)
    return grid


def write_search_page(
    save_dir: str | os.PathLike,
    records: list[dict],
    query_labels: tuple[np.ndarray, np.ndarray] | None = None,
    gallery_labels: tuple[np.ndarray, np.ndarray] | None = None,
    width: int = 128,
    height: int = 256,
    title: str = "Search results",
) -> str:
    """One image per query (its ranked results) and an ``index.html`` listing them.

    Args:
        save_dir: output folder (created).
        records: :func:`results_as_records` output.
        query_labels: optional (pids, camids) of the queries.
        gallery_labels: optional (pids, camids) of the gallery (by gallery index).
        width, height: size of each thumbnail.
        title: page title.

    Returns:
        Path of the written ``index.html``.
    """
    os.makedirs(save_dir, exist_ok=True)
    labelled = query_labels is not None and gallery_labels is not None
    missing: list[str] = []
    rows_html = []
    for qi, rec in enumerate(records):
        res = rec["results"]
        paths = [r["path"] for r in res]
        if labelled:
            q_item = (rec["query"], int(query_labels[0][qi]), int(query_labels[1][qi]))
            g_items = [
                (r["path"], int(gallery_labels[0][r["index"]]), int(gallery_labels[1][r["index"]]))
                for r in res
            ]
            grid = visrank.draw_ranked_row(q_item, g_items, width, height, missing)
            hits = [r["rank"] for r, g in zip(res, g_items, strict=True) if g[1] == q_item[1]]
            match = f"first match: {hits[0] if hits else '&gt;' + str(len(res))}; "
        else:
            grid = _neutral_row(rec["query"], paths, width, height, missing)
            match = ""
        stem = os.path.splitext(os.path.basename(rec["query"]))[0]
        fname = f"{qi:05d}_{stem}.jpg"
        if not cv2.imwrite(os.path.join(save_dir, fname), grid):
            raise OSError(f"could not write {os.path.join(save_dir, fname)}")
        listing = "<br>".join(
            f"{r['rank']}. {r['similarity']:.4f} <small>{html.escape(r['path'])}</small>"
            for r in res
        )
        rows_html.append(
            f"<tr><td>{qi}</td><td><small>{html.escape(rec['query'])}</small><br>{match}</td>"
            f'<td><a href="{html.escape(fname)}"><img src="{html.escape(fname)}" height="96"></a>'
            f"<details><summary>similarities</summary>{listing}</details></td></tr>"
        )
    if missing:
        logger.warning(
            "search page: %d images could not be read (first: %s)", len(missing), missing[0]
        )
    legend = (
        "Border: green = same identity, red = another identity, grey = junk (labels from the file names)."
        if labelled
        else "No identity labels in the file names: results are framed blue."
    )
    page = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>'
        f"{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif}td{padding:4px;border-bottom:1px solid #ddd;vertical-align:top}</style>"
        f"</head><body>\n<h1>{html.escape(title)}</h1><p>Cosine similarity, best first. {legend}</p>\n"
        "<table><tr><th>#</th><th>query</th><th>ranked results</th></tr>\n"
        + "\n".join(rows_html)
        + "\n</table></body></html>\n"
    )
    path = write_text_atomic(os.path.join(save_dir, "index.html"), page)
    logger.info("search page: %d queries written to %s", len(records), path)
    return path
