#!/usr/bin/env python
"""Reproduce the Market-1501 (or DukeMTMC-reID) tables: methods x splits x seeds.

Each cell runs tools/train_net.py on a composed config (method + dataset + split + preset);
finished cells are skipped and a killed cell resumes from its checkpoint. The
table (Markdown + CSV) and plots go to --out; run folders (checkpoints) to --work-dir.

Protocols (--protocol):
  scratch     (default) every cell trains from the preset's initial weights on a split of
              all training identities.
  warm_start  the training identities are split into two fixed halves P and F
              (data.imbalance.id_half); one softmax backbone is trained on all of P once
              (<work-dir>/pretrain_P/, skipped when pretrain_P/backbone.pth exists), then every
              method is fine-tuned from it on splits of F (--splits: full, long_tail_rho50,
              balanced_control_long_tail_rho50 by default). --pretrain-opts "KEY VALUE ..."
              overrides apply to the pretraining only.

Example (the committed CPU table):
    python tools/reproduce_tables.py --dataset market1501 --root datasets --preset cpu \
        --seeds 1 --extra-seeds softmax=2 ir_am_softmax=2 --jobs 2 \
        --work-dir output/tables/market1501_cpu --out docs/results/market1501_cpu
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from pathlib import Path

from reid_ir.reports import reproduce


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="market1501", choices=["market1501", "dukemtmcreid"])
    p.add_argument("--root", required=True, help="data.root: folder holding market1501/ or dukemtmc-reid/")
    p.add_argument("--preset", default="cpu", choices=reproduce.PRESETS)
    p.add_argument("--protocol", default="scratch", choices=reproduce.PROTOCOLS,
                   help="scratch: train every cell from the preset's weights; warm_start: pretrain "
                        "softmax on identity half P once, fine-tune every method on splits of half F")
    p.add_argument("--methods", nargs="+", default=list(reproduce.DEFAULT_METHODS))
    p.add_argument("--splits", nargs="+", default=None,
                   help=f"split configs (default: {' '.join(reproduce.DEFAULT_SPLITS)}; with "
                        f"warm_start, of half F: {' '.join(reproduce.DEFAULT_WARM_SPLITS)})")
    p.add_argument("--seeds", nargs="+", type=int, default=[1], help="training seeds of every method")
    p.add_argument("--extra-seeds", nargs="*", default=[], metavar="METHOD=SEED,...",
                   help="more seeds for some methods, e.g. softmax=2,3")
    p.add_argument("--jobs", type=int, default=1, help="cells run at once (give each --threads threads)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per cell")
    p.add_argument("--pretrain-seed", type=int, default=1, help="warm_start: seed of the pretraining run")
    p.add_argument("--pretrain-opts", default="", metavar='"KEY VALUE ..."',
                   help="warm_start: config overrides of the pretraining only (one quoted string), "
                        'e.g. "train.max_epoch 20"')
    p.add_argument("--work-dir", default=None,
                   help="run folders (default output/tables/<dataset>_<preset>[_warm_start])")
    p.add_argument("--out", default=None, help="table and plots (default <work-dir>/summary)")
    p.add_argument("--collect-only", action="store_true", help="only rebuild the table from finished cells")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides applied to every cell")
    return p.parse_args(argv)


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    warm = args.protocol == "warm_start"
    if args.splits is None:
        args.splits = list(reproduce.DEFAULT_WARM_SPLITS if warm else reproduce.DEFAULT_SPLITS)
    suffix = "_warm_start" if warm else ""
    work_dir = Path(args.work_dir or f"output/tables/{args.dataset}_{args.preset}{suffix}")
    out_dir = Path(args.out or work_dir / "summary")
    pretrain_opts = shlex.split(args.pretrain_opts)
    if len(pretrain_opts) % 2:
        raise SystemExit(f"--pretrain-opts expects KEY VALUE pairs, got {args.pretrain_opts!r}")
    if pretrain_opts and not warm:
        raise SystemExit("--pretrain-opts applies to --protocol warm_start only")
    for option in ("methods", "splits"):
        stray = [v for v in getattr(args, option) if "." in v]
        if stray:  # e.g. `--splits long_tail_rho50 train.max_epoch 8`: nargs="+" took the override
            raise SystemExit(
                f"--{option} got {stray}, which look like config overrides: put overrides after an "
                f"option that takes one value (e.g. `--splits S --root R train.max_epoch 8`)"
            )
    seeds: dict[str, list[int]] = {"*": list(args.seeds)}
    for item in args.extra_seeds:
        method, _, values = item.partition("=")
        if not values:
            raise SystemExit(f"--extra-seeds expects METHOD=SEED[,SEED], got {item!r}")
        seeds[method] = sorted(set(args.seeds) | {int(v) for v in values.split(",")})
    try:
        if warm:
            plan = reproduce.plan_warm_start(args.dataset, args.methods, args.splits, seeds, work_dir,
                                             args.pretrain_seed)
            cells = plan.cells
        else:
            cells = reproduce.plan_cells(args.dataset, args.methods, args.splits, seeds, work_dir)
    except ValueError as e:
        logging.error("%s", e)
        return 2
    tic = time.time()
    failures = []
    if not args.collect_only:
        if warm:
            failures = reproduce.run_warm_start(plan, args.dataset, args.preset, args.root, args.jobs,
                                                args.threads, args.opts, pretrain_opts)
        else:
            failures = reproduce.run_grid(cells, args.dataset, args.preset, args.root, args.jobs, args.threads, args.opts)
    rows = reproduce.collect(cells, args.dataset)
    notes = reproduce.pretrain_note(plan, args.dataset) if warm else ""
    paths = reproduce.write_outputs(rows, cells, out_dir, notes)
    logging.info("%d/%d cells finished in %.1f min; wrote %s", len(rows), len(cells), (time.time() - tic) / 60,
                 ", ".join(str(p) for p in paths.values()))
    print((out_dir / "table.md").read_text())
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
