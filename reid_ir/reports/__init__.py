"""Reports: tables (Markdown, CSV, JSON) and plots (PNG)."""

from __future__ import annotations

import os
from typing import Any

from reid_ir.reports.plots import plot_cmc
from reid_ir.reports.tables import (
    format_csv,
    format_markdown,
    write_csv,
    write_json,
    write_markdown,
)


def write_evaluation(
    metrics: dict[str, Any], out_dir: str | os.PathLike, stem: str, title: str | None = None
) -> dict[str, str]:
    """Write one evaluation's ``{stem}.json`` and ``{stem}_cmc.png`` into ``out_dir``.

    Args:
        metrics: dict returned by :func:`reid_ir.evaluation.evaluate`.
        out_dir: folder (e.g. beside the checkpoints).
        stem: file name stem, e.g. ``"metrics_market1501_epoch10"``.
        title: CMC plot title (default: the stem).

    Returns:
        {"json": path, "cmc_png": path}.
    """
    paths = {"json": write_json(os.path.join(out_dir, f"{stem}.json"), metrics)}
    if metrics.get("cmc"):
        paths["cmc_png"] = plot_cmc(
            metrics["cmc"], os.path.join(out_dir, f"{stem}_cmc.png"), title or stem
        )
    return paths


__all__ = [
    "format_csv",
    "format_markdown",
    "plot_cmc",
    "write_csv",
    "write_evaluation",
    "write_json",
    "write_markdown",
]
