#!/usr/bin/env python
"""Put finished runs (a hyper-parameter sweep's cells) into one table, with a sweep plot.

Examples::

    # every finished run under two sweep folders, with the keys the sweep changed
    python tools/collect_runs.py output/sweep output/earlier_cell \\
        --keys loss.name loss.margin.scale loss.margin.m --target market1501_imb --out output/sweep/summary

    # the same, plus rank-1 against each swept key (one-factor-at-a-time from s 30 / m 0.35),
    # softmax as a dashed reference line
    python tools/collect_runs.py output/sweep --keys loss.name loss.margin.scale loss.margin.m \\
        --target market1501_imb --out output/sweep/summary \\
        --group loss.name --base loss.margin.scale=30 loss.margin.m=0.35 --reference softmax

Writes ``runs.csv`` and ``runs.md`` (one row per run: the keys, rank-1 / mAP / mINP in %, the
last epoch's training accuracy, epochs, training minutes) and, with ``--base``, ``sweep_rank1.png``
and ``sweep_mAP.png``: for each key in ``--base``, the runs whose other ``--base`` keys are at their
base values, one curve per ``--group`` value.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from reid_ir.reports.plots import plot_sweep
from reid_ir.reports.runs import collect_runs
from reid_ir.reports.tables import write_csv, write_markdown

logger = logging.getLogger("collect_runs")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("roots", nargs="+", help="run folders, or folders searched for finished runs")
    p.add_argument("--keys", nargs="+", default=["loss.name"], help="dotted config keys to report")
    p.add_argument("--target", help="evaluation target in final_metrics.json (default: the only one)")
    p.add_argument("--out", required=True, help="folder for runs.csv, runs.md and the plots")
    p.add_argument("--group", help="config key naming a curve in the sweep plot (e.g. loss.name)")
    p.add_argument(
        "--base",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="the sweep's base point; one plot panel per key, varying it with the others at base",
    )
    p.add_argument("--title", default="", help="title of the sweep plots")
    p.add_argument(
        "--reference",
        nargs="*",
        default=[],
        help="--group values drawn as dashed lines (methods without the swept keys)",
    )
    return p.parse_args(argv)


def parse_base(items: list[str], keys: list[str]) -> dict[str, float]:
    """``["loss.margin.m=0.35"]`` -> ``{"loss.margin.m": 0.35}``; each key must be in ``keys``."""
    base = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--base {item!r}: expected KEY=VALUE")
        if key not in keys:
            raise ValueError(f"--base {item!r}: {key!r} is not one of --keys {keys}")
        try:
            base[key] = float(value)
        except ValueError:
            raise ValueError(f"--base {item!r}: {value!r} is not a number") from None
    return base


def sweep_panels(rows: list[dict], group: str, base: dict[str, float], metric: str, references: list[str]) -> dict:
    """``{swept key: {group value: (xs, ys)}}``: for each base key, the rows whose other base
    keys sit at their base values (references excluded; several runs at one point all shown)."""
    panels: dict[str, dict] = {}
    for key in base:
        curves: dict[str, tuple[list, list]] = {}
        for row in rows:
            if str(row[group]) in references or metric not in row:
                continue
            if all(abs(float(row[k]) - v) < 1e-9 for k, v in base.items() if k != key):
                xs, ys = curves.setdefault(str(row[group]), ([], []))
                xs.append(float(row[key]))
                ys.append(row[metric])
        if curves:
            panels[key] = curves
    return panels


def reference_lines(rows: list[dict], group: str, references: list[str], metric: str) -> dict[str, float]:
    """``{"softmax (n runs)": mean metric}`` for each --reference value that has runs."""
    lines = {}
    for value in references:
        values = [r[metric] for r in rows if str(r[group]) == value and metric in r]
        if values:
            lines[f"{value} ({len(values)} run{'s' if len(values) > 1 else ''})"] = sum(values) / len(values)
    return lines


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    keys = list(dict.fromkeys(args.keys + ([args.group] if args.group else [])))
    read = [*keys, "train.seed"] if "train.seed" not in keys else keys
    try:
        base = parse_base(args.base, keys)
        if base and not args.group:
            raise ValueError("--base needs --group (the key that names each curve)")
        rows = collect_runs(args.roots, read, args.target)
    except (FileNotFoundError, KeyError, ValueError) as e:
        logger.error("%s", e.args[0] if e.args else e)
        return 2
    if not rows:
        logger.error("no finished run (a folder with final_metrics.json) under %s", " ".join(args.roots))
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows.sort(key=lambda r: tuple(str(r[k]) for k in keys) + (r["run"],))
    columns = ["run", *dict.fromkeys([*keys, "train.seed"]), "rank1", "mAP", "mINP", "train_acc", "epochs", "train_min"]
    write_csv(out / "runs.csv", rows, columns)
    # config values as written (m 0.35 stays 0.35); metrics with one decimal
    shown = [{k: (f"{v:g}" if k in keys and isinstance(v, float) else v) for k, v in r.items()} for r in rows]
    write_markdown(out / "runs.md", shown, columns, floatfmt=".1f")
    logger.info("wrote %s and %s (%d runs)", out / "runs.csv", out / "runs.md", len(rows))
    for metric in ("rank1", "mAP") if base else ():
        panels = sweep_panels(rows, args.group, base, metric, args.reference)
        if not panels:
            logger.warning("no run at the --base point: no sweep plot")
            break
        refs = reference_lines(rows, args.group, args.reference, metric)
        path = plot_sweep(panels, out / f"sweep_{metric}.png", f"{metric} (%)", refs, title=args.title)
        logger.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
