"""The reproduction grid: methods x splits x seeds, each cell one ``train_net`` run.

A cell is a folder ``<work_dir>/<split>/<method>/seed<k>/`` holding a composed
``cell.yaml`` (``_BASE_`` = method config + dataset config + split config + preset), the run's
output and, when finished, ``final_metrics.json``. Running the grid again skips
finished cells and resumes a killed cell from its last checkpoint; every cell
goes through ``tools/train_net.py`` in a subprocess, the same code path a user runs.

Two protocols:

* ``scratch``: every cell trains from the preset's initial weights on a split of
  all training identities (folders ``<work_dir>/<split>/...``).
* ``warm_start``: the training identities are split into two fixed halves P and
  F (``data.imbalance.id_half``, see :mod:`reid_ir.data.imbalance`). Step 1
  trains one softmax backbone on all images of P (the "pretraining", folder
  ``<work_dir>/pretrain_P/softmax/seed<k>/``) and exports its model weights to
  ``<work_dir>/pretrain_P/backbone.pth``; it is skipped when that file exists.
  Step 2 fine-tunes every method from those weights (``model.load_weights``) on
  splits of F (folders ``<work_dir>/F_<split>/...``). Both evaluate on the
  dataset's own query / gallery, whose identities are in neither half.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml

from reid_ir.reports.plots import plot_angle_comparison, plot_epoch_curves, plot_metrics_with_std
from reid_ir.reports.tables import (
    format_statistics_markdown,
    seed_statistics,
    write_csv,
    write_text_atomic,
)

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
TRAIN_NET = REPO / "tools" / "train_net.py"

#: The methods of the tables, each a config under configs/methods/.
DEFAULT_METHODS = (
    "softmax", "weighted_softmax", "class_balanced", "am_softmax", "ir_am_softmax",
    "unpg_am_softmax", "unpg_ir_am_softmax", "clmle",
)
DEFAULT_SPLITS = ("long_tail_rho50", "balanced_control_long_tail_rho50")
PRESETS = ("cpu", "paper")
PROTOCOLS = ("scratch", "warm_start")
#: Splits of half F fine-tuned on by default in the warm-start protocol.
DEFAULT_WARM_SPLITS = ("full", "long_tail_rho50", "balanced_control_long_tail_rho50")
#: The warm start's pretraining: this method on this split of half P.
PRETRAIN_METHOD, PRETRAIN_SPLIT = "softmax", "full"
#: Methods whose weight-center angles are compared in one figure per split.
ANGLE_METHODS = ("softmax", "am_softmax", "ir_am_softmax")
#: train_log.jsonl keys of UNPG's per-epoch pair statistics -> axis label.
UNPG_KEYS = {"unpg_pair_mass": "unpg_pair_mass (pair-mass share)", "unpg_kept": "unpg_kept (negative pairs kept per batch)"}


@dataclass(frozen=True)
class Cell:
    """One (method, split, seed) run of the grid.

    ``id_half`` ('' / 'P' / 'F') restricts the split to one identity half;
    ``init_weights`` is the file fine-tuning starts from (``model.load_weights``).
    """

    method: str
    split: str
    seed: int
    folder: Path
    id_half: str = ""
    init_weights: Path | None = None

    @property
    def label(self) -> str:
        """The split as tables name it: ``long_tail_rho50`` or, on a half, ``F_long_tail_rho50``."""
        return f"{self.id_half}_{self.split}" if self.id_half else self.split

    @property
    def done(self) -> bool:
        return (self.folder / "final_metrics.json").is_file()

    @property
    def started(self) -> bool:
        return (self.folder / "checkpoints" / "last_checkpoint").is_file()


def method_config(method: str) -> tuple[Path | None, list[str]]:
    """Config file and extra overrides of ``method``.

    A method is a YAML under ``configs/methods/`` or, failing that, any name in
    the loss registry (run on ``configs/base.yaml`` with ``loss.name <method>``).

    Raises:
        ValueError: neither a config nor a registered loss, listing both.
    """
    path = CONFIGS / "methods" / f"{method}.yaml"
    if path.is_file():
        return path, []
    from reid_ir.losses import LOSSES

    if method in LOSSES:
        return None, ["loss.name", method]
    known = sorted(p.stem for p in (CONFIGS / "methods").glob("*.yaml"))
    raise ValueError(f"unknown method {method!r}: no configs/methods/{method}.yaml and no such loss; "
                     f"configs: {known}; losses: {LOSSES.names()}")


def dataset_config(dataset: str) -> Path:
    """``configs/datasets/<dataset>.yaml``; unknown names list the known ones."""
    path = CONFIGS / "datasets" / f"{dataset}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (CONFIGS / "datasets").glob("*.yaml"))
        raise ValueError(f"unknown dataset {dataset!r}: known datasets {known}")
    return path


def split_config(dataset: str, split: str) -> Path:
    """``configs/<dataset>/splits/<split>.yaml``; unknown names list the known ones."""
    path = CONFIGS / dataset / "splits" / f"{split}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (CONFIGS / dataset / "splits").glob("*.yaml"))
        raise ValueError(f"unknown split {split!r} for {dataset}: known splits {known}")
    return path


def plan_cells(dataset: str, methods: Sequence[str], splits: Sequence[str], seeds: dict[str, Sequence[int]] | Sequence[int], work_dir: Path) -> list[Cell]:
    """The grid's cells; ``seeds`` is a list for every method or a per-method dict."""
    dataset_config(dataset)
    cells = []
    for split in splits:
        split_config(dataset, split)
        for method in methods:
            method_config(method)
            method_seeds = seeds.get(method, seeds.get("*", [1])) if isinstance(seeds, dict) else seeds
            for seed in method_seeds:
                cells.append(Cell(method, split, int(seed), work_dir / split / method / f"seed{seed}"))
    return cells


@dataclass(frozen=True)
class WarmStartPlan:
    """The warm-start protocol: one pretraining cell, its exported weights, the fine-tuning cells."""

    pretrain: Cell
    weights: Path
    cells: list[Cell]


def plan_warm_start(
    dataset: str,
    methods: Sequence[str],
    splits: Sequence[str],
    seeds: dict[str, Sequence[int]] | Sequence[int],
    work_dir: Path,
    pretrain_seed: int = 1,
) -> WarmStartPlan:
    """Plan the warm start: softmax on all of half P, then every method on splits of half F.

    Raises:
        ValueError: an unknown method or split (listing the known ones).
    """
    work_dir = Path(work_dir)
    pre_dir = work_dir / "pretrain_P"
    pretrain = Cell(PRETRAIN_METHOD, PRETRAIN_SPLIT, int(pretrain_seed),
                    pre_dir / PRETRAIN_METHOD / f"seed{pretrain_seed}", id_half="P")
    split_config(dataset, PRETRAIN_SPLIT)
    weights = pre_dir / "backbone.pth"
    cells = [
        Cell(c.method, c.split, c.seed, work_dir / f"F_{c.split}" / c.method / f"seed{c.seed}",
             id_half="F", init_weights=weights)
        for c in plan_cells(dataset, methods, splits, seeds, work_dir)
    ]
    return WarmStartPlan(pretrain, weights, cells)


def export_backbone(run_folder: Path, dest: Path) -> Path:
    """Write the model weights of a finished run's last checkpoint to ``dest`` (atomically).

    The file holds ``{"model": state_dict, "epoch", "source"}``, which
    ``model.load_weights`` reads (the classifier lives in the loss and is not kept).

    Raises:
        FileNotFoundError: the run has no final_metrics.json (not finished) or no checkpoint.
    """
    from reid_ir.engine.checkpoint import atomic_torch_save, find_checkpoint, load_checkpoint

    run_folder = Path(run_folder)
    if not (run_folder / "final_metrics.json").is_file():
        raise FileNotFoundError(f"{run_folder} has not finished (no final_metrics.json): nothing to export")
    if find_checkpoint(run_folder) is None:
        raise FileNotFoundError(f"{run_folder} holds no checkpoint to export the backbone from")
    ckpt = load_checkpoint(run_folder)
    atomic_torch_save({"model": ckpt["model"], "epoch": ckpt["epoch"], "source": ckpt["path"]}, dest)
    logger.info("exported the model weights of %s (epoch %d) to %s", ckpt["path"], ckpt["epoch"], dest)
    return Path(dest)


def write_cell_config(cell: Cell, dataset: str, preset: str, root: str) -> Path:
    """Compose ``cell.yaml``: method config, then dataset, then split, then preset, then cell keys."""
    method_path, extra = method_config(cell.method)
    bases = [str(method_path or CONFIGS / "base.yaml"), str(dataset_config(dataset)), str(split_config(dataset, cell.split)),
             str(CONFIGS / "presets" / f"{preset}.yaml")]
    body: dict = {"_BASE_": bases, "data": {"root": str(root), "save_dir": str(cell.folder)}, "train": {"seed": cell.seed}}
    if extra:
        body.setdefault("loss", {})["name"] = extra[1]
    if cell.id_half:
        body["data"]["imbalance"] = {"id_half": cell.id_half}
    if cell.init_weights is not None:
        body.setdefault("model", {})["load_weights"] = str(Path(cell.init_weights).absolute())
    cell.folder.mkdir(parents=True, exist_ok=True)
    path = cell.folder / "cell.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False), encoding="utf-8")
    return path


def run_cell(cell: Cell, dataset: str, preset: str, root: str, threads: int = 1, extra_opts: Sequence[str] = ()) -> dict:
    """Train and evaluate one cell in a subprocess (resuming it if it was killed)."""
    if cell.done:
        logger.info("skip %s/%s/seed%d: finished", cell.label, cell.method, cell.seed)
        return json.loads((cell.folder / "final_metrics.json").read_text())
    config = write_cell_config(cell, dataset, preset, root)
    cmd = [sys.executable, str(TRAIN_NET), "--config-file", str(config)]
    if cell.started:
        cmd += ["--resume", str(cell.folder)]
    cmd += ["train.num_threads", str(threads), *extra_opts]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    logger.info("run %s/%s/seed%d: %s", cell.label, cell.method, cell.seed, " ".join(cmd))
    tic = time.time()
    with open(cell.folder / "stdout.txt", "a", encoding="utf-8") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO, check=False)
    if proc.returncode != 0 or not cell.done:
        raise RuntimeError(f"cell {cell.folder} failed (exit {proc.returncode}); see {cell.folder}/stdout.txt")
    logger.info("done %s/%s/seed%d in %.1f min", cell.label, cell.method, cell.seed, (time.time() - tic) / 60)
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


def run_warm_start(plan: WarmStartPlan, dataset: str, preset: str, root: str, jobs: int = 1, threads: int = 1,
                   extra_opts: Sequence[str] = (), pretrain_opts: Sequence[str] = ()) -> list[str]:
    """Step 1 (pretraining on P, skipped when its weights exist), then step 2 (the grid on F).

    The pretraining runs alone, with ``jobs * threads`` threads; ``pretrain_opts``
    follow ``extra_opts`` on its command line only. Returns the failures; a
    failed pretraining stops before fine-tuning.
    """
    if plan.weights.is_file():
        logger.info("skip pretraining: %s exists (delete it to pretrain again)", plan.weights)
    else:
        try:
            run_cell(plan.pretrain, dataset, preset, root, max(1, jobs * threads), [*extra_opts, *pretrain_opts])
            export_backbone(plan.pretrain.folder, plan.weights)
        except (RuntimeError, FileNotFoundError) as e:
            logger.error("pretraining failed, no fine-tuning started: %s", e)
            return [str(e)]
    return run_grid(plan.cells, dataset, preset, root, jobs, threads, extra_opts)


def collect(cells: Iterable[Cell], dataset_target: str) -> list[dict]:
    """One row per finished cell: method, split, seed, rank-1/5, mAP, mINP, times."""
    rows = []
    for cell in cells:
        if not cell.done:
            continue
        final = json.loads((cell.folder / "final_metrics.json").read_text())
        metrics = final["results"].get(dataset_target) or next(iter(final["results"].values()))
        rows.append({
            "method": cell.method, "split": cell.label, "seed": cell.seed,
            "rank1": 100 * metrics["rank1"], "rank5": 100 * metrics["rank5"],
            "mAP": 100 * metrics["mAP"], "mINP": 100 * metrics["mINP"],
            "train_min": final["train_seconds"] / 60, "cell_min": final["wall_seconds"] / 60,
        })
    return rows


def summarise(rows: Sequence[dict], baseline: str = "softmax") -> list[dict]:
    """Mean ± std over seeds per (split, method) and the paired test against ``baseline``
    (see :func:`reid_ir.reports.tables.seed_statistics`), in the order rows arrive."""
    return seed_statistics(rows, metrics=("rank1", "rank5", "mAP", "mINP", "train_min", "cell_min"),
                           tested=("rank1", "mAP"), baseline=baseline)


def format_table(summary: Sequence[dict], baseline: str = "softmax") -> str:
    """Markdown: the statistics header, then one row per (split, method)."""
    shown = [{**r, "cell (min)": f"{r['cell_min_mean']:.1f}"} for r in summary]
    return format_statistics_markdown(
        shown, metrics=(("rank-1", "rank1"), ("mAP", "mAP"), ("rank-5", "rank5"), ("mINP", "mINP")),
        baseline=baseline, extra=(("cell (min)", "cell (min)"),))


def angle_runs(cells: Iterable[Cell], split: str, methods: Sequence[str] = ANGLE_METHODS) -> dict:
    """``{method: (class sizes, angles)}`` from the last diagnostics CSV of each method's lowest seed.

    ``split`` is a cell label (``F_long_tail_rho50`` on a half); classes without
    an angle (empty ``angle_deg``: not seen that epoch) are left out; methods come in
    the order of ``methods``.

    Raises:
        ValueError: a CSV without the weight_center_angle hook's columns, naming the file.
    """
    runs = {}
    for cell in sorted(cells, key=lambda c: c.seed):
        if cell.label != split or cell.method not in methods or cell.method in runs:
            continue
        csvs = sorted((cell.folder / "diagnostics").glob("angles_epoch_*.csv"))
        if not csvs:
            continue
        with open(csvs[-1], newline="", encoding="utf-8") as f:
            data = list(csv.DictReader(f))
        if data and not {"train_images", "angle_deg"} <= set(data[0]):
            raise ValueError(f"{csvs[-1]}: expected columns train_images and angle_deg, got {list(data[0])}")
        data = [r for r in data if r["angle_deg"] not in ("", None)]
        runs[cell.method] = ([float(r["train_images"]) for r in data], [float(r["angle_deg"]) for r in data])
    return {m: runs[m] for m in methods if m in runs}


def unpg_curves(cells: Iterable[Cell]) -> dict[str, dict[str, tuple[list[int], list[float]]]]:
    """UNPG's per-epoch pair statistics from each UNPG cell's ``train_log.jsonl``.

    Returns:
        ``{axis label: {"<method> <split> seed<k>": (epochs, values)}}`` for each key
        of :data:`UNPG_KEYS` that some log holds; empty when none does.
    """
    panels: dict[str, dict[str, tuple[list[int], list[float]]]] = {}
    for cell in cells:
        log = cell.folder / "train_log.jsonl"
        if "unpg" not in cell.method or not log.is_file():
            continue
        records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
        for key, label in UNPG_KEYS.items():
            points = [(int(r["epoch"]), float(r[key])) for r in records if key in r and "epoch" in r]
            if points:
                epochs, values = zip(*sorted(points), strict=True)
                panels.setdefault(label, {})[f"{cell.method} {cell.label} seed{cell.seed}"] = (list(epochs), list(values))
    return panels


def write_outputs(rows: Sequence[dict], cells: Sequence[Cell], out_dir: Path, notes: str = "") -> dict[str, Path]:
    """``table.md`` (statistics over seeds, ``notes`` above), ``stats.csv`` (the same at full
    precision), ``table.csv`` (one row per cell) and the plots.

    Plots: ``rank1_map_by_method.png`` (mean, error bar = std over seeds),
    ``angles_<split>.png`` (weight-center angle vs class size of :data:`ANGLE_METHODS`)
    and ``unpg_pair_mass.png`` (skipped, with a log line, when no log holds ``unpg_pair_mass``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarise(rows)
    paths = {"md": out_dir / "table.md"}
    write_text_atomic(paths["md"], (notes + "\n\n" if notes else "") + (format_table(summary) if summary else "no finished cells yet\n"))
    paths["csv"] = Path(write_csv(out_dir / "table.csv", rows)) if rows else out_dir / "table.csv"
    if summary:
        paths["stats_csv"] = Path(write_csv(out_dir / "stats.csv", summary))
        paths["metrics_png"] = Path(plot_metrics_with_std(summary, out_dir / "rank1_map_by_method.png"))
    for split in dict.fromkeys(c.label for c in cells):
        runs = angle_runs(cells, split)
        if runs:
            paths[f"angles_{split}"] = Path(plot_angle_comparison(
                runs, out_dir / f"angles_{split}.png", f"class weight vs feature center, {split} (last epoch)"))
    unpg_cells = [c for c in cells if "unpg" in c.method and c.done]
    panels = unpg_curves(unpg_cells)
    if UNPG_KEYS["unpg_pair_mass"] in panels:
        paths["unpg_png"] = Path(plot_epoch_curves(panels, out_dir / "unpg_pair_mass.png", "UNPG per epoch"))
    elif unpg_cells:
        logger.info("skip the UNPG pair-mass plot: no 'unpg_pair_mass' in the train_log.jsonl of %d UNPG cells",
                    len(unpg_cells))
    return paths


def pretrain_note(plan: WarmStartPlan, dataset_target: str) -> str:
    """One Markdown line on the warm start's pretraining (its result if finished)."""
    cell = plan.pretrain
    text = (f"Warm start: fine-tuned from `{plan.weights}`, softmax trained on all of identity half P "
            f"(seed {cell.seed}, run folder `{cell.folder}`)")
    rows = collect([cell], dataset_target)
    if rows:
        r = rows[0]
        text += (f"; that backbone alone (P only, no fine-tuning) scores rank-1 {r['rank1']:.1f}, "
                 f"mAP {r['mAP']:.1f} on the query/gallery ({r['cell_min']:.1f} min)")
    return text + "."
