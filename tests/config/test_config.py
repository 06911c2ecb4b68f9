"""The config loads torchreid YAMLs, every shipped YAML, _BASE_ chains and overrides."""

from pathlib import Path

import pytest

from reid_ir.config import ConfigError, get_cfg, load_cfg

REPO = Path(__file__).resolve().parents[2]

# Written in deep-person-reid's configs/ style (keys of its scripts/default_config.py).
TORCHREID_YAML = """
model:
  name: 'osnet_x1_0'
  pretrained: True
data:
  type: 'image'
  sources: ['market1501']
  targets: ['market1501']
  height: 256
  width: 128
  combineall: False
  transforms: ['random_flip']
  save_dir: 'log/osnet_x1_0_market1501_softmax_cosinelr'
loss:
  name: 'softmax'
  softmax:
    label_smooth: True
train:
  optim: 'amsgrad'
  lr: 0.0015
  max_epoch: 50
  batch_size: 32
  fixbase_epoch: 10
  open_layers: ['classifier']
  lr_scheduler: 'cosine'
test:
  batch_size: 100
  dist_metric: 'euclidean'
  normalize_feature: False
  evaluate: False
  eval_freq: 5
  rerank: False
"""


def test_torchreid_yaml_loads_unchanged(tmp_path):
    path = tmp_path / "im_osnet_x1_0_softmax_256x128_amsgrad_cosine.yaml"
    path.write_text(TORCHREID_YAML)
    cfg = load_cfg(path)
    assert cfg.model.name == "osnet_x1_0"
    assert cfg.train.optim == "amsgrad" and cfg.train.fixbase_epoch == 10
    assert cfg.test.eval_freq == 5


def test_defaults_have_every_torchreid_key():
    cfg = get_cfg()
    for key in (
        "model.name model.pretrained model.load_weights model.resume data.root data.sources data.targets "
        "data.height data.width data.transforms data.workers sampler.train_sampler sampler.num_instances "
        "train.optim train.lr train.max_epoch train.batch_size train.seed train.lr_scheduler loss.name "
        "loss.softmax.label_smooth loss.triplet.margin loss.triplet.weight_t loss.triplet.weight_x "
        "test.batch_size test.dist_metric test.normalize_feature test.ranks test.eval_freq test.rerank "
        "test.visrank test.visrank_topk cuhk03.use_metric_cuhk03 market1501.use_500k_distractors"
    ).split():
        node = cfg
        for part in key.split("."):
            assert part in node, key
            node = node[part]


@pytest.mark.parametrize("path", sorted(p for p in (REPO / "configs").rglob("*.yaml")), ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_yaml_loads(path):
    load_cfg(path)


def test_base_inheritance_and_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text("train:\n  lr: 0.1\n  max_epoch: 3\nloss:\n  name: softmax\n")
    (tmp_path / "child.yaml").write_text("_BASE_: base.yaml\ntrain:\n  lr: 0.2\n")
    cfg = load_cfg(tmp_path / "child.yaml", ["train.max_epoch", "7", "data.imbalance.rho", "50"])
    assert cfg.train.lr == 0.2 and cfg.train.max_epoch == 7
    assert cfg.data.imbalance.rho == 50.0 and isinstance(cfg.data.imbalance.rho, float)


def test_unknown_key_names_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*'train\.learning_rate'"):
        load_cfg(path)
    with pytest.raises(ConfigError, match="'loss.nme'.*did you mean.*loss.name"):
        load_cfg(None, ["loss.nme", "softmax"])


def test_wrong_type_and_cycles_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="'train.max_epoch' expects int"):
        load_cfg(None, ["train.max_epoch", "'ten'"])
    (tmp_path / "a.yaml").write_text("_BASE_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_BASE_: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_cfg(tmp_path / "a.yaml")
    with pytest.raises(ConfigError, match="not found"):
        load_cfg(tmp_path / "missing.yaml")
