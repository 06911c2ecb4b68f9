"""Each method's config is written once (configs/methods/) and composed with a dataset and a split."""

from pathlib import Path

import pytest
import yaml

from reid_ir.config import load_cfg
from reid_ir.losses import LOSSES
from reid_ir.reports import reproduce

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
METHODS = sorted((CONFIGS / "methods").glob("*.yaml"))
DATASETS = sorted((CONFIGS / "datasets").glob("*.yaml"))
#: methods that are no loss of their own -> the loss they train (their YAML says why)
NOT_A_LOSS = {"class_balanced": "softmax"}


def test_the_method_and_dataset_configs_are_found():
    assert len(METHODS) >= 15 and {p.stem for p in DATASETS} == {"market1501", "dukemtmcreid"}


@pytest.mark.parametrize("method", METHODS, ids=lambda p: p.stem)
def test_a_method_config_names_its_registered_loss_and_no_dataset(method):
    cfg = load_cfg(method)
    assert cfg.loss.name in LOSSES and cfg.loss.name == NOT_A_LOSS.get(method.stem, method.stem)
    assert "data" not in yaml.safe_load(method.read_text(encoding="utf-8"))
    assert cfg.data.sources == cfg.data.targets == ["market1501"]  # base.yaml's defaults


@pytest.mark.parametrize("dataset", DATASETS, ids=lambda p: p.stem)
@pytest.mark.parametrize("method", METHODS, ids=lambda p: p.stem)
def test_a_method_composes_with_every_dataset(method, dataset):
    alone, cfg = load_cfg(method), load_cfg([method, dataset])
    assert cfg.data.sources == cfg.data.targets == [dataset.stem]
    assert (cfg.loss.dump(), cfg.sampler.dump()) == (alone.loss.dump(), alone.sampler.dump())


@pytest.mark.parametrize("dataset", ["market1501", "dukemtmcreid"])
@pytest.mark.parametrize("method", ["clmle", "class_balanced"])
def test_a_reproduce_cell_has_the_method_loss_and_the_split_data(method, dataset, tmp_path):
    cell = reproduce.Cell(method, "long_tail_rho10", 4, tmp_path / "cell")
    cfg = load_cfg(reproduce.write_cell_config(cell, dataset, "cpu", "root"))
    alone = load_cfg([CONFIGS / "methods" / f"{method}.yaml", CONFIGS / "presets" / "cpu.yaml"])
    split = load_cfg(CONFIGS / dataset / "splits" / "long_tail_rho10.yaml")
    assert (cfg.loss.dump(), cfg.sampler.dump()) == (alone.loss.dump(), alone.sampler.dump())
    assert (cfg.data.sources, cfg.data.targets) == (split.data.sources, split.data.targets)
    assert cfg.data.imbalance.dump() == split.data.imbalance.dump()
    assert (cfg.model.name, cfg.train.seed, cfg.data.root) == ("osnet_x0_25", 4, "root")  # preset, cell
