"""Small synthetic Market- and Duke-format datasets shared by the data tests."""

from __future__ import annotations

import pytest

from reid_ir.data.synthetic import generate_synthetic_dataset

SMALL = dict(
    num_train_ids=12,
    num_test_ids=6,
    images_per_camera=2,
    num_cameras=4,
    num_distractors=4,
    num_junk=3,
    image_size=(64, 32),
    seed=3,
)


@pytest.fixture(scope="session")
def small():
    """The parameters of the shared synthetic datasets."""
    return dict(SMALL)


@pytest.fixture(scope="session")
def syn_root(tmp_path_factory):
    """A data root holding synthetic_market/ and synthetic_duke/ generated with SMALL."""
    root = tmp_path_factory.mktemp("reid_data")
    generate_synthetic_dataset(root / "synthetic_market", layout="market", **SMALL)
    generate_synthetic_dataset(root / "synthetic_duke", layout="duke", **SMALL)
    return root
