"""register_datasets binds our datasets in torchreid; parsing is strict and ordered."""

from __future__ import annotations

import shutil

import pytest

from reid_ir.compat import data as tr_data
from reid_ir.data.datasets import check_image, parse_name, process_dir, register_datasets
from reid_ir.errors import DataError


def _build(name, root, mode="train"):
    return tr_data.datasets.init_image_dataset(name, root=str(root), mode=mode, verbose=False)


@pytest.mark.parametrize(
    "name, sub",
    [("synthetic_market", "Market-1501-v15.09.15"), ("synthetic_duke", "DukeMTMC-reID")],
)
def test_synthetic_datasets_build_through_torchreid(syn_root, small, name, sub):
    register_datasets(synthetic=small)
    ds = _build(name, syn_root)
    assert ds.num_train_pids == small["num_train_ids"]
    assert sorted({pid for _, pid, _, _ in ds.train}) == list(range(small["num_train_ids"]))
    n_train = len(list((syn_root / name / sub / "bounding_box_train").glob("*.jpg")))
    assert len(ds.train) == n_train
    assert [t[0] for t in ds.train] == sorted(t[0] for t in ds.train)
    assert all(pid != -1 for _, pid, _, _ in ds.gallery)  # junk skipped as in torchreid
    assert {pid for _, pid, _, _ in ds.query} <= {pid for _, pid, _, _ in ds.gallery}


def test_register_is_idempotent_and_rebinds_kwargs(tmp_path, small):
    register_datasets(synthetic=small)
    register_datasets(synthetic=small)
    ds = _build("synthetic_market", tmp_path)  # generated on first use
    assert (tmp_path / "synthetic_market" / "synthetic_meta.json").is_file()
    assert ds.num_train_pids == small["num_train_ids"]
    register_datasets(synthetic=dict(small, num_train_ids=5))
    with pytest.raises(ValueError, match=r"synthetic_market.*num_train_ids: 12 -> 5"):
        _build("synthetic_market", tmp_path)
    ds = _build("synthetic_market", tmp_path / "other")
    assert ds.num_train_pids == 5


def test_unknown_keys_fail_listing_known_ones():
    with pytest.raises(ValueError, match="num_train_idz.*known keys"):
        register_datasets(synthetic={"num_train_idz": 3})
    with pytest.raises(ValueError, match="rhoo.*known keys"):
        register_datasets(imbalance={"rhoo": 3})


def test_image_name_that_does_not_parse_fails_naming_the_file(syn_root, tmp_path):
    src = syn_root / "synthetic_market" / "Market-1501-v15.09.15" / "query"
    bad = tmp_path / "query"
    shutil.copytree(src, bad)
    shutil.copy(next(src.glob("*.jpg")), bad / "person_12.jpg")
    with pytest.raises(ValueError, match=r"person_12\.jpg"):
        process_dir(bad, "market")


@pytest.mark.parametrize(
    "name, layout, expected",
    [
        ("0002_c1s1_000451_03.jpg", "market", (2, 0)),
        ("-1_c6s2_000451_03.jpg", "market", (-1, 5)),
        ("1488_c1s6_023021_00.jpg.jpg", "market", (1488, 0)),  # real Market-1501 has 24 of these
        ("0001_c8_f0046182.jpg", "duke", (1, 7)),
    ],
)
def test_parse_name_follows_torchreid(name, layout, expected):
    assert parse_name(name, layout) == expected


@pytest.mark.parametrize(
    "name, layout",
    [
        ("0002_c7s1_000451_03.jpg", "market"),
        ("0002_c1s1_000451_03.jpg", "duke"),
        ("0001_c2_f0046182.jpg", "market"),
        ("0001_c9_f0046182.jpg", "duke"),
    ],
)
def test_parse_name_rejects_other_layouts(name, layout):
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        parse_name(name, layout)


def test_missing_dataset_says_where_it_looked(tmp_path, small):
    register_datasets(synthetic=small)
    (tmp_path / "synthetic_duke").mkdir()
    with pytest.raises(DataError, match="synthetic_duke"):
        _build("synthetic_duke", tmp_path)


def test_check_image_detects_truncated_files(syn_root, tmp_path):
    good = next((syn_root / "synthetic_market" / "Market-1501-v15.09.15" / "query").glob("*.jpg"))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(good.read_bytes()[:100])
    assert check_image(good)
    assert not check_image(bad)
    assert not check_image(tmp_path / "missing.jpg")


def test_image_data_manager_trains_on_synthetic_market(syn_root, small):
    register_datasets(synthetic=small)
    dm = tr_data.ImageDataManager(
        root=str(syn_root),
        sources="synthetic_market",
        targets="synthetic_market",
        height=64,
        width=32,
        batch_size_train=8,
        workers=0,
        use_gpu=False,
    )
    batch = next(iter(dm.train_loader))
    assert batch["img"].shape == (8, 3, 64, 32)
    assert dm.num_train_pids == small["num_train_ids"]
