#!/usr/bin/env python
"""Export a trained model as TorchScript, ONNX and torchreid-format weights, with parity checks.

Examples::

    python tools/export_model.py --run log/demo/20261123-101500 --out exported/
    python tools/export_model.py --run RUN --out exported/ --formats onnx \\
        --images reid-data/synthetic_market/Market-1501-v15.09.15/query

Writes into --out: ``model.torchscript.pt`` and ``model.onnx`` (input ``images``
(B, 3, H, W) float32 preprocessed as ``export.json`` says; output ``features``
(B, D) float32, L2-normalised unless --no-normalize), ``torchreid_weights.pth``
(``{'state_dict': ...}`` for torchreid's ``FeatureExtractor`` /
``load_pretrained_weights``) and ``export.json`` (preprocessing, parity numbers).
Each file is read back and run on the sample images (--images, else 8 seeded
random images); the largest |difference| from the eager model is printed, and the
tool fails (exit 1) when one exceeds --tol.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from reid_ir.inference import cli
from reid_ir.inference import export as ex
from reid_ir.reports.tables import write_text_atomic

logger = logging.getLogger("export_model")

FILES = {
    "torchscript": "model.torchscript.pt",
    "onnx": "model.onnx",
    "torchreid": "torchreid_weights.pth",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--formats", nargs="+", choices=ex.FORMATS, default=list(ex.FORMATS))
    p.add_argument(
        "--images", nargs="+", help="sample images / folders for the parity check (first 8)"
    )
    p.add_argument("--num-samples", type=int, default=8, help="sample images used")
    p.add_argument(
        "--no-normalize", action="store_true", help="export raw features, not L2-normalised"
    )
    p.add_argument("--opset", type=int, default=17, help="ONNX opset")
    p.add_argument("--tol", type=float, default=1e-4, help="largest |difference| accepted")
    cli.add_model_args(p)
    return p.parse_args(argv)


def sample_images(args: argparse.Namespace, size: tuple[int, int]) -> tuple[list[np.ndarray], str]:
    """(H, W, 3) uint8 RGB sample images and a description of where they came from."""
    n = max(1, args.num_samples)
    if args.images:
        paths = cli.list_images(args.images)[:n]
        images = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
        return images, f"{len(images)} images from {args.images}"
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (size[0], size[1], 3), dtype=np.uint8) for _ in range(n)]
    return images, f"{n} random images (seed 0)"


def main(argv: list[str] | None = None) -> int:
    cli.setup_logging()
    args = parse_args(argv)
    try:
        source = cli.model_source(args)
        extractor = cli.build_extractor(source, args)
        cfg, model = extractor.cfg, extractor.model.cpu().eval()
        size = (int(cfg.data.height), int(cfg.data.width))
        images, where = sample_images(args, size)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError) as e:
        logger.error("%s: %s", type(e).__name__, e)
        return cli.EXIT_USER_ERROR
    x = torch.stack([extractor.transform(Image.fromarray(im, "RGB")) for im in images])
    out = Path(args.out)
    normalize = not args.no_normalize
    report: dict = {
        "source": source,
        **cli.describe(extractor),
        "input": {"name": "images", "shape": ["B", 3, *size], "dtype": "float32"},
        "output": {"name": "features", "dim": int(model(x[:1]).shape[1]), "normalized": normalize},
        "samples": where,
        "files": {},
    }
    worst = 0.0
    if "torchscript" in args.formats:
        diff = ex.export_torchscript(model, x, out / FILES["torchscript"], normalize)
        report["files"]["torchscript"] = {"file": FILES["torchscript"], "max_abs_diff": diff}
        logger.info(
            "TorchScript %s: max |difference| from eager %.3g on %s",
            out / FILES["torchscript"],
            diff,
            where,
        )
        worst = max(worst, diff)
    if "onnx" in args.formats:
        diff = ex.export_onnx(model, x, out / FILES["onnx"], normalize, args.opset)
        report["files"]["onnx"] = {"file": FILES["onnx"], "max_abs_diff": diff, "opset": args.opset}
        if diff is None:
            logger.warning(
                "ONNX %s written; parity not checked (onnxruntime missing)", out / FILES["onnx"]
            )
        else:
            logger.info(
                "ONNX %s (onnxruntime): max |difference| from eager %.3g on %s",
                out / FILES["onnx"],
                diff,
                where,
            )
            worst = max(worst, diff)
    if "torchreid" in args.formats:
        path = out / FILES["torchreid"]
        side = ex.export_torchreid_weights(model, cfg.model.name, path)
        parity = ex.torchreid_parity(
            model,
            cfg.model.name,
            path,
            images,
            extractor.transform,
            size,
            list(cfg.data.norm_mean),
            list(cfg.data.norm_std),
            side,
        )
        report["files"]["torchreid"] = {"file": FILES["torchreid"], "computes": side, **parity}
        what = {
            "run": "the run's own features",
            "relu_after_bn": "ReLU(after_bn): the neck's BN as OSNet's fc BN, then OSNet's ReLU",
            "after_bn": "the neck's after_bn features",
            "backbone": "the backbone's pooled feature, before the neck (torchreid has no place for it)",
        }[side]
        logger.info(
            "torchreid weights %s: torchreid's FeatureExtractor computes %s; max |difference| from "
            "that feature of the eager model %.3g on %s; tensors torchreid could not place: %s",
            path,
            what,
            parity["max_abs_diff"],
            where,
            parity["unused_tensors"] or "none",
        )
        if parity["unused_tensors"]:
            logger.error(
                "torchreid's %s has no place for %s", cfg.model.name, parity["unused_tensors"]
            )
            worst = float("inf")
        worst = max(worst, parity["max_abs_diff"])
    write_text_atomic(out / "export.json", json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v.get("max_abs_diff") for k, v in report["files"].items()}))
    if worst > args.tol:
        logger.error("parity check failed: max |difference| %.3g > --tol %.3g", worst, args.tol)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
