"""Time reid_ir's evaluator against torchreid 0.2.5 on synthetic re-ID features.

Generates Market-1501- or MSMT17-shaped features (identity clusters in groups
of look-alikes, per-camera shifts, per-image noise with a heavy tail, 2% failed
detections, distractors with pid 0 and junk with pid -1), then times in one run,
with the same torch threads:

* torchreid: ``compute_distance_matrix`` + ``evaluate_rank(use_cython=False)``
  (on the gallery without junk, as torchreid's dataset loaders give it);
* reid_ir: ``evaluate`` end to end from the features (junk included; it drops it);
* the q x g x d matrix product alone (chunked into a reused buffer, the
  fastest way to compute it here; Market also shows the one-shot product).

It checks that the metrics agree. torchreid sorts with ``np.argsort``, which
orders equal distances arbitrarily, and float32 distances at this scale do
tie; so the exactness check also runs torchreid (untimed) on the same
distances with ties broken by gallery index (reid_ir's documented rule), which
must agree to 1e-6. Exits with status 1 if a check fails.

Examples:
    python tools/benchmark_eval.py --scale market --dim 512
    python tools/benchmark_eval.py --scale market --dim 2048
    python tools/benchmark_eval.py --scale msmt --dim 2048          # reid_ir only, peak RSS
    python tools/benchmark_eval.py --scale market --dim 2048 --rerank
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import resource
import statistics
import sys
import time
import warnings

import numpy as np
import torch

from reid_ir.evaluation import evaluate
from reid_ir.evaluation.ranking import chunk_rows

logger = logging.getLogger("benchmark_eval")

SCALES = {
    "market": dict(ids=750, query=3368, gallery=13115, distractors=2798, junk=3819, cams=6),
    "msmt": dict(ids=3060, query=11659, gallery=82161, distractors=0, junk=0, cams=15),
    "tiny": dict(ids=30, query=60, gallery=400, distractors=40, junk=30, cams=6),  # smoke tests
}


def make_features(scale: str, dim: int, seed: int = 0, latent: int = 32, noise: float = 0.42,
                  cam_shift: float = 0.25, spread: float = 0.2, id_sep: float = 0.45,
                  group: int = 5, outliers: float = 0.02):  # fmt: skip
    """Synthetic re-ID features (float32) and labels.

    Identities are points in a ``latent``-d space, in groups of ``group``
    look-alikes (``id_sep`` apart); an image adds its camera's shift and noise
    whose scale is lognormal (``spread``), and a fraction ``outliers`` of the
    images are failed detections drawn like distractors. A fixed random
    projection maps everything to ``dim`` dimensions, so the difficulty does
    not depend on ``dim``. Defaults give rank-1 ~0.91, mAP ~0.75 on Market.

    Returns:
        qf (Q, dim), gf (G, dim) float32; q_pids, g_pids, q_camids, g_camids int64.
    """
    s = SCALES[scale]
    rng = np.random.default_rng(seed)
    proj = (rng.standard_normal((latent, dim)) / np.sqrt(latent)).astype(np.float32)
    groups = rng.standard_normal((s["ids"] // group + 1, latent)).astype(np.float32)
    centers = groups[np.arange(s["ids"]) // group]
    centers = centers + id_sep * rng.standard_normal((s["ids"], latent)).astype(np.float32)
    cams = (cam_shift * rng.standard_normal((s["cams"], latent))).astype(np.float32)

    def draw(pids: np.ndarray, camids: np.ndarray) -> np.ndarray:
        out = np.empty((len(pids), dim), np.float32)
        for a in range(0, len(pids), 8192):
            p, c = pids[a : a + 8192], camids[a : a + 8192]
            scale_i = noise * rng.lognormal(0.0, spread, (len(p), 1)).astype(np.float32)
            z = centers[np.maximum(p, 1) - 1] + cams[c]
            z += scale_i * rng.standard_normal((len(p), latent), dtype=np.float32)
            odd = (p <= 0) | (rng.random(len(p)) < outliers)  # distractor, junk, failed detection
            z[odd] = groups[rng.integers(0, len(groups), odd.sum())]
            z[odd] += (id_sep + noise) * rng.standard_normal((odd.sum(), latent), dtype=np.float32)
            out[a : a + 8192] = z @ proj
        return out

    q_pids = rng.integers(1, s["ids"] + 1, s["query"])
    q_cams = rng.integers(0, s["cams"], s["query"])
    g_pids = np.concatenate([
        rng.integers(1, s["ids"] + 1, s["gallery"]),
        np.zeros(s["distractors"], np.int64),
        -np.ones(s["junk"], np.int64),
    ])  # fmt: skip
    g_cams = rng.integers(0, s["cams"], len(g_pids))
    perm = rng.permutation(len(g_pids))
    g_pids, g_cams = g_pids[perm], g_cams[perm]
    return draw(q_pids, q_cams), draw(g_pids, g_cams), q_pids, g_pids, q_cams, g_cams


def peak_rss_gb() -> float:
    """Peak resident set size of this process so far (GB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def timed(fn, repeat: int) -> tuple[list[float], list[float], object]:
    """Run ``fn`` ``repeat`` times: (wall-clock seconds, process CPU seconds, last result).

    CPU time (all threads of this process) is the steadier measure when other
    jobs share the cores; with one thread it is the work done.
    """
    wall, cpu, out = [], [], None
    for _ in range(repeat):
        c, t = time.process_time(), time.perf_counter()
        out = fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return wall, cpu, out


def product_alone(qf: torch.Tensor, gf: torch.Tensor, rows: int) -> None:
    """q x g x d product in chunks of ``rows`` queries into one reused buffer."""
    buf = torch.empty(min(rows, len(qf)), len(gf))
    for s in range(0, len(qf), rows):
        q = qf[s : s + rows]
        torch.mm(q, gf.t(), out=buf[: len(q)])


def tie_broken(distmat: np.ndarray) -> np.ndarray:
    """float64 copy of a float32 distmat with equal values ordered by column.

    Adds col * delta with delta below half of the smallest float32 spacing in
    the matrix, so distinct values keep their order and ties get a stable order.
    """
    smallest = float(np.abs(distmat).min())
    if smallest <= 0:
        raise ValueError("tie check needs strictly positive distances")
    delta = float(np.spacing(np.float32(smallest))) / (2.0 * distmat.shape[1])
    return distmat.astype(np.float64) + np.arange(distmat.shape[1]) * delta


def tied_positives(distmat, q_pids, g_pids) -> int:
    """Positives whose distance equals that of some other-identity gallery item."""
    count = 0
    for i in range(len(q_pids)):
        row = distmat[i]
        same = g_pids == q_pids[i]
        count += int(np.isin(row[same], row[~same]).sum())
    return count


def run(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    info = {
        "scale": args.scale, "dim": args.dim, "metric": args.metric, "backend": args.backend,
        "rerank": args.rerank, "torch_threads": threads, "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
        "load_before": [round(x, 2) for x in os.getloadavg()], "repeat": args.repeat,
    }  # fmt: skip
    t = time.perf_counter()
    qf, gf, q_pids, g_pids, q_cams, g_cams = make_features(args.scale, args.dim, args.seed)
    keep = g_pids != -1
    info.update(num_query=len(qf), num_gallery=int(keep.sum()), num_junk=int((~keep).sum()))
    logger.info("features generated in %.1f s: %d queries, %d gallery + %d junk, %d-d",
                time.perf_counter() - t, len(qf), keep.sum(), (~keep).sum(), args.dim)  # fmt: skip
    qf_t, gf_t = torch.from_numpy(qf), torch.from_numpy(gf)
    g_clean = gf_t if keep.all() else gf_t[torch.from_numpy(keep)]
    info["rss_before_eval_gb"] = round(peak_rss_gb(), 2)

    # reid_ir, end to end from the features
    kwargs = dict(metric=args.metric, backend=args.backend, rerank=args.rerank)
    ours_t, ours_c, ours = timed(
        lambda: evaluate(qf_t, gf_t, q_pids, g_pids, q_cams, g_cams, **kwargs), args.repeat
    )
    info["rss_after_eval_gb"] = round(peak_rss_gb(), 2)
    info["ours_s"], info["ours_cpu_s"] = ours_t, ours_c
    info["backend_used"] = ours["backend"]
    info["metrics"] = {k: ours[k] for k in ("rank1", "rank5", "mAP", "mINP", "num_valid_queries")}
    logger.info(
        "reid_ir: %s s, rank-1 %.4f mAP %.4f",
        [round(x, 3) for x in ours_t],
        ours["rank1"],
        ours["mAP"],
    )

    # the matrix product alone, measured the same way
    rows = chunk_rows(1024, len(g_clean))
    prod_t, prod_c, _ = timed(lambda: product_alone(qf_t, g_clean, rows), args.repeat)
    info["product_s"], info["product_cpu_s"] = prod_t, prod_c
    if args.scale != "msmt":
        full_t, full_c, _ = timed(lambda: torch.mm(qf_t, g_clean.t()), args.repeat)
        info["product_one_shot_s"], info["product_one_shot_cpu_s"] = full_t, full_c

    use_torchreid = args.torchreid == "yes" or (
        args.torchreid == "auto" and args.scale != "msmt" and not args.rerank
    )
    if use_torchreid:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torchreid.reid.metrics import compute_distance_matrix
            from torchreid.reid.metrics.rank import evaluate_rank
        gp, gc = g_pids[keep], g_cams[keep]

        def torchreid_eval():
            distmat = compute_distance_matrix(qf_t, g_clean, args.metric).numpy()
            return distmat, evaluate_rank(distmat, q_pids, gp, q_cams, gc, 50, use_cython=False)

        wall, cpu, (distmat, (cmc_ref, map_ref)) = timed(torchreid_eval, 1)
        info["torchreid_s"], info["torchreid_cpu_s"] = wall[0], cpu[0]
        logger.info("torchreid: %.1f s", info["torchreid_s"])
        info["check"] = {
            "max_abs_cmc_diff": float(np.abs(np.asarray(ours["cmc"]) - cmc_ref).max()),
            "abs_mAP_diff": abs(ours["mAP"] - float(map_ref)),
            "positives_tied_with_a_negative": tied_positives(distmat, q_pids, gp),
        }
        if args.tie_check:
            cmc_tb, map_tb = evaluate_rank(tie_broken(distmat), q_pids, gp, q_cams, gc, 50,
                                           use_cython=False)  # fmt: skip
            info["check"]["tie_broken_max_abs_cmc_diff"] = float(
                np.abs(np.asarray(ours["cmc"]) - cmc_tb).max()
            )
            info["check"]["tie_broken_abs_mAP_diff"] = abs(ours["mAP"] - float(map_tb))
    info["load_after"] = [round(x, 2) for x in os.getloadavg()]
    return info


def report(info: dict) -> bool:
    med = statistics.median
    ours, prod = med(info["ours_s"]), med(info["product_s"])
    ours_c, prod_c = med(info["ours_cpu_s"]), med(info["product_cpu_s"])
    lines = [
        f"## evaluation benchmark: {info['scale']}, {info['dim']}-d, {info['metric']}"
        f"{', re-ranking' if info['rerank'] else ''}",
        "",
        f"{info['num_query']} queries x {info['num_gallery']} gallery (+{info['num_junk']} junk); "
        f"{info['torch_threads']} torch threads on {info['cpu_count']} CPUs ({info['machine']}); "
        f"load average before {info['load_before']}, after {info['load_after']}; "
        f"median of {info['repeat']} runs (torchreid: 1 run)",
        "",
        "| step | wall (s) | CPU (s) | wall ratio | CPU ratio |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    if "torchreid_s" in info:
        tr, tr_c = info["torchreid_s"], info["torchreid_cpu_s"]
        lines.append(
            "| torchreid 0.2.5: compute_distance_matrix + evaluate_rank (python) "
            f"| {tr:.2f} | {tr_c:.2f} | torchreid / reid_ir = {tr / ours:.1f} "
            f"| {tr_c / ours_c:.1f} |"
        )
    lines.append(
        f"| reid_ir evaluate (backend {info['backend']} -> {info['backend_used']}), end to end "
        f"| {ours:.3f} | {ours_c:.3f} | | |"
    )
    lines.append(
        f"| q x g x d matrix product alone | {prod:.3f} | {prod_c:.3f} "
        f"| reid_ir / product = {ours / prod:.2f} | {ours_c / prod_c:.2f} |"
    )
    if "product_one_shot_s" in info:
        one, one_c = med(info["product_one_shot_s"]), med(info["product_one_shot_cpu_s"])
        lines.append(
            f"| (same product, one shot, fresh output) | {one:.3f} | {one_c:.3f} "
            f"| reid_ir / product = {ours / one:.2f} | {ours_c / one_c:.2f} |"
        )
    m = info["metrics"]
    lines += [
        "",
        f"metrics: rank-1 {m['rank1']:.4f}, rank-5 {m['rank5']:.4f}, mAP {m['mAP']:.4f}, "
        f"mINP {m['mINP']:.4f} ({m['num_valid_queries']} valid queries)",
        f"peak RSS: {info['rss_after_eval_gb']:.2f} GB after reid_ir "
        f"({info['rss_before_eval_gb']:.2f} GB before it: features and libraries)",
    ]
    ok = True
    if "check" in info:
        c = info["check"]
        lines.append(
            f"vs torchreid: max |dCMC| {c['max_abs_cmc_diff']:.2e}, |dmAP| {c['abs_mAP_diff']:.2e} "
            f"({c['positives_tied_with_a_negative']} positives tie exactly with a negative; "
            "torchreid orders ties arbitrarily)"
        )
        if "tie_broken_abs_mAP_diff" in c:
            exact = (
                c["tie_broken_max_abs_cmc_diff"] <= 1e-6 and c["tie_broken_abs_mAP_diff"] <= 1e-6
            )
            ok = ok and exact
            lines.append(
                f"vs torchreid with ties ordered by gallery index: max |dCMC| "
                f"{c['tie_broken_max_abs_cmc_diff']:.2e}, |dmAP| {c['tie_broken_abs_mAP_diff']:.2e} "
                f"-> {'identical (<= 1e-6)' if exact else 'MISMATCH'}"
            )
    print("\n".join(lines))
    return ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--scale", choices=sorted(SCALES), default="market")
    p.add_argument("--dim", type=int, default=512, help="feature size (512, 2048, ...)")
    p.add_argument("--metric", choices=["euclidean", "cosine"], default="euclidean")
    p.add_argument("--backend", choices=["auto", "torch", "faiss"], default="auto")
    p.add_argument("--repeat", type=int, default=3, help="timed runs of reid_ir and the product")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument(
        "--torchreid",
        choices=["auto", "yes", "no"],
        default="auto",
        help="time torchreid too (auto: Market without re-ranking; MSMT needs ~16 GB)",
    )
    p.add_argument(
        "--no-tie-check",
        dest="tie_check",
        action="store_false",
        help="skip the second (untimed) torchreid run with ties ordered by index",
    )
    p.add_argument(
        "--rerank", action="store_true", help="time reid_ir with k-reciprocal re-ranking"
    )
    p.add_argument("--json", default="", help="also write the numbers to this JSON file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("faiss").setLevel(logging.WARNING)
    info = run(args)
    if args.json:
        from reid_ir.reports.tables import write_json

        write_json(args.json, info)
    return 0 if report(info) else 1


if __name__ == "__main__":
    sys.exit(main())
