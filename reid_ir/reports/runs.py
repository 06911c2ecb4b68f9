"""Rows from finished run folders: the config keys a sweep changed beside the run's results.

A run folder is what ``tools/train_net.py`` writes: ``config.yaml`` (the full config),
``final_metrics.json`` (written last) and ``train_log.jsonl`` (one line per epoch). A folder
without ``final_metrics.json`` did not finish and is skipped. Used by ``tools/collect_runs.py``
to put a hyper-parameter sweep (cells under different work dirs) into one table.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

#: Metrics copied from the evaluation target, in %.
METRICS = ("rank1", "mAP", "mINP")


def config_value(config: Mapping[str, Any], key: str, where: str | Path = "config") -> Any:
    """The value of a dotted key (``loss.margin.m``) in a nested config mapping.

    Raises:
        KeyError: the key is not in the config (the message names ``where`` and the key).
    """
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(f"{where}: no config key {key!r}")
        node = node[part]
    return node


def find_runs(roots: Iterable[str | Path]) -> list[Path]:
    """Finished run folders (holding ``final_metrics.json``) under ``roots``, sorted.

    Raises:
        FileNotFoundError: a root does not exist.
    """
    runs: set[Path] = set()
    for root in map(Path, roots):
        if not root.exists():
            raise FileNotFoundError(f"{root}: no such run folder or directory")
        runs.update(p.parent for p in root.rglob("final_metrics.json"))
    return sorted(runs)


def run_row(run: Path, keys: Sequence[str], target: str | None = None, name: str | None = None) -> dict:
    """One row: ``run`` (``name`` or the folder), each key's value, metrics (%), training accuracy
    of the last epoch (%), epochs and training minutes.

    Args:
        run: a finished run folder.
        keys: dotted config keys to report, read from the run's ``config.yaml``.
        target: evaluation target in ``final_metrics.json``; None takes the only one.

    Raises:
        KeyError: a key missing from the config, or a target missing from the results.
        ValueError: several targets and none chosen, or a file that does not parse.
    """
    try:
        config = yaml.safe_load((run / "config.yaml").read_text())
        final = json.loads((run / "final_metrics.json").read_text())
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        raise ValueError(f"{run}: unreadable config.yaml or final_metrics.json ({e})") from e
    results = final["results"]
    if target is None:
        if len(results) != 1:
            raise ValueError(f"{run}: several evaluation targets {sorted(results)}; choose one with --target")
        target = next(iter(results))
    if target not in results:
        raise KeyError(f"{run / 'final_metrics.json'}: no target {target!r} (has {sorted(results)})")
    row: dict[str, Any] = {"run": name or str(run)}
    row.update({key: config_value(config, key, run / "config.yaml") for key in keys})
    row.update({m: 100.0 * results[target][m] for m in METRICS if m in results[target]})
    log = run / "train_log.jsonl"
    epochs = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
    row["train_acc"] = epochs[-1].get("acc") if epochs else None
    row["epochs"] = final.get("epochs")
    row["train_min"] = round(final["train_seconds"] / 60.0, 1) if "train_seconds" in final else None
    return row


def collect_runs(roots: Iterable[str | Path], keys: Sequence[str], target: str | None = None) -> list[dict]:
    """:func:`run_row` of every finished run under ``roots``; ``run`` is the path relative to the
    root it was found under (prefixed with that root's name)."""
    rows = []
    for root in map(Path, roots):
        for run in find_runs([root]):
            name = str(Path(root.name) / run.relative_to(root)) if run != root else root.name
            rows.append(run_row(run, keys, target, name))
    logger.info("collected %d finished runs", len(rows))
    return rows
