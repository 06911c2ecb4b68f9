"""Metrics as Markdown / CSV tables and as JSON files.

A "row" is a flat mapping (a metrics dict from :func:`reid_ir.evaluation.evaluate`,
maybe with extra fields such as the run name). List-valued entries (the CMC
curve) are left out of tables unless named in ``columns``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# Columns shown first when present, in this order.
PREFERRED_COLUMNS = (
    "name",
    "rank1",
    "rank5",
    "rank10",
    "rank20",
    "mAP",
    "mINP",
    "num_valid_queries",
    "num_skipped_queries",
)


def _rows(rows: Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    if isinstance(rows, Mapping):
        return [rows]
    out = list(rows)
    if not all(isinstance(r, Mapping) for r in out):
        raise ValueError("rows must be a mapping or an iterable of mappings")
    return out


def table_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Scalar columns of ``rows``: preferred ones first, then the rest in first-seen order."""
    seen: list[str] = []
    for r in rows:
        for k, v in r.items():
            if k not in seen and not isinstance(v, (list, tuple, dict)):
                seen.append(k)
    return [c for c in PREFERRED_COLUMNS if c in seen] + [
        c for c in seen if c not in PREFERRED_COLUMNS
    ]


def format_value(v: Any, floatfmt: str = ".4f") -> str:
    """One cell: floats with ``floatfmt``, None as empty, the rest with str()."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else format(v, floatfmt)
    return str(v)


def format_markdown(
    rows: Mapping[str, Any] | Iterable[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    floatfmt: str = ".4f",
) -> str:
    """A Markdown (GitHub) table, one line per row, numbers right-aligned."""
    rows = _rows(rows)
    cols = list(columns) if columns is not None else table_columns(rows)
    cells = [[format_value(r.get(c), floatfmt) for c in cols] for r in rows]
    numeric = [
        all(
            isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool)
            for r in rows
            if r.get(c) is not None
        )
        for c in cols
    ]
    lines = [
        "| " + " | ".join(str(c).replace("|", "\\|") for c in cols) + " |",
        "| " + " | ".join("---:" if n else "---" for n in numeric) + " |",
    ]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


def format_csv(
    rows: Mapping[str, Any] | Iterable[Mapping[str, Any]], columns: Sequence[str] | None = None
) -> str:
    """CSV text with a header line; floats at full precision (repr)."""
    rows = _rows(rows)
    cols = list(columns) if columns is not None else table_columns(rows)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        w.writerow(["" if r.get(c) is None else r.get(c) for c in cols])
    return buf.getvalue()


def write_text_atomic(path: str | os.PathLike, text: str) -> str:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``; returns the path."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _plain(obj: Any) -> Any:
    """numpy / torch scalars and arrays to plain Python (for JSON)."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> str:
    """Write ``obj`` as JSON atomically (temp file + ``os.replace``); returns the path.

    numpy / torch values become plain numbers and lists. NaN and inf are
    refused (ValueError): they are not valid JSON.
    """
    text = json.dumps(obj, indent=indent, sort_keys=False, default=_plain, allow_nan=False)
    return write_text_atomic(path, text + "\n")


def write_csv(
    path: str | os.PathLike,
    rows: Mapping[str, Any] | Iterable[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
) -> str:
    """Write :func:`format_csv` output atomically; returns the path."""
    return write_text_atomic(path, format_csv(rows, columns))


def write_markdown(
    path: str | os.PathLike,
    rows: Mapping[str, Any] | Iterable[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    floatfmt: str = ".4f",
) -> str:
    """Write :func:`format_markdown` output atomically; returns the path."""
    return write_text_atomic(path, format_markdown(rows, columns, floatfmt))
