"""torchreid's own, unmodified dataset classes read the synthetic Market and Duke layouts."""

import pytest

from reid_ir import compat
from reid_ir.data.datasets import process_dir


@pytest.mark.parametrize(
    ("cls_name", "sub", "layout", "folder"),
    [
        ("Market1501", "market1501", "market", "Market-1501-v15.09.15"),
        ("DukeMTMCreID", "dukemtmc-reid", "duke", "DukeMTMC-reID"),
    ],
)
def test_torchreid_dataset_class_reads_synthetic_layout(imb_root, cls_name, sub, layout, folder):
    cls = getattr(compat.data.datasets.image, cls_name)
    dataset = cls(root=str(imb_root), verbose=False)
    ours = {
        split: process_dir(imb_root / sub / folder / d, layout)
        for split, d in (("train", "bounding_box_train"), ("query", "query"), ("gallery", "bounding_box_test"))
    }
    assert len(dataset.train) == len(ours["train"]) > 0
    assert len(dataset.query) == len(ours["query"]) > 0
    assert len(dataset.gallery) == len(ours["gallery"]) > 0
    assert dataset.num_train_pids == len({pid for _, pid, _ in ours["train"]})
    # same (pid, camid) multiset for the evaluation splits, whatever the file order
    for split in ("query", "gallery"):
        theirs = sorted((item[1], item[2]) for item in getattr(dataset, split))
        assert theirs == sorted((pid, camid) for _, pid, camid in ours[split])
