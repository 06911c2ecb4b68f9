"""Whole training step of reid_ir's engine against torchreid's own engine, in one run.

One iteration is everything an epoch of the engine's own ``train()`` does per
batch: loading (``data.workers`` 0: in this process, so it is timed), forward,
loss, backward, optimizer step, the step hooks (reid_ir: loss state, logging
with a tensorboard writer; torchreid: its meters and writer), plus the epoch's
loader start and scheduler step spread over its iterations. Each contender
runs ``--steps`` iterations (one short "epoch" of the synthetic training set)
per round; rounds visit every contender in a rotating order, so load from other
processes hits all of them alike; a contender's ratio is the median over
rounds of its time over the peer's time in the same round.

Contenders, all with the same backbone (``--model``), data (synthetic
Market-format images, ``reid_ir.data.synthetic``), image size, batch, optimizer
and threads:

* ``torchreid_softmax`` (the peer): ``torchreid.engine.ImageSoftmaxEngine``
  over torchreid's own ImageDataManager and model (its classifier inside);
* ``reid_ir:<loss>`` for softmax and each method: ``ReidEngine`` as
  ``tools/train_net.py`` builds it (``build_engine``: default hooks and neck);
* ``reid_ir:softmax+bf16``, ``+channels_last`` (and, with ``--variants``,
  ``+bf16+channels_last``): ``train.amp`` (bf16 autocast on the CPU) and
  ``train.channels_last``.

A second table times feature extraction (images/s over the gallery, eval mode)
of reid_ir's engine against torchreid's own extraction loop, also interleaved.

Times are this process's CPU time (``time.process_time``; with one thread and
no loader workers that is all the work, not the time spent waiting for a shared
CPU); wall-clock medians are reported beside them.

Example::

    OMP_NUM_THREADS=1 python tools/benchmark_train.py --markdown out.md --json out.json

Target (issue 22): every method's step within 1.03x of torchreid's softmax step.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

logger = logging.getLogger("benchmark_train")

PEER = "torchreid_softmax"
DEFAULT_LOSSES = [
    "softmax",
    "am_softmax",
    "ir_am_softmax",
    "unpg_ir_am_softmax",
    "clmle",
    "weighted_softmax",
]
#: reid_ir softmax variants: name -> (train.amp, train.channels_last)
VARIANTS = {
    "bf16": (True, False),
    "channels_last": (False, True),
    "bf16+channels_last": (True, True),
}
TARGET = 1.03


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--losses", nargs="+", default=DEFAULT_LOSSES, help="reid_ir losses to time")
    p.add_argument(
        "--variants",
        nargs="*",
        default=["bf16", "channels_last"],
        choices=list(VARIANTS),
        help="reid_ir softmax variants to time (none: no variant rows)",
    )
    p.add_argument("--model", default="osnet_x0_25", help="torchreid backbone name")
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=2, help="iterations per contender per round")
    p.add_argument("--rounds", type=int, default=8, help="timed rounds (after one warm-up)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--workers", type=int, default=0, help="loader workers (0: timed in-process)")
    p.add_argument("--data-root", default="", help="synthetic data folder (default: a temp dir)")
    p.add_argument("--extract", action="store_true", help="also time feature extraction")
    p.add_argument("--json", default="", help="write the results as JSON here")
    p.add_argument("--markdown", default="", help="write the tables as markdown here")
    args = p.parse_args(argv)
    if args.steps < 1 or args.rounds < 1 or args.threads < 1 or args.workers < 0:
        p.error("--steps, --rounds and --threads must be >= 1 and --workers >= 0")
    return args


def make_cfg(args: argparse.Namespace, root: str, save_dir: str, loss: str, amp=False, cl=False):
    """The run config of one reid_ir contender (and, via imagedata_kwargs, the peer's data)."""
    from reid_ir.config import load_cfg

    # 2 cameras x 2 images per identity (the generator's minimum): --steps batches per epoch
    num_ids = -(-args.steps * args.batch_size // 4)
    opts = {
        "use_gpu": "False",
        "model.name": args.model,
        "model.pretrained": "False",
        "data.root": root,
        "data.save_dir": save_dir,
        "data.sources": "['synthetic_market']",
        "data.targets": "['synthetic_market']",
        "data.height": str(args.height),
        "data.width": str(args.width),
        "data.workers": str(args.workers),
        "data.transforms": "['random_flip']",
        "data.synthetic.num_train_ids": str(num_ids),
        "data.synthetic.num_test_ids": "64",
        "data.synthetic.images_per_camera": "2",
        "data.synthetic.num_cameras": "2",
        "data.synthetic.image_size": f"[{args.height}, {args.width}]",
        "train.batch_size": str(args.batch_size),
        "train.num_threads": str(args.threads),
        "train.lr_scheduler": "single_step",
        "train.stepsize": "[1000000]",
        "train.print_freq": "1000000",
        "train.amp": str(amp),
        "train.channels_last": str(cl),
        "loss.name": loss,
        "test.batch_size": "128",
    }
    return load_cfg(None, [x for kv in opts.items() for x in kv])


class Contender:
    """One engine and how to run one short epoch (and one feature extraction) with it."""

    def __init__(self, name: str, engine, epoch: Callable[[], None], extract=None) -> None:
        self.name, self.engine, self.epoch_fn, self.extract_fn = name, engine, epoch, extract
        self.cpu: list[float] = []
        self.wall: list[float] = []
        self.extract_cpu: list[float] = []

    def run_epoch(self) -> tuple[float, float]:
        c0, w0 = time.process_time(), time.perf_counter()
        self.epoch_fn()
        return time.process_time() - c0, time.perf_counter() - w0


def reid_ir_contender(name: str, cfg, writer_dir: str) -> Contender:
    """``ReidEngine`` as train_net builds it, hooks started, writer open; one epoch per call."""
    from torch.utils.tensorboard import SummaryWriter

    from reid_ir.engine.builder import build_engine

    engine = build_engine(cfg)
    engine.save_dir = cfg.data.save_dir
    Path(engine.save_dir).mkdir(parents=True, exist_ok=True)
    engine.max_epoch = 1_000_000
    engine.writer = SummaryWriter(log_dir=writer_dir)
    engine._call_hooks("before_train")
    engine._call_hooks("before_epoch")

    def epoch() -> None:
        engine.train(print_freq=cfg.train.print_freq)
        engine.epoch += 1

    def extract() -> int:
        loader = engine.test_loader["synthetic_market"]["gallery"]
        return len(engine.extract_features_from_loader(loader, desc="gallery")[0])

    return Contender(name, engine, epoch, extract)


def torchreid_contender(cfg, writer_dir: str) -> Contender:
    """torchreid's ImageSoftmaxEngine, model and data manager, unmodified."""
    from torch.utils.tensorboard import SummaryWriter

    from reid_ir import compat
    from reid_ir.data.build import imagedata_kwargs
    from reid_ir.engine.builder import lr_scheduler_kwargs, optimizer_kwargs

    torch.manual_seed(cfg.train.seed)
    dm = compat.data.ImageDataManager(**imagedata_kwargs(cfg))
    model = compat.models.build_model(
        cfg.model.name, num_classes=dm.num_train_pids, loss="softmax", pretrained=False
    )
    optimizer = compat.optim.build_optimizer(model, **optimizer_kwargs(cfg))
    scheduler = compat.optim.build_lr_scheduler(optimizer, **lr_scheduler_kwargs(cfg))
    engine = compat.engine.ImageSoftmaxEngine(
        dm, model, optimizer, scheduler=scheduler, use_gpu=False, label_smooth=True
    )
    engine.writer = SummaryWriter(log_dir=writer_dir)
    engine.max_epoch = 1_000_000

    def epoch() -> None:
        engine.train(print_freq=cfg.train.print_freq)
        engine.epoch += 1

    @torch.no_grad()
    def extract() -> int:
        # the body of torchreid's Engine._evaluate._feature_extraction (a closure there)
        engine.set_model_mode("eval")
        feats, pids_, camids_ = [], [], []
        for data in dm.test_loader["synthetic_market"]["gallery"]:
            imgs, pids, camids = engine.parse_data_for_eval(data)
            feats.append(engine.extract_features(imgs).cpu())
            pids_.extend(pids.tolist())
            camids_.extend(camids.tolist())
        return len(torch.cat(feats))

    return Contender(PEER, engine, epoch, extract)


def median_ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def git_commit() -> str:
    repo = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "reid_ir", "tools"],
            cwd=repo,
            capture_output=True,
            text=True,
        )
    except OSError:
        return "unknown"
    if out.returncode != 0:
        return os.environ.get("REID_IR_COMMIT", "unknown (not a git checkout)")
    return out.stdout.strip() + (" (+ uncommitted changes)" if dirty.stdout.strip() else "")


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    tmp = tempfile.mkdtemp(prefix="benchmark_train_")
    root = args.data_root or os.path.join(tmp, "data")
    specs = [(f"reid_ir:{loss}", loss, False, False) for loss in args.losses]
    for v in args.variants:
        specs.append((f"reid_ir:softmax+{v}", "softmax", *VARIANTS[v]))
    contenders = []
    for i, (name, loss, amp, cl) in enumerate(specs):
        cfg = make_cfg(args, root, os.path.join(tmp, f"run{i}"), loss, amp, cl)
        contenders.append(reid_ir_contender(name, cfg, os.path.join(tmp, f"tb{i}")))
    peer_cfg = make_cfg(args, root, os.path.join(tmp, "peer"), "softmax")
    contenders.insert(0, torchreid_contender(peer_cfg, os.path.join(tmp, "tb_peer")))
    batches = {c.name: len(c.engine.train_loader) for c in contenders}
    if len(set(batches.values())) != 1:
        raise RuntimeError(f"contenders see different epoch lengths: {batches}")
    steps = next(iter(batches.values()))
    logger.info(
        "%d contenders, %d iterations each per round, %d rounds + 1 warm-up",
        len(contenders),
        steps,
        args.rounds,
    )
    t_start = time.perf_counter()
    for r in range(args.rounds + 1):
        order = contenders[r % len(contenders) :] + contenders[: r % len(contenders)]
        for c in order:
            cpu, wall = c.run_epoch()
            if r > 0:
                c.cpu.append(cpu / steps)
                c.wall.append(wall / steps)
            if args.extract and c.name in (PEER, "reid_ir:softmax"):
                c0 = time.process_time()
                n = c.extract_fn()
                if r > 0:
                    c.extract_cpu.append((time.process_time() - c0) / n)
        logger.info("round %d/%d done (%.0f s)", r, args.rounds, time.perf_counter() - t_start)
    peer = contenders[0]
    rows = []
    for c in contenders:
        rows.append(
            {
                "name": c.name,
                "ms_per_iter_cpu": 1000 * statistics.median(c.cpu),
                "ms_per_iter_wall": 1000 * statistics.median(c.wall),
                "ratio_vs_peer": median_ratio(c.cpu, peer.cpu),
                "ratio_min": min(x / y for x, y in zip(c.cpu, peer.cpu, strict=True)),
                "ratio_max": max(x / y for x, y in zip(c.cpu, peer.cpu, strict=True)),
            }
        )
    extract = {}
    if args.extract:
        mine = next(c for c in contenders if c.name == "reid_ir:softmax")
        extract = {
            "torchreid_images_per_s": 1 / statistics.median(peer.extract_cpu),
            "reid_ir_images_per_s": 1 / statistics.median(mine.extract_cpu),
            "ratio_time_vs_peer": median_ratio(mine.extract_cpu, peer.extract_cpu),
            "gallery_images": len(peer.engine.datamanager.test_loader["synthetic_market"]["gallery"].dataset),
        }  # fmt: skip
    return {
        "settings": {
            k: v for k, v in vars(args).items() if k not in ("json", "markdown", "data_root")
        },
        "iterations_per_round": steps,
        "train_images": steps * args.batch_size,
        "classes": int(peer.engine.datamanager.num_train_pids),
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": f"{cpu_name()}, {os.cpu_count()} logical CPUs, {platform.platform()}",
        "torch": torch.__version__,
        "seconds": round(time.perf_counter() - t_start, 1),
        "rows": rows,
        "extract": extract,
    }


def markdown(res: dict) -> str:
    s = res["settings"]
    lines = [
        f"Whole training step, {s['model']} at {s['height']}x{s['width']}, batch {s['batch_size']}, "
        f"{s['threads']} thread(s), {s['workers']} loader workers; {res['iterations_per_round']} "
        f"iterations per contender per round, {s['rounds']} rounds (median ratio per round; "
        f"CPU time); {res['classes']} synthetic identities. Commit {res['commit']}, {res['date']}; {res['machine']}; torch {res['torch']}.",
        "",
        "| step | ms/iter (CPU) | ms/iter (wall) | x torchreid_softmax | min-max over rounds "
        f"| within {TARGET}x |",
        "|---|---:|---:|---:|---:|:-:|",
    ]
    for row in res["rows"]:
        ok = "" if row["name"] == PEER else ("yes" if row["ratio_vs_peer"] <= TARGET else "no")
        lines.append(
            f"| {row['name']} | {row['ms_per_iter_cpu']:.0f} | {row['ms_per_iter_wall']:.0f} | "
            f"{row['ratio_vs_peer']:.3f} | {row['ratio_min']:.2f}-{row['ratio_max']:.2f} | {ok} |"
        )
    if res["extract"]:
        e = res["extract"]
        lines += [
            "",
            f"Feature extraction, eval mode, {e['gallery_images']} gallery images per pass:",
            "",
            "| extraction | images/s (CPU time) | time x torchreid |",
            "|---|---:|---:|",
            f"| torchreid | {e['torchreid_images_per_s']:.0f} | 1.000 |",
            f"| reid_ir | {e['reid_ir_images_per_s']:.0f} | {e['ratio_time_vs_peer']:.3f} |",
        ]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def tool_logging():
    """This tool's INFO lines on stderr, reid_ir's per-engine build messages muted.

    Undone on exit, so a caller in the same process (the tool's test) keeps its
    own root handlers and levels.
    """
    root, reid_ir = logging.getLogger(), logging.getLogger("reid_ir")
    saved = root.level, reid_ir.level
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    reid_ir.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        reid_ir.setLevel(saved[1])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchreid's import-time Cython warning
        import torchreid  # noqa: F401
    with tool_logging():
        res = run(args)
    text = markdown(res)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text, encoding="utf-8")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
