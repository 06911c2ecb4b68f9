"""tools/gpu_check.sh's flow, in its CPU mode: data, both AMP runs, evaluation and the summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from reid_ir.data.synthetic import generate_synthetic_dataset

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "gpu_check.sh"


def cpu_mode(tmp_path: Path, **extra: str) -> subprocess.CompletedProcess:
    """``GPU_CHECK_CPU=1 tools/gpu_check.sh`` with this interpreter, outputs under tmp_path/out."""
    env = {
        **os.environ,
        "GPU_CHECK_CPU": "1",
        "GPU_CHECK_VENV": "0",
        "PYTHON": sys.executable,
        "OUT": str(tmp_path / "out"),
        "TMPDIR": str(tmp_path),
        "OMP_NUM_THREADS": "1",
        **extra,
    }
    proc = subprocess.run(
        ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


@pytest.mark.slow
def test_gpu_check_cpu_mode_trains_both_losses_with_amp_and_summarises(tmp_path):
    proc = cpu_mode(tmp_path)
    rows = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [r["loss"] for r in rows] == ["softmax", "ir_am_softmax"]
    for r in rows:
        assert r["dataset"] == "synthetic_market" and r["device"] == "cpu"
        assert r["amp_dtype"] == "bfloat16" and r["search_backend"] in ("torch", "faiss")
        assert r["train_images_per_s"] > 0 and r["eval_images_per_s"] > 0
        assert r["peak_gpu_memory_gib"] is None
        assert 0.0 <= r["mAP"] <= 100.0 and 0.0 <= r["rank1"] <= 100.0
    lines = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert len(lines) == 3 and "train img/s" in lines[0] and "peak GPU GiB" in lines[0]


@pytest.mark.slow
def test_gpu_check_unpacks_a_market1501_tarball_and_trains_on_it(tmp_path):
    """A synthetic set in Market-1501's real layout, packed as market1501.tar.gz is."""
    generate_synthetic_dataset(
        tmp_path / "fake", layout="market", num_train_ids=8, num_test_ids=4,
        images_per_camera=2, num_cameras=2, num_distractors=2, num_junk=2,
        image_size=(64, 32), seed=0,
    )  # fmt: skip
    tarball = tmp_path / "market1501.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(tmp_path / "fake" / "Market-1501-v15.09.15", arcname="Market-1501-v15.09.15")
    proc = cpu_mode(tmp_path, GPU_CHECK_MARKET=str(tarball), GPU_CHECK_LOSSES="softmax")
    assert f"unpacking {tarball}" in proc.stdout
    rows = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [(r["loss"], r["dataset"]) for r in rows] == [("softmax", "market1501")]


def test_gpu_check_names_a_missing_market_tarball(tmp_path):
    env = {**os.environ, "GPU_CHECK_CPU": "1", "GPU_CHECK_VENV": "0", "PYTHON": sys.executable,
           "GPU_CHECK_MARKET": str(tmp_path / "nope.tar.gz"), "TMPDIR": str(tmp_path)}  # fmt: skip
    proc = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "nope.tar.gz is not a file" in proc.stderr


def test_gpu_check_without_wheels_says_how_to_build_them(tmp_path):
    env = {**os.environ, "GPU_CHECK_WHEELS": str(tmp_path / "none"), "TMPDIR": str(tmp_path)}
    proc = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "no wheels in" in proc.stderr and "gpu_check_wheels.sh" in proc.stderr


def test_gpu_check_scripts_are_valid_bash():
    for name in ("gpu_check.sh", "gpu_check_wheels.sh"):
        proc = subprocess.run(["bash", "-n", str(SCRIPT.parent / name)], capture_output=True)
        assert proc.returncode == 0, proc.stderr
