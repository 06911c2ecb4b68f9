"""The synthetic generator writes exact Market / Duke layouts, deterministically."""

from __future__ import annotations

import json
import re
from collections import Counter

import numpy as np
import pytest

from reid_ir.data.synthetic import generate_synthetic_dataset
from reid_ir.errors import DataError

MARKET_RE = re.compile(r"^(-1|\d{4})_c([1-6])s\d_\d{6}_\d{2}\.jpg$")
DUKE_RE = re.compile(r"^(\d{4})_c([1-8])_f\d{7}\.jpg$")


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def _parse(names, regex):
    out = []
    for n in names:
        m = regex.match(n)
        assert m, n
        out.append((int(m.group(1)), int(m.group(2))))
    return out


def test_market_layout_names_and_disjoint_identities(syn_root, small):
    base = syn_root / "synthetic_market" / "Market-1501-v15.09.15"
    assert sorted(p.name for p in base.iterdir()) == [
        "bounding_box_test",
        "bounding_box_train",
        "query",
    ]
    train = _parse(_names(base / "bounding_box_train"), MARKET_RE)
    query = _parse(_names(base / "query"), MARKET_RE)
    gallery = _parse(_names(base / "bounding_box_test"), MARKET_RE)
    train_ids = {p for p, _ in train}
    test_ids = {p for p, _ in query}
    assert len(train_ids) == small["num_train_ids"] and len(test_ids) == small["num_test_ids"]
    assert (
        not train_ids & test_ids
        and 0 not in train_ids | test_ids
        and -1 not in train_ids | test_ids
    )
    # one query per identity per camera; the rest of that identity's images are in the gallery
    assert max(Counter(query).values()) == 1
    g_counts = Counter(gallery)
    for pid, cam in query:
        assert g_counts[(pid, cam)] == small["images_per_camera"] - 1
    assert sum(1 for p, _ in gallery if p == 0) == small["num_distractors"]
    assert sum(1 for p, _ in gallery if p == -1) == small["num_junk"]
    assert {p for p, _ in gallery} - {0, -1} == test_ids
    # several cameras, every identity in at least two of them
    assert len({c for _, c in train}) > 1
    assert all(len({c for p2, c in train if p2 == p}) >= 2 for p in train_ids)


def test_duke_layout_names_and_gallery_only_distractors(syn_root, small):
    base = syn_root / "synthetic_duke" / "DukeMTMC-reID"
    train = _parse(_names(base / "bounding_box_train"), DUKE_RE)
    query = _parse(_names(base / "query"), DUKE_RE)
    gallery = _parse(_names(base / "bounding_box_test"), DUKE_RE)
    train_ids, test_ids = {p for p, _ in train}, {p for p, _ in query}
    distractor_ids = {p for p, _ in gallery} - test_ids
    assert not train_ids & test_ids and not distractor_ids & train_ids
    assert len(distractor_ids) == small["num_distractors"]
    assert len(train_ids) == small["num_train_ids"] and len(test_ids) == small["num_test_ids"]


def test_meta_records_parameters_and_counts(syn_root, small):
    meta = json.loads((syn_root / "synthetic_market" / "synthetic_meta.json").read_text())
    assert meta["params"]["layout"] == "market" and meta["params"]["seed"] == small["seed"]
    assert meta["params"]["image_size"] == list(small["image_size"])
    base = syn_root / "synthetic_market" / "Market-1501-v15.09.15"
    assert meta["counts"] == {d: len(_names(base / d)) for d in meta["counts"]}


def _tree_bytes(folder):
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path, small):
    kw = dict(small, num_train_ids=4, num_test_ids=2, num_distractors=2, num_junk=1)
    a = _tree_bytes(generate_synthetic_dataset(tmp_path / "a", **kw))
    b = _tree_bytes(generate_synthetic_dataset(tmp_path / "b", **kw))
    c = _tree_bytes(generate_synthetic_dataset(tmp_path / "c", **dict(kw, seed=kw["seed"] + 1)))
    assert a == b
    assert a != c


def test_existing_folder_with_other_parameters_fails_naming_the_keys(syn_root, small):
    folder = syn_root / "synthetic_market"
    with pytest.raises(ValueError, match=r"synthetic_market.*num_train_ids: 12 -> 13"):
        generate_synthetic_dataset(folder, **dict(small, num_train_ids=13))
    # same parameters: returned untouched
    assert generate_synthetic_dataset(folder, **small) == folder


def test_existing_folder_that_is_not_synthetic_is_never_overwritten(tmp_path, small):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("x")
    with pytest.raises(DataError, match="mine"):
        generate_synthetic_dataset(tmp_path / "mine", **small)
    assert (tmp_path / "mine" / "keep.txt").read_text() == "x"


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(layout="cuhk03"), "layout"),
        (dict(num_cameras=7), "num_cameras=7"),
        (dict(images_per_camera=1), "images_per_camera=1"),
        (dict(num_train_ids=-1), "num_train_ids=-1"),
        (dict(image_size=(16, 8)), "image_size"),
    ],
)
def test_bad_parameters_fail_naming_the_value(tmp_path, small, bad, match):
    with pytest.raises(ValueError, match=match):
        generate_synthetic_dataset(tmp_path / "x", **dict(small, **bad))
    assert not (tmp_path / "x").exists()


def test_mean_colour_alone_does_not_identify_people(syn_root):
    """Cross-camera rank-1 from mean colour is far below rank-1 from a coarse spatial layout."""
    import cv2

    base = syn_root / "synthetic_market" / "Market-1501-v15.09.15"

    def load(split):
        files = sorted((base / split).glob("*.jpg"))
        imgs = np.stack([cv2.imread(str(f)).astype(np.float32) / 255 for f in files])
        ids = _parse([f.name for f in files], MARKET_RE)
        return imgs, np.array([p for p, _ in ids]), np.array([c for _, c in ids])

    q, qp, qc = load("query")
    g, gp, gc = load("bounding_box_test")

    def rank1(fq, fg):
        dist = ((fq[:, None] - fg[None]) ** 2).sum(-1)
        hits = []
        for i in range(len(fq)):
            ok = ~((gp == qp[i]) & (gc == qc[i])) & (gp > 0)
            hits.append(gp[ok][np.argmin(dist[i][ok])] == qp[i])
        return float(np.mean(hits))

    def layout(x):
        return np.stack([cv2.resize(im, (8, 16), interpolation=cv2.INTER_AREA).ravel() for im in x])

    assert rank1(layout(q), layout(g)) > rank1(q.mean((1, 2)), g.mean((1, 2)))
