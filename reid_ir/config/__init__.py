"""Configuration: torchreid's keys + reid_ir's keys (see ``defaults.py``)."""

from reid_ir.config.defaults import get_cfg
from reid_ir.config.loader import ConfigError, load_cfg, merge_from_file, merge_from_list, save_cfg

__all__ = ["ConfigError", "get_cfg", "load_cfg", "merge_from_file", "merge_from_list", "save_cfg"]
