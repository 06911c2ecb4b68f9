"""Small plotting functions writing PNG files.

Each function draws one figure with matplotlib's Agg canvas (no display and no
change to matplotlib's global backend), writes it atomically and returns the
path. Add new plots as further small functions.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

logger = logging.getLogger(__name__)


def _save(fig: Figure, path: str | os.PathLike, dpi: int = 120) -> str:
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    FigureCanvasAgg(fig)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=dpi, format="png")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    logger.debug("wrote %s", path)
    return path


def _log_count_axis(ax) -> None:
    """Log x axis for image counts, labelled 1, 2, 5, 10, 20, 50, ... (no overlapping minor labels)."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_cmc(
    cmc: Sequence[float] | np.ndarray | dict[str, Sequence[float]],
    path: str | os.PathLike,
    title: str = "CMC",
    marks: Sequence[int] = (1, 5, 10, 20),
) -> str:
    """Plot one or several CMC curves (matching rate against rank).

    Args:
        cmc: a curve (max_rank,) with cmc[k-1] = rank-k matching rate in [0, 1],
            or a dict {label: curve} to compare several runs.
        path: output PNG path.
        title: figure title.
        marks: ranks annotated with their value (first curve only).

    Returns:
        ``path``.
    """
    curves = cmc if isinstance(cmc, dict) else {"": cmc}
    fig = Figure(figsize=(5.0, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    for i, (label, curve) in enumerate(curves.items()):
        y = 100.0 * np.asarray(curve, dtype=float).reshape(-1)
        if y.size == 0:
            raise ValueError("cmc must hold at least one value")
        x = np.arange(1, y.size + 1)
        ax.plot(x, y, marker="." if y.size <= 60 else None, label=label or None)
        if i == 0:
            for k in marks:
                if 1 <= k <= y.size:
                    ax.annotate(
                        f"R{k} {y[k - 1]:.1f}",
                        (k, y[k - 1]),
                        textcoords="offset points",
                        xytext=(4, -12),
                        fontsize=7,
                    )
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_title(title)
    ax.set_ylim(0, 101)
    ax.grid(True, alpha=0.3)
    if any(curves):
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return _save(fig, path)


def plot_metric_by_method(
    rows: Sequence[dict], path: str | os.PathLike, metric: str = "mAP", title: str | None = None
) -> str:
    """Grouped bars: ``metric`` of each method, one group per split.

    Args:
        rows: dicts with ``split``, ``method``, ``metric`` and optionally
            ``f"{metric}_spread"`` (max - min over seeds, drawn as an error bar).
        path: output PNG path.
        metric: the key to plot (values in %).
        title: figure title (default: the metric).

    Returns:
        ``path``.
    """
    splits = list(dict.fromkeys(r["split"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    value = {(r["split"], r["method"]): r for r in rows}
    width = 0.8 / max(1, len(methods))
    fig = Figure(figsize=(3.0 + 0.5 * len(methods) * len(splits), 3.8))
    ax = fig.add_subplot(1, 1, 1)
    for j, method in enumerate(methods):
        xs, ys, errs = [], [], []
        for i, split in enumerate(splits):
            r = value.get((split, method))
            if r is None:
                continue
            xs.append(i + (j - (len(methods) - 1) / 2) * width)
            ys.append(r[metric])
            spread = r.get(f"{metric}_spread")
            errs.append(spread / 2 if spread else 0.0)
        bars = ax.bar(xs, ys, width * 0.95, yerr=errs, capsize=2, label=method)
        ax.bar_label(bars, fmt="%.1f", fontsize=6, padding=1)
    ax.set_xticks(range(len(splits)), splits, fontsize=8)
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(title or metric)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return _save(fig, path)


def plot_angle_comparison(
    runs: dict[str, tuple[Sequence[float], Sequence[float]]],
    path: str | os.PathLike,
    title: str = "",
) -> str:
    """Weight-center angle against class size for several runs, one panel each.

    Args:
        runs: ``{label: (train_images per class (C,), angle in degrees (C,))}``.
        path: output PNG path.
        title: figure title.

    Returns:
        ``path``.
    """
    fig = Figure(figsize=(3.4 * max(1, len(runs)), 3.4))
    top = max((max(a) for _, a in runs.values() if len(a)), default=90.0)
    for i, (label, (counts, angles)) in enumerate(runs.items()):
        ax = fig.add_subplot(1, len(runs), i + 1)
        ax.scatter(np.asarray(counts, dtype=float), np.asarray(angles, dtype=float), s=5, alpha=0.5)
        _log_count_axis(ax)
        ax.set_ylim(0, top * 1.05 + 1)
        ax.set_xlabel("training images of the class")
        if i == 0:
            ax.set_ylabel("angle(class weight, feature center) (deg)")
        ax.set_title(label, fontsize=9)
        ax.grid(True, alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def head_tail_boundary(
    counts: Sequence[float] | np.ndarray, head_min_images: float, log: bool = False
) -> float | None:
    """Where to draw the head/tail line: between the columns of points, never on one.

    Head classes have ``count >= head_min_images``; the line goes halfway (geometrically
    on a log axis) between the largest tail count and the smallest head count.

    Returns:
        The x position, or None when every class is head or every class is tail.
    """
    counts = np.asarray(counts, dtype=float).reshape(-1)
    tail, head = counts[counts < head_min_images], counts[counts >= head_min_images]
    if not tail.size or not head.size:
        return None
    lo, hi = float(tail.max()), float(head.min())
    return float(np.sqrt(lo * hi)) if log and lo > 0 else (lo + hi) / 2


def plot_angle_vs_count(
    angles: Sequence[float] | np.ndarray,
    class_counts: Sequence[float] | np.ndarray,
    path: str | os.PathLike,
    title: str = "",
    head_min_images: float | None = None,
) -> str:
    """One run's weight-center angle of every class against its training-image count.

    Args:
        angles: (C,) degrees between class weight and feature center (NaN: skipped).
        class_counts: (C,) training images per class.
        path: output PNG path.
        title: figure title.
        head_min_images: head classes have at least this many images; the head/tail line
            is drawn between the last tail column and the first head column.

    Returns:
        ``path``.
    """
    angles = np.asarray(angles, dtype=float).reshape(-1)
    counts = np.asarray(class_counts, dtype=float).reshape(-1)
    ok = ~np.isnan(angles)
    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(counts[ok], angles[ok], s=10, alpha=0.6, edgecolors="none")
    log = bool(ok.any() and counts[ok].max() >= 10 * counts[ok].min())
    if log:
        _log_count_axis(ax)
    x = None if head_min_images is None else head_tail_boundary(counts, head_min_images, log)
    if x is not None:
        label = f"head / tail (head: >= {head_min_images:g} images)"
        ax.axvline(x, color="grey", linestyle="--", linewidth=1, label=label)
        ax.legend(fontsize=8, loc="upper right")
    ax.set_xlabel("training images of the class")
    ax.set_ylabel("angle(class weight, feature center) (deg)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_metrics_with_std(
    stats: Sequence[dict],
    path: str | os.PathLike,
    metrics: Sequence[tuple[str, str]] = (("rank-1", "rank1"), ("mAP", "mAP")),
    title: str = "",
) -> str:
    """Grouped bars of each method per split, one panel per metric, error bars = std over seeds.

    Args:
        stats: rows with ``split``, ``method``, ``seeds``, ``<key>_mean`` and
            ``<key>_std`` (None for one seed: no error bar), e.g. from
            :func:`reid_ir.reports.tables.seed_statistics`.
        path: output PNG path.
        metrics: (axis label, key) of each panel (values in %).
        title: figure title.

    Returns:
        ``path``.
    """
    splits = list(dict.fromkeys(r["split"] for r in stats))
    methods = list(dict.fromkeys(r["method"] for r in stats))
    value = {(r["split"], r["method"]): r for r in stats}
    width = 0.8 / max(1, len(methods))
    fig = Figure(figsize=(3.0 + 0.45 * len(methods) * len(splits), 3.2 * len(metrics) + 0.4))
    for k, (label, key) in enumerate(metrics):
        ax = fig.add_subplot(len(metrics), 1, k + 1)
        for j, method in enumerate(methods):
            cells = [(i, value[s, method]) for i, s in enumerate(splits) if (s, method) in value]
            xs = [i + (j - (len(methods) - 1) / 2) * width for i, _ in cells]
            ys = [r[f"{key}_mean"] for _, r in cells]
            errs = [r.get(f"{key}_std") or 0.0 for _, r in cells]
            bars = ax.bar(xs, ys, width * 0.95, yerr=errs, capsize=2, label=method)
            ax.bar_label(bars, fmt="%.1f", fontsize=6, padding=1)
        ax.set_xticks(range(len(splits)), splits, fontsize=8)
        ax.set_ylabel(f"{label} (%)")
        ax.grid(True, axis="y", alpha=0.3)
        if k == 0:
            ax.legend(fontsize=7, ncol=1, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(title or "mean over seeds, error bar: std over seeds", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_epoch_curves(
    panels: dict[str, dict[str, tuple[Sequence[float], Sequence[float]]]],
    path: str | os.PathLike,
    title: str = "",
) -> str:
    """Per-epoch curves, one panel per quantity (e.g. UNPG's pair-mass share and kept count).

    Args:
        panels: ``{y-axis label: {curve label: (epochs (E,), values (E,))}}``.
        path: output PNG path.
        title: figure title.

    Returns:
        ``path``.

    Raises:
        ValueError: No panel, or a panel without curves.
    """
    fig, axes = _panel_row(panels, "plot_epoch_curves")
    for ax, (ylabel, curves) in zip(axes, panels.items()):
        for label, (epochs, values) in curves.items():
            xs, ys = np.asarray(epochs, dtype=float), np.asarray(values, dtype=float)
            ax.plot(xs, ys, marker=".", label=label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _label_panel(ax, "epoch", ylabel)
    return _finish(fig, path, title)


def _panel_row(panels: dict, caller: str) -> tuple[Figure, list]:
    """A figure with one axes per panel in a row; ValueError without panels or curves."""
    if not panels or not all(panels.values()):
        raise ValueError(f"{caller} needs at least one panel, each with a curve")
    fig = Figure(figsize=(4.2 * len(panels), 3.4))
    return fig, [fig.add_subplot(1, len(panels), k + 1) for k in range(len(panels))]


def _label_panel(ax, xlabel: str, ylabel: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6)


def _finish(fig: Figure, path: str | os.PathLike, title: str) -> str:
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_sweep(
    panels: dict[str, dict[str, tuple[Sequence[float], Sequence[float]]]],
    path: str | os.PathLike,
    ylabel: str,
    references: dict[str, float] | None = None,
    title: str = "",
) -> str:
    """A one-factor-at-a-time sweep: one panel per swept key, one curve per method.

    Args:
        panels: ``{swept key (x-axis label): {curve label: (x values (N,), y values (N,))}}``;
            a curve joins the mean at each x (labelled); every point is also drawn.
        path: output PNG path.
        ylabel: y-axis label (the metric).
        references: ``{label: value}`` drawn as dashed horizontal lines in every panel (e.g. a
            baseline that has no swept key).
        title: figure title.

    Returns:
        ``path``.

    Raises:
        ValueError: No panel, or a panel without curves.
    """
    fig, axes = _panel_row(panels, "plot_sweep")
    for ax, (xlabel, curves) in zip(axes, panels.items()):
        for j, (label, (xs, ys)) in enumerate(curves.items()):
            xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
            grid = np.unique(xs)
            means = np.array([ys[xs == x].mean() for x in grid])
            ax.plot(grid, means, marker="o", color=f"C{j}", label=label)
            ax.scatter(xs, ys, s=10, color=f"C{j}", alpha=0.5)
            for x, y in zip(grid, means):
                ax.annotate(f"{y:.1f}", (x, y), textcoords="offset points", xytext=(0, 4), ha="center", fontsize=6)
        for j, (label, value) in enumerate((references or {}).items()):
            ax.axhline(value, linestyle="--", linewidth=1, color=f"C{len(curves) + j}", label=f"{label} ({value:.1f})")
        _label_panel(ax, xlabel, ylabel)
    return _finish(fig, path, title)
