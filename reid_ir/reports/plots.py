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
