"""data.imbalance.val_ids: validation identities held out of the training set, never the test set."""

from __future__ import annotations

from pathlib import Path

import pytest

from reid_ir.data.datasets import find_data_dir, register_datasets, scan_dir, validation_holdout

from .test_imbalance_splits import DATASETS, _build


@pytest.mark.parametrize("dataset, layout", DATASETS)
def test_held_out_ids_form_query_gallery_and_leave_the_training_split(
    imb_root, dataset, layout
):
    register_datasets(imbalance=dict(profile="long_tail", rho=4, seed=0, val_ids=6))
    ds = _build(f"{dataset}_imb", imb_root)
    data_dir = find_data_dir(imb_root, dataset)
    test_folders = {data_dir / "query", data_dir / "bounding_box_test"}
    held = {pid for _, pid, *_ in ds.query}
    assert len(held) == 6 and {pid for _, pid, *_ in ds.gallery} == held
    for path, *_ in ds.query + ds.gallery:  # drawn from the training folder only
        assert Path(path).parent == data_dir / "bounding_box_train"
        assert Path(path).parent not in test_folders
    train_originals = {int(Path(p).name.split("_")[0]) for p, *_ in ds.train}
    assert not train_originals & held
    for pid in held:  # one query per camera, and every query has a match in another camera
        q_cams = [cam for _, p, cam, *_ in ds.query if p == pid]
        g_cams = {cam for _, p, cam, *_ in ds.gallery if p == pid}
        assert len(q_cams) == len(set(q_cams))
        assert any(c != q for c in g_cams for q in q_cams)


def test_holdout_is_seeded_disjoint_and_checks_its_range(imb_root):
    data_dir = find_data_dir(imb_root, "market1501")
    records = scan_dir(data_dir / "bounding_box_train", "market", rel_to=data_dir)
    train, query, gallery = validation_holdout(records, 5, seed=0)
    again = validation_holdout(records, 5, seed=0)
    other = validation_holdout(records, 5, seed=1)
    assert (train, query, gallery) == again
    assert {r[1] for r in query} != {r[1] for r in other[1]}
    assert len(train) + len(query) + len(gallery) == len([r for r in records if r[1] != -1])
    with pytest.raises(ValueError, match="data.imbalance.val_ids=1000: expected 2"):
        validation_holdout(records, 1000)


def test_val_ids_with_a_manifest_is_refused(imb_root, tmp_path):
    register_datasets(imbalance=dict(manifest=str(tmp_path / "x.json"), val_ids=4))
    with pytest.raises(ValueError, match="val_ids.*manifest"):
        _build("market1501_imb", imb_root)
