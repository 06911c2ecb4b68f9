#!/usr/bin/env python
"""Features of a folder (or a list) of images with a trained model: features.npy + paths.txt.

Examples::

    python tools/extract_features.py --run log/demo/20261123-101500 \\
        --images reid-data/synthetic_market/Market-1501-v15.09.15/bounding_box_test --out feats/gallery
    python tools/extract_features.py --config configs/demo.yaml --weights model.pth \\
        --list my_images.txt --out feats/mine

Writes ``features.npy`` ((N, D) float32, L2-normalised), ``paths.txt``, ``labels.csv``
(``path,pid,camid`` when every name follows the Market/Duke pattern) and
``extract.json``. Big folders are done in shards (``--shard-size``); run the same
command again after an interruption and it continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from reid_ir.inference import cli
from reid_ir.inference.store import extract_to_folder

logger = logging.getLogger("extract_features")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--images", nargs="+", help="image files and/or folders (searched recursively)"
    )
    src.add_argument("--list", help="text file with one image path per line")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--shard-size", type=int, default=4096, help="images per resumable shard")
    cli.add_model_args(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    cli.setup_logging()
    args = parse_args(argv)
    t0 = time.time()
    try:
        source = cli.model_source(args)
        paths = cli.list_images(args.images) if args.images else cli.read_list_file(args.list)
        extractor = cli.build_extractor(source, args)
        info = {"source": source, **cli.describe(extractor)}
        meta = extract_to_folder(extractor, paths, args.out, args.shard_size, info)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError) as e:
        logger.error("%s: %s", type(e).__name__, e)
        return cli.EXIT_USER_ERROR
    seconds = time.time() - t0
    logger.info(
        "%d images in %.1f s (%.1f images/s)", meta["count"], seconds, meta["count"] / seconds
    )
    print(
        json.dumps(
            {"out": args.out, "count": meta["count"], "dim": meta["dim"], "labels": meta["labels"]}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
