"""Exports: TorchScript and ONNX match the eager model; torchreid reads the exported weights."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reid_ir.inference import FeatureExtractor, build_test_transform
from reid_ir.inference import export as ex
from reid_ir.models import build_backbone

REPO = Path(__file__).resolve().parents[2]
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def samples(n=4, size=(64, 32)):
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(n)]


def as_batch(images):
    tf = build_test_transform(64, 32, MEAN, STD)
    return torch.stack([tf(Image.fromarray(im)) for im in images])


def trained_like(neck: str) -> torch.nn.Module:
    """A model whose BN statistics are not the identity (as after training)."""
    torch.manual_seed(0)
    model = build_backbone("osnet_x0_25", neck=neck)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
    return model.eval()


def test_torchscript_export_matches_the_eager_model(tmp_path):
    model, x = trained_like("bnneck"), as_batch(samples())
    assert ex.export_torchscript(model, x, tmp_path / "m.pt") < 1e-6
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    other = as_batch(samples(7))  # another batch size: the trace is not tied to the example's
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model(other), dim=1)
        assert (loaded(other) - expected).abs().max() < 1e-5


def test_onnx_export_matches_the_eager_model(tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed (extra 'export')")
    model, x = trained_like("bnneck"), as_batch(samples())
    assert ex.export_onnx(model, x, tmp_path / "m.onnx") < 1e-5
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    other = as_batch(samples(3))
    out = session.run(["features"], {"images": other.numpy()})[0]
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model(other), dim=1).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize(("neck", "side"), [("none", "run"), ("bnneck", "relu_after_bn")])
def test_torchreid_feature_extractor_reads_the_exported_weights(tmp_path, neck, side):
    model, images = trained_like(neck), samples()
    path = tmp_path / "w.pth"
    assert ex.export_torchreid_weights(model, "osnet_x0_25", path) == side
    state = torch.load(path, weights_only=True)["state_dict"]  # torch's safe loading reads it
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    tf = build_test_transform(64, 32, MEAN, STD)
    parity = ex.torchreid_parity(model, "osnet_x0_25", path, images, tf, (64, 32), MEAN, STD, side)
    assert parity["unused_tensors"] == [] and parity["max_abs_diff"] < 1e-5
    if neck == "none":  # torchreid computes the run's own features
        with torch.no_grad():
            ours = model(as_batch(images))
        assert (ex.torchreid_feature(model, as_batch(images), side) - ours).abs().max() == 0


def test_export_tool_writes_every_format_and_passes_its_parity_check(run_dir, market_dir, tmp_path):
    spec = importlib.util.spec_from_file_location(
        "export_model", REPO / "tools" / "export_model.py"
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "exported"
    argv = ["--run", str(run_dir), "--out", str(out), "--images", str(market_dir / "query")]
    assert tool.main([*argv, "--device", "cpu", "--num-samples", "3"]) == 0
    report = json.loads((out / "export.json").read_text())
    assert set(report["files"]) == {"torchscript", "onnx", "torchreid"}
    assert report["files"]["torchscript"]["max_abs_diff"] < 1e-4
    assert report["input"]["shape"] == ["B", 3, 64, 32]
    ts = torch.jit.load(str(out / "model.torchscript.pt"))
    ext = FeatureExtractor.from_run(run_dir, device="cpu")
    paths = sorted(str(p) for p in (market_dir / "query").glob("*.jpg"))[:3]
    x = torch.stack([ext.transform(Image.open(p).convert("RGB")) for p in paths])
    np.testing.assert_allclose(ts(x).detach().numpy(), ext(paths), atol=1e-5)
