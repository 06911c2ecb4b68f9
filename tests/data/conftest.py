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


@pytest.fixture(scope="session")
def imb_root(tmp_path_factory):
    """A data root with synthetic data in the real layouts: market1501/ and dukemtmc-reid/."""
    root = tmp_path_factory.mktemp("imb_data")
    kw = dict(
        num_train_ids=24,
        num_test_ids=6,
        images_per_camera=4,
        num_cameras=5,
        num_distractors=3,
        num_junk=2,
        image_size=(64, 32),
        seed=11,
    )
    generate_synthetic_dataset(root / "market1501", layout="market", **kw)
    generate_synthetic_dataset(root / "dukemtmc-reid", layout="duke", **kw)
    return root


@pytest.fixture(autouse=True)
def _default_registrations():
    """Tests may re-bind reid_ir's datasets; restore the default bindings afterwards."""
    yield
    from reid_ir.data.datasets import register_datasets

    register_datasets()
