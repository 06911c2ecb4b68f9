"""Synthetic person re-ID data in the exact Market-1501 or DukeMTMC-reID layout.

Each identity is a rendered pedestrian with its own clothing (top and bottom
colours from a small shared palette, a pattern on the top, sleeves, trousers or
shorts, a bag, hair and shoes). Colours are shared between identities, so the
mean colour of an image does not identify a person; the combination of
attributes does. Every camera has its own background, floor, colour cast and
brightness, and every image has pose, scale and position jitter, clutter,
occasional occluders, blur and noise.

Market layout (``<dataset_dir>/Market-1501-v15.09.15/``)::

    bounding_box_train/0002_c1s1_000451_03.jpg   training identities
    query/0005_c2s1_000123_01.jpg                one image per test id per camera
    bounding_box_test/0005_c3s1_000321_02.jpg    the rest of the test images,
                      0000_c1s1_...jpg           distractors (pid 0)
                      -1_c1s1_...jpg             junk (pid -1)

Duke layout (``<dataset_dir>/DukeMTMC-reID/``) has the same three folders with
names like ``0001_c2_f0046182.jpg``; Duke has no pid 0 / -1 images, so its
distractors are gallery-only identities (one image each) and ``num_junk`` is
ignored.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from reid_ir.errors import DataError

logger = logging.getLogger(__name__)

#: Bump when the rendering changes, so old folders are detected as different.
GENERATOR_VERSION = 1
META_FILE = "synthetic_meta.json"
LAYOUTS = {
    # layout: (data sub-folder, max camera index, max pid)
    "market": ("Market-1501-v15.09.15", 6, 1501),
    "duke": ("DukeMTMC-reID", 8, 7140),
}
SPLIT_DIRS = ("bounding_box_train", "query", "bounding_box_test")

# Clothing palette (RGB, 0..1): shared by all identities on purpose.
# fmt: off
_PALETTE = np.array([
    [0.85, 0.10, 0.10], [0.10, 0.25, 0.75], [0.10, 0.60, 0.20], [0.90, 0.85, 0.15], [0.92, 0.92, 0.92],
    [0.12, 0.12, 0.12], [0.55, 0.35, 0.20], [0.55, 0.20, 0.65], [0.95, 0.55, 0.10], [0.50, 0.50, 0.50],
], dtype=np.float32)
# fmt: on
_SKIN = np.array([[0.95, 0.80, 0.65], [0.80, 0.60, 0.45], [0.50, 0.35, 0.25]], dtype=np.float32)
_HAIR = np.array([[0.08, 0.06, 0.05], [0.45, 0.30, 0.15], [0.85, 0.75, 0.45]], dtype=np.float32)
_PATTERNS = ("solid", "hstripes", "vstripes", "checks", "logo")


def _params(**kwargs: Any) -> dict[str, Any]:
    """Normalise the generator parameters into JSON-comparable values."""
    p = dict(kwargs)
    p["image_size"] = [int(v) for v in p["image_size"]]
    p["generator_version"] = GENERATOR_VERSION
    return p


def _validate(p: dict[str, Any]) -> None:
    if p["layout"] not in LAYOUTS:
        raise ValueError(f"layout={p['layout']!r}: expected one of {sorted(LAYOUTS)}")
    _, max_cam, max_pid = LAYOUTS[p["layout"]]
    if not 1 <= p["num_cameras"] <= max_cam:
        raise ValueError(
            f"num_cameras={p['num_cameras']}: the {p['layout']} layout allows 1..{max_cam}"
        )
    for key in ("num_train_ids", "num_test_ids", "num_distractors", "num_junk"):
        if p[key] < 0:
            raise ValueError(f"{key}={p[key]}: expected >= 0")
    if p["num_train_ids"] + p["num_test_ids"] == 0:
        raise ValueError("num_train_ids + num_test_ids is 0: nothing to generate")
    if p["images_per_camera"] < 1:
        raise ValueError(f"images_per_camera={p['images_per_camera']}: expected >= 1")
    if p["num_test_ids"] > 0 and (p["num_cameras"] < 2 or p["images_per_camera"] < 2):
        raise ValueError(
            f"num_cameras={p['num_cameras']}, images_per_camera={p['images_per_camera']}: test identities "
            "need >= 2 cameras and >= 2 images per camera (one query per camera, the rest in the gallery)"
        )
    extra = p["num_distractors"] if p["layout"] == "duke" else 0
    if p["num_train_ids"] + p["num_test_ids"] + extra > max_pid:
        raise ValueError(f"too many identities for the {p['layout']} layout (pids 1..{max_pid})")
    h, w = p["image_size"]
    if h < 32 or w < 16:
        raise ValueError(f"image_size={p['image_size']}: expected (height >= 32, width >= 16)")


def read_meta(dataset_dir: str | os.PathLike) -> dict[str, Any] | None:
    """Return the parameters stored in ``<dataset_dir>/synthetic_meta.json`` (None if absent)."""
    path = Path(dataset_dir) / META_FILE
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)["params"]


def meta_differences(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Keys whose values differ between two parameter dicts, as ``key: stored -> wanted``."""
    keys = sorted(set(stored) | set(wanted))
    return [
        f"{k}: {stored.get(k)!r} -> {wanted.get(k)!r}"
        for k in keys
        if stored.get(k) != wanted.get(k)
    ]


def _identity(rng: np.random.Generator) -> dict[str, Any]:
    top, bottom = rng.choice(len(_PALETTE), 2, replace=False)
    pattern_colour = (top + 1 + rng.integers(len(_PALETTE) - 1)) % len(_PALETTE)
    return {
        "top": int(top),
        "bottom": int(bottom),
        "pattern": _PATTERNS[int(rng.integers(len(_PATTERNS)))],
        "pattern_colour": int(pattern_colour),
        "skin": int(rng.integers(len(_SKIN))),
        "hair": int(rng.integers(len(_HAIR))),
        "bag": int(rng.integers(3)),
        "bag_colour": int(rng.integers(len(_PALETTE))),
        "shoes": int(rng.choice([5, 4, 6])),
        "long_sleeves": bool(rng.random() < 0.5),
        "shorts": bool(rng.random() < 0.3),
        "width": float(rng.uniform(0.85, 1.15)),
        "height": float(rng.uniform(0.9, 1.05)),
    }


def _unique_identities(rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
    """n identities whose (top, bottom, pattern, pattern colour, bag) combination is unique."""
    seen, out = set(), []
    while len(out) < n:
        ident = _identity(rng)
        key = (
            ident["top"],
            ident["bottom"],
            ident["pattern"],
            ident["pattern_colour"],
            ident["bag"],
        )
        if key not in seen:
            seen.add(key)
            out.append(ident)
    return out


def _camera(rng: np.random.Generator) -> dict[str, Any]:
    return {
        "wall": rng.uniform(0.25, 0.75, 3).astype(np.float32),
        "floor": rng.uniform(0.2, 0.6, 3).astype(np.float32),
        "horizon": float(rng.uniform(0.55, 0.8)),
        "gain": rng.uniform(0.75, 1.25, 3).astype(np.float32),
        "brightness": float(rng.uniform(0.75, 1.15)),
    }


def _col(c: np.ndarray) -> tuple[int, int, int]:
    """RGB float colour -> BGR int tuple for cv2 drawing."""
    c = np.clip(c * 255.0, 0, 255)
    return int(c[2]), int(c[1]), int(c[0])


def _draw_person(
    img: np.ndarray,
    ident: dict[str, Any],
    rng: np.random.Generator,
    cx: float,
    top: float,
    fh: float,
) -> None:
    """Draw one pedestrian in place on a uint8 BGR canvas."""
    aa = cv2.LINE_AA
    bw = fh * 0.27 * ident["width"]
    head_r = fh * 0.075
    neck = top + 2 * head_r
    waist = top + fh * 0.5
    feet = top + fh * 0.95
    facing = 1 if rng.random() < 0.5 else -1
    stride = fh * rng.uniform(-0.07, 0.07)
    swing = rng.uniform(-0.35, 0.35)
    top_c, bottom_c = _PALETTE[ident["top"]], _PALETTE[ident["bottom"]]
    skin = _SKIN[ident["skin"]]
    leg_w = max(2, int(bw * 0.38))
    # legs (trousers or shorts + skin), shoes
    for side, dx in ((-1, -stride), (1, stride)):
        hip = (int(cx + side * bw * 0.22), int(waist))
        foot = (int(cx + side * bw * 0.22 + dx), int(feet))
        knee = (int((hip[0] + foot[0]) / 2), int((hip[1] + foot[1]) / 2))
        cv2.line(img, hip, foot, _col(skin), leg_w, aa)
        cv2.line(img, hip, knee if ident["shorts"] else foot, _col(bottom_c), leg_w, aa)
        cv2.ellipse(
            img,
            (foot[0] + facing * leg_w // 3, foot[1]),
            (max(2, leg_w // 2 + 1), max(1, leg_w // 3)),
            0,
            0,
            360,
            _col(_PALETTE[ident["shoes"]]),
            -1,
            aa,
        )
    # torso
    x0, x1, y0, y1 = int(cx - bw / 2), int(cx + bw / 2), int(neck), int(waist + fh * 0.03)
    cv2.rectangle(img, (x0, y0), (x1, y1), _col(top_c), -1)
    pc = _col(_PALETTE[ident["pattern_colour"]])
    step = max(3, int(fh * 0.05))
    if ident["pattern"] == "hstripes":
        for y in range(y0 + step // 2, y1, step * 2):
            cv2.rectangle(img, (x0, y), (x1, min(y1, y + step - 1)), pc, -1)
    elif ident["pattern"] == "vstripes":
        for x in range(x0 + step // 2, x1, step * 2):
            cv2.rectangle(img, (x, y0), (min(x1, x + step - 1), y1), pc, -1)
    elif ident["pattern"] == "checks":
        for i, y in enumerate(range(y0, y1, step)):
            for j, x in enumerate(range(x0, x1, step)):
                if (i + j) % 2:
                    cv2.rectangle(
                        img, (x, y), (min(x1, x + step - 1), min(y1, y + step - 1)), pc, -1
                    )
    elif ident["pattern"] == "logo":
        cv2.circle(
            img, (int(cx), int(neck + (waist - neck) * 0.4)), max(2, int(bw * 0.22)), pc, -1, aa
        )
    # arms
    arm_w = max(2, int(bw * 0.25))
    for side in (-1, 1):
        sh = (int(cx + side * bw * 0.55), int(neck + fh * 0.03))
        ang = side * swing
        hand = (int(sh[0] + np.sin(ang) * fh * 0.33), int(sh[1] + np.cos(ang) * fh * 0.33))
        elbow = (int((sh[0] + hand[0]) / 2), int((sh[1] + hand[1]) / 2))
        cv2.line(img, sh, hand, _col(skin), arm_w, aa)
        cv2.line(img, sh, hand if ident["long_sleeves"] else elbow, _col(top_c), arm_w, aa)
    # bag: 1 = backpack strap + pack on one side, 2 = shoulder bag at the hip
    if ident["bag"]:
        bc = _col(_PALETTE[ident["bag_colour"]])
        if ident["bag"] == 1:
            bx = int(cx + facing * bw * 0.55)
            cv2.rectangle(
                img,
                (bx - int(bw * 0.18), int(neck + fh * 0.04)),
                (bx + int(bw * 0.18), int(waist - fh * 0.05)),
                bc,
                -1,
            )
        else:
            bx = int(cx - facing * bw * 0.65)
            cv2.line(
                img,
                (int(cx + facing * bw * 0.3), int(neck)),
                (bx, int(waist)),
                bc,
                max(1, arm_w // 2),
                aa,
            )
            cv2.rectangle(
                img,
                (bx - int(bw * 0.2), int(waist - fh * 0.02)),
                (bx + int(bw * 0.2), int(waist + fh * 0.12)),
                bc,
                -1,
            )
    # head and hair
    hc = (int(cx + facing * head_r * 0.1), int(top + head_r))
    cv2.circle(img, hc, max(2, int(head_r)), _col(skin), -1, aa)
    cv2.ellipse(
        img,
        (hc[0], hc[1] - int(head_r * 0.3)),
        (max(2, int(head_r)), max(1, int(head_r * 0.75))),
        0,
        180,
        360,
        _col(_HAIR[ident["hair"]]),
        -1,
        aa,
    )


def _background(rng: np.random.Generator, cam: dict[str, Any], h: int, w: int) -> np.ndarray:
    img = np.empty((h, w, 3), np.uint8)
    hz = int(h * cam["horizon"])
    img[:hz] = _col(np.clip(cam["wall"] + rng.normal(0, 0.04, 3), 0, 1))
    img[hz:] = _col(np.clip(cam["floor"] + rng.normal(0, 0.04, 3), 0, 1))
    for _ in range(int(rng.integers(2, 7))):  # clutter: boxes, poles, signs
        x, y = int(rng.integers(-w // 4, w)), int(rng.integers(-h // 4, h))
        bw, bh = int(rng.integers(3, w // 2)), int(rng.integers(3, h // 2))
        cv2.rectangle(img, (x, y), (x + bw, y + bh), _col(rng.uniform(0.1, 0.9, 3)), -1)
    for _ in range(int(rng.integers(0, 3))):
        p0 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.line(img, p0, p1, _col(rng.uniform(0, 1, 3)), int(rng.integers(1, 3)))
    return img


def _finish(img: np.ndarray, rng: np.random.Generator, cam: dict[str, Any]) -> np.ndarray:
    """Camera colour cast and brightness, per-image lighting jitter, blur and noise."""
    x = img.astype(np.float32) / 255.0
    gain = cam["gain"][::-1] * cam["brightness"] * rng.uniform(0.85, 1.15)  # BGR order
    x = x * gain + rng.normal(0, 0.03)
    if rng.random() < 0.3:
        x = cv2.GaussianBlur(x, (3, 3), 0)
    x = x + rng.normal(0, rng.uniform(0.01, 0.05), x.shape).astype(np.float32)
    return (np.clip(x, 0, 1) * 255.0 + 0.5).astype(np.uint8)


def _render(
    kind: str, ident: dict | None, cam: dict, seed_key: list[int], h: int, w: int
) -> np.ndarray:
    """Render one image. kind: person, distractor (background / body part) or junk (bad crop)."""
    rng = np.random.default_rng(seed_key)
    img = _background(rng, cam, h, w)
    if kind == "person":
        fh = h * rng.uniform(0.78, 0.95) * ident["height"]
        cx = w / 2 + rng.uniform(-0.12, 0.12) * w
        _draw_person(img, ident, rng, cx, (h - fh) / 2 + rng.uniform(-0.05, 0.05) * h, fh)
        if rng.random() < 0.15:  # occluder in front of the legs
            y = int(h * rng.uniform(0.6, 0.85))
            cv2.rectangle(
                img, (0, y), (int(w * rng.uniform(0.3, 1.0)), h), _col(rng.uniform(0.1, 0.9, 3)), -1
            )
    elif kind == "distractor" and ident is not None and rng.random() < 0.5:  # a cut-off body part
        fh = h * rng.uniform(1.2, 2.0)
        _draw_person(img, ident, rng, w * rng.uniform(0.2, 0.8), -fh * rng.uniform(0.0, 0.5), fh)
    elif kind == "junk" and ident is not None:  # a badly placed detection: mostly legs or head
        fh = h * rng.uniform(1.5, 3.0)
        _draw_person(img, ident, rng, w * rng.uniform(0.0, 1.0), -fh * rng.uniform(0.2, 0.7), fh)
        img = cv2.GaussianBlur(img, (5, 5), 0)
    return _finish(img, rng, cam)


def _plan(p: dict[str, Any]) -> list[tuple[str, str, str, int, int, list[int]]]:
    """List every image: (split dir, file name, kind, identity index or -1, camera index, seed key)."""
    rng = np.random.default_rng([p["seed"], 0])
    layout, C, K = p["layout"], p["num_cameras"], p["images_per_camera"]
    _, _, max_pid = LAYOUTS[layout]
    n_tr, n_te = p["num_train_ids"], p["num_test_ids"]
    n_extra = p["num_distractors"] if layout == "duke" else 0
    pids = [int(v) + 1 for v in rng.choice(max_pid, n_tr + n_te + n_extra, replace=False)]
    frames = [int(v) for v in rng.integers(100, 5000, C)]

    def name(pid: int, cam: int) -> str:
        frames[cam] += int(rng.integers(1, 60))
        if layout == "duke":
            return f"{pid:04d}_c{cam + 1}_f{frames[cam]:07d}.jpg"
        pid_s = "-1" if pid == -1 else f"{pid:04d}"
        return f"{pid_s}_c{cam + 1}s{int(rng.integers(1, 7))}_{frames[cam]:06d}_{int(rng.integers(1, 9)):02d}.jpg"

    plan = []
    for i, pid in enumerate(pids[: n_tr + n_te]):
        k = int(rng.integers(2, C + 1)) if C >= 2 else 1
        cams = sorted(int(c) for c in rng.choice(C, k, replace=False))
        for cam in cams:
            for j in range(K):
                split = (
                    "bounding_box_train"
                    if i < n_tr
                    else ("query" if j == 0 else "bounding_box_test")
                )
                plan.append((split, name(pid, cam), "person", i, cam, [p["seed"], 1, pid, cam, j]))
    n_ids = n_tr + n_te
    for d in range(p["num_distractors"]):
        cam = int(rng.integers(C))
        if layout == "duke":  # gallery-only identity, one image
            pid = pids[n_ids + d]
            plan.append(
                (
                    "bounding_box_test",
                    name(pid, cam),
                    "person",
                    n_ids + d,
                    cam,
                    [p["seed"], 1, pid, cam, 0],
                )
            )
        else:
            plan.append(
                ("bounding_box_test", name(0, cam), "distractor", n_ids + d, cam, [p["seed"], 2, d])
            )
    if layout == "market":
        for d in range(p["num_junk"]):
            cam = int(rng.integers(C))
            plan.append(
                (
                    "bounding_box_test",
                    name(-1, cam),
                    "junk",
                    n_ids + p["num_distractors"] + d,
                    cam,
                    [p["seed"], 3, d],
                )
            )
    return plan


#: dataset folders already reported as existing by this process
_REPORTED: set[str] = set()


def generate_synthetic_dataset(
    dataset_dir: str | os.PathLike,
    layout: str = "market",
    num_train_ids: int = 40,
    num_test_ids: int = 40,
    images_per_camera: int = 3,
    num_cameras: int = 4,
    num_distractors: int = 20,
    num_junk: int = 10,
    image_size: tuple[int, int] | list[int] = (128, 64),
    seed: int = 0,
) -> Path:
    """Write a synthetic re-ID dataset in the Market-1501 or DukeMTMC-reID layout.

    Train, query and gallery identities are disjoint. Each identity appears in a
    seeded subset of 2..num_cameras cameras with ``images_per_camera`` images in
    each; for a test identity the first image of each camera goes to ``query``,
    the rest to ``bounding_box_test``. The folder is written to a temporary
    sibling and renamed into place, so a half-written dataset never exists.
    The same parameters give the same bytes (with the same OpenCV build).

    Args:
        dataset_dir: Folder to create (e.g. ``<root>/synthetic_market``); the
            layout's sub-folder and ``synthetic_meta.json`` go inside it.
        layout: ``"market"`` or ``"duke"``.
        num_train_ids: Identities of ``bounding_box_train``.
        num_test_ids: Identities of ``query`` / ``bounding_box_test``.
        images_per_camera: Images per identity per camera it appears in.
        num_cameras: Cameras (market: 1..6, duke: 1..8).
        num_distractors: Gallery distractors (market: pid 0 images; duke:
            gallery-only identities with one image each).
        num_junk: Gallery junk images with pid -1 (market only; ignored for duke).
        image_size: (height, width) in pixels.
        seed: Seed of every random choice.

    Returns:
        ``Path(dataset_dir)``.

    Raises:
        ValueError: A parameter is out of range.
        DataError: ``dataset_dir`` already holds a dataset generated with other parameters
            (the message lists them), or was not written by this function.
    """
    p = _params(
        layout=layout,
        num_train_ids=int(num_train_ids),
        num_test_ids=int(num_test_ids),
        images_per_camera=int(images_per_camera),
        num_cameras=int(num_cameras),
        num_distractors=int(num_distractors),
        num_junk=int(num_junk),
        image_size=image_size,
        seed=int(seed),
    )
    _validate(p)
    out = Path(dataset_dir)
    if out.exists():
        stored = read_meta(out)
        if stored is None:
            raise DataError(
                f"{out} exists but has no {META_FILE}: not a synthetic dataset; move it away first"
            )
        diff = meta_differences(stored, p)
        if diff:
            raise DataError(
                f"{out} holds a synthetic dataset with other parameters ({'; '.join(diff)}); "
                "delete it or point data.root elsewhere"
            )
        # torchreid builds a dataset for training and again per target: say it once per folder
        log = logger.debug if str(out.resolve()) in _REPORTED else logger.info
        _REPORTED.add(str(out.resolve()))
        log("synthetic dataset %s already exists with the same parameters", out)
        return out

    h, w = p["image_size"]
    plan = _plan(p)
    n_ids = p["num_train_ids"] + p["num_test_ids"] + p["num_distractors"] + p["num_junk"]
    id_rng = np.random.default_rng([p["seed"], 4])
    idents = _unique_identities(id_rng, n_ids)
    cams = [_camera(np.random.default_rng([p["seed"], 5, c])) for c in range(p["num_cameras"])]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        sub = tmp / LAYOUTS[layout][0]
        for d in SPLIT_DIRS:
            (sub / d).mkdir(parents=True)
        counts = {d: 0 for d in SPLIT_DIRS}
        for split, fname, kind, idx, cam, key in tqdm(
            plan, desc=f"synthetic {layout}", unit="img", leave=False, disable=None
        ):  # disable=None: a bar only on a terminal
            img = _render(kind, idents[idx], cams[cam], key, h, w)
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
            if not ok:
                raise RuntimeError(f"OpenCV could not encode {fname}")
            (sub / split / fname).write_bytes(buf.tobytes())
            counts[split] += 1
        meta = {"params": p, "counts": counts}
        (tmp / META_FILE).write_text(
            json.dumps(meta, sort_keys=True, indent=1) + "\n", encoding="utf-8"
        )
        try:
            os.replace(tmp, out)
        except OSError:  # another process (e.g. a second rank) finished first
            if read_meta(out) != p:
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            logger.info(
                "synthetic dataset %s was written concurrently with the same parameters", out
            )
            return out
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("wrote synthetic %s dataset to %s: %s", layout, out, counts)
    return out
