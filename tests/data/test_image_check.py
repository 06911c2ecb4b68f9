"""Every image is checked before the first step: truncated or foreign files stop the run at once."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reid_ir.data.checked import CorruptImageError, check_readable, image_problem
from reid_ir.data.synthetic import generate_synthetic_dataset
from reid_ir.engine.run import main, parse_args

REPO = Path(__file__).resolve().parents[2]
TINY_YAML = REPO / "tests" / "tiny.yaml"
SYN = dict(num_train_ids=6, num_test_ids=4, images_per_camera=2, num_cameras=2, num_distractors=2,
           num_junk=2, image_size=(64, 32), seed=0)  # fmt: skip


def _image(path: Path, fmt: str) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 32, 3), dtype=np.uint8)).save(path, fmt)
    return path


@pytest.mark.parametrize("fmt, suffix", [("JPEG", "jpg"), ("PNG", "png"), ("BMP", "bmp")])
def test_intact_images_pass(tmp_path, fmt, suffix):
    assert image_problem(_image(tmp_path / f"a.{suffix}", fmt)) is None


def test_a_jpeg_with_bytes_after_its_end_marker_passes(tmp_path):
    path = _image(tmp_path / "a.jpg", "JPEG")
    path.write_bytes(path.read_bytes() + b"camera trailer")
    assert image_problem(path) is None


@pytest.mark.parametrize("fmt, suffix", [("JPEG", "jpg"), ("PNG", "png")])
def test_a_truncated_image_is_found_without_training(tmp_path, fmt, suffix):
    path = _image(tmp_path / f"a.{suffix}", fmt)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert image_problem(path) is not None


def test_a_file_that_is_no_image_is_found(tmp_path):
    path = tmp_path / "a.jpg"
    path.write_bytes(b"not an image")
    assert "UnidentifiedImageError" in image_problem(path)


def test_check_readable_names_the_first_bad_file_and_counts_them(tmp_path):
    good = _image(tmp_path / "good.jpg", "JPEG")
    bad1, bad2 = tmp_path / "bad1.jpg", tmp_path / "bad2.jpg"
    bad1.write_bytes(good.read_bytes()[:100])
    bad2.write_bytes(b"")
    items = [(str(good), 1, 0), (str(bad1), 1, 0), (str(bad2), 2, 1)]
    with pytest.raises(
        CorruptImageError, match=rf"cannot decode image {bad1} \(train\).*2 unreadable"
    ):
        check_readable([("train", items)], progress=False)


def test_a_corrupt_jpeg_stops_the_run_before_any_step(tmp_path, caplog, monkeypatch):
    root = tmp_path / "data"
    data_dir = generate_synthetic_dataset(root / "synthetic_market", layout="market", **SYN)
    train_img = sorted((data_dir / "Market-1501-v15.09.15" / "bounding_box_train").glob("*.jpg"))[
        -1
    ]
    train_img.write_bytes(train_img.read_bytes()[: train_img.stat().st_size * 2 // 5])
    epochs = []
    from reid_ir.engine.engine import ReidEngine

    train = ReidEngine.train
    monkeypatch.setattr(
        ReidEngine, "train", lambda self, *a, **k: epochs.append(self.epoch) or train(self, *a, **k)
    )
    out = tmp_path / "out"
    argv = ["--config-file", str(TINY_YAML), "train.max_epoch", "1", "train.num_threads", "1",
            "data.root", str(root), "data.save_dir", str(out)]  # fmt: skip
    with caplog.at_level(logging.INFO):
        code = main(parse_args(argv))
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert code == 2 and len(errors) == 1 and f"cannot decode image {train_img}" in errors[0]
    assert epochs == [], "the corrupt image was found only after training had started"
    assert not out.exists(), (
        "no run folder (config, log, tensorboard events) for a run that never started"
    )
