"""Per-iteration cost of every classification loss against ``softmax``, in one run.

One iteration = loss forward + backward (into the (B, D) features and the loss's
own parameters) + the loss's hooks' ``after_step`` (the IR center update).
Losses are measured in interleaved rounds (every loss once per round, in a
rotating order) so that load from other processes hits all of them alike.
Rounds are short (``--budget``, default 10 ms per loss: a few iterations) and
many (``--rounds``, default 101): on the shared 2-core VM this was measured
on, the machine's speed drifts over seconds to minutes (softmax's own median
moved between 1.75 and 2.76 ms per iteration across runs), so long blocks
(the earlier default, 0.25 s) put the losses of one round in different
periods and moved the ratios by +-0.05 between runs; short blocks
also run each loss with the caches the other losses left, as in training,
where the backbone's forward and backward run between two loss steps.
Times are this process's CPU time (``time.process_time``; with one thread that
is the work done, not the time spent waiting for a shared CPU), and each
reported ratio is the median over rounds of the ratio to ``softmax`` measured
in the same round ("best-of": ratio of the fastest rounds, the usual
micro-benchmark estimate of the unloaded cost). A second table (at
``--optimizer-step-classes``, default 751) adds the Adam step of the loss's own
parameters to every iteration, as in training: a learned head pays it for its
(C, D) class weights, an IR head has no class-weight parameters and pays the
center update instead. A last table times the center update alone at each class
count.

Example::

    OMP_NUM_THREADS=1 python tools/benchmark_losses.py            # 751 and 100,000 classes
    python tools/benchmark_losses.py --classes 751 --rounds 9 --json out.json
    python tools/benchmark_losses.py --classes 751 --optimizer-step-classes \
        --losses softmax am_softmax unpg_am_softmax --unpg-floor   # + UNPG's unavoidable part
    python tools/benchmark_losses.py --classes 751 --optimizer-step-classes \
        --losses softmax am_softmax unpg_am_softmax --small-arrays-ab  # numpy vs torch filter

The peer, torchreid's own classifier and label-smoothed ``CrossEntropyLoss``
(``torchreid_softmax``), runs in the same rounds; every table also gives the
IR heads' and reid_ir's softmax's ratio to it.

Targets (issue 5): IR heads <= 1.05x softmax at 751 classes; the center update
at 100,000 classes <= 1.5x its time at 751. (issue 6): each ``unpg_<head>`` <=
1.10x its ``<head>`` at batch 64 (printed as "UNPG overhead").
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import NamedTuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reid_ir.losses import build_loss, fused  # noqa: E402
from reid_ir.losses.base import LossOutput  # noqa: E402
from reid_ir.losses.centers import CenterBank  # noqa: E402
from reid_ir.losses.fused import unit_rows_with_grad  # noqa: E402
from reid_ir.losses.unpg import UNPGLoss  # noqa: E402

logger = logging.getLogger("benchmark_losses")

#: The peer: torchreid's classifier (an ``nn.Linear``, as its models build it) and its own
#: label-smoothed ``CrossEntropyLoss``, unmodified. ``softmax`` is reid_ir's equivalent.
PEER = "torchreid_softmax"

DEFAULT_LOSSES = [
    "softmax",
    PEER,
    "weighted_softmax",
    "norm_softmax",
    "a_softmax",
    "am_softmax",
    "arcface",
    "ir_softmax",
    "ir_a_softmax",
    "ir_am_softmax",
    "ir_arcface",
    "unpg_am_softmax",
    "unpg_arcface",
    "unpg_ir_am_softmax",
    "clmle",
]


#: Prefix of the diagnostic rows added by ``--unpg-floor``.
FLOOR_PREFIX = "unpg_floor_"


class UNPGFloor(UNPGLoss):
    """Diagnostic, not a loss to train with: the part of UNPG no filter implementation can avoid.

    The Gram matrix of the normalised embeddings (forward and backward) and the
    head's fused cross-entropy with one shared extra column taken from it
    (``s gram[0, 1]``), without the negative mask, the quartiles, the kept
    mask or their log-sum-exp. Its time over the head bounds from below what
    any UNPG costs over that head with this Gram product.
    """

    def forward(self, features: torch.Tensor, targets: torch.Tensor) -> LossOutput:
        z = unit_rows_with_grad(features)
        gram, _ = self.pair_similarities(z, targets)
        scale = self.head.logit_scale(features)  # a float, or (B, 1) feature norms
        extra = gram[0, 1] * (scale.view(-1) if isinstance(scale, torch.Tensor) else scale)
        loss, scaled_cos = self.head.margin_cross_entropy(features, targets, z, extra)
        return LossOutput(loss, scaled_cos)


class TorchreidSoftmax(torch.nn.Module):
    """The peer: ``nn.Linear`` + ``torchreid.losses.CrossEntropyLoss`` (label smoothing 0.1).

    Initialised as torchreid's models initialise their classifier (weights
    N(0, 0.01), bias 0), as :class:`reid_ir.losses.softmax.SoftmaxLoss` is.
    """

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        # torchreid's import warns that its Cython ranking is absent: irrelevant here
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            from reid_ir.compat import losses as torchreid_losses

        self.classifier = torch.nn.Linear(dim, num_classes)
        torch.nn.init.normal_(self.classifier.weight, 0, 0.01)
        torch.nn.init.zeros_(self.classifier.bias)
        self.criterion = torchreid_losses.CrossEntropyLoss(
            num_classes, use_gpu=False, label_smooth=True
        )

    def forward(self, features: torch.Tensor, targets: torch.Tensor) -> LossOutput:
        logits = self.classifier(features)
        return LossOutput(self.criterion(logits, targets), logits)

    def hooks(self) -> list:
        return []


class _Trainer:
    """The one engine attribute the IR hook reads in ``after_step``."""

    step_outputs: dict = {}


class _Built(NamedTuple):
    loss: torch.nn.Module
    hooks: list
    trainer: _Trainer
    optimizer: torch.optim.Optimizer | None  # Adam over the loss's own parameters, if any
    small_arrays_in_numpy: bool = True  # False: the torch path GPUs take (``--small-arrays-ab``)


#: Suffix of the rows added by ``--small-arrays-ab``: the loss with its small arrays in torch.
TORCH_ARRAYS_SUFFIX = ":torch-arrays"


def _build(name: str, num_classes: int, dim: int, seed: int) -> _Built:
    in_numpy = not name.endswith(TORCH_ARRAYS_SUFFIX)
    name = name.removesuffix(TORCH_ARRAYS_SUFFIX)
    torch.manual_seed(seed)
    counts = torch.randint(1, 50, (num_classes,))
    floor = name.startswith(FLOOR_PREFIX)
    if floor:
        name = "unpg_" + name[len(FLOOR_PREFIX) :]
    if name == PEER:
        loss = TorchreidSoftmax(num_classes, dim)
    else:
        loss = build_loss(name, num_classes=num_classes, feat_dim=dim, class_counts=counts)
    if floor:
        loss = UNPGFloor(loss.head, whisker=loss.whisker, gather=loss.gather)
    hooks = loss.hooks()
    for bank in (m for m in loss.modules() if isinstance(m, CenterBank)):  # also inside UNPG
        bank.centers.normal_()
        bank.initialized.fill_(True)
    hook = getattr(loss, "cluster_hook", None)
    if hook is not None:  # CLMLE: K clusters per class, as after a refresh
        labels = torch.arange(num_classes).repeat_interleave(hook.clusters_per_class)
        centroids = torch.nn.functional.normalize(torch.randn(len(labels), dim), dim=1)
        hook.set_clusters(centroids, labels, torch.zeros(0, dtype=torch.long))
    trainer = _Trainer()
    for hook in hooks:
        hook.trainer = trainer
    params = [p for p in loss.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=3e-4) if params else None
    return _Built(loss, hooks, trainer, optimizer, in_numpy)


def _iteration(built: _Built, features, targets, optimizer_step: bool = False) -> None:
    """Forward + backward (+ the Adam step of the loss's parameters) + hooks' ``after_step``."""
    fused.SMALL_ARRAYS_IN_NUMPY = built.small_arrays_in_numpy  # the backward reads it too
    try:
        x = features.detach().requires_grad_(True)
        out = built.loss(x, targets)
        out.loss.backward()
    finally:
        fused.SMALL_ARRAYS_IN_NUMPY = True
    if optimizer_step and built.optimizer is not None:
        built.optimizer.step()
    built.trainer.step_outputs = {"features": x.detach(), "targets": targets, "output": out}
    for hook in built.hooks:
        hook.after_step()
    for p in built.loss.parameters():
        p.grad = None


def time_losses(
    names: list[str],
    num_classes: int,
    batch: int,
    dim: int,
    iters: int,
    rounds: int,
    warmup: int,
    seed: int = 0,
    optimizer_step: bool = False,
) -> dict[str, list[float]]:
    """CPU seconds per iteration of each loss, one value per round."""
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, dim, generator=g)
    targets = torch.randint(0, num_classes, (batch,), generator=g)
    built = {name: _build(name, num_classes, dim, seed) for name in names}
    for name in names:
        for _ in range(warmup):
            _iteration(built[name], features, targets, optimizer_step)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            tic = time.process_time()
            for _ in range(iters):
                _iteration(built[name], features, targets, optimizer_step)
            samples[name].append((time.process_time() - tic) / iters)
    return samples


def time_center_update(
    num_classes: int, batch: int, dim: int, iters: int, rounds: int, seed: int = 0
) -> float:
    """CPU seconds per ema center update (the IR hook's work) at ``num_classes`` classes (median)."""
    g = torch.Generator().manual_seed(seed)
    bank = CenterBank(num_classes, dim)
    bank.centers.normal_(generator=g)
    features = torch.randn(batch, dim, generator=g)
    targets = torch.randint(0, num_classes, (batch,), generator=g)
    bank.unit_centers()
    for _ in range(10):
        bank.update(features, targets, "ema", 0.9)
    samples = []
    for _ in range(rounds):
        tic = time.process_time()
        for _ in range(iters):
            bank.update(features, targets, "ema", 0.9)
        samples.append((time.process_time() - tic) / iters)
    return statistics.median(samples)


def _median_ratio(times: list[float], reference: list[float]) -> float:
    """Median over rounds of ``times[r] / reference[r]`` (both measured in the same rounds)."""
    return statistics.median(t / b for t, b in zip(times, reference, strict=True))


def _compared_to_peer(name: str) -> bool:
    """Rows whose ratio to the torchreid peer is printed: reid_ir's softmax and the IR heads."""
    return name == "softmax" or name.startswith("ir_")


def measure(args: argparse.Namespace, num_classes: int, optimizer_step: bool) -> dict:
    """Time every loss at ``num_classes`` classes; log and return the ratio table."""
    probe = time_losses(
        ["softmax"], num_classes, args.batch, args.dim, iters=2, rounds=1, warmup=1
    )["softmax"][0]
    iters = max(1, int(args.budget / probe))
    samples = time_losses(
        args.losses,
        num_classes,
        args.batch,
        args.dim,
        iters,
        args.rounds,
        warmup=max(1, iters // 4),
        optimizer_step=optimizer_step,
    )
    base = samples["softmax"]
    what = " + Adam step of the loss's own parameters" if optimizer_step else ""
    logger.info(
        "%d classes%s (%d iterations x %d rounds per loss)", num_classes, what, iters, args.rounds
    )
    logger.info("  %-18s %10s %10s %10s", "loss", "ms / iter", "x softmax", "best-of")
    table = {}
    for name in args.losses:
        ms = 1e3 * statistics.median(samples[name])
        ratio = _median_ratio(samples[name], base)
        best = min(samples[name]) / min(base)
        table[name] = {"ms": ms, "ratio": ratio, "ratio_of_minima": best}
        logger.info("  %-18s %10.3f %10.3f %10.3f", name, ms, ratio, best)
    for name in args.losses:
        if name.startswith(FLOOR_PREFIX):
            head, what = name[len(FLOOR_PREFIX) :], "UNPG floor   "
        elif name.startswith("unpg_"):
            head, what = name[len("unpg_") :].removesuffix(TORCH_ARRAYS_SUFFIX), "UNPG overhead"
        else:
            continue
        if head not in samples:
            continue
        ratio = _median_ratio(samples[name], samples[head])
        table[name]["x_head"] = ratio
        target = "(target <= 1.10)" if what == "UNPG overhead" else "(Gram + shared column only)"
        logger.info("  %s %-22s %.3f x %s %s", what, name, ratio, head, target)
    if PEER in samples:
        logger.info("  against the peer (%s):", PEER)
        for name in args.losses:
            table[name]["x_peer"] = _median_ratio(samples[name], samples[PEER])
            if _compared_to_peer(name):
                logger.info("  %-18s %.3f x %s", name, table[name]["x_peer"], PEER)
    logger.info("")
    return table


def _ratio_table(columns: list, key: str, title: str, keep) -> list[str]:
    """Markdown lines of the ``key`` ratios (a row per loss that has it and ``keep(loss)``)."""
    with_key = [(n, t) for n, t in columns if any(key in row for row in t.values())]
    if not with_key:
        return []
    lines = ["", f"| {title} |" + "".join(f" {n} |" for n, _ in with_key)]
    lines.append("|---|" + "---:|" * len(with_key))
    for loss, row in columns[0][1].items():
        if key in row and keep(loss):
            cells = "".join(f" {t[loss][key]:.3f} |" for _, t in with_key)
            lines.append(f"| {loss} |{cells}")
    return lines


def markdown_table(results: dict) -> str:
    """The results of :func:`main` as one markdown table (a row per loss, columns per table)."""
    columns = [(f"{c} classes", results["losses"][c]) for c in results["losses"]]
    columns += [
        (f"{c} + Adam step", table) for c, table in results.get("with_optimizer_step", {}).items()
    ]
    header = "| loss |" + "".join(f" {name}: ms | x softmax |" for name, _ in columns)
    lines = [header, "|---|" + "---:|---:|" * len(columns)]
    for loss in columns[0][1]:
        cells = "".join(
            f" {t[loss]['ms']:.2f} | {t[loss]['ratio']:.3f} |" if loss in t else " | |"
            for _, t in columns
        )
        lines.append(f"| {loss} |{cells}")
    lines += _ratio_table(columns, "x_head", "x head", lambda loss: True)
    lines += _ratio_table(columns, "x_peer", f"x {PEER}", _compared_to_peer)
    updates = results.get("center_update_us", {})
    if updates:
        lines += [
            "",
            "center update: "
            + ", ".join(f"{us:.0f} us at {c} classes" for c, us in updates.items()),
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, nargs="+", default=[751, 100_000])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--losses", nargs="+", default=DEFAULT_LOSSES)
    parser.add_argument("--rounds", type=int, default=101, help="interleaved rounds (median taken)")
    parser.add_argument(
        "--budget", type=float, default=0.01, help="target seconds per loss per round"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--json", type=str, default="", help="also write the results here")
    parser.add_argument(
        "--markdown", type=str, default="", help="also write the tables here, as markdown"
    )
    parser.add_argument(
        "--optimizer-step-classes",
        type=int,
        nargs="*",
        default=[751],
        help="also time, at these class counts, iterations that include the Adam step of "
        "the loss's own parameters (learned class weights; IR heads have none)",
    )
    parser.add_argument(
        "--unpg-floor",
        action="store_true",
        help="also time, for every unpg_<head>, UNPG's unavoidable part alone (the Gram matrix "
        "and one shared column, no filter): a diagnostic row unpg_floor_<head>",
    )
    parser.add_argument(
        "--small-arrays-ab",
        action="store_true",
        help="also time every unpg_<head> with its small (N, N) arrays in torch (the GPU path) "
        "instead of numpy: rows unpg_<head>:torch-arrays, compared in the same rounds",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    unpg = [n for n in args.losses if n.startswith("unpg_") and not n.startswith(FLOOR_PREFIX)]
    if args.unpg_floor:
        args.losses += [FLOOR_PREFIX + n[len("unpg_") :] for n in unpg]
    if args.small_arrays_ab:
        args.losses += [n + TORCH_ARRAYS_SUFFIX for n in unpg]
    torch.set_num_threads(args.threads)
    if "softmax" not in args.losses:
        args.losses = ["softmax", *args.losses]

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    logger.info(
        "torch %s, %d thread(s), %s, %d CPUs, load average %.2f %.2f %.2f",
        torch.__version__,
        args.threads,
        platform.processor() or platform.machine(),
        os.cpu_count() or 0,
        *load,
    )
    logger.info(
        "batch %d, dim %d; CPU time per iteration = forward + backward + hooks\n",
        args.batch,
        args.dim,
    )
    results: dict = {
        "batch": args.batch,
        "dim": args.dim,
        "threads": args.threads,
        "load_before": load,
        "losses": {},
    }
    for num_classes in args.classes:
        results["losses"][str(num_classes)] = measure(args, num_classes, optimizer_step=False)
    if args.optimizer_step_classes:
        results["with_optimizer_step"] = {}
        for num_classes in args.optimizer_step_classes:
            results["with_optimizer_step"][str(num_classes)] = measure(
                args, num_classes, optimizer_step=True
            )

    updates = {}
    for num_classes in args.classes:
        updates[num_classes] = time_center_update(
            num_classes, args.batch, args.dim, iters=200, rounds=args.rounds
        )
    small = min(args.classes)
    logger.info("center update (ema, batch %d, dim %d)", args.batch, args.dim)
    for num_classes, t in updates.items():
        logger.info(
            "  %7d classes: %8.1f us   x %d classes: %.3f",
            num_classes,
            1e6 * t,
            small,
            t / updates[small],
        )
    results["center_update_us"] = {str(c): 1e6 * t for c, t in updates.items()}
    results["load_after"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    logger.info("\nload average after: %.2f %.2f %.2f", *results["load_after"])
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    if args.markdown:
        Path(args.markdown).write_text(markdown_table(results))
    return results


if __name__ == "__main__":
    main()
