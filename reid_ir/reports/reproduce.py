"""The reproduction grid: methods x splits x seeds, each cell one ``train_net`` run.

A cell is a folder ``<work_dir>/<split>/<method>/seed<k>/`` holding a composed
``cell.yaml`` (``_BASE_`` = method config + split config + preset), the run's
output and, when finished, ``final_metrics.json``. Running the grid again skips
finished cells and resumes a killed cell from its last checkpoint; every cell
goes through ``tools/train_net.py`` in a subprocess, the same code path a user runs.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml

from reid_ir.reports.plots import plot_angle_comparison, plot_metric_by_method
from reid_ir.reports.tables import format_markdown, write_csv, write_text_atomic

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
TRAIN_NET = REPO / "tools" / "train_net.py"

#: The methods of the tables and the config of each under configs/<dataset>/.
DEFAULT_METHODS = (
    "softmax", "weighted_softmax", "class_balanced", "am_softmax", "ir_am_softmax",
    "unpg_am_softmax", "unpg_ir_am_softmax", "clmle",
)
DEFAULT_SPLITS = ("long_tail_rho50", "balanced_control_long_tail_rho50")
PRESETS = ("cpu", "paper")


@dataclass(frozen=True)
class Cell:
    """One (method, split, seed) run of the grid."""

    method: str
    split: str
    seed: int
    folder: Path

    @property
    def done(self) -> bool:
        return (self.folder / "final_metrics.json").is_file()

    @property
    def started(self) -> bool:
        return (self.folder / "checkpoints" / "last_checkpoint").is_file()


def method_config(dataset: str, method: str) -> tuple[Path | None, list[str]]:
    """Config file and extra overrides of ``method``.

    A method is a YAML under ``configs/<dataset>/`` or, failing that, any name in
    the loss registry (run on ``configs/base.yaml`` with ``loss.name <method>``).

    Raises:
        ValueError: neither a config nor a registered loss, listing both.
    """
    path = CONFIGS / dataset / f"{method}.yaml"
    if path.is_file():
        return path, []
    from reid_ir.losses import LOSSES

    if method in LOSSES:
        return None, ["loss.name", method]
    known = sorted(p.stem for p in (CONFIGS / dataset).glob("*.yaml"))
    raise ValueError(f"unknown method {method!r}: no configs/{dataset}/{method}.yaml and no such loss; "
                     f"configs: {known}; losses: {LOSSES.names()}")


def split_config(dataset: str, split: str) -> Path:
    """``configs/<dataset>/splits/<split>.yaml``; unknown names list the known ones."""
    path = CONFIGS / dataset / "splits" / f"{split}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (CONFIGS / dataset / "splits").glob("*.yaml"))
        raise ValueError(f"unknown split {split!r} for {dataset}: known splits {known}")
    return path


def plan_cells(dataset: str, methods: Sequence[str], splits: Sequence[str], seeds: dict[str, Sequence[int]] | Sequence[int], work_dir: Path) -> list[Cell]:
    """The grid's cells; ``seeds`` is a list for every method or a per-method dict."""
    cells = []
    for split in splits:
        split_config(dataset, split)
        for method in methods:
            method_config(dataset, method)
            method_seeds = seeds.get(method, seeds.get("*", [1])) if isinstance(seeds, dict) else seeds
            for seed in method_seeds:
                cells.append(Cell(method, split, int(seed), work_dir / split / method / f"seed{seed}"))
    return cells


def write_cell_config(cell: Cell, dataset: str, preset: str, root: str) -> Path:
    """Compose ``cell.yaml``: method config, then split, then preset, then cell keys."""
    method_path, extra = method_config(dataset, cell.method)
    bases = [str(method_path or CONFIGS / "base.yaml"), str(split_config(dataset, cell.split)), str(CONFIGS / "presets" / f"{preset}.yaml")]
    body: dict = {"_BASE_": bases, "data": {"root": str(root), "save_dir": str(cell.folder)}, "train": {"seed": cell.seed}}
    if extra:
        body.setdefault("loss", {})["name"] = extra[1]
    cell.folder.mkdir(parents=True, exist_ok=True)
    path = cell.folder / "cell.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False), encoding="utf-8")
    return path


def run_cell(cell: Cell, dataset: str, preset: str, root: str, threads: int = 1, extra_opts: Sequence[str] = ()) -> dict:
    """Train and evaluate one cell in a subprocess (resuming it if it was killed)."""
    if cell.done:
        logger.info("skip %s/%s/seed%d: finished", cell.split, cell.method, cell.seed)
        return json.loads((cell.folder / "final_metrics.json").read_text())
    config = write_cell_config(cell, dataset, preset, root)
    cmd = [sys.executable, str(TRAIN_NET), "--config-file", str(config)]
    if cell.started:
        cmd += ["--resume", str(cell.folder)]
    cmd += ["train.num_threads", str(threads), *extra_opts]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    logger.info("run %s/%s/seed%d: %s", cell.split, cell.method, cell.seed, " ".join(cmd))
    tic = time.time()
    with open(cell.folder / "stdout.txt", "a", encoding="utf-8") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO, check=False)
    if proc.returncode != 0 or not cell.done:
        raise RuntimeError(f"cell {cell.folder} failed (exit {proc.returncode}); see {cell.folder}/stdout.txt")
    logger.info("done %s/%s/seed%d in %.1f min", cell.split, cell.method, cell.seed, (time.time() - tic) / 60)
    return json.loads((cell.folder / "final_metrics.json").read_text())


def run_grid(cells: Sequence[Cell], dataset: str, preset: str, root: str, jobs: int = 1, threads: int = 1, extra_opts: Sequence[str] = ()) -> list[str]:
    """Run every cell, ``jobs`` at a time; returns the failures (the others still run)."""
    failures = []

    def _one(cell: Cell) -> None:
        try:
            run_cell(cell, dataset, preset, root, threads, extra_opts)
        except RuntimeError as e:
            logger.error("%s", e)
            failures.append(str(e))

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(_one, cells))
    return failures


def collect(cells: Iterable[Cell], dataset_target: str) -> list[dict]:
    """One row per finished cell: method, split, seed, rank-1/5, mAP, mINP, times."""
    rows = []
    for cell in cells:
        if not cell.done:
            continue
        final = json.loads((cell.folder / "final_metrics.json").read_text())
        metrics = final["results"].get(dataset_target) or next(iter(final["results"].values()))
        rows.append({
            "method": cell.method, "split": cell.split, "seed": cell.seed,
            "rank1": 100 * metrics["rank1"], "rank5": 100 * metrics["rank5"],
            "mAP": 100 * metrics["mAP"], "mINP": 100 * metrics["mINP"],
            "train_min": final["train_seconds"] / 60, "cell_min": final["wall_seconds"] / 60,
        })
    return rows


def summarise(rows: Sequence[dict]) -> list[dict]:
    """Mean (and spread over seeds) per (split, method), in the order rows arrive."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["split"], r["method"]), []).append(r)
    out = []
    for (split, method), rs in groups.items():
        row = {"split": split, "method": method, "seeds": len(rs)}
        for key in ("rank1", "rank5", "mAP", "mINP", "train_min", "cell_min"):
            values = [r[key] for r in rs]
            row[key] = statistics.fmean(values)
            row[f"{key}_spread"] = (max(values) - min(values)) if len(values) > 1 else None
        out.append(row)
    return out


def format_table(summary: Sequence[dict]) -> str:
    """Markdown table, one row per (split, method); ``a ± b``: mean ± half the range over seeds."""

    def shown(row: dict, key: str) -> str:
        spread = row.get(f"{key}_spread")
        return f"{row[key]:.1f}" + (f" ± {spread / 2:.1f}" if spread is not None else "")

    table = [
        {"split": r["split"], "method": r["method"], "seeds": r["seeds"],
         **{name: shown(r, key) for name, key in (("rank-1", "rank1"), ("rank-5", "rank5"), ("mAP", "mAP"), ("mINP", "mINP"))},
         "train (min)": f"{r['train_min']:.1f}", "cell (min)": f"{r['cell_min']:.1f}"}
        for r in summary
    ]
    return format_markdown(table, columns=list(table[0]) if table else None)


def angle_runs(cells: Iterable[Cell], split: str, methods: Sequence[str] = ("softmax", "ir_am_softmax")) -> dict:
    """``{method: (class sizes, angles)}`` from the last diagnostics CSV of each method's first seed."""
    runs = {}
    for cell in cells:
        if cell.split != split or cell.method not in methods or cell.method in runs:
            continue
        csvs = sorted((cell.folder / "diagnostics").glob("angles_epoch_*.csv"))
        if not csvs:
            continue
        with open(csvs[-1], newline="", encoding="utf-8") as f:
            data = list(csv.DictReader(f))
        runs[cell.method] = ([float(r["train_images"]) for r in data], [float(r["angle_deg"]) for r in data])
    return runs


def write_outputs(rows: Sequence[dict], cells: Sequence[Cell], out_dir: Path) -> dict[str, Path]:
    """``table.md`` (seeds averaged), ``table.csv`` (one row per cell) and the plots."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarise(rows)
    paths = {"md": out_dir / "table.md"}
    write_text_atomic(paths["md"], format_table(summary) if summary else "no finished cells yet\n")
    paths["csv"] = Path(write_csv(out_dir / "table.csv", rows)) if rows else out_dir / "table.csv"
    if summary:
        paths["map_png"] = Path(plot_metric_by_method(summary, out_dir / "map_by_method.png", "mAP", "mAP per method and split"))
        paths["rank1_png"] = Path(plot_metric_by_method(summary, out_dir / "rank1_by_method.png", "rank1", "rank-1 per method and split"))
    for split in dict.fromkeys(c.split for c in cells):
        runs = angle_runs(cells, split)
        if runs:
            paths[f"angles_{split}"] = Path(plot_angle_comparison(
                runs, out_dir / f"angles_{split}.png", f"class weight vs feature center, {split} (last epoch)"))
    return paths
