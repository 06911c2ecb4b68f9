"""Numeric keys out of their valid range fail at load time naming the key and the range."""

from __future__ import annotations

import pytest
from yacs.config import CfgNode as CN

from reid_ir.config import ConfigError, get_cfg, load_cfg
from reid_ir.config.loader import RANGES, check_ranges

CANDIDATES = (-1e9, -2, -1, -0.5, 0, 0.5, 1, 1.5, 2, 1e9)


def _get(cfg: CN, key: str):
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


def _bad_override(key: str) -> str:
    """A value of the key's type that its range check refuses."""
    ok, _ = RANGES[key]
    default = _get(get_cfg(), key)
    item = default[0] if isinstance(default, list) else default
    for v in CANDIDATES:
        v = int(v) if isinstance(item, int) else float(v)
        if not ok(v):
            return repr([v]) if isinstance(default, list) else repr(v)
    raise AssertionError(f"no candidate value is out of range for {key}")


def _present(key: str) -> bool:
    try:
        _get(get_cfg(), key)
    except KeyError:
        return False
    return True


def test_the_defaults_are_in_range():
    check_ranges(get_cfg())


@pytest.mark.parametrize("key", [k for k in RANGES if _present(k)])
def test_an_out_of_range_value_names_the_key_and_the_range(key):
    bad = _bad_override(key)
    _, expected = RANGES[key]
    with pytest.raises(ConfigError, match=r"^" + key.replace(".", r"\.") + r" = .* expected ") as e:
        load_cfg(None, [key, bad])
    assert expected in str(e.value)


@pytest.mark.parametrize(
    "key, value, expected",
    [("train.lr", "-1", "expected > 0"), ("train.lr", "0", "expected > 0"),
     ("train.batch_size", "0", "expected >= 1"), ("train.max_epoch", "0", "expected >= 1"),
     ("sgd.momentum", "1.5", "expected in [0, 1]"), ("loss.unpg.whisker", "-0.1", "expected >= 0"),
     ("loss.ir.momentum", "-0.1", "expected in [0, 1]"), ("test.ranks", "[1, 0]", "expected >= 1"),
     ("test.eval_freq", "0", "-1 (after the last epoch only) or >= 1")],
)  # fmt: skip
def test_documented_examples_are_refused(key, value, expected):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as e:
        load_cfg(None, [key, value])
    assert expected in str(e.value)


def test_label_smoothing_must_lie_in_zero_to_one():
    cfg = CN({"loss": CN({"label_smooth": 0.1})})
    check_ranges(cfg)
    cfg.loss.label_smooth = 1.0
    with pytest.raises(ConfigError, match=r"loss\.label_smooth = 1\.0 .*expected in \[0, 1\)"):
        check_ranges(cfg)


def test_keys_absent_from_the_config_and_booleans_are_skipped():
    check_ranges(CN({"train": CN({"lr": 0.1})}))  # no batch_size etc.: nothing to check
    check_ranges(CN({"loss": CN({"label_smooth": True})}))  # torchreid's bool switch
