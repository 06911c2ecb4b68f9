"""Load YAML configs (with ``_BASE_`` inheritance) and command-line overrides.

Differences from plain yacs, all deliberate:

* ``_BASE_: path`` (or a list of paths) in a YAML file merges the base files
  first, relative to the file that names them (detectron2's convention);
* an unknown key fails naming the key, the file and close known keys;
* an int given for a float key is accepted (``rho: 10`` for ``rho: 10.0``);
* a numeric key with a valid range (``train.lr > 0``, ``train.batch_size >= 1``,
  ``sgd.momentum`` in [0, 1], ...; see :data:`RANGES`) out of it fails naming the
  key and the range, before any work.
"""

from __future__ import annotations

import ast
import difflib
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from yacs.config import CfgNode as CN

from reid_ir.config.defaults import get_cfg
from reid_ir.errors import ConfigError  # noqa: F401 - re-exported (its old home)

BASE_KEY = "_BASE_"


def _read_yaml(path: Path, _stack: tuple[Path, ...] = ()) -> dict:
    """Read ``path`` and everything its ``_BASE_`` names, merged base-first."""
    path = path.resolve()
    if path in _stack:
        chain = " -> ".join(str(p) for p in (*_stack, path))
        raise ConfigError(f"{path}: _BASE_ inheritance forms a cycle: {chain}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level, got {type(data).__name__}")
    bases = data.pop(BASE_KEY, None)
    if bases is None:
        return data
    if isinstance(bases, str):
        bases = [bases]
    merged: dict = {}
    for base in bases:
        base_path = Path(os.path.expanduser(base))
        if not base_path.is_absolute():
            base_path = path.parent / base_path
        merged = _deep_update(merged, _read_yaml(base_path, (*_stack, path)))
    return _deep_update(merged, data)


def _deep_update(base: dict, new: Mapping) -> dict:
    out = dict(base)
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_update(out[key], value)
        else:
            out[key] = value
    return out


def _coerce(value: Any, default: Any, full_key: str, source: str) -> Any:
    """Return ``value`` in the type of ``default`` or raise naming the key."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
    elif isinstance(default, (list, tuple)):
        if isinstance(value, (list, tuple)):
            return list(value)
    elif default is None:
        return value
    raise ConfigError(
        f"{source}: key {full_key!r} expects {type(default).__name__} (default {default!r}), "
        f"got {type(value).__name__} {value!r}"
    )


def _merge(cfg: CN, data: Mapping, source: str, prefix: str = "") -> None:
    for key, value in data.items():
        full_key = f"{prefix}{key}"
        if key not in cfg:
            known = [f"{prefix}{k}" for k in cfg.keys()]
            close = difflib.get_close_matches(full_key, known, n=3)
            hint = f"; did you mean {close}?" if close else ""
            raise ConfigError(f"{source}: unknown config key {full_key!r}{hint}")
        current = cfg[key]
        if isinstance(current, CN):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: key {full_key!r} is a section; expected a mapping, got {value!r}")
            _merge(current, value, source, f"{full_key}.")
        else:
            cfg[key] = _coerce(value, current, full_key, source)


def merge_from_file(cfg: CN, path: str | os.PathLike) -> CN:
    """Merge the YAML file ``path`` (and its ``_BASE_`` chain) into ``cfg``."""
    _merge(cfg, _read_yaml(Path(path)), str(path))
    return cfg


def _parse_override(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            return text


def merge_from_list(cfg: CN, opts: Iterable[str]) -> CN:
    """Merge command-line overrides ``["loss.name", "am_softmax", "train.lr", "0.01", ...]``."""
    opts = list(opts)
    if len(opts) % 2:
        raise ConfigError(f"command-line overrides must be KEY VALUE pairs, got an odd number: {opts}")
    for key, text in zip(opts[0::2], opts[1::2], strict=True):
        nested: dict = {}
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _parse_override(text)
        _merge(cfg, nested, "command line")
    return cfg


Check = tuple[Callable[[float], bool], str]


def _ge(lo: float) -> Check:
    return (lambda v: v >= lo), f">= {lo}"


def _gt(lo: float) -> Check:
    return (lambda v: v > lo), f"> {lo}"


def _closed(lo: float, hi: float) -> Check:
    return (lambda v: lo <= v <= hi), f"in [{lo}, {hi}]"


def _half_open(lo: float, hi: float) -> Check:
    return (lambda v: lo <= v < hi), f"in [{lo}, {hi})"


def _left_open(lo: float, hi: float) -> Check:
    return (lambda v: lo < v <= hi), f"in ({lo}, {hi}]"


#: numeric keys with a valid range -> (check, what is expected); list keys are checked per element.
#: A key absent from the config (renamed or removed) is skipped.
RANGES: dict[str, Check] = {
    "model.embedding_dim": _ge(0),
    "data.height": _ge(1),
    "data.width": _ge(1),
    "data.workers": _ge(0),
    "data.k_tfm": _ge(1),
    "sampler.num_instances": _ge(1),
    "sampler.num_cams": _ge(1),
    "sampler.num_datasets": _ge(1),
    "train.lr": _gt(0),
    "train.weight_decay": _ge(0),
    "train.max_epoch": _ge(1),
    "train.start_epoch": _ge(0),
    "train.batch_size": _ge(1),
    "train.fixbase_epoch": _ge(0),
    "train.base_lr_mult": _ge(0),
    "train.stepsize": _ge(1),
    "train.gamma": _gt(0),
    "train.print_freq": _ge(1),
    "train.checkpoint_period": _ge(1),
    "train.keep_checkpoints": _ge(0),
    "train.checkpoint_iters": _ge(0),
    "train.dist_timeout_minutes": _gt(0),
    "train.num_threads": _ge(0),
    "sgd.momentum": _closed(0, 1),
    "sgd.dampening": _closed(0, 1),
    "rmsprop.alpha": _closed(0, 1),
    "adam.beta1": _half_open(0, 1),
    "adam.beta2": _half_open(0, 1),
    "loss.label_smooth": _half_open(0, 1),
    "loss.triplet.margin": _ge(0),
    "loss.triplet.weight_t": _ge(0),
    "loss.triplet.weight_x": _ge(0),
    "loss.triplet.weight": _ge(0),
    "loss.margin.scale": _gt(0),
    "loss.margin.m": _ge(0),
    "loss.margin.sphere_m": _ge(1),
    "loss.margin.sphere_lambda_base": _ge(0),
    "loss.margin.sphere_lambda_gamma": _ge(0),
    "loss.margin.sphere_lambda_power": _ge(0),
    "loss.margin.sphere_lambda_min": _ge(0),
    "loss.ir.momentum": _closed(0, 1),
    "loss.ir.alpha": _left_open(0, 1),
    "loss.ir.epoch_momentum": _closed(0, 1),
    "loss.ir.warmup_epochs": _ge(0),
    "loss.weighted.beta": _ge(0),
    "loss.weighted.gamma": _half_open(0, 1),
    "loss.unpg.whisker": _ge(0),
    "loss.clmle.clusters_per_class": _ge(1),
    "loss.clmle.refresh_epochs": _ge(1),
    "loss.clmle.margin_within": _ge(0),
    "loss.clmle.margin_between": _ge(0),
    "loss.clmle.softmax_weight": _ge(0),
    "loss.clmle.knc_k": _ge(1),
    "loss.clmle.min_cluster_size": _ge(1),
    "loss.clmle.kmeans_iters": _ge(1),
    "diagnostics.head_quantile": _closed(0, 1),
    "test.batch_size": _ge(1),
    "test.ranks": _ge(1),
    "test.eval_freq": ((lambda v: v == -1 or v >= 1), "-1 (after the last epoch only) or >= 1"),
    "test.start_eval": _ge(0),
    "test.visrank_topk": _ge(1),
    "test.visrank_num": _ge(1),
    "test.chunk_size": _ge(1),
    "test.max_rank": _ge(1),
    "test.rerank_k1": _ge(1),
    "test.rerank_k2": _ge(1),
    "test.rerank_lambda": _closed(0, 1),
}


def _lookup(cfg: CN, key: str) -> tuple[bool, Any]:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, CN) or part not in node:
            return False, None
        node = node[part]
    return True, node


def check_ranges(cfg: CN, ranges: Mapping[str, Check] = RANGES) -> None:
    """Check every numeric key of ``ranges`` present in ``cfg`` (booleans and strings are skipped).

    Raises:
        ConfigError: naming the key, its value and the range expected.
    """
    for key, (ok, expected) in ranges.items():
        present, value = _lookup(cfg, key)
        if not present:
            continue
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if math.isnan(v) or not ok(v):
                raise ConfigError(f"{key} = {value!r} is out of range: expected {expected}")


def load_cfg(path: str | os.PathLike | Sequence[str | os.PathLike] | None = None, opts: Iterable[str] = (), freeze: bool = True) -> CN:
    """Defaults, then the YAML ``path`` (if given), then ``opts``.

    Args:
        path: YAML config file, or several merged in order (a later file wins);
            each file's ``_BASE_`` files are merged first.
        opts: flat list of KEY VALUE overrides.
        freeze: freeze the returned node.

    Returns:
        The merged config.

    Raises:
        ConfigError: unknown key, wrong type, a value out of its range (:data:`RANGES`),
            missing file or invalid YAML.
    """
    cfg = get_cfg()
    for p in [path] if isinstance(path, (str, os.PathLike)) else path or []:
        if p:
            merge_from_file(cfg, p)
    merge_from_list(cfg, opts)
    check_ranges(cfg)
    if freeze:
        cfg.freeze()
    return cfg


def save_cfg(cfg: CN, path: str | os.PathLike) -> None:
    """Write ``cfg`` as YAML atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(cfg.dump(), encoding="utf-8")
    os.replace(tmp, path)
