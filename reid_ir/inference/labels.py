"""Identity and camera labels read from Market-1501 / DukeMTMC-reID file names, and their CSV.

``0002_c1s1_000451_03.jpg`` (Market) and ``0001_c2_f0046182.jpg`` (Duke) name the
person id and the camera. Labels follow torchreid's datasets: ``pid`` as written
(Market's 0 = distractor, -1 = junk), ``camid`` = camera number - 1.
``labels.csv`` has the columns ``path,pid,camid``, one row per image.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

#: torchreid's Market-1501 / DukeMTMC-reID pattern, anchored at the start of the file name
NAME_RE = re.compile(r"^(-1|\d+)_c(\d+)")


def parse_name(path: str | os.PathLike) -> tuple[int, int] | None:
    """(pid, camid) of a Market/Duke-style file name, or None when the name does not follow it."""
    m = NAME_RE.match(os.path.basename(os.fspath(path)))
    if m is None or int(m.group(2)) < 1:
        return None
    return int(m.group(1)), int(m.group(2)) - 1


def labels_from_paths(paths: Sequence[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """(pids, camids) int64 arrays when every name follows the pattern, else None."""
    parsed = [parse_name(p) for p in paths]
    if not parsed or any(x is None for x in parsed):
        return None
    arr = np.asarray(parsed, dtype=np.int64)
    return arr[:, 0].copy(), arr[:, 1].copy()


def write_labels_csv(
    path: str | os.PathLike, paths: Sequence[str], pids: Sequence[int], camids: Sequence[int]
) -> None:
    """Write ``path,pid,camid`` rows (atomically: temp file + rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "pid", "camid"])
        w.writerows(zip(paths, (int(p) for p in pids), (int(c) for c in camids), strict=True))
    os.replace(tmp, path)


def read_labels_csv(
    path: str | os.PathLike, paths: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read (pids, camids) from a ``labels.csv``.

    Args:
        path: the CSV file.
        paths: when given, the file's paths must be these, in this order.

    Raises:
        ValueError: bad header, non-integer labels, or paths that differ from ``paths``.
    """
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows or rows[0] != ["path", "pid", "camid"]:
        raise ValueError(f"{path}: expected the header 'path,pid,camid'")
    rows = rows[1:]
    if paths is not None and [r[0] for r in rows] != list(paths):
        raise ValueError(
            f"{path}: its paths are not the {len(paths)} paths of the features beside it"
        )
    try:
        pids = np.array([int(r[1]) for r in rows], np.int64)
        camids = np.array([int(r[2]) for r in rows], np.int64)
    except (IndexError, ValueError) as e:
        raise ValueError(f"{path}: pid and camid must be integers ({e})") from None
    return pids, camids
