"""What the inference command lines share: model options, image lists, logging.

``tools/extract_features.py``, ``tools/search_gallery.py`` and
``tools/export_model.py`` pick a model the same way: ``--run DIR`` (a training
run folder: ``config.yaml`` + the newest checkpoint, or ``--checkpoint P``), or
``--config YAML --weights FILE`` (a reid_ir checkpoint or torchreid weights).
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reid_ir.inference.extractor import FeatureExtractor

#: image file suffixes collected from folders
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
#: exit code for bad input (as tools/train_net.py)
EXIT_USER_ERROR = 2


def setup_logging() -> None:
    """INFO logs on stderr, the project's format."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s"
    )


def add_model_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    """``--run / --checkpoint / --config / --weights / --opts / --device / --batch-size``."""
    g = p.add_argument_group("model (--run, or --config with --weights)")
    g.add_argument("--run", help="training run folder (config.yaml + checkpoints/)")
    g.add_argument("--checkpoint", help="checkpoint file of --run (default: its newest)")
    g.add_argument("--config", help="config YAML (with --weights) instead of --run")
    g.add_argument("--weights", help="reid_ir checkpoint or torchreid weights (with --config)")
    g.add_argument(
        "--opts",
        nargs="*",
        default=[],
        metavar="KEY VALUE",
        help="config overrides, e.g. --opts test.feature before_bn",
    )
    g.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda:0, ...")
    g.add_argument(
        "--batch-size", type=int, help="images per forward pass (default: test.batch_size)"
    )
    g.add_argument(
        "--workers", type=int, default=0, help="image decoding processes (0: in-process)"
    )
    p.set_defaults(_model_required=required)


def model_source(args: argparse.Namespace) -> dict | None:
    """The model options as a JSON-able dict (saved with features), None when none given.

    Raises:
        ValueError: an incomplete or contradictory combination.
    """
    if args.run and (args.config or args.weights):
        raise ValueError("give either --run or --config with --weights, not both")
    if args.checkpoint and not args.run:
        raise ValueError("--checkpoint needs --run (with --config, pass the file as --weights)")
    if args.run:
        return {
            "run": os.path.abspath(args.run),
            "checkpoint": args.checkpoint,
            "opts": list(args.opts),
        }
    if args.config or args.weights:
        if not (args.config and args.weights):
            raise ValueError("--config and --weights go together")
        return {
            "config": os.path.abspath(args.config),
            "weights": os.path.abspath(args.weights),
            "opts": list(args.opts),
        }
    if args._model_required:
        raise ValueError("no model: pass --run RUN_DIR (or --config YAML --weights FILE)")
    return None


def build_extractor(source: dict, args: argparse.Namespace) -> FeatureExtractor:
    """A :class:`FeatureExtractor` for a :func:`model_source` dict."""
    kwargs: dict[str, Any] = {"device": args.device, "num_workers": args.workers}
    if args.batch_size:
        kwargs["batch_size"] = args.batch_size
    opts = source.get("opts") or []
    if "run" in source:
        return FeatureExtractor.from_run(source["run"], source.get("checkpoint"), opts, **kwargs)
    return FeatureExtractor.from_config(source["config"], source["weights"], opts, **kwargs)


def describe(extractor: FeatureExtractor) -> dict:
    """The settings that shape the features (saved beside them)."""
    cfg = extractor.cfg
    out: dict[str, Any] = {"weights": extractor.weights, "normalized": extractor.normalize}
    if cfg is not None:
        out.update(
            {
                "model": cfg.model.name,
                "neck": cfg.model.neck,
                "test_feature": cfg.test.feature,
                "height": int(cfg.data.height),
                "width": int(cfg.data.width),
                "norm_mean": list(cfg.data.norm_mean),
                "norm_std": list(cfg.data.norm_std),
            }
        )
    return out


def list_images(items: Sequence[str | os.PathLike]) -> list[str]:
    """Image files named by ``items``: files as given, folders searched recursively (sorted).

    Raises:
        FileNotFoundError: an item does not exist, or a folder holds no image.
    """
    out: list[str] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(
                str(p)
                for p in path.rglob("*")
                if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
            )
            if not found:
                raise FileNotFoundError(
                    f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) in it"
                )
            out.extend(found)
        elif path.is_file():
            out.append(str(path))
        else:
            raise FileNotFoundError(f"{path} does not exist")
    return out


def read_list_file(path: str | os.PathLike) -> list[str]:
    """Image paths from a text file, one a line (blank lines and ``#`` comments skipped).

    Raises:
        FileNotFoundError: the list file or a listed image does not exist (the first is named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"list file {path} does not exist")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    paths = [ln for ln in lines if ln and not ln.startswith("#")]
    if not paths:
        raise FileNotFoundError(f"list file {path} names no images")
    for i, p in enumerate(paths):
        if not os.path.isfile(p):
            raise FileNotFoundError(f"{path}, entry {i + 1}: image {p} does not exist")
    return paths
