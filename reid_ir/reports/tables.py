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


# --- statistics over seeds -----------------------------------------------------------------

#: The one rule behind every verdict (quoted above each statistics table).
VERDICT_RULE = (
    "better / worse: the 95% confidence interval of the mean paired difference to {baseline} "
    "(mean ± t(0.975, n-1) x sd / sqrt(n), n = pairs of the same split and seed) lies entirely "
    "above / below 0; otherwise no evidence (always so with fewer than 2 pairs)"
)
VERDICTS = ("better", "worse", "no evidence")


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1 in the denominator; None for one value).

    Raises:
        ValueError: No values.
    """
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("mean_std needs at least one value")
    mean = math.fsum(xs) / len(xs)
    if len(xs) < 2:
        return mean, None
    return mean, math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (len(xs) - 1))


def t_critical(n: int, confidence: float = 0.95) -> float:
    """Two-sided critical value of Student's t with ``n - 1`` degrees of freedom (n >= 2)."""
    if n < 2:
        raise ValueError(f"t_critical needs n >= 2 samples, got {n}")
    from scipy.stats import t

    return float(t.ppf(0.5 + confidence / 2, n - 1))


def paired_verdict(diffs: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """Mean, spread and verdict of paired differences (method - baseline), by :data:`VERDICT_RULE`.

    Args:
        diffs: (n,) differences, one per (split, seed) pair.
        confidence: level of the interval (the tables use 0.95).

    Returns:
        ``{"n", "mean", "std", "ci", "verdict"}``: ``std`` the sample std of the
        differences and ``ci`` the half-width of the interval (None below 2 pairs;
        ``mean`` None without pairs), ``verdict`` one of :data:`VERDICTS`.
    """
    n = len(diffs)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "ci": None, "verdict": "no evidence"}
    mean, std = mean_std(diffs)
    if std is None:
        return {"n": 1, "mean": mean, "std": None, "ci": None, "verdict": "no evidence"}
    ci = t_critical(n, confidence) * std / math.sqrt(n)
    verdict = "better" if mean - ci > 0 else "worse" if mean + ci < 0 else "no evidence"
    return {"n": n, "mean": mean, "std": std, "ci": ci, "verdict": verdict}


def seed_statistics(
    rows: Iterable[Mapping[str, Any]],
    metrics: Sequence[str] = ("rank1", "mAP"),
    tested: Sequence[str] = ("rank1", "mAP"),
    baseline: str = "softmax",
) -> list[dict[str, Any]]:
    """One row per (split, method): mean ± std over seeds and the paired test against ``baseline``.

    Args:
        rows: one mapping per finished run with ``split``, ``method``, ``seed`` and the metrics.
        metrics: keys averaged over seeds (``<m>_mean``, ``<m>_std``).
        tested: keys compared with ``baseline`` (``d_<m>_mean``, ``d_<m>_std``,
            ``d_<m>_n``, ``d_<m>_ci``, ``verdict_<m>``); a pair is the same split
            and seed, seeds without a baseline run are left out. The baseline's
            own rows get ``verdict_<m> = "baseline"``.
        baseline: the reference method.

    Returns:
        Rows in the order (split, method) first appear in ``rows``.

    Raises:
        ValueError: A row misses a key, or one (split, method, seed) appears twice.
    """
    runs: dict[tuple[str, str], dict[int, Mapping[str, Any]]] = {}
    for r in rows:
        missing = [
            k for k in dict.fromkeys(("split", "method", "seed", *metrics, *tested)) if k not in r
        ]
        if missing:
            raise ValueError(f"run row {dict(r)} misses {missing}")
        seeds = runs.setdefault((r["split"], r["method"]), {})
        if int(r["seed"]) in seeds:
            raise ValueError(f"two runs of {r['split']}/{r['method']} seed {r['seed']}")
        seeds[int(r["seed"])] = r
    out = []
    for (split, method), seeds in runs.items():
        row: dict[str, Any] = {"split": split, "method": method, "seeds": len(seeds)}
        for m in dict.fromkeys((*metrics, *tested)):
            row[f"{m}_mean"], row[f"{m}_std"] = mean_std([s[m] for s in seeds.values()])
        base = runs.get((split, baseline), {})
        for m in tested:
            if method == baseline:
                row.update({f"d_{m}_{k}": None for k in ("mean", "std", "n", "ci")})
                row[f"verdict_{m}"] = "baseline"
                continue
            diffs = [
                float(s[m]) - float(base[seed][m])
                for seed, s in sorted(seeds.items())
                if seed in base
            ]
            v = paired_verdict(diffs)
            row.update({f"d_{m}_{k}": v[k] for k in ("mean", "std", "n", "ci")})
            row[f"verdict_{m}"] = v["verdict"]
        out.append(row)
    return out


def _mean_pm(mean: float | None, std: float | None, digits: int = 1, signed: bool = False) -> str:
    if mean is None:
        return ""
    text = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    return text + (f" ± {std:.{digits}f}" if std is not None else "")


def format_statistics_markdown(
    stats: Sequence[Mapping[str, Any]],
    metrics: Sequence[tuple[str, str]] = (("rank-1", "rank1"), ("mAP", "mAP")),
    tested: Sequence[tuple[str, str]] = (("rank-1", "rank1"), ("mAP", "mAP")),
    baseline: str = "softmax",
    extra: Sequence[tuple[str, str]] = (),
) -> str:
    """Markdown: a header stating the statistics and the verdict rule, then the table.

    Args:
        stats: rows of :func:`seed_statistics`.
        metrics: (column title, key) shown as mean ± std over seeds.
        tested: (column title, key) shown as paired difference and verdict.
        baseline: the reference method named in the header.
        extra: (column title, key) copied as they are (e.g. minutes per cell, already formatted).
    """
    header = (
        f"Mean ± std over seeds (sample std, n - 1). Δ: mean ± std of the paired differences "
        f"to {baseline} (same split, same seed), pairs in brackets. Verdict, the same rule on "
        f"every row: {VERDICT_RULE.format(baseline=baseline)}.\n\n"
    )
    table = []
    for s in stats:
        row: dict[str, Any] = {"split": s["split"], "method": s["method"], "seeds": s["seeds"]}
        for title, key in metrics:
            row[title] = _mean_pm(s[f"{key}_mean"], s[f"{key}_std"])
        for title, key in tested:
            n = s[f"d_{key}_n"]
            diff = _mean_pm(s[f"d_{key}_mean"], s[f"d_{key}_std"], signed=True)
            row[f"Δ {title}"] = f"{diff} ({n})" if diff else ""
            row[f"{title} verdict"] = s[f"verdict_{key}"]
        for title, key in extra:
            row[title] = s.get(key)
        table.append(row)
    if not table:
        return header + "no finished runs yet\n"
    return header + format_markdown(table, columns=list(table[0]))
