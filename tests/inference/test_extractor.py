"""FeatureExtractor: the run's model, weights, preprocessing and neck side; inputs of every kind."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from reid_ir.config import load_cfg
from reid_ir.engine.checkpoint import CheckpointError, load_checkpoint
from reid_ir.inference import FeatureExtractor
from reid_ir.inference.extractor import build_model_from_cfg
from reid_ir.models import build_backbone


def gallery_paths(market_dir, n=12):
    return sorted(str(p) for p in (market_dir / "bounding_box_test").glob("*.jpg"))[:n]


def eager_features(run_dir, paths, side="after_bn"):
    """What the features must be: checkpoint weights, torchreid's test transform by hand."""
    cfg = load_cfg(run_dir / "config.yaml")
    model = build_backbone(cfg.model.name, neck=cfg.model.neck, test_feature=side)
    model.load_state_dict(load_checkpoint(run_dir)["model"])
    model.eval()
    mean = torch.tensor(cfg.data.norm_mean)[:, None, None]
    std = torch.tensor(cfg.data.norm_std)[:, None, None]
    xs = []
    for p in paths:
        img = Image.open(p).convert("RGB").resize((cfg.data.width, cfg.data.height), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255
        xs.append((x - mean) / std)
    with torch.no_grad():
        return F.normalize(model(torch.stack(xs)), dim=1).numpy()


def test_from_run_gives_unit_norm_features_of_the_checkpoint_model(run_dir, market_dir):
    paths = gallery_paths(market_dir)
    ext = FeatureExtractor.from_run(run_dir, device="cpu", batch_size=5)
    feats = ext(paths)
    assert feats.dtype == np.float32 and feats.shape == (len(paths), ext.feat_dim)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(feats, eager_features(run_dir, paths), atol=1e-4)


def test_paths_pil_images_and_arrays_give_the_same_features(run_dir, market_dir):
    paths = gallery_paths(market_dir, 4)
    ext = FeatureExtractor.from_run(run_dir, device="cpu")
    pil = [Image.open(p).convert("RGB") for p in paths]
    arrays = [np.asarray(im) for im in pil]
    ref = ext(paths)
    np.testing.assert_array_equal(ext(pil), ref)
    np.testing.assert_array_equal(ext(arrays), ref)
    np.testing.assert_array_equal(ext(np.stack(arrays)), ref)
    np.testing.assert_allclose(ext(paths[0]), ref[:1], atol=1e-6)  # batch of 1: other kernels


def test_test_feature_override_reads_the_other_side_of_the_neck(run_dir, market_dir):
    paths = gallery_paths(market_dir, 6)
    before = FeatureExtractor.from_run(run_dir, opts=["test.feature", "before_bn"], device="cpu")(
        paths
    )
    after = FeatureExtractor.from_run(run_dir, device="cpu")(paths)
    np.testing.assert_allclose(before, eager_features(run_dir, paths, "before_bn"), atol=1e-4)
    assert np.abs(before - after).max() > 1e-3


def test_from_config_with_the_checkpoint_equals_from_run(run_dir, market_dir):
    paths = gallery_paths(market_dir, 6)
    ckpt = load_checkpoint(run_dir)["path"]
    a = FeatureExtractor.from_config(run_dir / "config.yaml", ckpt, device="cpu")(paths)
    b = FeatureExtractor.from_run(run_dir, checkpoint=ckpt, device="cpu")(paths)
    np.testing.assert_array_equal(a, b)


def test_model_is_built_from_the_runs_config_keys(run_dir):
    cfg = load_cfg(run_dir / "config.yaml", ["model.neck", "none"])
    model = build_model_from_cfg(cfg)
    assert model.neck_name == "none" and isinstance(model.bn, torch.nn.Identity)


def test_a_folder_without_config_yaml_is_refused_naming_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        FeatureExtractor.from_run(tmp_path)


def test_a_checkpoint_of_another_neck_is_refused_naming_the_tensors(run_dir):
    with pytest.raises(CheckpointError, match="unexpected"):
        FeatureExtractor.from_run(run_dir, opts=["model.neck", "none"], device="cpu")


def test_an_unreadable_image_is_named(run_dir, tmp_path):
    bad = tmp_path / "0001_c1s1_000001_00.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="0001_c1s1_000001_00.jpg"):
        FeatureExtractor.from_run(run_dir, device="cpu")([str(bad)])
