"""Imbalanced training splits as pure functions over ``(relative_path, pid, camid)`` records.

Profiles (training identities only; query and gallery are never touched):

* ``full``: every training image.
* ``long_tail``: identities in a seeded order get
  ``n_i = max(min_images, round(n_max * rho ** (-i / (N - 1))))`` images. The
  seeded order is feasible by construction: counts are handed out from the
  largest down, each to the first identity (in seeded order) that still has
  that many images, which succeeds whenever any assignment does.
  ``n_max = 0`` picks the largest head count the training set can supply.
* ``tail_fewshot``: ``round(tail_fraction * N)`` identities, seeded among those
  with at least ``tail_images`` images, keep ``tail_images`` images; the rest keep all.
* ``balanced_control``: the identities and total image count of the split named
  by ``control_of`` (built from the same keys and seed), spread as evenly as each
  identity's images allow (water-filling; the remainder goes to seeded identities).

Identity halves (``id_half``, for the warm-start protocol: pretrain on one half,
fine-tune on the other): the training identities sorted by SHA-256 of
``0:id_half:<pid>`` (seed :data:`ID_HALF_SEED`, fixed, independent of the split's
seed so every split of one half has the same identities); ``P`` is the first
``floor(N / 2)`` of them, ``F`` the other ``ceil(N / 2)``. With ``id_half`` set,
the records are restricted to that half before the profile applies, and the
manifest records the half, the rule and its seed under ``"id_half"``.

Within an identity, kept images are taken round-robin over its cameras, cameras
and images in seeded order. Every "seeded order" is a sort by SHA-256 of
``seed:purpose:key`` rather than a numpy stream, so a manifest is byte-identical
on any machine and numpy version.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from reid_ir.errors import DataError, DatasetNotFoundError

Record = tuple[str, int, int]  # (path relative to the dataset folder, pid, camid)

FORMAT = "reid_ir.imbalance_split/1"
DATASETS = ("market1501", "dukemtmcreid")
PROFILES = ("full", "long_tail", "tail_fewshot", "balanced_control")
#: The keys each profile depends on (besides the seed).
PROFILE_KEYS = {
    "full": (),
    "long_tail": ("rho", "n_max", "min_images"),
    "tail_fewshot": ("tail_fraction", "tail_images"),
}
PROFILE_KEYS["balanced_control"] = ("control_of",)  # plus the keys of control_of
DEFAULTS = {
    "rho": 10.0,
    "n_max": 0,
    "min_images": 1,
    "tail_fraction": 0.5,
    "tail_images": 2,
    "control_of": "long_tail",
}


#: The identity halves: P (pretraining) and F (fine-tuning); '' means all identities.
ID_HALVES = ("P", "F")
#: Seed of the identity halves (fixed: the halves must not move with a split's seed).
ID_HALF_SEED = 0
ID_HALF_RULE = (
    "training pids sorted by SHA-256 of '<seed>:id_half:<pid>'; "
    "P = the first floor(N/2), F = the other ceil(N/2)"
)


def _key(seed: int, purpose: str, key: object) -> bytes:
    return hashlib.sha256(f"{seed}:{purpose}:{key}".encode()).digest()


def check_id_half(half: str) -> str:
    """``half`` if it is '', 'P' or 'F'.

    Raises:
        ValueError: Any other value, naming the key and the accepted values.
    """
    if half not in ("", *ID_HALVES):
        raise ValueError(
            f"data.imbalance.id_half={half!r}: expected '' (all identities), 'P' or 'F'"
        )
    return half


def id_half_pids(pids: Iterable[int], half: str, seed: int = ID_HALF_SEED) -> list[int]:
    """The pids of identity half ``half`` (sorted); see the module docstring for the rule.

    Args:
        pids: The training identities (duplicates ignored).
        half: ``P`` (first ``floor(N/2)`` in seeded order) or ``F`` (the rest).
        seed: Seed of the order (keep :data:`ID_HALF_SEED` so splits agree).

    Raises:
        ValueError: ``half`` not P or F, or fewer than two identities.
    """
    if check_id_half(half) == "":
        raise ValueError("id_half_pids needs half 'P' or 'F', got ''")
    unique = sorted({int(p) for p in pids})
    if len(unique) < 2:
        raise ValueError(f"cannot split {len(unique)} training identities into two halves")
    order = sorted(unique, key=lambda pid: _key(seed, "id_half", pid))
    k = len(order) // 2
    return sorted(order[:k] if half == "P" else order[k:])


def restrict_to_id_half(
    records: Iterable[Record], half: str, seed: int = ID_HALF_SEED
) -> list[Record]:
    """The records whose pid is in identity half ``half`` ('' keeps all), in their order."""
    records = list(records)
    if check_id_half(half) == "":
        return records
    keep = set(id_half_pids((r[1] for r in records), half, seed))
    return [r for r in records if int(r[1]) in keep]


def profile_params(profile: str, **params: Any) -> dict[str, Any]:
    """The validated parameters a profile depends on (defaults filled in, others dropped).

    Raises:
        ValueError: Unknown profile or a value out of range, naming key and value.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown imbalance profile {profile!r}; known profiles: {list(PROFILES)}")
    check_id_half(params.pop("id_half", "") or "")  # validated here, recorded by make_manifest
    p = {**DEFAULTS, **{k: v for k, v in params.items() if v is not None}}
    keys = list(PROFILE_KEYS[profile])
    if profile == "balanced_control":
        if p["control_of"] not in ("long_tail", "tail_fewshot"):
            raise ValueError(
                f"control_of={p['control_of']!r}: expected 'long_tail' or 'tail_fewshot'"
            )
        keys += PROFILE_KEYS[p["control_of"]]
    out: dict[str, Any] = {}
    for k in keys:
        v = p[k]
        if k == "control_of":
            out[k] = str(v)
            continue
        v = float(v) if k in ("rho", "tail_fraction") else v
        if k in ("n_max", "min_images", "tail_images"):
            if isinstance(v, bool) or int(v) != v:
                raise ValueError(f"{k}={v!r}: expected an integer")
            v = int(v)
        out[k] = v
    checks = {
        "rho": lambda v: math.isfinite(v) and v >= 1.0,
        "n_max": lambda v: v >= 0,
        "min_images": lambda v: v >= 1,
        "tail_fraction": lambda v: 0.0 < v <= 1.0,
        "tail_images": lambda v: v >= 1,
    }
    expect = {
        "rho": ">= 1",
        "n_max": ">= 0 (0: largest feasible)",
        "min_images": ">= 1",
        "tail_fraction": "in (0, 1]",
        "tail_images": ">= 1",
    }
    for k, v in out.items():
        if k in checks and not checks[k](v):
            raise ValueError(f"{k}={v!r}: expected {expect[k]}")
    if out.get("n_max", 0) and out["n_max"] < out["min_images"]:
        raise ValueError(f"n_max={out['n_max']} is below min_images={out['min_images']}")
    return out


def _by_pid(records: Iterable[Record]) -> dict[int, list[Record]]:
    groups: dict[int, list[Record]] = defaultdict(list)
    for r in records:
        groups[int(r[1])].append(r)
    return dict(sorted(groups.items()))


def pick_images(images: Sequence[Record], n: int, seed: int) -> list[Record]:
    """n of one identity's images, round-robin over its cameras (both in seeded order)."""
    if n > len(images):
        raise ValueError(f"pid {images[0][1]}: {n} images asked, {len(images)} exist")
    cams: dict[int, list[Record]] = defaultdict(list)
    for r in sorted(images, key=lambda r: _key(seed, "image", r[0])):
        cams[r[2]].append(r)
    queues = [cams[c] for c in sorted(cams, key=lambda c: _key(seed, f"camera:{images[0][1]}", c))]
    out: list[Record] = []
    while len(out) < n:
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop(0))
    return out


def long_tail_targets(n_ids: int, n_max: int, rho: float, min_images: int) -> list[int]:
    """``n_i = max(min_images, round(n_max * rho ** (-i / (N - 1))))`` for i = 0..N-1 (largest first)."""
    if n_ids == 1:
        return [n_max]
    return [
        max(min_images, int(math.floor(n_max * rho ** (-i / (n_ids - 1)) + 0.5)))
        for i in range(n_ids)
    ]


def _feasible(targets: Sequence[int], avail: Sequence[int]) -> int:
    """-1 if sorted targets fit sorted availabilities, else the first rank that does not fit."""
    for i, (t, a) in enumerate(
        zip(sorted(targets, reverse=True), sorted(avail, reverse=True), strict=True)
    ):
        if t > a:
            return i
    return -1


def _long_tail_counts(groups: dict[int, list[Record]], p: dict, seed: int) -> dict[int, int]:
    avail = [len(v) for v in groups.values()]
    n = len(avail)
    if p["n_max"]:
        targets = long_tail_targets(n, p["n_max"], p["rho"], p["min_images"])
        bad = _feasible(targets, avail)
        if bad >= 0:
            t = sorted(targets, reverse=True)[bad]
            have = sum(a >= t for a in avail)
            raise ValueError(
                f"long_tail n_max={p['n_max']} rho={p['rho']} min_images={p['min_images']} asks for more images "
                f"than exist: {bad + 1} identities need >= {t} images, the training set has {have} "
                "(use a smaller n_max, or n_max=0 for the largest feasible)"
            )
    else:
        for n_max in range(max(avail), p["min_images"] - 1, -1):
            targets = long_tail_targets(n, n_max, p["rho"], p["min_images"])
            if _feasible(targets, avail) < 0:
                break
        else:
            raise ValueError(
                f"long_tail min_images={p['min_images']}: some identities have only {min(avail)} images"
            )
    order = sorted(groups, key=lambda pid: _key(seed, "long_tail", pid))
    counts: dict[int, int] = {}
    for t in sorted(targets, reverse=True):  # largest first; nested eligibility keeps this feasible
        pid = next(pid for pid in order if pid not in counts and len(groups[pid]) >= t)
        counts[pid] = t
    return counts


def _tail_fewshot_counts(groups: dict[int, list[Record]], p: dict, seed: int) -> dict[int, int]:
    k = int(math.floor(p["tail_fraction"] * len(groups) + 0.5))
    if k < 1:
        raise ValueError(
            f"tail_fraction={p['tail_fraction']} of {len(groups)} identities rounds to 0 tail identities"
        )
    eligible = [pid for pid, v in groups.items() if len(v) >= p["tail_images"]]
    if len(eligible) < k:
        raise ValueError(
            f"tail_fewshot tail_images={p['tail_images']} tail_fraction={p['tail_fraction']} asks for "
            f"more images than exist: {k} identities need >= {p['tail_images']} images, "
            f"{len(eligible)} have them"
        )
    tail = set(sorted(eligible, key=lambda pid: _key(seed, "tail_fewshot", pid))[:k])
    return {pid: (p["tail_images"] if pid in tail else len(v)) for pid, v in groups.items()}


def _balanced_counts(groups: dict[int, list[Record]], total: int, seed: int) -> dict[int, int]:
    """Spread ``total`` images over ``groups`` as evenly as their sizes allow."""
    avail = {pid: len(v) for pid, v in groups.items()}
    if total > sum(avail.values()):
        raise ValueError(f"balanced_control: {total} images asked, {sum(avail.values())} exist")
    level = 0
    while sum(min(a, level + 1) for a in avail.values()) <= total:
        level += 1
    counts = {pid: min(a, level) for pid, a in avail.items()}
    spare = sorted(
        (pid for pid, a in avail.items() if a > level), key=lambda pid: _key(seed, "balanced", pid)
    )
    for pid in spare[: total - sum(counts.values())]:
        counts[pid] += 1
    return counts


def split_counts(
    records: Iterable[Record], profile: str, seed: int = 0, **params: Any
) -> dict[int, int]:
    """Images kept per identity (pid -> count) for a profile; see the module docstring."""
    p = profile_params(profile, **params)
    groups = _by_pid(records)
    if not groups:
        raise ValueError("no training images to split")
    if profile == "full":
        return {pid: len(v) for pid, v in groups.items()}
    if profile == "long_tail":
        return _long_tail_counts(groups, p, seed)
    if profile == "tail_fewshot":
        return _tail_fewshot_counts(groups, p, seed)
    control = split_counts(groups_records(groups), p["control_of"], seed, **p)
    kept = {pid: groups[pid] for pid, c in control.items() if c > 0}
    return _balanced_counts(kept, sum(control.values()), seed)


def groups_records(groups: dict[int, list[Record]]) -> list[Record]:
    """Flatten pid -> records back into one list."""
    return [r for v in groups.values() for r in v]


def gini(counts: Sequence[int]) -> float:
    """Gini coefficient of non-negative counts (0: all equal, -> 1: one holds everything)."""
    xs = sorted(int(c) for c in counts)
    n, s = len(xs), sum(xs)
    if n == 0 or s == 0:
        return 0.0
    return (2 * sum((i + 1) * x for i, x in enumerate(xs))) / (n * s) - (n + 1) / n


def summarize(counts: Sequence[int]) -> dict[str, Any]:
    """images, identities, imbalance_ratio (max/min), gini, top20_share, min/median/max of the counts."""
    xs = sorted((int(c) for c in counts if c > 0), reverse=True)
    if not xs:
        raise ValueError("empty split")
    top = max(1, math.ceil(0.2 * len(xs)))
    mid = len(xs) // 2
    median = xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2
    return {
        "images": sum(xs),
        "identities": len(xs),
        "imbalance_ratio": round(xs[0] / xs[-1], 6),
        "gini": round(gini(xs), 6),
        "top20_share": round(sum(xs[:top]) / sum(xs), 6),
        "min_count": xs[-1],
        "median_count": median,
        "max_count": xs[0],
    }


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def make_manifest(
    dataset: str,
    records: Iterable[Record],
    profile: str,
    seed: int = 0,
    id_half: str = "",
    **params: Any,
) -> dict:
    """Build a split manifest from a dataset's training records.

    Args:
        dataset: ``market1501`` or ``dukemtmcreid``.
        records: ``(path relative to the dataset folder, pid, camid)`` of every training image.
        profile: One of :data:`PROFILES`.
        seed: Seed of every choice (integer >= 0).
        id_half: '' (all identities), or ``P`` / ``F``: restrict the records to
            that identity half first (see the module docstring).
        **params: The ``data.imbalance`` keys; those the profile does not use are ignored.

    Returns:
        The manifest: format, dataset, profile, params, seed, images (sorted
        paths), counts (``"%04d" % pid`` -> count), summary, source (the
        full training set's size), with ``id_half`` set also ``id_half``
        (half, rule, seed, the half's identities and images), and
        content_hash (SHA-256 of the rest).

    Raises:
        ValueError: Unknown dataset or profile, a value out of range, or more images asked than exist.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; known datasets: {list(DATASETS)}")
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed={seed!r}: expected an integer >= 0")
    records = list(records)
    p = profile_params(profile, **params)
    source = {"images": len(records), "identities": len(_by_pid(records))}
    half = check_id_half(id_half or "")
    records = restrict_to_id_half(records, half)
    counts = split_counts(records, profile, int(seed), **p)
    groups = _by_pid(records)
    images = sorted(
        r[0] for pid, c in counts.items() if c > 0 for r in pick_images(groups[pid], c, int(seed))
    )
    body = {
        "format": FORMAT,
        "dataset": dataset,
        "profile": profile,
        "params": p,
        "seed": int(seed),
        "images": images,
        "counts": {f"{pid:04d}": c for pid, c in counts.items() if c > 0},
        "summary": summarize(list(counts.values())),
        "source": source,
    }
    if half:
        body["id_half"] = {
            "half": half,
            "rule": ID_HALF_RULE,
            "seed": ID_HALF_SEED,
            "identities": len(groups),
            "images": len(records),
        }
    return {**body, "content_hash": hashlib.sha256(_canonical(body).encode()).hexdigest()}


def dumps(manifest: dict) -> str:
    """The manifest's on-disk text: sorted keys, fixed separators, one item per line."""
    return (
        json.dumps(manifest, sort_keys=True, indent=1, separators=(",", ": "), ensure_ascii=True)
        + "\n"
    )


def write_manifest(manifest: dict, path: str | os.PathLike, force: bool = False) -> Path:
    """Write atomically (temp file + os.replace); refuse to overwrite unless ``force``."""
    path = Path(path)
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; pass --force (force=True) to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(dumps(manifest), encoding="utf-8")
    os.replace(tmp, path)
    return path


def load_manifest(path: str | os.PathLike) -> dict:
    """Read a manifest and check its format and content hash.

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not a manifest, or edited after writing (hash mismatch).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"imbalance manifest not found: {path}")
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not JSON ({e})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise DataError(f"{path}: not an imbalance manifest (expected format {FORMAT!r})")
    body = {k: v for k, v in m.items() if k != "content_hash"}
    if hashlib.sha256(_canonical(body).encode()).hexdigest() != m.get("content_hash"):
        raise DataError(f"{path}: content_hash does not match its content (edited by hand?)")
    return m
