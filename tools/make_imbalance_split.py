#!/usr/bin/env python
"""Write an imbalance split manifest (+ a PNG of its per-identity counts) and print its summary.

Examples::

    python tools/make_imbalance_split.py --dataset market1501 --root reid-data \\
        --profile long_tail --rho 50 --seed 0
    python tools/make_imbalance_split.py --root reid-data --config configs/market1501/splits/long_tail_rho10.yaml

Train on it with ``data.sources: ['market1501_imb']`` and
``data.imbalance.manifest: PATH`` (or the same profile keys, which rebuild the
identical split).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from reid_ir.data import imbalance
from reid_ir.data.datasets import IMBALANCE_KEYS, make_split

logger = logging.getLogger("make_imbalance_split")

#: The split parameters (data.imbalance keys) this tool takes as flags.
PARAM_FLAGS = tuple(
    k for k in IMBALANCE_KEYS if k not in ("profile", "manifest", "seed", "val_ids")
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--dataset", help="market1501 or dukemtmcreid (default: from --config, else market1501)"
    )
    p.add_argument("--root", required=True, help="data root holding market1501/ or dukemtmc-reid/")
    p.add_argument(
        "--config",
        help="a preset YAML (configs/*/splits/*.yaml); its data.imbalance keys are the defaults",
    )
    p.add_argument("--profile", choices=imbalance.PROFILES)
    p.add_argument("--seed", type=int)
    p.add_argument("--rho", type=float, help="long_tail: imbalance ratio n_max / n_min")
    p.add_argument("--n-max", type=int, help="long_tail: head count (0: largest feasible)")
    p.add_argument("--min-images", type=int, help="long_tail: floor on every identity's count")
    p.add_argument(
        "--tail-fraction", type=float, help="tail_fewshot: fraction of identities in the tail"
    )
    p.add_argument("--tail-images", type=int, help="tail_fewshot: images kept per tail identity")
    p.add_argument(
        "--control-of",
        choices=("long_tail", "tail_fewshot"),
        help="balanced_control: split to match",
    )
    p.add_argument(
        "--id-half",
        choices=("", *imbalance.ID_HALVES),
        help="restrict to identity half P or F first (docs/splits.md); '' keeps all",
    )
    p.add_argument(
        "--output",
        help="manifest path (default: output/splits/<dataset>_<profile...>_seed<seed>.json)",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing manifest")
    return p.parse_args(argv)


def settings(args: argparse.Namespace) -> tuple[str, str, int, dict]:
    """(dataset, profile, seed, params): command line over --config over the defaults."""
    keys: dict = {}
    dataset = None
    if args.config:
        from reid_ir.config import load_cfg

        cfg = load_cfg(args.config)
        keys = {k: cfg.data.imbalance[k] for k in ("profile", "seed", *PARAM_FLAGS)}
        sources = [s for s in cfg.data.sources if s.endswith("_imb")]
        dataset = sources[0][: -len("_imb")] if sources else None
    for k in ("profile", "seed", *PARAM_FLAGS):
        if getattr(args, k) is not None:
            keys[k] = getattr(args, k)
    dataset = args.dataset or dataset or "market1501"
    profile = keys.pop("profile", "full")
    seed = keys.pop("seed", 0)
    return dataset, profile, seed, keys


def split_name(dataset: str, manifest: dict) -> str:
    """A file stem naming the split, e.g. ``market1501_long_tail_rho50_seed0``."""
    p = manifest["params"]
    half = manifest.get("id_half", {}).get("half")
    parts = [dataset, *([f"half{half}"] if half else []), manifest["profile"]]
    if manifest["profile"] == "balanced_control":
        parts += ["of", p["control_of"]]
    short = {
        "rho": "rho",
        "n_max": "nmax",
        "min_images": "min",
        "tail_fraction": "frac",
        "tail_images": "k",
    }
    defaults = imbalance.DEFAULTS
    for k, tag in short.items():
        if k in p and (k in ("rho", "tail_fraction", "tail_images") or p[k] != defaults[k]):
            parts.append(f"{tag}{p[k]:g}")
    return "_".join(parts + [f"seed{manifest['seed']}"])


def plot_counts(manifest: dict, path: Path) -> None:
    """PNG of the per-identity counts, sorted, on a log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = sorted(manifest["counts"].values(), reverse=True)
    s = manifest["summary"]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot(range(1, len(counts) + 1), counts, drawstyle="steps-mid")
    ax.set_yscale("log")
    ax.set_xlabel("identity (sorted by count)")
    ax.set_ylabel("training images")
    ax.set_title(
        f"{path.stem}\n{s['images']} images, {s['identities']} ids, "
        f"ratio {s['imbalance_ratio']:g}, Gini {s['gini']:.3f}",
        fontsize=9,
    )
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s"
    )
    args = parse_args(argv)
    try:
        dataset, profile, seed, params = settings(args)
        t0 = time.time()
        manifest = make_split(dataset, args.root, profile, seed, progress=True, **params)
        out = (
            Path(args.output)
            if args.output
            else Path("output/splits") / f"{split_name(dataset, manifest)}.json"
        )
        if out.exists() and not args.force:
            raise FileExistsError(f"{out} exists; pass --force to overwrite it")
        imbalance.write_manifest(manifest, out, force=args.force)
        png = out.with_suffix(".png")
        plot_counts(manifest, png)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        logger.error("%s", e)
        return 2
    logger.info("wrote %s and %s in %.1f s", out, png, time.time() - t0)
    print(
        json.dumps(
            {
                "manifest": str(out),
                "dataset": dataset,
                "profile": profile,
                "params": manifest["params"],
                "seed": seed,
                "summary": manifest["summary"],
                "content_hash": manifest["content_hash"],
            },
            indent=1,
            sort_keys=True,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
