"""Issue 4: imbalance profiles, manifests, the *_imb datasets and their errors."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from reid_ir.compat import data as tr_data
from reid_ir.data import imbalance as imb
from reid_ir.data.datasets import (
    find_data_dir,
    make_split,
    process_dir,
    register_datasets,
    scan_dir,
)

DATASETS = [("market1501", "market"), ("dukemtmcreid", "duke")]


def _records(root, dataset, layout):
    d = find_data_dir(root, dataset)
    return scan_dir(d / "bounding_box_train", layout, rel_to=d)


def _kept_counts(manifest):
    return Counter(
        imb_pid for imb_pid in (int(Path(p).name.split("_")[0]) for p in manifest["images"])
    )


def _build(name, root, mode="train"):
    return tr_data.datasets.init_image_dataset(name, root=str(root), mode=mode, verbose=False)


# --- pure functions over records: no images needed ----------------------------------------


def _fake_records(counts, cams=3):
    return [
        (f"bounding_box_train/{pid:04d}_c{j % cams + 1}s1_{j:06d}_01.jpg", pid, j % cams)
        for pid, n in counts.items()
        for j in range(n)
    ]


def test_gini_and_top20_share_on_known_counts():
    assert imb.gini([5, 5, 5, 5]) == 0
    assert imb.gini([0, 0, 0, 4]) == pytest.approx(0.75)
    s = imb.summarize([10, 1, 1, 1, 1])
    assert s["images"] == 14 and s["identities"] == 5 and s["imbalance_ratio"] == 10
    assert s["top20_share"] == pytest.approx(10 / 14, abs=1e-6)


def test_long_tail_counts_follow_the_exponential_profile():
    records = _fake_records({pid: 30 for pid in range(1, 21)})
    m = imb.make_manifest(
        "market1501", records, "long_tail", seed=0, rho=10, n_max=20, min_images=1
    )
    expected = [max(1, int(20 * 10 ** (-i / 19) + 0.5)) for i in range(20)]
    assert sorted(m["counts"].values(), reverse=True) == expected
    assert m["summary"]["imbalance_ratio"] == 10
    assert len(m["images"]) == sum(expected) == m["summary"]["images"]


def test_long_tail_gives_head_counts_only_to_identities_that_have_them():
    counts = {pid: (40 if pid <= 3 else 8) for pid in range(1, 31)}
    records = _fake_records(counts)
    for seed in range(5):
        m = imb.make_manifest("market1501", records, "long_tail", seed=seed, rho=8, n_max=0)
        kept = {int(k): v for k, v in m["counts"].items()}
        assert all(kept[pid] <= counts[pid] for pid in kept)
        assert m["summary"]["max_count"] > 8  # n_max=0 used the big identities for the head


def test_long_tail_n_max_zero_is_the_largest_feasible_and_one_more_fails():
    records = _fake_records({pid: 5 + pid for pid in range(1, 41)})
    m = imb.make_manifest("market1501", records, "long_tail", seed=0, rho=5)
    n_max = m["summary"]["max_count"]
    imb.make_manifest("market1501", records, "long_tail", seed=0, rho=5, n_max=n_max)
    with pytest.raises(ValueError, match=rf"n_max={n_max + 1}.*more images than exist"):
        imb.make_manifest("market1501", records, "long_tail", seed=0, rho=5, n_max=n_max + 1)


def test_kept_images_of_an_identity_are_spread_over_its_cameras():
    records = _fake_records({7: 12}, cams=4)
    for n in range(1, 5):
        picked = imb.pick_images(records, n, seed=3)
        assert len({r[2] for r in picked}) == n
    assert set(imb.pick_images(records, 3, seed=3)) <= set(imb.pick_images(records, 4, seed=3))


# --- synthetic Market- and Duke-format datasets --------------------------------------------


@pytest.mark.parametrize("dataset, layout", DATASETS)
def test_same_parameters_give_a_byte_identical_manifest_anywhere(
    imb_root, tmp_path, dataset, layout
):
    folder = imb_root / find_data_dir(imb_root, dataset).relative_to(imb_root).parts[0]
    shutil.copytree(folder, tmp_path / folder.name)  # another machine: another absolute root
    a = imb.dumps(make_split(dataset, imb_root, "long_tail", 0, rho=4))
    b = imb.dumps(make_split(dataset, tmp_path, "long_tail", 0, rho=4))
    c = imb.dumps(make_split(dataset, imb_root, "long_tail", 1, rho=4))
    assert a == b
    assert a != c
    m = json.loads(a)
    assert m["images"] == sorted(m["images"]) and all(
        p.startswith("bounding_box_train/") for p in m["images"]
    )
    assert set(m) >= {
        "dataset",
        "profile",
        "params",
        "seed",
        "images",
        "counts",
        "summary",
        "content_hash",
    }


@pytest.mark.parametrize("dataset, layout", DATASETS)
def test_tail_fewshot_reduces_a_seeded_fraction_and_keeps_the_rest(imb_root, dataset, layout):
    records = _records(imb_root, dataset, layout)
    avail = Counter(r[1] for r in records)
    m = make_split(dataset, imb_root, "tail_fewshot", 2, tail_fraction=0.25, tail_images=3)
    kept = _kept_counts(m)
    tail = [pid for pid in avail if kept[pid] != avail[pid]]
    assert len(tail) == round(0.25 * len(avail)) and all(kept[pid] == 3 for pid in tail)
    cams = {r[0]: r[2] for r in records}
    for pid in tail:
        tail_cams = {cams[p] for p in m["images"] if int(Path(p).name.split("_")[0]) == pid}
        n_cams = len({r[2] for r in records if r[1] == pid})
        assert len(tail_cams) == min(3, n_cams)


@pytest.mark.parametrize("dataset, layout", DATASETS)
@pytest.mark.parametrize(
    "control_of, kw", [("long_tail", dict(rho=4)), ("tail_fewshot", dict(tail_fraction=0.5))]
)
def test_balanced_control_has_the_same_ids_and_images_spread_evenly(
    imb_root, dataset, layout, control_of, kw
):
    base = make_split(dataset, imb_root, control_of, 0, **kw)
    ctrl = make_split(dataset, imb_root, "balanced_control", 0, control_of=control_of, **kw)
    assert set(ctrl["counts"]) == set(base["counts"])
    assert ctrl["summary"]["images"] == base["summary"]["images"]
    avail = Counter(r[1] for r in _records(imb_root, dataset, layout))
    level = max(ctrl["counts"].values())
    for pid, c in ctrl["counts"].items():
        assert c >= level - 1 or c == avail[int(pid)]  # even, unless the identity has no more
    assert ctrl["summary"]["gini"] < base["summary"]["gini"]


@pytest.mark.parametrize("dataset, layout", DATASETS)
def test_full_profile_is_the_original_training_set(imb_root, dataset, layout):
    m = make_split(dataset, imb_root, "full", 0)
    assert m["images"] == [r[0] for r in _records(imb_root, dataset, layout)]


@pytest.mark.parametrize("dataset, layout", DATASETS)
def test_imb_dataset_trains_on_the_manifest_with_query_gallery_unchanged(
    imb_root, tmp_path, dataset, layout
):
    m = make_split(dataset, imb_root, "long_tail", 0, rho=5)
    path = imb.write_manifest(m, tmp_path / "split.json")
    data_dir = find_data_dir(imb_root, dataset)
    for kwargs in (dict(manifest=str(path)), dict(profile="long_tail", rho=5, seed=0)):
        register_datasets(imbalance=kwargs)
        ds = _build(f"{dataset}_imb", imb_root)
        assert sorted(Path(p).relative_to(data_dir).as_posix() for p, *_ in ds.train) == m["images"]
        assert sorted({t[1] for t in ds.train}) == list(
            range(len(m["counts"]))
        )  # relabelled 0..N-1
        by_orig = {}
        for p, pid, _, _ in ds.train:  # relabelling is consistent with the original pids
            by_orig.setdefault(int(Path(p).name.split("_")[0]), set()).add(pid)
        assert all(len(v) == 1 for v in by_orig.values())
        assert [t[:3] for t in ds.query] == process_dir(data_dir / "query", layout)
        assert [t[:3] for t in ds.gallery] == process_dir(data_dir / "bounding_box_test", layout)


def test_image_data_manager_uses_the_split(imb_root):
    register_datasets(
        imbalance=dict(profile="tail_fewshot", tail_fraction=0.5, tail_images=2, seed=0)
    )
    dm = tr_data.ImageDataManager(
        root=str(imb_root),
        sources="market1501_imb",
        targets="market1501_imb",
        height=64,
        width=32,
        batch_size_train=8,
        workers=0,
        use_gpu=False,
    )
    m = make_split("market1501", imb_root, "tail_fewshot", 0, tail_fraction=0.5, tail_images=2)
    assert len(dm.train_loader.dataset.train) == m["summary"]["images"]
    assert dm.num_train_pids == m["summary"]["identities"]


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(dataset="cuhk03"), "cuhk03"),
        (dict(profile="zipf"), "zipf"),
        (dict(profile="long_tail", rho=0.5), "rho=0.5"),
        (dict(profile="long_tail", min_images=0), "min_images=0"),
        (dict(profile="long_tail", n_max=-3), "n_max=-3"),
        (dict(profile="long_tail", n_max=500), "n_max=500.*more images than exist"),
        (dict(profile="tail_fewshot", tail_fraction=1.5), "tail_fraction=1.5"),
        (dict(profile="tail_fewshot", tail_fraction=0.0), "tail_fraction=0.0"),
        (dict(profile="tail_fewshot", tail_images=0), "tail_images=0"),
        (dict(profile="tail_fewshot", tail_images=99), "tail_images=99.*more images than exist"),
        (dict(profile="balanced_control", control_of="full"), "control_of='full'"),
        (dict(profile="long_tail", seed=-1), "seed=-1"),
    ],
)
def test_bad_split_parameters_fail_naming_the_value(imb_root, kw, match):
    kw = dict(kw)
    dataset = kw.pop("dataset", "market1501")
    profile = kw.pop("profile", "full")
    seed = kw.pop("seed", 0)
    with pytest.raises(ValueError, match=match):
        make_split(dataset, imb_root, profile, seed, **kw)


def test_missing_dataset_says_where_it_looked_and_what_layout(tmp_path):
    with pytest.raises(
        FileNotFoundError,
        match=r"market1501/Market-1501-v15\.09\.15/bounding_box_train.*market layout",
    ):
        make_split("market1501", tmp_path, "full", 0)
    register_datasets(imbalance={})
    with pytest.raises(FileNotFoundError, match=r"dukemtmc-reid/DukeMTMC-reID"):
        _build("dukemtmcreid_imb", tmp_path)


def test_manifest_naming_missing_files_fails_listing_them(imb_root, tmp_path):
    shutil.copytree(imb_root / "market1501", tmp_path / "market1501")
    m = make_split("market1501", tmp_path, "full", 0)
    path = imb.write_manifest(m, tmp_path / "m.json")
    gone = find_data_dir(tmp_path, "market1501") / m["images"][3]
    gone.unlink()
    register_datasets(imbalance={"manifest": str(path)})
    with pytest.raises(FileNotFoundError, match=gone.name):
        _build("market1501_imb", tmp_path)


def test_manifest_of_another_dataset_fails(imb_root, tmp_path):
    path = imb.write_manifest(
        make_split("dukemtmcreid", imb_root, "full", 0), tmp_path / "duke.json"
    )
    register_datasets(imbalance={"manifest": str(path)})
    with pytest.raises(ValueError, match="'dukemtmcreid', not 'market1501'"):
        _build("market1501_imb", imb_root)
    m = json.loads(path.read_text())
    m["dataset"] = "market1501"  # relabelled by hand: the file names still give it away
    body = {k: v for k, v in m.items() if k != "content_hash"}
    m["content_hash"] = imb.hashlib.sha256(imb._canonical(body).encode()).hexdigest()
    path.write_text(imb.dumps(m))
    with pytest.raises(ValueError, match="does not belong to market1501"):
        _build("market1501_imb", imb_root)


def test_edited_manifest_fails_its_hash(imb_root, tmp_path):
    path = imb.write_manifest(make_split("market1501", imb_root, "full", 0), tmp_path / "m.json")
    m = json.loads(path.read_text())
    m["images"] = m["images"][1:]
    path.write_text(imb.dumps(m))
    with pytest.raises(ValueError, match="content_hash"):
        imb.load_manifest(path)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        imb.load_manifest(tmp_path / "nope.json")


def test_existing_manifest_is_never_overwritten_without_force(imb_root, tmp_path):
    m = make_split("market1501", imb_root, "full", 0)
    path = tmp_path / "m.json"
    path.write_text("mine")
    with pytest.raises(FileExistsError, match="--force"):
        imb.write_manifest(m, path)
    assert path.read_text() == "mine"
    imb.write_manifest(m, path, force=True)
    assert imb.load_manifest(path) == m
