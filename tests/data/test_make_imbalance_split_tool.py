"""tools/make_imbalance_split.py and the preset split configs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from reid_ir.config import load_cfg
from reid_ir.data import imbalance as imb

REPO = Path(__file__).resolve().parents[2]
PRESETS = sorted(REPO.glob("configs/*/splits/*.yaml"))


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location(
        "make_imbalance_split", REPO / "tools" / "make_imbalance_split.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tool_writes_manifest_and_png_and_prints_the_summary(tool, imb_root, tmp_path, capsys):
    out = tmp_path / "lt.json"
    argv = [
        "--dataset",
        "market1501",
        "--root",
        str(imb_root),
        "--profile",
        "long_tail",
        "--rho",
        "5",
        "--seed",
        "0",
        "--output",
        str(out),
    ]
    assert tool.main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    manifest = imb.load_manifest(out)
    assert (
        printed["summary"] == manifest["summary"]
        and printed["content_hash"] == manifest["content_hash"]
    )
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = out.read_bytes()
    assert tool.main(argv + ["--seed", "1"]) == 2  # exists: refused without --force
    assert out.read_bytes() == before
    assert tool.main(argv + ["--seed", "1", "--force"]) == 0
    assert imb.load_manifest(out)["seed"] == 1


def test_tool_default_output_name_and_bad_value(tool, imb_root, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert (
        tool.main(
            [
                "--dataset",
                "dukemtmcreid",
                "--root",
                str(imb_root),
                "--profile",
                "tail_fewshot",
                "--tail-fraction",
                "0.5",
                "--tail-images",
                "2",
            ]
        )
        == 0
    )
    assert (tmp_path / "output/splits/dukemtmcreid_tail_fewshot_frac0.5_k2_seed0.json").is_file()
    capsys.readouterr()
    assert tool.main(["--root", str(imb_root), "--profile", "long_tail", "--rho", "0.5"]) == 2


def test_tool_reads_a_preset_config(tool, imb_root, tmp_path, capsys):
    preset = REPO / "configs/market1501/splits/balanced_control_long_tail_rho10.yaml"
    out = tmp_path / "ctrl.json"
    assert tool.main(["--root", str(imb_root), "--config", str(preset), "--output", str(out)]) == 0
    m = imb.load_manifest(out)
    assert m["dataset"] == "market1501" and m["profile"] == "balanced_control"
    assert m["params"] == {"control_of": "long_tail", "rho": 10.0, "n_max": 0, "min_images": 1}


def test_presets_hold_only_data_keys_and_load(tmp_path):
    import yaml

    assert len(PRESETS) >= 12
    names = {p.stem for p in PRESETS}
    for need in (
        "long_tail_rho10",
        "long_tail_rho50",
        "tail_fewshot",
        "balanced_control_long_tail_rho10",
        "balanced_control_long_tail_rho50",
        "balanced_control_tail_fewshot",
    ):
        assert need in names
    for path in PRESETS:
        raw = yaml.safe_load(path.read_text())
        assert set(raw) == {"data"} and set(raw["data"]) <= {"sources", "targets", "imbalance"}, (
            path
        )
        cfg = load_cfg(path)
        dataset = path.parts[-3]
        assert list(cfg.data.sources) == [f"{dataset}_imb"]
        keys = {k: v for k, v in dict(cfg.data.imbalance).items() if k != "profile"}
        imb.profile_params(cfg.data.imbalance.profile, **keys)
