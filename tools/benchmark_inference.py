#!/usr/bin/env python
"""Time feature extraction against torchreid's FeatureExtractor, and gallery search at 100k images.

Extraction: one model (``--model``, random weights, ``model.neck none`` so that
torchreid's architecture computes exactly the same features) and the same JPEG
files, timed in interleaved rounds in one process with the same torch threads:

* reid_ir: ``reid_ir.inference.FeatureExtractor`` over the path list (batches of
  ``--batch-size``);
* torchreid: ``torchreid.utils.FeatureExtractor`` loading the exported
  torchreid-format weights, called on lists of ``--batch-size`` paths (torchreid
  embeds a whole list in one forward pass; a list per batch keeps memory bounded).

It checks that both give the same features (after L2 normalisation) and prints
the median images/s of each and their ratio.

Search: a synthetic ``--gallery`` x ``--dim`` gallery of unit vectors in identity
clusters, ``--queries`` queries near random clusters. For each index kind (flat =
exact inner product, ivf, hnsw): build time, single-query latency (median over
``--latency-queries`` queries searched one at a time), batch throughput
(queries/s for all queries in one call) and recall@k against exact search.

Examples::

    python tools/benchmark_inference.py                      # defaults
    python tools/benchmark_inference.py --images 256 --rounds 3 --out docs/benchmarks/inference/run.md
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from reid_ir.inference import FeatureExtractor, GalleryIndex, build_test_transform
from reid_ir.inference import export as ex
from reid_ir.models import build_backbone

logger = logging.getLogger("benchmark_inference")
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="osnet_x0_25", help="torchreid model name")
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--images", type=int, default=256, help="JPEG files embedded per round")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    p.add_argument("--gallery", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--latency-queries", type=int, default=50)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--kinds", nargs="+", default=["flat", "ivf", "hnsw"])
    p.add_argument("--nlist", type=int, default=256)
    p.add_argument("--nprobe", type=int, default=16)
    p.add_argument("--hnsw-m", type=int, default=16)
    p.add_argument("--ef-construction", type=int, default=40)
    p.add_argument("--ef-search", type=int, default=64)
    p.add_argument("--skip-extraction", action="store_true")
    p.add_argument("--note", default="", help="a line about the machine, written into the report")
    p.add_argument("--out", help="also write the report (Markdown + JSON block) here")
    return p.parse_args(argv)


def write_images(folder: Path, n: int, height: int, width: int) -> list[str]:
    """``n`` seeded JPEGs of person-crop size (smooth noise, so JPEG decoding costs what it does)."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        small = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((width, height), Image.BILINEAR)
        path = folder / f"{i:06d}.jpg"
        img.save(path, quality=90)
        paths.append(str(path))
    return paths


def bench_extraction(args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    model = build_backbone(args.model, neck="none").eval()
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_images(Path(tmp), args.images, args.height, args.width)
        weights = Path(tmp) / "weights.pth"
        ex.export_torchreid_weights(model, args.model, weights)
        ours = FeatureExtractor(
            model, build_test_transform(args.height, args.width, MEAN, STD), "cpu", args.batch_size
        )
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from reid_ir import compat

            theirs = compat.utils.FeatureExtractor(
                model_name=args.model,
                model_path=str(weights),
                image_size=(args.height, args.width),
                device="cpu",
                verbose=False,
            )
        bs = args.batch_size

        def run_theirs() -> np.ndarray:
            return torch.cat([theirs(paths[i : i + bs]) for i in range(0, len(paths), bs)]).numpy()

        a = ours(paths)
        b = torch.nn.functional.normalize(torch.from_numpy(run_theirs()), dim=1).numpy()
        diff = float(np.abs(a - b).max())
        t_ours, t_theirs = [], []
        for r in range(args.rounds):
            for name, fn, times in (
                ("reid_ir", lambda: ours(paths), t_ours),
                ("torchreid", run_theirs, t_theirs),
            )[:: 1 if r % 2 == 0 else -1]:
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
                logger.info("round %d %s: %.2f s", r + 1, name, times[-1])
    ips_ours = args.images / statistics.median(t_ours)
    ips_theirs = args.images / statistics.median(t_theirs)
    return {
        "model": args.model,
        "input": [args.height, args.width],
        "images": args.images,
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "reid_ir_images_per_s": ips_ours,
        "torchreid_images_per_s": ips_theirs,
        "ratio": ips_ours / ips_theirs,
        "max_abs_feature_diff": diff,
        "times_s": {"reid_ir": t_ours, "torchreid": t_theirs},
    }


def synthetic_gallery(n: int, d: int, queries: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    ids = max(1, n // 20)
    centers = rng.standard_normal((ids, d)).astype(np.float32)
    g = centers[rng.integers(0, ids, n)] + 0.8 * rng.standard_normal((n, d)).astype(np.float32)
    q = centers[rng.integers(0, ids, queries)] + 0.8 * rng.standard_normal((queries, d)).astype(
        np.float32
    )
    return g, q


def bench_search(args: argparse.Namespace) -> list[dict]:
    g, q = synthetic_gallery(args.gallery, args.dim, args.queries)
    paths = [f"g{i}" for i in range(len(g))]
    rows = []
    exact_index = None
    for kind in args.kinds:
        t0 = time.perf_counter()
        index = GalleryIndex.build(
            g,
            paths,
            kind,
            nlist=args.nlist,
            nprobe=args.nprobe,
            hnsw_m=args.hnsw_m,
            ef_search=args.ef_search,
            ef_construction=args.ef_construction,
        )
        build_s = time.perf_counter() - t0
        lat = []
        for i in range(min(args.latency_queries, len(q))):
            t0 = time.perf_counter()
            index.search(q[i : i + 1], args.k)
            lat.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        _, idx = index.search(q, args.k)
        batch_s = time.perf_counter() - t0
        if kind == "flat":
            exact_index, recall = idx, 1.0
        else:
            if exact_index is None:
                exact_index = index.exact_search(q, args.k)[1]
            recall = float(
                np.mean(
                    [len(set(a) & set(e)) / args.k for a, e in zip(idx, exact_index, strict=True)]
                )
            )
        rows.append(
            {
                "kind": kind,
                "params": index.params,
                "build_s": build_s,
                "latency_ms_median": 1000 * statistics.median(lat),
                "queries_per_s": len(q) / batch_s,
                f"recall@{args.k}": recall,
            }
        )
        logger.info("%s", rows[-1])
    return rows


def provenance(note: str) -> dict:
    repo = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                [
                    "git",
                    "status",
                    "--porcelain",
                    "--",
                    "reid_ir/inference",
                    "tools/benchmark_inference.py",
                ],
                cwd=repo,
                capture_output=True,
                text=True,
            ).stdout.strip()
        )
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", False
    cpu = (
        next(
            (
                ln.split(":", 1)[1].strip()
                for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else platform.processor()
    )
    import faiss

    return {
        "commit": commit + ("+uncommitted inference changes" if dirty else ""),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "torch_threads": torch.get_num_threads(),
        "versions": f"torch {torch.__version__}, faiss {faiss.__version__}, python {platform.python_version()}",
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "note": note,
    }


def report(
    prov: dict,
    extraction: dict | None,
    search: list[dict],
    args: argparse.Namespace,
    seconds: float,
) -> str:
    lines = [
        "# Inference benchmark (tools/benchmark_inference.py)",
        "",
        f"commit {prov['commit']}, {prov['date']}; {prov['cpu']}; torch threads {prov['torch_threads']}; "
        f"GPU: {prov['gpu']}; {prov['versions']}.",
    ]
    if prov["note"]:
        lines += ["", prov["note"]]
    lines += [
        "",
        "Command: `python tools/benchmark_inference.py "
        + shlex.join(sys.argv[1:])
        + f"` ({seconds:.0f} s wall)",
        "",
    ]
    if extraction:
        e = extraction
        lines += [
            f"## Extraction: {e['model']}, {e['input'][0]}x{e['input'][1]}, {e['images']} JPEGs, batch {e['batch_size']}, median of {e['rounds']} interleaved rounds",
            "",
            "| extractor | images/s |",
            "|---|---|",
            f"| reid_ir FeatureExtractor | {e['reid_ir_images_per_s']:.1f} |",
            f"| torchreid FeatureExtractor | {e['torchreid_images_per_s']:.1f} |",
            f"| **ratio reid_ir / torchreid** | **{e['ratio']:.3f}** |",
            "",
            f"Same features: max |difference| after L2 normalisation {e['max_abs_feature_diff']:.2g}.",
            "",
        ]
    k = args.k
    lines += [
        f"## Search: {args.gallery:,} x {args.dim} synthetic gallery, {args.queries} queries, top-{k}",
        "",
        f"| index | parameters | build s | 1-query latency ms (median of {args.latency_queries}) | queries/s (batch of {args.queries}) | recall@{k} vs exact |",
        "|---|---|---|---|---|---|",
    ]
    for r in search:
        params = ", ".join(f"{a}={b}" for a, b in r["params"].items()) or "-"
        lines.append(
            f"| {r['kind']} | {params} | {r['build_s']:.2f} | {r['latency_ms_median']:.2f} | {r['queries_per_s']:.0f} | {r[f'recall@{k}']:.4f} |"
        )
    data = {"provenance": prov, "extraction": extraction, "search": search}
    lines += ["", "```json", json.dumps(data, indent=1), "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s"
    )
    args = parse_args(argv)
    t0 = time.time()
    extraction = None if args.skip_extraction else bench_extraction(args)
    search = bench_search(args)
    text = report(provenance(args.note), extraction, search, args, time.time() - t0)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text, encoding="utf-8")
    if extraction and extraction["max_abs_feature_diff"] > 1e-4:
        logger.error(
            "reid_ir and torchreid features differ by %.3g", extraction["max_abs_feature_diff"]
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
