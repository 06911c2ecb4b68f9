"""A folder of extracted features, written in resumable shards.

Layout::

    features.npy    (N, D) float32, L2-normalised rows, in paths.txt order
    paths.txt       the N image paths, one a line
    labels.csv      path,pid,camid (only when every name follows the Market/Duke pattern)
    extract.json    what made the features (model, weights, preprocessing), N, D

While extraction runs, ``parts/part_NNNNNN.npy`` hold finished shards of
``shard_size`` images and ``extract.json`` says ``"complete": false``. Started
again with the same image list and shard size, extraction skips the shards that
exist; ``features.npy`` appears (atomically) only when all are done, and the
shards are then removed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reid_ir.inference.labels import labels_from_paths, read_labels_csv, write_labels_csv
from reid_ir.reports.tables import write_text_atomic

logger = logging.getLogger(__name__)

FEATURES, PATHS, LABELS, META, PARTS = (
    "features.npy",
    "paths.txt",
    "labels.csv",
    "extract.json",
    "parts",
)


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def extract_to_folder(
    extractor: Any,
    paths: Sequence[str],
    out_dir: str | os.PathLike,
    shard_size: int = 4096,
    info: dict | None = None,
) -> dict:
    """Extract features of ``paths`` into ``out_dir``, resuming finished shards.

    Args:
        extractor: a :class:`reid_ir.inference.FeatureExtractor`.
        paths: image paths.
        out_dir: output folder (created).
        shard_size: images per saved shard (the unit of resumption).
        info: provenance saved in ``extract.json`` (model, weights, ...).

    Returns:
        The ``extract.json`` content.

    Raises:
        FileExistsError: ``out_dir`` holds features of another image list or
            shard size (nothing is changed).
    """
    out = Path(out_dir)
    paths = [str(p) for p in paths]
    if not paths:
        raise ValueError("no images to extract")
    if int(shard_size) < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size!r}")
    meta: dict[str, Any] = {
        "complete": False,
        "count": len(paths),
        "shard_size": int(shard_size),
        "info": info or {},
    }
    _check_resumable(out, paths, meta)
    out.mkdir(parents=True, exist_ok=True)
    (out / PARTS).mkdir(exist_ok=True)
    write_text_atomic(out / PATHS, "".join(p + "\n" for p in paths))
    write_text_atomic(out / META, json.dumps(meta, indent=1) + "\n")
    shards = range(0, len(paths), int(shard_size))
    done = 0
    for n, start in enumerate(shards):
        part = out / PARTS / f"part_{n:06d}.npy"
        chunk = paths[start : start + int(shard_size)]
        if part.is_file() and np.load(part, mmap_mode="r").shape[0] == len(chunk):
            done += 1
            continue
        feats = np.concatenate(list(extractor.iter_batches(chunk, progress=len(chunk) >= 1000)))
        _save_npy_atomic(part, feats.astype(np.float32, copy=False))
        logger.info("shard %d/%d: %d images", n + 1, len(shards), len(chunk))
    if done:
        logger.info("resumed: %d of %d shards were already extracted", done, len(shards))
    feats = np.concatenate([np.load(out / PARTS / f"part_{n:06d}.npy") for n in range(len(shards))])
    _save_npy_atomic(out / FEATURES, feats)
    labels = labels_from_paths(paths)
    if labels is not None:
        write_labels_csv(out / LABELS, paths, *labels)
    elif (out / LABELS).exists():
        (out / LABELS).unlink()
    meta.update(complete=True, dim=int(feats.shape[1]), labels=labels is not None)
    write_text_atomic(out / META, json.dumps(meta, indent=1) + "\n")
    shutil.rmtree(out / PARTS)
    logger.info("wrote %s: %d x %d features", out / FEATURES, *feats.shape)
    return meta


def _check_resumable(out: Path, paths: list[str], meta: dict) -> None:
    """Refuse a folder that holds another extraction; accept an empty one or the same job."""
    if not out.exists() or not any(out.iterdir()):
        return
    if not (out / META).is_file() or not (out / PATHS).is_file():
        raise FileExistsError(
            f"{out} exists and is not a features folder; choose another output folder"
        )
    old = json.loads((out / META).read_text(encoding="utf-8"))
    old_paths = (out / PATHS).read_text(encoding="utf-8").splitlines()
    if old_paths != paths or old.get("shard_size") != meta["shard_size"]:
        raise FileExistsError(
            f"{out} holds features of another image list or shard size "
            f"({len(old_paths)} images, shard size {old.get('shard_size')}); "
            "choose another output folder or delete it"
        )
    if old.get("info", {}) != meta["info"]:
        raise FileExistsError(
            f"{out} holds features made by another model ({old.get('info')}); choose another output folder"
        )


def load_features(folder: str | os.PathLike) -> tuple[np.ndarray, list[str], Any, dict]:
    """Read a folder written by :func:`extract_to_folder`.

    Returns:
        (features (N, D) float32, paths, (pids, camids) or None, extract.json content).

    Raises:
        FileNotFoundError: not a complete features folder (names what is missing).
    """
    folder = Path(folder)
    for name in (FEATURES, PATHS, META):
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"{folder / name} does not exist: expected a folder written by "
                "tools/extract_features.py (an unfinished extraction has no features.npy: run it again)"
            )
    feats = np.load(folder / FEATURES)
    paths = (folder / PATHS).read_text(encoding="utf-8").splitlines()
    if feats.ndim != 2 or feats.shape[0] != len(paths):
        raise ValueError(
            f"{folder}: {FEATURES} has shape {feats.shape} but {PATHS} lists {len(paths)} images"
        )
    labels = read_labels_csv(folder / LABELS, paths) if (folder / LABELS).is_file() else None
    meta = json.loads((folder / META).read_text(encoding="utf-8"))
    return feats.astype(np.float32, copy=False), paths, labels, meta
