#!/usr/bin/env python
"""Index a gallery's features once, then find query images in it: JSON + an HTML page.

Examples::

    # build the index (once) from tools/extract_features.py's output, and query it
    python tools/search_gallery.py --index feats/index --gallery feats/gallery \\
        --query reid-data/synthetic_market/Market-1501-v15.09.15/query --html results/
    # later: query the saved index with other images (same model as the gallery's)
    python tools/search_gallery.py --index feats/index --query person.jpg --json hits.json
    # an approximate index for millions of images; prints its recall@k against exact search
    python tools/search_gallery.py --index feats/ivf --gallery feats/gallery --kind ivf --nprobe 32

Queries are embedded with the model that made the gallery features (recorded by
extract_features.py) unless --run / --config is given; --query-features takes
features extracted beforehand. Exact inner-product (cosine) search by default.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from reid_ir.inference import cli
from reid_ir.inference.index import KINDS, GalleryIndex
from reid_ir.inference.labels import labels_from_paths
from reid_ir.inference.page import results_as_records, write_results_json, write_search_page
from reid_ir.inference.store import load_features

logger = logging.getLogger("search_gallery")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--index", required=True, help="index folder (written by --gallery, read otherwise)"
    )
    g = p.add_argument_group("building the index")
    g.add_argument("--gallery", help="gallery features folder (tools/extract_features.py --out)")
    g.add_argument("--rebuild", action="store_true", help="replace an existing index")
    g.add_argument(
        "--kind",
        choices=KINDS,
        default="flat",
        help="flat: exact (default); ivf, hnsw: approximate",
    )
    g.add_argument("--nlist", type=int, help="IVF lists (default 4 sqrt(N))")
    g.add_argument("--nprobe", type=int, default=16, help="IVF lists visited per query")
    g.add_argument("--hnsw-m", type=int, default=32, help="HNSW links per node")
    g.add_argument("--ef-search", type=int, default=128, help="HNSW search breadth")
    g.add_argument(
        "--recall-sample", type=int, default=1000, help="gallery vectors used to measure recall"
    )
    q = p.add_argument_group("querying")
    q.add_argument("--query", nargs="+", help="query image files and/or folders")
    q.add_argument(
        "--query-features", help="query features folder (tools/extract_features.py --out)"
    )
    q.add_argument("--topk", type=int, default=10, help="results per query")
    q.add_argument(
        "--json", help="write the results here (default: HTML_DIR/results.json, or stdout)"
    )
    q.add_argument("--html", help="write an HTML page of thumbnails into this folder")
    cli.add_model_args(p, required=False)
    return p.parse_args(argv)


def build_index(args: argparse.Namespace) -> GalleryIndex:
    """Index --gallery into --index and report recall@k of an approximate kind."""
    folder = Path(args.index)
    if folder.exists() and any(folder.iterdir()) and not args.rebuild:
        raise FileExistsError(f"{folder} is not empty; pass --rebuild to replace the index in it")
    feats, paths, labels, meta = load_features(args.gallery)
    info = {"gallery": os.path.abspath(args.gallery), "extract": meta.get("info", {})}
    t0 = time.time()
    index = GalleryIndex.build(
        feats,
        paths,
        args.kind,
        nlist=args.nlist,
        nprobe=args.nprobe,
        hnsw_m=args.hnsw_m,
        ef_search=args.ef_search,
        labels=labels,
        info=info,
    )
    logger.info("%s index over %d images built in %.2f s", args.kind, len(index), time.time() - t0)
    if args.kind != "flat":
        recall, n = index.self_recall_at_k(args.topk, args.recall_sample)
        index.info["self_recall"] = {
            "k": min(args.topk, len(index) - 1),
            "queries": n,
            "recall": recall,
        }
        logger.info(
            "%s recall@%d against exact search: %.4f (%d gallery vectors as queries, each one's own match left out)",
            args.kind,
            min(args.topk, len(index) - 1),
            recall,
            n,
        )
    index.save(folder)
    return index


def query_features(args: argparse.Namespace, index: GalleryIndex):
    """(features, paths, labels or None) of the queries."""
    if args.query_features:
        feats, paths, labels, _ = load_features(args.query_features)
        return feats, paths, labels
    source = cli.model_source(args) or index.info.get("extract", {}).get("source")
    if not source:
        raise ValueError("no model to embed the queries: pass --run (or --config with --weights)")
    extractor = cli.build_extractor(source, args)
    paths = cli.list_images(args.query)
    return extractor(paths), paths, labels_from_paths(paths)


def main(argv: list[str] | None = None) -> int:
    cli.setup_logging()
    args = parse_args(argv)
    try:
        if args.query and args.query_features:
            raise ValueError("give --query or --query-features, not both")
        index = build_index(args) if args.gallery else GalleryIndex.load(args.index)
        if not (args.query or args.query_features):
            print(json.dumps({"index": args.index, "kind": index.kind, "size": len(index)}))
            return 0
        feats, q_paths, q_labels = query_features(args, index)
        t0 = time.time()
        sims, idx = index.search(feats, args.topk)
        ms = 1000 * (time.time() - t0)
        logger.info(
            "%d queries searched in %.1f ms (%d results each)", len(q_paths), ms, idx.shape[1]
        )
        summary = {"queries": len(q_paths), "kind": index.kind, "topk": int(idx.shape[1])}
        if index.kind != "flat":
            summary["recall_vs_exact"] = index.recall_at_k(feats, args.topk)
            logger.info(
                "recall@%d of these queries against exact search: %.4f",
                args.topk,
                summary["recall_vs_exact"],
            )
        records = results_as_records(q_paths, index.paths, sims, idx)
        json_path = args.json or (os.path.join(args.html, "results.json") if args.html else None)
        if json_path:
            summary["json"] = write_results_json(json_path, records)
        if args.html:
            summary["html"] = write_search_page(args.html, records, q_labels, index.labels)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError) as e:
        logger.error("%s: %s", type(e).__name__, e)
        return cli.EXIT_USER_ERROR
    if not json_path:
        print(json.dumps(records, indent=1))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
